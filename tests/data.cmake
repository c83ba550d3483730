# data module: token shards, tokenizers, GPT dataset indices, preprocess_data.
gpt3d_add_test(NAME test_data_shard SOURCES test_data_shard.c TIMEOUT 120)
gpt3d_add_test(NAME test_data_tokenizer SOURCES test_data_tokenizer.c TIMEOUT 60)
gpt3d_add_test(NAME test_data_dataset SOURCES test_data_dataset.c TIMEOUT 120)
# The tool under test is passed by path so the test runs the built binary.
gpt3d_add_test(NAME test_preprocess_data SOURCES test_preprocess_data.c TIMEOUT 120
  ARGS $<TARGET_FILE:preprocess_data>)
# Blends, --data-path parsing and per-split paths (data/blended_dataset.c, data/data_path.c).
gpt3d_add_test(NAME test_data_blend SOURCES test_data_blend.c TIMEOUT 120)
# The index cache under --data-cache-path (data/index_cache.c).
gpt3d_add_test(NAME test_data_index_cache SOURCES test_data_index_cache.c TIMEOUT 120)
# tools/inspect_shard, run by path; GPT-2 decoding is checked when the bpe tests have
# fetched the vocabulary into the build tree.
gpt3d_add_test(NAME test_data_inspect_shard SOURCES test_data_inspect_shard.c TIMEOUT 60
  ARGS $<TARGET_FILE:inspect_shard> ${CMAKE_BINARY_DIR}/gpt2-vocab)
