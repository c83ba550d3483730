/* data/tokenizer_flags.h — the tokenizer flags every program shares, as rows
 * of its FlagSpec table that point into a TokenizerOptions member of its
 * options struct (so each flag's help is written once):
 *   static const FlagSpec FLAGS[] = {
 *       {"tokenizer-type", FLAG_STRING, offsetof(Options, tok.tokenizer_type), ...},
 *       TOKENIZER_FILE_FLAGS(Options, tok, "tokenizer"),
 *       TOKENIZER_VOCAB_SIZE_FLAG(Options, tok, "tokenizer"),
 *   };
 * --tokenizer-type itself stays with each program: whether it is required
 * and what its absence means differ. */
#ifndef GPT3D_DATA_TOKENIZER_FLAGS_H
#define GPT3D_DATA_TOKENIZER_FLAGS_H

#include <stddef.h>

#include "core/flags.h"
#include "data/data.h"

#define TOKENIZER_FILE_FLAGS(Struct, member, group)                                              \
    {"vocab-file", FLAG_STRING, offsetof(Struct, member.vocab_file), NULL, "PATH",               \
     "GPT-2's vocab.json (GPT2BPETokenizer)", group, false},                                     \
    {"merge-file", FLAG_STRING, offsetof(Struct, member.merge_file), NULL, "PATH",               \
     "GPT-2's merges.txt (GPT2BPETokenizer)", group, false},                                     \
    {"tokenizer-model", FLAG_STRING, offsetof(Struct, member.tokenizer_model), NULL, "PATH",     \
     "HuggingFaceTokenizer: a BPE tokenizer.json (the eos_token of a tokenizer_config.json "     \
     "beside it is the end-of-document token); TikTokenizer: a ranks file (.tiktoken, or "       \
     "Megatron's tiktoken JSON)",                                                                \
     group, false},                                                                              \
    {"tiktoken-pattern", FLAG_STRING, offsetof(Struct, member.tiktoken_pattern), "v2", "v1|v2",  \
     "TikTokenizer: Megatron's pre-tokenizer pattern", group, false},                            \
    {"tiktoken-num-special-tokens", FLAG_INT,                                                    \
     offsetof(Struct, member.tiktoken_num_special_tokens), "1000", "N",                          \
     "TikTokenizer: ids 0..N-1 are special tokens (<unk> <s> </s> <mask> <pad> <cls> <sep> "     \
     "<SPECIAL_7>...); rank r is id r + N",                                                      \
     group, false}

#define TOKENIZER_VOCAB_SIZE_FLAG(Struct, member, group)                                         \
    {"vocab-size", FLAG_INT64, offsetof(Struct, member.vocab_size), NULL, "N",                   \
     "NullTokenizer: the vocabulary size (end of document = N - 1); TikTokenizer: keep the "     \
     "first N - num-special-tokens ranks (default: all of the file)",                            \
     group, false}

#endif
