# HuggingFaceTokenizer, TikTokenizer, NullTokenizer (data/tokenizer_hf*.c,
# data/tokenizer_tiktoken.c, data/tokenizer.c).
# test_tokenizer_files: hand-made files, bad input; needs nothing.
gpt3d_add_test(NAME test_tokenizer_files SOURCES test_tokenizer_files.c TIMEOUT 60)
