# tools/checkpoint_info end to end. The writer helper makes synthetic
# checkpoints (closed-form norms, gaps, overlaps) through the checkpoint API
# and reads the tool's --json output with cJSON.
add_executable(test_checkpoint_info_writer test_checkpoint_info_writer.c)
target_link_libraries(test_checkpoint_info_writer PRIVATE gpt3d)
add_test(NAME test_checkpoint_info
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_info.sh $<TARGET_FILE:pretrain_gpt>
          $<TARGET_FILE:preprocess_data> $<TARGET_FILE:checkpoint_info> ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:test_checkpoint_info_writer>)
set_tests_properties(test_checkpoint_info PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
