# Data parallelism with ZeRO-1 end to end (issue 7): DP and full 3D layouts
# against one rank, optimizer-state memory, resume at other layouts, clipping,
# and a bad batch split. Each script runs pretrain_gpt under mpirun.
add_test(NAME test_data_parallel_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_data_parallel_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_data_parallel_e2e PROPERTIES TIMEOUT 600
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")

# Crash safety of saves (SIGKILL of one rank at each point of a save, through
# the GPT3D_TEST_KILL_IN_SAVE hook), SIGTERM with --exit-signal-handler and
# --exit-duration-in-mins. test_dp_verify_checkpoint checks that every
# checkpoint under its final name is complete.
add_executable(test_dp_verify_checkpoint test_dp_verify_checkpoint.c)
target_link_libraries(test_dp_verify_checkpoint PRIVATE gpt3d)
target_include_directories(test_dp_verify_checkpoint PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_checkpoint_crash
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_crash.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:test_dp_verify_checkpoint>)
set_tests_properties(test_checkpoint_crash PROPERTIES TIMEOUT 600
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")

# Gradient buckets with --overlap-grad-reduce / --overlap-param-gather (issue
# 15): layouts against one rank, the logged layout against the analytic one,
# the trace of the overlap, bitwise resume, bad bucket sizes.
add_test(NAME test_overlap_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_overlap_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_overlap_e2e PROPERTIES TIMEOUT 600
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
