/* data/bpe_core.h — the byte-pair-encoding machinery that every BPE tokenizer
 * of data/ shares (private to data/): GPT2BPETokenizer, the byte-level and
 * SentencePiece-style models of HuggingFaceTokenizer, and TikTokenizer.
 *
 * Contract.
 * - Symbols are token ids. A merge table maps an adjacent pair (left id,
 *   right id) to its rank and the id it merges into; bpe_merge() applies the
 *   merges by rank in GPT-2's order or in Hugging Face's and tiktoken's
 *   (BpeOrder).
 * - A ByteIndex maps byte strings to ids; it does not own the keys.
 * - A PieceCache maps a pre-token's bytes to its ids, shared by all threads
 *   without locks (see bpe_core.c); everything else here is read-only after
 *   loading, so encoding may run concurrently on one tokenizer.
 * - Text is cut into maximal valid UTF-8 runs (bpe_valid_utf8_prefix), which
 *   the regex pre-tokenizers take as their whole subject with PCRE2's own
 *   UTF check off; what a tokenizer does with an invalid byte is its own
 *   documented choice. */
#ifndef GPT3D_DATA_BPE_CORE_H
#define GPT3D_DATA_BPE_CORE_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer_internal.h"

#define BPE_NO_RANK UINT32_MAX

/* ----------------------------------------------------------- hashing */

uint64_t bpe_hash_bytes(const unsigned char *p, size_t n);

/* --------------------------------------------------- byte string -> id */

typedef struct {
    const char *key; /* NULL = empty slot; not owned */
    size_t len;
    int32_t id;
} ByteIndexSlot;

typedef struct {
    ByteIndexSlot *slots;
    size_t mask;
} ByteIndex;

void byte_index_init(ByteIndex *v, size_t entries);
void byte_index_free(ByteIndex *v);
/* Adds key -> id; false (and nothing changed) when key is already there. */
bool byte_index_add(ByteIndex *v, const char *key, size_t len, int32_t id);
/* The id of key, -1 when absent. */
int32_t byte_index_find(const ByteIndex *v, const char *key, size_t len);

/* ------------------------------------------------------- merge ranks */

typedef struct {
    uint64_t pair; /* left id << 32 | right id; UINT64_MAX when unused */
    uint32_t rank;
    int32_t merged;
} MergeSlot;

typedef struct {
    MergeSlot *slots;
    size_t mask;
} MergeTable;

void merge_table_init(MergeTable *m, size_t entries);
void merge_table_free(MergeTable *m);
/* Sets the pair's rank and result; a pair given again keeps the last rank
 * (as Python's dict(zip(...)) in encoder.py does). */
void merge_table_set(MergeTable *m, int32_t left, int32_t right, uint32_t rank, int32_t merged);
/* Sets the pair only when it has no rank yet or a higher one (tiktoken: a
 * merged string's rank holds for every way of splitting it). */
void merge_table_set_min(MergeTable *m, int32_t left, int32_t right, uint32_t rank,
                         int32_t merged);
/* Rank of the adjacent pair, BPE_NO_RANK when it never merges. */
uint32_t merge_table_rank(const MergeTable *m, int32_t left, int32_t right, int32_t *merged);

/* The order merges apply in. They differ only when a merge makes a pair
 * that ranks below the pair just merged: a merge list learned in order never
 * has one, but tiktoken's ranks and merge lists converted from them (Llama
 * 3's) are not learned merges, so each tokenizer uses its reference's order
 * (on 2 MB of the Python docs the two orders happen to agree;
 * test_tokenizer_files pins the difference). */
typedef enum {
    BPE_ROUNDS,       /* GPT-2's encoder.py: every occurrence of the best pair, then look again */
    BPE_LOWEST_FIRST, /* Hugging Face and tiktoken: one merge at a time, the lowest-ranked
                         pair, the leftmost of equals */
} BpeOrder;

/* Merges the symbols sym[0, n) in place; returns how many remain. */
size_t bpe_merge(const MergeTable *m, int32_t *sym, size_t n, BpeOrder order);

/* ------------------------------------------------------------ the cache */

typedef struct {
    _Atomic(void *) *slots;
    char pad_before[64]; /* keep the counter off the line readers load */
    atomic_size_t entries;
    char pad_after[64];
} PieceCache;

void piece_cache_init(PieceCache *c);
void piece_cache_destroy(PieceCache *c);
/* Appends the cached ids of piece to *ids and returns true, or returns false. */
bool piece_cache_lookup(const PieceCache *c, uint64_t hash, const unsigned char *piece, size_t len,
                        int32_t **ids, size_t *count, size_t *cap);
void piece_cache_insert(PieceCache *c, uint64_t hash, const unsigned char *piece, size_t len,
                        const int32_t *ids, size_t num_ids);

/* ---------------------------------------------------- byte-level models */

/* Byte-level code points are 0..323: bytes kept as themselves, or 256 + n. */
#define BYTE_ALPHABET_SIZE 324

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
 * are shifted to 256 + n in byte order, so every byte is a visible char. */
void byte_alphabet(uint16_t byte_to_cp[256], int16_t cp_to_byte[BYTE_ALPHABET_SIZE]);
/* Raw bytes of one byte-level token string (written to out, which has room
 * for strlen(token) bytes); characters outside the alphabet stay as UTF-8. */
size_t byte_level_token_bytes(const char *token, size_t len,
                              const int16_t cp_to_byte[BYTE_ALPHABET_SIZE], char *out);
/* The UTF-8 form of byte b's alphabet character; returns its length (1-2). */
size_t byte_level_char(const uint16_t byte_to_cp[256], int b, char out[2]);

/* A byte-level BPE model: a pre-token's bytes start as the ids of its single
 * bytes, merge by rank, and the result is cached. With `whole` set (Hugging
 * Face's ignore_merges), a pre-token that is itself a token is that token. */
typedef struct {
    int32_t byte_id[256];
    MergeTable merges;
    BpeOrder order;
    const ByteIndex *whole; /* raw token bytes -> id, or NULL */
    PieceCache cache;
} ByteLevelBpe;

void byte_level_bpe_init(ByteLevelBpe *b);
void byte_level_bpe_destroy(ByteLevelBpe *b);
void byte_level_bpe_encode(ByteLevelBpe *b, const unsigned char *piece, size_t len, int32_t **ids,
                           size_t *count, size_t *cap);

/* ------------------------------------------------ regex pre-tokenizers */

typedef struct {
    pcre2_code *code;
    bool jit;
} PreTokenizerRegex;

/* Appends the ids of s[0, len) under a byte-level model: each maximal valid
 * UTF-8 run is cut into pieces by `regex` (one piece when it is NULL) and
 * each piece merged; a byte outside any valid sequence is its own byte
 * token. md: match data for regex (NULL without one). */
void byte_level_encode_text(ByteLevelBpe *b, const PreTokenizerRegex *regex,
                            const unsigned char *s, size_t len, pcre2_match_data *md,
                            int32_t **ids, size_t *count, size_t *cap);

/* Compiles a pattern for UTF-8 text with Unicode properties, \s and \S as
 * Unicode White_Space; false and a message naming `owner` (the flag or
 * file) when PCRE2 refuses it. */
bool pretokenizer_regex_compile(PreTokenizerRegex *r, const char *pattern, const char *owner,
                                char *err, size_t err_size);
void pretokenizer_regex_free(PreTokenizerRegex *r);

typedef void (*PieceFn)(void *ctx, const unsigned char *piece, size_t len);

/* Cuts one valid UTF-8 run into the regex's matches and the gaps between
 * them (Hugging Face's Split with the Isolated behaviour; for GPT-2-like
 * patterns, which match at every position, there are no gaps) and calls
 * `piece` on each in order. `md` is the caller's match data. */
void pretokenizer_regex_split(const PreTokenizerRegex *r, const unsigned char *run, size_t len,
                              pcre2_match_data *md, PieceFn piece, void *ctx);

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the longest valid UTF-8 prefix of s[0, n) (RFC 3629: no
 * overlongs, surrogates or code points above U+10FFFF). */
size_t bpe_valid_utf8_prefix(const unsigned char *s, size_t n);

/* Length of the UTF-8 character starting with byte c (valid text). */
static inline size_t utf8_char_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* The bytes of ids (id i is bytes[offsets[i], offsets[i+1]); ids outside
 * [0, vocab_size) give nothing), NUL-terminated, malloc'd; *len (when not
 * NULL) gets their number, which counts any NUL bytes among them. */
char *decode_by_table(const char *bytes, const size_t *offsets, int64_t vocab_size,
                      const int32_t *ids, size_t count, size_t *len);

/* ---------------------------------------------------------------- files */

/* The whole file, NUL-terminated; NULL and "cannot open FLAG 'path': why". */
char *bpe_read_file(const char *path, const char *flag, size_t *len, char *err, size_t err_size);

static inline void ids_append(int32_t **ids, size_t *count, size_t *cap, const int32_t *src,
                              size_t n) {
    tokenizer_ids_reserve(ids, count, cap, n);
    for (size_t i = 0; i < n; i++) (*ids)[*count + i] = src[i];
    *count += n;
}

#endif
