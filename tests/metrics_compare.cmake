# The one comparison of two metrics logs that every end-to-end script uses
# (tests/e2e_common.sh finds it next to pretrain_gpt), and its own test: a
# NaN, an inf, a missing field and a 1e-5 difference must each fail.
add_executable(metrics_compare metrics_compare.c)
target_link_libraries(metrics_compare PRIVATE m)
set_target_properties(metrics_compare PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
add_test(NAME test_metrics_compare
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_metrics_compare.sh $<TARGET_FILE:metrics_compare>)
set_tests_properties(test_metrics_compare PROPERTIES TIMEOUT 60)
