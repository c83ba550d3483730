# The GPU bring-up kit (scripts/gpu_bundle.sh, scripts/run_gpu_checks.sh),
# rehearsed without a GPU: a bundle of this build's programs (no rebuild, so
# it stays fast), then the whole check script in its CPU stand-in mode.
add_test(NAME test_gpu_kit_rehearsal
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_gpu_kit.sh ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(test_gpu_kit_rehearsal PROPERTIES TIMEOUT 240
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# Where the CUDA backend library is looked for, and what a failed load says.
if(GPT3D_HAVE_CUDA)
  add_test(NAME test_cuda_library_lookup
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cuda_library_lookup.sh $<TARGET_FILE:pretrain_gpt>
      $<TARGET_FILE:gpt3d_cuda> $<TARGET_FILE:preprocess_data> $<TARGET_FILE:test_backend_cuda_gemm>)
  set_tests_properties(test_cuda_library_lookup PROPERTIES TIMEOUT 120
    ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
endif()
