/* data/added_tokens.h — finding added / special tokens in text (private to
 * data/): Hugging Face's added_tokens and tiktoken's special tokens are cut
 * out of the text before any pre-tokenization, and the text between them is
 * tokenized on its own.
 *
 * Contract: a set of (content bytes, id). added_tokens_next() finds the
 * leftmost occurrence of any of them at or after `from`, and at that
 * position the longest (Hugging Face's aho-corasick LeftmostLongest, which
 * is also what tiktoken's alternation of specials gives for these token
 * sets). Contents are copied; the set is read-only once built, so lookups
 * may run concurrently. */
#ifndef GPT3D_DATA_ADDED_TOKENS_H
#define GPT3D_DATA_ADDED_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/bpe_core.h"

typedef struct {
    ByteIndex index;      /* content -> id; keys point into `contents` */
    char *contents;       /* every content, concatenated */
    size_t used, cap;     /* of contents */
    size_t *lengths;      /* distinct content lengths, longest first */
    size_t num_lengths;
    size_t count;         /* tokens added */
    bool first[256];      /* bytes some content starts with */
    uint8_t *second;      /* 65536-bit set of first two bytes */
    size_t *pending_offsets, *pending_lengths; /* while building */
    int32_t *pending_ids;
    size_t pending_cap;
} AddedTokens;

void added_tokens_init(AddedTokens *a);
void added_tokens_free(AddedTokens *a);
/* Adds one token (an empty content is ignored); a content given twice keeps
 * its first id. Call added_tokens_finish() after the last. */
void added_tokens_add(AddedTokens *a, const char *content, size_t len, int32_t id);
void added_tokens_finish(AddedTokens *a);
/* Next occurrence in s[from, len): true with its position, length and id. */
bool added_tokens_next(const AddedTokens *a, const unsigned char *s, size_t len, size_t from,
                       size_t *at, size_t *match_len, int32_t *id);

#endif
