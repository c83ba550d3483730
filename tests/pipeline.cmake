gpt3d_add_test(NAME test_pipeline_schedule SOURCES test_pipeline_schedule.c TIMEOUT 60)
add_test(NAME test_pipeline_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_pipeline_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_pipeline_e2e PROPERTIES TIMEOUT 300)
