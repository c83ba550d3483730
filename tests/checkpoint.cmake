gpt3d_add_test(NAME test_checkpoint SOURCES test_checkpoint.c TIMEOUT 120)
