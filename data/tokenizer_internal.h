/* data/tokenizer_internal.h — how a tokenizer implementation plugs into the
 * public Tokenizer API of data/data.h (private to data/).
 *
 * Contract.
 * - A Tokenizer is a small vtable. An implementation's create function
 *   allocates the struct with xmalloc/xcalloc, fills every field and returns
 *   it; tokenizer_free() calls `destroy(impl)` (when non-NULL) and then frees
 *   the struct itself, so `destroy` frees only what `impl` owns.
 * - `type_name` is a string with static storage ("ByteTokenizer",
 *   "GPT2BPETokenizer", ...: Megatron's --tokenizer-type names); it is what
 *   shards record as tokenizer_type.
 * - `encode` has tokenizer_encode's exact contract: append the ids of
 *   text[0, len) to *ids, growing it with xrealloc (*count = ids used,
 *   *cap = ids allocated; *ids may be NULL with *cap == 0). `text` is not
 *   NUL-terminated. It must be safe to call concurrently on one tokenizer
 *   (preprocess_data's workers share one), so it must not mutate `impl`
 *   without its own locking.
 * - `decode` has tokenizer_decode's contract: a NUL-terminated malloc'd
 *   string of the bytes the ids stand for; the caller frees it.
 * - The creators return NULL and a message in err (naming the file and the
 *   fix) on bad input; they never exit. */
#ifndef GPT3D_DATA_TOKENIZER_INTERNAL_H
#define GPT3D_DATA_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "data/data.h"

typedef void (*TokenizerEncodeFn)(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                                  size_t *count, size_t *cap);
typedef char *(*TokenizerDecodeFn)(const Tokenizer *t, const int32_t *ids, size_t count);
typedef void (*TokenizerDestroyFn)(void *impl);

struct Tokenizer {
    const char *type_name;
    int64_t vocab_size;
    int32_t eod;
    TokenizerEncodeFn encode;
    TokenizerDecodeFn decode;
    TokenizerDestroyFn destroy; /* frees impl; may be NULL */
    void *impl;
};

/* Makes room for `extra` more ids in a growing id array (amortised doubling). */
static inline void tokenizer_ids_reserve(int32_t **ids, size_t *count, size_t *cap, size_t extra) {
    if (*count + extra <= *cap) return;
    size_t want = *cap ? *cap : 64;
    while (want < *count + extra) want *= 2;
    *ids = xrealloc(*ids, want * sizeof **ids);
    *cap = want;
}

static inline void tokenizer_ids_push(int32_t **ids, size_t *count, size_t *cap, int32_t id) {
    tokenizer_ids_reserve(ids, count, cap, 1);
    (*ids)[(*count)++] = id;
}

/* Implemented in data/tokenizer_gpt2.c. */
Tokenizer *gpt2_bpe_tokenizer_create(const char *vocab_file, const char *merge_file, char *err,
                                     size_t err_size);

/* Implemented in data/tokenizer_hf.c. */
Tokenizer *hf_tokenizer_create(const char *path, char *err, size_t err_size);

/* Implemented in data/tokenizer_tiktoken.c. */
Tokenizer *tiktoken_tokenizer_create(const TokenizerOptions *o, char *err, size_t err_size);

/* Implemented in data/tokenizer.c. */
Tokenizer *byte_tokenizer_create(void);

#endif
