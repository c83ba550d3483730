# Backend tests: the fp32 CPU reference backend against double-precision
# references (gradients by finite differences), and its memory, optimizer and
# determinism contract.
gpt3d_add_test(NAME test_backend_cpu SOURCES test_backend_cpu.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cpu_misc SOURCES test_backend_cpu_misc.c TIMEOUT 60)
gpt3d_add_test(NAME test_backend_cuda SOURCES test_backend_cuda.c TIMEOUT 60)
