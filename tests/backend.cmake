# Backend tests: the fp32 CPU reference backend against double-precision
# references (gradients by finite differences), and its memory, optimizer and
# determinism contract; test_backend_arch: the ops of the modern architectures.
gpt3d_add_test(NAME test_backend_cpu SOURCES test_backend_cpu.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cpu_misc SOURCES test_backend_cpu_misc.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_arch SOURCES test_backend_arch.c TIMEOUT 60)
# Ring attention's block ops (context parallelism) against the whole-sequence attention.
gpt3d_add_test(NAME test_ring_attention SOURCES test_ring_attention.c TIMEOUT 60)
# CUDA backend against the CPU backend (exit 77, skipped, without a GPU):
# memory, casts, pointwise, embeddings, layernorm; GEMMs and attention (query
# groups, attention dropout); cross entropy, AdamW and reductions; the whole
# tiny model; the modern architectures' ops (RMSNorm, SwiGLU, squared ReLU,
# dropout, RoPE); the mixture-of-experts ops (router, gather, combine).
# Label cuda: the GPU kit runs it on the GPU machine; memcheck: also under
# compute-sanitizer there.
gpt3d_add_test(NAME test_backend_cuda SOURCES test_backend_cuda.c TIMEOUT 60 LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_gemm SOURCES test_backend_cuda_gemm.c TIMEOUT 120
  LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_loss SOURCES test_backend_cuda_loss.c TIMEOUT 60
  LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_model SOURCES test_backend_cuda_model.c TIMEOUT 120
  LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_arch SOURCES test_backend_cuda_arch.c TIMEOUT 120
  LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_ring SOURCES test_backend_cuda_ring.c TIMEOUT 60
  LABELS cuda memcheck)
gpt3d_add_test(NAME test_backend_cuda_moe SOURCES test_backend_cuda_moe.c TIMEOUT 60
  LABELS cuda memcheck)
# The same programs with a CPU backend standing in for CUDA: they run
# everywhere and keep the test programs themselves working between GPU runs.
# They compare the CPU backend with itself, so they are harness self-tests,
# not op tests: named test_harness_cuda* and labelled harness so a count of
# what the CUDA backend passed (ctest -L cuda) never includes them.
foreach(part "" _gemm _loss _model _arch _ring _moe)
  gpt3d_add_test(NAME test_harness_cuda${part} SOURCES test_backend_cuda${part}.c
    TIMEOUT 120 ARGS --cpu-standin LABELS harness)
endforeach()
