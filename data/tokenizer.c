/* data/tokenizer.c — the public tokenizer API and the ByteTokenizer.
 *
 * ByteTokenizer: id b (0..255) is the byte b, id 256 is end-of-document,
 * vocab_size 257. Decoding renders EOD as "<|endoftext|>" (as GPT-2's
 * tokenizer does for its own EOD id), so generated text shows document
 * boundaries; ids outside the vocabulary (which a model's padded vocabulary
 * could in principle produce) are dropped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "data/tokenizer_internal.h"

#define BYTE_TOKENIZER_EOD 256
#define BYTE_TOKENIZER_VOCAB 257
#define EOD_TEXT "<|endoftext|>"

/* restrict: a char pointer may alias anything, and without it the compiler
 * will not vectorise the widening loop. */
static void widen_bytes(int32_t *restrict out, const unsigned char *restrict bytes, size_t len) {
    for (size_t i = 0; i < len; i++) out[i] = (int32_t)bytes[i];
}

static void byte_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                        size_t *count, size_t *cap) {
    (void)t;
    tokenizer_ids_reserve(ids, count, cap, len);
    widen_bytes(*ids + *count, (const unsigned char *)text, len);
    *count += len;
}

static char *byte_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    (void)t;
    size_t bytes = 1;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] >= 0 && ids[i] < 256) bytes += 1;
        else if (ids[i] == BYTE_TOKENIZER_EOD) bytes += strlen(EOD_TEXT);
    }
    char *text = xmalloc(bytes);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] >= 0 && ids[i] < 256) {
            text[n++] = (char)(unsigned char)ids[i];
        } else if (ids[i] == BYTE_TOKENIZER_EOD) {
            memcpy(text + n, EOD_TEXT, strlen(EOD_TEXT));
            n += strlen(EOD_TEXT);
        }
    }
    text[n] = '\0';
    return text;
}

Tokenizer *byte_tokenizer_create(void) {
    Tokenizer *t = xcalloc(1, sizeof *t);
    t->type_name = "ByteTokenizer";
    t->vocab_size = BYTE_TOKENIZER_VOCAB;
    t->eod = BYTE_TOKENIZER_EOD;
    t->encode = byte_encode;
    t->decode = byte_decode;
    t->destroy = NULL;
    t->impl = NULL;
    return t;
}

Tokenizer *tokenizer_create(const char *type, const char *vocab_file, const char *merge_file,
                            char *err, size_t err_size) {
    if (!type || !*type) {
        snprintf(err, err_size,
                 "--tokenizer-type is required: ByteTokenizer or GPT2BPETokenizer");
        return NULL;
    }
    if (strcmp(type, "ByteTokenizer") == 0) return byte_tokenizer_create();
    if (strcmp(type, "GPT2BPETokenizer") == 0) {
        if (!vocab_file || !*vocab_file || !merge_file || !*merge_file) {
            snprintf(err, err_size,
                     "--tokenizer-type GPT2BPETokenizer needs --vocab-file (GPT-2's vocab.json) "
                     "and --merge-file (GPT-2's merges.txt)");
            return NULL;
        }
        return gpt2_bpe_tokenizer_create(vocab_file, merge_file, err, err_size);
    }
    snprintf(err, err_size,
             "--tokenizer-type '%s' is not supported: use ByteTokenizer or GPT2BPETokenizer",
             type);
    return NULL;
}

bool tokenizer_builtin_vocabulary(const char *type, int64_t *vocab_size, int64_t *eod_token) {
    if (type && strcmp(type, "ByteTokenizer") == 0) {
        *vocab_size = BYTE_TOKENIZER_VOCAB;
        *eod_token = BYTE_TOKENIZER_EOD;
        return true;
    }
    if (type && strcmp(type, "GPT2BPETokenizer") == 0) { /* GPT-2's vocab.json: fixed */
        *vocab_size = 50257;
        *eod_token = 50256;
        return true;
    }
    return false;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    if (t->destroy) t->destroy(t->impl);
    free(t);
}

const char *tokenizer_type(const Tokenizer *t) { return t->type_name; }

int64_t tokenizer_vocab_size(const Tokenizer *t) { return t->vocab_size; }

int32_t tokenizer_eod(const Tokenizer *t) { return t->eod; }

void tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                      size_t *count, size_t *cap) {
    t->encode(t, text, len, ids, count, cap);
}

char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    return t->decode(t, ids, count);
}
