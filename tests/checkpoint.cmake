gpt3d_add_test(NAME test_checkpoint SOURCES test_checkpoint.c TIMEOUT 120)
gpt3d_add_test(NAME test_checkpoint_lock SOURCES test_checkpoint_lock.c TIMEOUT 60)
# Ownership of --save and recovery without a usable tracker, end to end.
add_test(NAME test_checkpoint_recovery
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_recovery.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:checkpoint_info>)
set_tests_properties(test_checkpoint_recovery PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
