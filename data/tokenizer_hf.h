/* data/tokenizer_hf.h — HuggingFaceTokenizer's model, shared by its loader
 * (tokenizer_hf.c, which reads tokenizer.json) and its encoder
 * (tokenizer_hf_encode.c); private to data/.
 *
 * Two families of BPE tokenizer.json are understood, each step as Hugging
 * Face's `tokenizers` runs it (added tokens cut out first, then per segment:
 * normalizer, pre-tokenizer, BPE model; post-processor around it all):
 * - byte-level (GPT-2, Llama 3, Qwen 2 with its NFC normalizer, by ICU):
 *   pre-tokenizer ByteLevel, alone (GPT-2's regex when use_regex) or after a
 *   Split regex (Isolated); each pre-token's bytes merge from the 256 byte
 *   tokens;
 * - character-level (Llama 2, Mistral; SentencePiece converted): normalizer
 *   Prepend "▁" + Replace " " -> "▁", or the Metaspace pre-tokenizer; each
 *   word's characters merge, a character missing from the vocabulary becomes
 *   its <0xXX> byte tokens (byte_fallback) or the unk token. */
#ifndef GPT3D_DATA_TOKENIZER_HF_H
#define GPT3D_DATA_TOKENIZER_HF_H

#include "data/added_tokens.h"
#include "data/bpe_core.h"

#define HF_MAX_TEMPLATE 8

typedef struct {
    bool byte_level;
    /* byte-level */
    ByteLevelBpe bpe;         /* byte ids and merges (merges also for character-level) */
    ByteIndex whole;          /* raw token bytes -> id, for ignore_merges */
    char *whole_keys;         /* the raw bytes of every vocabulary token */
    bool ignore_merges;
    PreTokenizerRegex split;  /* Split's or GPT-2's pattern */
    bool has_split;
    bool add_prefix_space;    /* ByteLevel's, per segment */
    /* character-level */
    ByteIndex pieces;         /* token string -> id; keys in token_text */
    char *token_text;         /* every vocabulary token string, concatenated */
    int32_t byte_token[256];  /* <0xXX> ids, -1 when the vocabulary lacks one */
    bool byte_fallback;
    int32_t unk;              /* -1: none */
    bool fuse_unk;
    bool prepend;             /* "▁" before each segment (Prepend / Metaspace always) */
    bool prepend_first_only;  /* Metaspace prepend_scheme "first" */
    bool prepend_if_missing;  /* Metaspace: not before a segment that starts with "▁" */
    bool replace_space;       /* " " -> "▁" */
    bool split_words;         /* Metaspace split: a word starts at each "▁" */
    bool cut_at_meta;         /* no token spans "x▁" (x not "▁"): words may be cut there */
    /* both */
    bool nfc;                 /* normalizer NFC (Qwen 2), before everything else */
    AddedTokens added;
    int32_t prefix[HF_MAX_TEMPLATE], suffix[HF_MAX_TEMPLATE]; /* post-processor ids */
    int num_prefix, num_suffix;
    int64_t vocab_size;
    char *decode_bytes;       /* each id's bytes for decoding, concatenated */
    size_t *decode_offsets;   /* id i is [offsets[i], offsets[i+1]) */
    bool strip_leading_space; /* decoder drops the first "▁"'s space */
} HfTokenizer;

void hf_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *count,
               size_t *cap);
char *hf_decode(const Tokenizer *t, const int32_t *ids, size_t count);

#endif
