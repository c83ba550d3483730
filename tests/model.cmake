gpt3d_add_test(NAME test_model SOURCES test_model.c TIMEOUT 120)
