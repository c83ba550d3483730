# parallel_state and its collectives, under mpirun (see gpt3d_add_test).
gpt3d_add_test(NAME test_parallel_state SOURCES test_parallel_state.c RANKS 8 TIMEOUT 60)
# Every (TP, PP) layout of 4 ranks; at 8 ranks the layouts 4 cannot make
# (DP = 2 with TP = PP = 2, PP = 4 with TP = 2, PP = 8), to keep the run short.
gpt3d_add_test(NAME test_collectives SOURCES test_collectives.c RANKS 4 TIMEOUT 60)
gpt3d_add_test(NAME test_collectives_8 SOURCES test_collectives.c RANKS 8 TIMEOUT 60
  ARGS 2x2 2x4 1x8)
# The distributed optimizer alone: layout, shard map, reduce-scatter, norm,
# step and all-gather against one rank's arithmetic, bucket sizes and overlap.
gpt3d_add_test(NAME test_schedules SOURCES test_schedules.c TIMEOUT 30)
# The fp16 loss scalers step by step.
gpt3d_add_test(NAME test_grad_scaler SOURCES test_grad_scaler.c TIMEOUT 30)
gpt3d_add_test(NAME test_distrib_optimizer SOURCES test_distrib_optimizer.c RANKS 4 TIMEOUT 60)
gpt3d_add_test(NAME test_distrib_optimizer_1 SOURCES test_distrib_optimizer.c RANKS 1 TIMEOUT 60)
# One and two ranks: the size-1 shortcuts and the smallest real exchanges.
gpt3d_add_test(NAME test_collectives_1 SOURCES test_collectives.c RANKS 1 TIMEOUT 60)
gpt3d_add_test(NAME test_collectives_2 SOURCES test_collectives.c RANKS 2 TIMEOUT 60)
# The device implementations (NCCL, staged) on CUDA buffers; exit 77 without
# a GPU. Two ranks share the GPU through the staged implementation; the GPU
# kit runs it as one rank, where every group is a one-rank NCCL communicator.
gpt3d_add_test(NAME test_comm_cuda SOURCES test_comm_cuda.c RANKS 2 TIMEOUT 120 LABELS cuda)
# The same program with the CPU backend standing in (staged only): a harness
# self-test that runs everywhere.
gpt3d_add_test(NAME test_harness_comm_cuda SOURCES test_comm_cuda.c RANKS 2 TIMEOUT 120
  ARGS --cpu-standin LABELS harness)
# 2, 4 and 8 ranks sharing one GPU through the staged communication against
# one rank (exit 77 without a GPU). A shell test, so the GPU kit runs the same
# comparison itself (scripts/run_gpu_checks.sh, check_multirank).
add_test(NAME test_comm_cuda_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_comm_cuda_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_comm_cuda_e2e PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 LABELS cuda
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# Context parallelism (ring attention) against one rank at CP 2, CP 4, with
# TP, SP, PP, DP, recomputation, interleaving, RoPE and documents; its
# checkpoints and its bad layouts.
add_test(NAME test_context_parallel_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_context_parallel_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_context_parallel_e2e PROPERTIES TIMEOUT 400)
