# Checkpoint integrity (issue 14): CRC32C itself, and byte mutations of a
# small checkpoint that must each load exactly or fail naming the file.
gpt3d_add_test(NAME test_crc32c SOURCES test_crc32c.c TIMEOUT 60)
gpt3d_add_test(NAME test_checkpoint_integrity SOURCES test_checkpoint_integrity.c TIMEOUT 120)
