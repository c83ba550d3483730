# The comparison helpers every numeric test uses (tests/test_compare.h,
# test_backend_util.h, test_tp_util.h): planted NaN, inf and small errors
# must each fail.
gpt3d_add_test(NAME test_compare_helpers SOURCES test_compare_helpers.c TIMEOUT 60)
