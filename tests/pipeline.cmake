gpt3d_add_test(NAME test_pipeline_schedule SOURCES test_pipeline_schedule.c TIMEOUT 60)
add_test(NAME test_pipeline_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_pipeline_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_pipeline_e2e PROPERTIES TIMEOUT 300)
# The executor's nonblocking exchanges between real stages (2 and 4 ranks):
# every received message is what the neighbour computed for that micro-batch.
gpt3d_add_test(NAME test_pipeline_p2p SOURCES test_pipeline_p2p.c RANKS 2 TIMEOUT 60)
gpt3d_add_test(NAME test_pipeline_p2p_4 SOURCES test_pipeline_p2p.c RANKS 4 TIMEOUT 60)
# The layer split of every pipeline rank and chunk against Megatron's rules.
gpt3d_add_test(NAME test_layer_split SOURCES test_layer_split.c TIMEOUT 60)
# Uneven first/last stages and the embedding/loss counted in the split,
# against one rank, and their checkpoints resumed at other layouts.
add_test(NAME test_pipeline_uneven_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_pipeline_uneven_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_pipeline_uneven_e2e PROPERTIES TIMEOUT 300)
# The interleaved 1F1B plan against Megatron's order, and the rendezvous
# simulation of all ranks (no deadlock; a broken plan's deadlock found);
# with unit costs its clocks give the bubble of the 1F1B and interleaved
# plans, asserted equal to Megatron's (P-1)/(V M).
gpt3d_add_test(NAME test_pipeline_interleaved SOURCES test_pipeline_interleaved.c TIMEOUT 60)
# Interleaved 1F1B (virtual pipeline stages) against one rank, and its
# checkpoints resumed across V.
add_test(NAME test_pipeline_interleaved_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_pipeline_interleaved_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_pipeline_interleaved_e2e PROPERTIES TIMEOUT 400)
