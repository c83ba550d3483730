add_test(NAME test_tensor_parallel_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_tensor_parallel_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_tensor_parallel_e2e PROPERTIES TIMEOUT 300)
