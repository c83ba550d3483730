# Checks of saved state (tests/test_checkpoint_state.sh): resharded loads
# saved at once must equal their source bitwise, checkpoints of different
# layouts agree per element, and --no-load-optim / --finetune are asserted on
# the checkpoint they save. Numbers are compared in C (checkpoint_info
# --compare-to and the helper below), never in awk.
add_executable(test_checkpoint_state_expect test_checkpoint_state_expect.c)
target_link_libraries(test_checkpoint_state_expect PRIVATE gpt3d)
add_test(NAME test_checkpoint_state
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_state.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:checkpoint_info> $<TARGET_FILE:test_checkpoint_state_expect>)
set_tests_properties(test_checkpoint_state PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")

# --async-save (tests/test_async_save.sh): bitwise equal to synchronous
# saves, training continues during the write, kill -9 in the background
# write keeps the previous checkpoint, a failed write is reported.
add_test(NAME test_async_save
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_async_save.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:checkpoint_info>)
set_tests_properties(test_async_save PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
