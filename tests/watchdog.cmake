# The collective watchdog (--distributed-timeout-minutes, issue 14): the
# deadline decision and the report, late ranks within the limit, and a rank
# that never arrives in time stopping the job with the report.
gpt3d_add_test(NAME test_watchdog SOURCES test_watchdog.c RANKS 2 TIMEOUT 60
  ARGS unit straggler)
add_test(NAME test_watchdog_stuck
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_watchdog.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:test_watchdog>)
set_tests_properties(test_watchdog_stuck PROPERTIES TIMEOUT 120
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# pretrain_gpt with a rank stopped for good (trips) and for 20 s under a
# longer limit (does not trip, same losses).
add_test(NAME test_watchdog_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_watchdog_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_watchdog_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
