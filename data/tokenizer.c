/* data/tokenizer.c — the public tokenizer API, the ByteTokenizer and the
 * NullTokenizer.
 *
 * ByteTokenizer: id b (0..255) is the byte b, id 256 is end-of-document,
 * vocab_size 257. Decoding renders EOD as "<|endoftext|>" (as GPT-2's
 * tokenizer does for its own EOD id), so generated text shows document
 * boundaries; ids outside the vocabulary (which a model's padded vocabulary
 * could in principle produce) are dropped. */
#include <ctype.h>
#include <stdbool.h>
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

/* ---------------------------------------------------------- NullTokenizer */

/* Megatron's NullTokenizer: the text is already token ids, separated by
 * spaces (here any ASCII whitespace); EOD is vocab_size - 1. A word that is
 * not an id of the vocabulary stops the program with one message: there is
 * no sensible id to put in its place. */
static void null_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                        size_t *count, size_t *cap) {
    for (size_t i = 0; i < len;) {
        if (isspace((unsigned char)text[i])) {
            i++;
            continue;
        }
        size_t begin = i;
        int64_t value = 0;
        bool digits = true;
        for (; i < len && !isspace((unsigned char)text[i]); i++) {
            digits = digits && isdigit((unsigned char)text[i]);
            if (digits && value <= t->vocab_size) value = value * 10 + (text[i] - '0');
        }
        if (!digits || value >= t->vocab_size)
            gpt3d_fail_user("NullTokenizer: \"%.*s\" is not a token id in [0, %lld); its text "
                            "must be whitespace-separated ids below --vocab-size",
                            (int)(i - begin < 40 ? i - begin : 40), text + begin,
                            (long long)t->vocab_size);
        tokenizer_ids_push(ids, count, cap, (int32_t)value);
    }
}

static char *null_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    (void)t;
    char *text = xmalloc(12 * count + 1);
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        n += (size_t)sprintf(text + n, i ? " %d" : "%d", ids[i]);
    text[n] = '\0';
    return text;
}

static Tokenizer *null_tokenizer_create(int64_t vocab_size, char *err, size_t err_size) {
    if (vocab_size < 1 || vocab_size > INT32_MAX) {
        snprintf(err, err_size,
                 "--tokenizer-type NullTokenizer needs --vocab-size N (1 <= N < 2^31; "
                 "got %lld); the end-of-document id is N - 1",
                 (long long)vocab_size);
        return NULL;
    }
    Tokenizer *t = xcalloc(1, sizeof *t);
    *t = (Tokenizer){.type_name = "NullTokenizer",
                     .vocab_size = vocab_size,
                     .eod = (int32_t)(vocab_size - 1),
                     .encode = null_encode,
                     .decode = null_decode};
    return t;
}

/* ------------------------------------------------------------ the factory */

bool tokenizer_type_known(const char *type) {
    static const char *const known[] = {"ByteTokenizer", "GPT2BPETokenizer",
                                        "HuggingFaceTokenizer", "TikTokenizer", "NullTokenizer"};
    for (size_t i = 0; type && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(type, known[i]) == 0) return true;
    return false;
}

Tokenizer *tokenizer_open(const TokenizerOptions *o, char *err, size_t err_size) {
    const char *type = o->tokenizer_type;
    if (!type || !*type) {
        snprintf(err, err_size, "--tokenizer-type is required: " TOKENIZER_TYPES);
        return NULL;
    }
    if (strcmp(type, "ByteTokenizer") == 0) return byte_tokenizer_create();
    if (strcmp(type, "GPT2BPETokenizer") == 0) {
        if (!o->vocab_file || !*o->vocab_file || !o->merge_file || !*o->merge_file) {
            snprintf(err, err_size,
                     "--tokenizer-type GPT2BPETokenizer needs --vocab-file (GPT-2's vocab.json) "
                     "and --merge-file (GPT-2's merges.txt)");
            return NULL;
        }
        return gpt2_bpe_tokenizer_create(o->vocab_file, o->merge_file, err, err_size);
    }
    if (strcmp(type, "HuggingFaceTokenizer") == 0)
        return hf_tokenizer_create(o->tokenizer_model, err, err_size);
    if (strcmp(type, "TikTokenizer") == 0) return tiktoken_tokenizer_create(o, err, err_size);
    if (strcmp(type, "NullTokenizer") == 0)
        return null_tokenizer_create(o->vocab_size, err, err_size);
    snprintf(err, err_size, "--tokenizer-type '%s' is not supported: use " TOKENIZER_TYPES, type);
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

Tokenizer *tokenizer_create(const char *type, const char *vocab_file, const char *merge_file,
                            char *err, size_t err_size) {
    TokenizerOptions o = {.tokenizer_type = (char *)type,
                          .vocab_file = (char *)vocab_file,
                          .merge_file = (char *)merge_file};
    return tokenizer_open(&o, err, err_size);
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
