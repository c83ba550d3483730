# data module: token shards, tokenizers, GPT dataset indices, preprocess_data.
gpt3d_add_test(NAME test_data_shard SOURCES test_data_shard.c TIMEOUT 120)
gpt3d_add_test(NAME test_data_tokenizer SOURCES test_data_tokenizer.c TIMEOUT 60)
gpt3d_add_test(NAME test_data_dataset SOURCES test_data_dataset.c TIMEOUT 120)
# Document masks (--eod-mask-loss, --reset-*) against Megatron's algorithm (data/document_masks.c).
gpt3d_add_test(NAME test_document_masks SOURCES test_document_masks.c TIMEOUT 60)
# The tool under test is passed by path so the test runs the built binary.
gpt3d_add_test(NAME test_preprocess_data SOURCES test_preprocess_data.c TIMEOUT 120
  ARGS $<TARGET_FILE:preprocess_data>)
# Blends, --data-path parsing and per-split paths (data/blended_dataset.c, data/data_path.c).
gpt3d_add_test(NAME test_data_blend SOURCES test_data_blend.c TIMEOUT 120)
# The index cache under --data-cache-path (data/index_cache.c).
gpt3d_add_test(NAME test_data_index_cache SOURCES test_data_index_cache.c TIMEOUT 120)
# tools/inspect_shard, run by path; GPT-2 decoding with the vocabulary that
# tools/fetch_gpt2_vocab.sh fetches into the build tree (a missing vocabulary
# fails the test: see tests/test_gpt2_prereq.h). The lock keeps it from
# fetching into the same directory as test_tokenizer_gpt2 at the same time.
gpt3d_add_test(NAME test_data_inspect_shard SOURCES test_data_inspect_shard.c TIMEOUT 180
  ARGS $<TARGET_FILE:inspect_shard> ${CMAKE_BINARY_DIR}/gpt2-vocab
       ${CMAKE_SOURCE_DIR}/tools/fetch_gpt2_vocab.sh)
set_tests_properties(test_data_inspect_shard PROPERTIES RESOURCE_LOCK gpt2_vocab_dir)
# A data read failing mid-step on 2 ranks: one error line, every rank non-zero, no save.
add_test(NAME test_data_read_failure
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_data_read_failure.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>)
set_tests_properties(test_data_read_failure PROPERTIES TIMEOUT 300
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
# Megatron .bin/.idx read in place, --data-path prefixes, --split quotes and
# --mock-data (data/megatron_dataset.c, data/document_source.c, data/data_path.c).
gpt3d_add_test(NAME test_data_megatron SOURCES test_data_megatron.c TIMEOUT 120)
# Training from a Megatron .bin/.idx read in place equals training from its
# conversion; a mixed-format blend; --mock-data at three layouts; prefix errors.
add_executable(write_megatron_fixture write_megatron_fixture.c)
target_link_libraries(write_megatron_fixture PRIVATE gpt3d)
target_include_directories(write_megatron_fixture PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_data_formats_e2e
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_data_formats_e2e.sh ${MPIEXEC_EXECUTABLE}
          $<TARGET_FILE:pretrain_gpt> $<TARGET_FILE:preprocess_data>
          $<TARGET_FILE:convert_megatron_dataset> $<TARGET_FILE:write_megatron_fixture>)
set_tests_properties(test_data_formats_e2e PROPERTIES TIMEOUT 600
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1")
