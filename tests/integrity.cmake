# Checkpoint integrity (issue 14): CRC32C itself, and byte mutations of a
# small checkpoint that must each load exactly or fail naming the file.
gpt3d_add_test(NAME test_crc32c SOURCES test_crc32c.c TIMEOUT 60)
gpt3d_add_test(NAME test_checkpoint_integrity SOURCES test_checkpoint_integrity.c TIMEOUT 120)
# Raw O_DIRECT and buffered reads of dataset bytes (checkpoint/checkpoint_raw.c).
gpt3d_add_test(NAME test_checkpoint_raw SOURCES test_checkpoint_raw.c TIMEOUT 120)
add_test(NAME test_checkpoint_integrity_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_integrity.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:checkpoint_info> $<TARGET_FILE:test_checkpoint_integrity>)
set_tests_properties(test_checkpoint_integrity_e2e PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
