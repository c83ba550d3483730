/* tests/test_tokenizer_gpt2_files.c — GPT2BPETokenizer on hand-made files.
 *
 * Needs no download: writes small byte-level vocabularies and merge lists to
 * a temporary directory and checks (1) that every kind of malformed
 * vocab.json / merges.txt is refused with a message naming the file and the
 * problem, and (2) encoder.py's BPE semantics where a shortcut would differ:
 * merges apply in rounds (all occurrences of the best pair before the pairs
 * they create), on short and long pieces, and a repeated merge keeps its last
 * rank. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* ------------------------------------------------- malformed and tiny files */

static void write_text(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(text, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

/* GPT-2's byte-level character for byte b, as UTF-8 (independent of the
 * implementation under test). */
static void byte_char(unsigned char b, char out[3]) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    unsigned cp = b;
    if (!printable) {
        cp = 256;
        for (int c = 0; c < b; c++)
            if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) cp++;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = '\0';
    }
}

/* A byte-level vocabulary: byte b has id b (except `omit_byte`), then the
 * extra tokens, then <|endoftext|> when asked. Returns the JSON text. */
static char *small_vocab_json(const char *const *extra, int num_extra, int omit_byte, bool eod) {
    cJSON *obj = cJSON_CreateObject();
    int id = 0;
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char((unsigned char)b, c);
        if (b != omit_byte) cJSON_AddNumberToObject(obj, c, id++);
    }
    for (int i = 0; i < num_extra; i++) cJSON_AddNumberToObject(obj, extra[i], id++);
    if (eod) cJSON_AddNumberToObject(obj, "<|endoftext|>", id++);
    char *json = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return json;
}

/* Expects creation to fail with a message naming `named` and `keyword`. */
static void expect_error(const char *vocab, const char *merges, const char *named,
                         const char *keyword) {
    char err[1024] = "";
    Tokenizer *t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    if (t || !strstr(err, named) || !strstr(err, keyword)) {
        fprintf(stderr, "expected an error naming '%s' with '%s', got %s: %s\n", named, keyword,
                t ? "a tokenizer" : "", err);
        exit(1);
    }
}

static void check_bad_files(const char *dir) {
    static const char *const extra[] = {"ab", "bc"};
    char vocab[4096], merges[4096], good_vocab[4096], good_merges[4096];
    snprintf(good_vocab, sizeof good_vocab, "%s/good.json", dir);
    snprintf(good_merges, sizeof good_merges, "%s/good.txt", dir);
    snprintf(vocab, sizeof vocab, "%s/bad.json", dir);
    snprintf(merges, sizeof merges, "%s/bad.txt", dir);
    char *json = small_vocab_json(extra, 2, -1, true);
    write_text(good_vocab, json, strlen(json));
    write_text(good_merges, "#version: 0.2\na b\nb c\n", 22);

    char missing[4096];
    snprintf(missing, sizeof missing, "%s/absent.json", dir);
    expect_error(missing, good_merges, missing, "--vocab-file");
    expect_error(good_vocab, missing, missing, "--merge-file");

    struct {
        const char *text;
        const char *keyword;
    } bad_vocab[] = {
        {"{not json", "not valid JSON"},     {"[1, 2]", "object"},
        {"{}", "object"},                    {",\"xyz\": 1.5}", "integer"},
        {",\"xyz\": \"7\"}", "integer"},     {",\"xyz\": -1}", "integer"},
        {",\"xyz\": 100000}", "integer"},    {",\"xyz\": 1e300}", "integer"},
        {",\"xyz\": 3}", "share id"},        {",\"ab\": 259}", "twice"},
    };
    for (size_t i = 0; i < sizeof bad_vocab / sizeof bad_vocab[0]; i++) {
        char text[65536];
        if (bad_vocab[i].text[0] == ',') /* appended to the good vocabulary */
            snprintf(text, sizeof text, "%.*s%s", (int)strlen(json) - 1, json, bad_vocab[i].text);
        else
            snprintf(text, sizeof text, "%s", bad_vocab[i].text);
        write_text(vocab, text, strlen(text));
        expect_error(vocab, good_merges, vocab, bad_vocab[i].keyword);
    }
    free(json);
    json = small_vocab_json(extra, 2, 'a', true);
    write_text(vocab, json, strlen(json));
    expect_error(vocab, good_merges, vocab, "no token for byte 0x61");
    free(json);
    json = small_vocab_json(extra, 2, -1, false);
    write_text(vocab, json, strlen(json));
    expect_error(vocab, good_merges, vocab, "<|endoftext|>");
    free(json);

    struct {
        const char *text;
        size_t len;
        const char *keyword;
    } bad_merges[] = {
        {"#version: 0.2\nab\n", 17, "line 2"},     /* no space */
        {"#version: 0.2\na b c\n", 20, "line 2"},  /* two spaces */
        {"#version: 0.2\na  b\n", 19, "line 2"},   /* empty token */
        {"#version: 0.2\na b\n b\n", 21, "line 3"}, /* empty left token */
        {"#version: 0.2\na q\n", 18, "not in the --vocab-file"}, /* "aq" is no token */
        {"#version: 0.2\na\0b\n", 18, "NUL"},
    };
    for (size_t i = 0; i < sizeof bad_merges / sizeof bad_merges[0]; i++) {
        write_text(merges, bad_merges[i].text, bad_merges[i].len);
        expect_error(good_vocab, merges, merges, bad_merges[i].keyword);
    }
    expect_error(good_vocab, "", "--merge-file", "--merge-file");
    printf("malformed files: all reported\n");
}

static void expect_ids(const Tokenizer *t, const char *text, const int32_t *want, size_t n) {
    int32_t *got = NULL;
    size_t count = 0, cap = 0;
    tokenizer_encode(t, text, strlen(text), &got, &count, &cap);
    if (count != n || memcmp(got, want, n * sizeof *want) != 0) {
        fprintf(stderr, "encoding \"%s\" gave unexpected ids\n", text);
        print_ids("expected", want, n);
        print_ids("got", got, count);
        exit(1);
    }
    free(got);
}

/* encoder.py semantics on hand-made merges, where a shortcut would differ. */
static void check_tiny_vocabularies(const char *dir) {
    static const char *const extra[] = {"ab", "aba", "bc"}; /* ids 256, 257, 258 */
    char vocab[4096], merges[4096], err[1024];
    snprintf(vocab, sizeof vocab, "%s/tiny.json", dir);
    snprintf(merges, sizeof merges, "%s/tiny.txt", dir);
    char *json = small_vocab_json(extra, 3, -1, true);
    write_text(vocab, json, strlen(json));
    free(json);

    /* (ab, a) ranks before (a, b): a round merges every (a, b) before the
     * new (ab, a) pairs are considered, so "abab" is ab|ab, not aba|b. */
    write_text(merges, "#version: 0.2\nab a\na b\n", 23);
    Tokenizer *t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    CHECK(t);
    CHECK(tokenizer_vocab_size(t) == 260 && tokenizer_eod(t) == 259);
    int32_t abab[40];
    for (int i = 0; i < 40; i++) abab[i] = 256;
    expect_ids(t, "abab", abab, 2);
    expect_ids(t, "aba", (const int32_t[]){257}, 1);
    char long_word[81]; /* 80 bytes: the heap-based path */
    for (int i = 0; i < 40; i++) memcpy(long_word + 2 * i, "ab", 2);
    long_word[80] = '\0';
    expect_ids(t, long_word, abab, 40);
    tokenizer_free(t);

    /* A repeated merge keeps its last rank (Python's dict(zip(...))), so
     * (b, c) outranks (a, b); no header line, CRLF line ends. */
    write_text(merges, "a b\r\nb c\r\na b\r\n", 15);
    t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    CHECK(t);
    expect_ids(t, "abc", (const int32_t[]){97, 258}, 2);
    expect_ids(t, "ab", (const int32_t[]){256}, 1);
    tokenizer_free(t);
    printf("tiny vocabularies: BPE rounds and repeated merges ok\n");
}


int main(void) {
    char dir[] = "/tmp/test_tokenizer_gpt2_files.XXXXXX";
    CHECK(mkdtemp(dir));
    check_bad_files(dir);
    check_tiny_vocabularies(dir);
    const char *const names[] = {"good.json", "good.txt", "bad.json", "bad.txt", "tiny.json",
                                 "tiny.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        remove(path);
    }
    CHECK(rmdir(dir) == 0);
    return 0;
}
