# GPT2BPETokenizer (data/tokenizer_gpt2.c).
# test_tokenizer_gpt2: ids against GPT-2's reference encoder; the vocabulary
# and the JavaScript encoder are fetched once with npm into the build tree (or
# the files are taken from $GPT3D_GPT2_VOCAB_DIR). Without npm, node, the
# download or the Python docs it fails; GPT3D_ALLOW_MISSING_PREREQS=1 makes
# that a skip with the reason (tests/test_gpt2_prereq.h says why).
gpt3d_add_test(NAME test_tokenizer_gpt2 SOURCES test_tokenizer_gpt2.c TIMEOUT 180
  ARGS ${CMAKE_BINARY_DIR}/gpt2-vocab
       ${CMAKE_SOURCE_DIR}/tools/fetch_gpt2_vocab.sh
       ${CMAKE_CURRENT_SOURCE_DIR}/gpt2_reference.js
       /usr/share/doc/python3.11/html/_sources)
# test_data_inspect_shard fetches into the same directory.
set_tests_properties(test_tokenizer_gpt2 PROPERTIES RESOURCE_LOCK gpt2_vocab_dir)
# test_tokenizer_gpt2_files: malformed and hand-made vocab/merge files.
gpt3d_add_test(NAME test_tokenizer_gpt2_files SOURCES test_tokenizer_gpt2_files.c TIMEOUT 60)
