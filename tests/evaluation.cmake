# TensorBoard output and the evaluations after training (training/evaluation.c,
# training/tensorboard_log.c, tensorboard/).
# test_tensorboard_e2e: event files read back by tfrecord + protobufjs from npm,
# fetched once into the build tree by tests/fetch_tensorboard_reader.sh;
# without npm, node or the download it fails, and GPT3D_ALLOW_MISSING_PREREQS=1
# makes that a skip (tests/test_gpt2_prereq.h has the rule).
add_test(NAME test_tensorboard_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_tensorboard_e2e.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> ${MPIEXEC_EXECUTABLE} ${CMAKE_BINARY_DIR}/tensorboard-reader
          ${CMAKE_CURRENT_SOURCE_DIR}/fetch_tensorboard_reader.sh
          ${CMAKE_CURRENT_SOURCE_DIR}/tensorboard_reader.js)
set_tests_properties(test_tensorboard_e2e PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  RESOURCE_LOCK tensorboard_reader_dir
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
# test_test_split_e2e: the test-set evaluation after training and --skip-train.
add_test(NAME test_test_split_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_test_split_e2e.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> ${MPIEXEC_EXECUTABLE})
set_tests_properties(test_test_split_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
