# tensor_parallel layers, mappings and the TP model's collectives, under
# mpirun with 4 ranks (TP = 1, 2 and 4 in one launch; see gpt3d_add_test).
gpt3d_add_test(NAME test_tensor_parallel
  SOURCES test_tensor_parallel.c test_tp_mappings.c RANKS 4 TIMEOUT 120)
gpt3d_add_test(NAME test_tp_model SOURCES test_tp_model.c RANKS 4 TIMEOUT 120)
