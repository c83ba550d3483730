# Backend tests: the fp32 CPU reference backend against double-precision
# references (gradients by finite differences), and its memory, optimizer and
# determinism contract.
gpt3d_add_test(NAME test_backend_cpu SOURCES test_backend_cpu.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cpu_misc SOURCES test_backend_cpu_misc.c TIMEOUT 60)
# CUDA backend against the CPU backend (exit 77, skipped, without a GPU):
# memory, casts, pointwise, embeddings, layernorm; GEMMs and attention; cross
# entropy, AdamW and reductions; the whole tiny model.
gpt3d_add_test(NAME test_backend_cuda SOURCES test_backend_cuda.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cuda_gemm SOURCES test_backend_cuda_gemm.c TIMEOUT 120)
gpt3d_add_test(NAME test_backend_cuda_loss SOURCES test_backend_cuda_loss.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cuda_model SOURCES test_backend_cuda_model.c TIMEOUT 120)
# The same programs with a CPU backend standing in for CUDA: they run
# everywhere and keep the test programs themselves working between GPU runs.
foreach(part "" _gemm _loss _model)
  gpt3d_add_test(NAME test_backend_cuda${part}_harness SOURCES test_backend_cuda${part}.c
    TIMEOUT 120 ARGS --cpu-standin)
endforeach()
