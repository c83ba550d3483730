gpt3d_add_test(NAME test_model SOURCES test_model.c TIMEOUT 120)
# The start-up memory check: host memory sources and the model's plan.
gpt3d_add_test(NAME test_memory_plan SOURCES test_memory_plan.c TIMEOUT 60)
