# data module: token shards, tokenizers, GPT dataset indices, preprocess_data.
gpt3d_add_test(NAME test_data_shard SOURCES test_data_shard.c TIMEOUT 120)
gpt3d_add_test(NAME test_data_tokenizer SOURCES test_data_tokenizer.c TIMEOUT 60)
gpt3d_add_test(NAME test_data_dataset SOURCES test_data_dataset.c TIMEOUT 120)
# The tool under test is passed by path so the test runs the built binary.
gpt3d_add_test(NAME test_preprocess_data SOURCES test_preprocess_data.c TIMEOUT 120
  ARGS $<TARGET_FILE:preprocess_data>)
