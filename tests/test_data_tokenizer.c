/* The tokenizer API: ByteTokenizer ids are the bytes (EOD 256), encoding
 * appends to a growing array, decoding inverts it and shows EOD as
 * "<|endoftext|>", and tokenizer_create names the flag to fix on bad input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "test_util.h"

static void byte_tokenizer(void) {
    char err[512];
    Tokenizer *t = tokenizer_create("ByteTokenizer", NULL, NULL, err, sizeof err);
    CHECK_MSG(t, "%s", err);
    CHECK(strcmp(tokenizer_type(t), "ByteTokenizer") == 0);
    CHECK(tokenizer_vocab_size(t) == 257);
    CHECK(tokenizer_eod(t) == 256);

    /* All 256 byte values, NUL included (the length, not a terminator, counts). */
    char bytes[256];
    for (int i = 0; i < 256; i++) bytes[i] = (char)(unsigned char)i;
    int32_t *ids = NULL;
    size_t count = 0, cap = 0;
    tokenizer_encode(t, "ab", 2, &ids, &count, &cap);
    tokenizer_encode(t, bytes, 256, &ids, &count, &cap); /* appends */
    CHECK(count == 258 && cap >= count);
    CHECK(ids[0] == 'a' && ids[1] == 'b');
    for (int i = 0; i < 256; i++) CHECK(ids[2 + i] == i);
    tokenizer_encode(t, "", 0, &ids, &count, &cap);
    CHECK(count == 258);

    /* UTF-8 text becomes its bytes. */
    count = 0;
    tokenizer_encode(t, "\xc3\xa9", 2, &ids, &count, &cap);
    CHECK(count == 2 && ids[0] == 0xC3 && ids[1] == 0xA9);

    int32_t doc[] = {'h', 'i', 256, 'y', 0xC3, 0xA9, 300, -1};
    char *text = tokenizer_decode(t, doc, sizeof doc / sizeof doc[0]);
    CHECK_MSG(strcmp(text, "hi<|endoftext|>y\xc3\xa9") == 0, "decoded '%s'", text);
    free(text);
    text = tokenizer_decode(t, NULL, 0);
    CHECK(text && text[0] == '\0');
    free(text);
    free(ids);
    tokenizer_free(t);
}

/* Each bad input gets its own message: the buffer is overwritten with a
 * sentinel before every call, so a check can only pass on text that call wrote
 * (a message left over from the previous case would otherwise satisfy it). */
static const char *create_error(const char *type, const char *vocab, const char *merges,
                                char *err, size_t err_size) {
    snprintf(err, err_size, "(tokenizer_create wrote no message)");
    Tokenizer *t = tokenizer_create(type, vocab, merges, err, err_size);
    CHECK_MSG(!t, "tokenizer_create accepted type '%s'", type ? type : "(null)");
    tokenizer_free(t);
    return err;
}

static void create_errors(void) {
    char err[512];
    const char *m = create_error("SentencePiece", NULL, NULL, err, sizeof err);
    CHECK_MSG(strstr(m, "--tokenizer-type 'SentencePiece' is not supported"), "got '%s'", m);
    m = create_error(NULL, NULL, NULL, err, sizeof err);
    CHECK_MSG(strstr(m, "--tokenizer-type is required"), "got '%s'", m);
    m = create_error("", NULL, NULL, err, sizeof err);
    CHECK_MSG(strstr(m, "--tokenizer-type is required"), "got '%s'", m);
    /* Missing either file names both flags, so one message fits both cases. */
    m = create_error("GPT2BPETokenizer", NULL, "merges.txt", err, sizeof err);
    CHECK_MSG(strstr(m, "GPT2BPETokenizer needs --vocab-file") && strstr(m, "--merge-file"),
              "got '%s'", m);
    m = create_error("GPT2BPETokenizer", "vocab.json", "", err, sizeof err);
    CHECK_MSG(strstr(m, "GPT2BPETokenizer needs --vocab-file") && strstr(m, "--merge-file"),
              "got '%s'", m);
    tokenizer_free(NULL);
}

int main(void) {
    byte_tokenizer();
    create_errors();
    printf("test_data_tokenizer: ok\n");
    return 0;
}
