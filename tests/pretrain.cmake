add_test(NAME test_pretrain_cli
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_pretrain_cli.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> ${MPIEXEC_EXECUTABLE})
set_tests_properties(test_pretrain_cli PROPERTIES TIMEOUT 600 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
add_test(NAME test_schedules_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_schedules_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_schedules_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
add_test(NAME test_megatron_flags
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_megatron_flags.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> ${MPIEXEC_EXECUTABLE})
set_tests_properties(test_megatron_flags PROPERTIES TIMEOUT 120 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
add_test(NAME test_checkpoint_habits
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_habits.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> $<TARGET_FILE:export_hf>)
set_tests_properties(test_checkpoint_habits PROPERTIES TIMEOUT 180 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
