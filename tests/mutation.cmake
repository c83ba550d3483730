# The standing mutation check (tests/mutation/): each planted bug must be
# caught by the tests it names, and a comment-only change must survive.
# New features add a mutation for what they build. 47 patches take about
# 26 minutes on 2 cores (one scratch build, then each patch's tests).
add_test(NAME test_mutations
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mutation/run_mutations.sh ${CMAKE_SOURCE_DIR}
          --expect-survivor ${CMAKE_CURRENT_SOURCE_DIR}/mutation/selftest/comment_only.patch)
set_tests_properties(test_mutations PROPERTIES TIMEOUT 2400 ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
