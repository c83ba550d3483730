# Architecture variants (issue 16): RoPE, RMSNorm, SwiGLU, squared ReLU,
# grouped-query attention, untied output layer, bias-free linears and dropout
# at every layout against one rank, resharded and bitwise resume, bad flags,
# tools/generate on a Llama-style checkpoint, the GPT-2 exports refusing
# --qk-layernorm.
add_test(NAME test_arch_variants_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_arch_variants_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:generate> $<TARGET_FILE:export_hf> $<TARGET_FILE:export_llmc>)
set_tests_properties(test_arch_variants_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# Document masking (--eod-mask-loss, --reset-position-ids, --reset-attention-mask)
# at every layout against one rank, each switch effective, Megatron's loss
# normalisation.
add_test(NAME test_documents_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_documents_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_documents_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# Mixture of experts (issue 19): routers, losses and capacity at every
# layout against one rank, resharded resume, the bad flags.
add_test(NAME test_moe_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_moe_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_moe_e2e PROPERTIES TIMEOUT 600
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
