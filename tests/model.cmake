gpt3d_add_test(NAME test_model SOURCES test_model.c TIMEOUT 120)
# The start-up memory check: host memory sources and the model's plan.
gpt3d_add_test(NAME test_memory_plan SOURCES test_memory_plan.c TIMEOUT 60)
# Mixture of experts: router and combine gradients, the loss formulas,
# dropped tokens, a whole MoE model's gradient, the MoE parameter table.
gpt3d_add_test(NAME test_moe SOURCES test_moe.c TIMEOUT 120)
