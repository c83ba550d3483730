/* tests/test_tokenizer_files.c — HuggingFaceTokenizer, TikTokenizer and
 * NullTokenizer on hand-made files (no download):
 * - bad input gets one message naming the file (or flag) and the problem:
 *   unsupported tokenizer.json model types, normalizers (NFKC), pre-tokenizers and
 *   added-token options, a missing file, not JSON, a bad .tiktoken line,
 *   repeated or missing ranks, --vocab-size beyond the file, bad
 *   --tiktoken-pattern / --tiktoken-num-special-tokens, NullTokenizer
 *   without --vocab-size;
 * - semantics a small file can pin: Hugging Face's merge order (a merge
 *   that makes a lower-ranked pair is followed at once, unlike GPT-2's
 *   rounds), ignore_merges, added tokens cut out first, byte_fallback and
 *   unk, Megatron's tiktoken JSON and its id offset, NullTokenizer's ids
 *   and its exit on a word that is not an id. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static char dir[256];

static const char *path_of(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static const char *write_file(const char *name, const char *text) {
    const char *path = path_of(name);
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
    return path;
}

static Tokenizer *open_hf(const char *path, char *err, size_t size) {
    TokenizerOptions o = {.tokenizer_type = "HuggingFaceTokenizer", .tokenizer_model = (char *)path};
    return tokenizer_open(&o, err, size);
}

/* Opening must fail with a message that contains every one of `needles`. */
static void expect_error(Tokenizer *t, const char *err, const char *const *needles, int n) {
    if (t) {
        fprintf(stderr, "expected an error containing \"%s\", but it opened\n", needles[0]);
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        if (!strstr(err, needles[i])) {
            fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, needles[i]);
            exit(1);
        }
    }
}

#define EXPECT_ERROR(t, err, ...)                                             \
    do {                                                                      \
        const char *const needles_[] = {__VA_ARGS__};                         \
        expect_error(t, err, needles_, sizeof needles_ / sizeof needles_[0]); \
    } while (0)

static void check_ids(const Tokenizer *t, const char *text, const int32_t *want, size_t n) {
    int32_t *ids = NULL;
    size_t count = 0, cap = 0;
    tokenizer_encode(t, text, strlen(text), &ids, &count, &cap);
    bool same = count == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        fprintf(stderr, "\"%s\": got", text);
        for (size_t i = 0; i < count; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        exit(1);
    }
    free(ids);
}

#define CHECK_IDS(t, text, ...)                                                \
    do {                                                                       \
        const int32_t want_[] = {__VA_ARGS__};                                 \
        check_ids(t, text, want_, sizeof want_ / sizeof want_[0]);             \
    } while (0)

/* ------------------------------------------------------------ bad input */

static const char BPE_MODEL[] =
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
    "\"merges\": [\"a b\"]}";

static void check_bad_tokenizer_json(void) {
    char err[2048];
    char text[4096];
    Tokenizer *t = open_hf(path_of("missing.json"), err, sizeof err);
    EXPECT_ERROR(t, err, "--tokenizer-model", "missing.json", "No such file");
    const char *p = write_file("notjson.json", "{\"model\": ");
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "notjson.json", "JSON");
    p = write_file("wordpiece.json",
                   "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}");
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "wordpiece.json", "model type WordPiece",
                 "not supported");
    p = write_file("unigram.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0]]}}");
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "unigram.json", "model type Unigram");
    snprintf(text, sizeof text, "{%s, \"normalizer\": {\"type\": \"NFKC\"}}", BPE_MODEL);
    p = write_file("nfkc.json", text);
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "nfkc.json", "normalizer type NFKC");
    snprintf(text, sizeof text,
             "{%s, \"pre_tokenizer\": {\"type\": \"Digits\", \"individual_digits\": true}}",
             BPE_MODEL);
    p = write_file("digits.json", text);
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "digits.json", "pre_tokenizer type Digits");
    snprintf(text, sizeof text,
             "{%s, \"added_tokens\": [{\"id\": 3, \"content\": \"<m>\", \"lstrip\": true}]}",
             BPE_MODEL);
    p = write_file("lstrip.json", text);
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "lstrip.json", "<m>", "lstrip");
    p = write_file("badmerge.json",
                   "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                   "\"merges\": [\"a b\"]}}");
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "badmerge.json", "merges[0]");
    snprintf(text, sizeof text, "{%s}", BPE_MODEL); /* no eos anywhere */
    p = write_file("noeos.json", text);
    EXPECT_ERROR(open_hf(p, err, sizeof err), err, "noeos.json", "end-of-document",
                 "tokenizer_config.json");
    TokenizerOptions none = {.tokenizer_type = "HuggingFaceTokenizer"};
    EXPECT_ERROR(tokenizer_open(&none, err, sizeof err), err, "--tokenizer-model");
    TokenizerOptions unknown = {.tokenizer_type = "SentencePieceTokenizer"};
    EXPECT_ERROR(tokenizer_open(&unknown, err, sizeof err), err, "SentencePieceTokenizer",
                 "HuggingFaceTokenizer");
}

/* ----------------------------------------------- Hugging Face semantics */

/* Character-level BPE where "ab" then "abc" rank below "bc": with Hugging
 * Face's order "a b c" -> "ab c" -> "abc"; added tokens are cut out first;
 * "é" is not in the vocabulary and falls back to its bytes. */
static void check_char_level_semantics(void) {
    char err[2048];
    const char *p = write_file(
        "sp.json",
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
        " {\"id\": 1, \"content\": \"<s>\", \"special\": true},"
        " {\"id\": 2, \"content\": \"</s>\", \"special\": true}],"
        " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
        "  {\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"},"
        "  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},"
        " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
        "  {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\"}}],"
        "  \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},"
        " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Strip\", \"content\": "
        "\" \", \"start\": 1, \"stop\": 0}]},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true,"
        "  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0xC3>\": 3, \"<0xA9>\": 4,"
        "   \"\xe2\x96\x81\": 5, \"a\": 6, \"b\": 7, \"c\": 8, \"ab\": 9, \"bc\": 10, \"abc\": 11,"
        "   \"\xe2\x96\x81" "abc\": 12},"
        "  \"merges\": [[\"a\", \"b\"], [\"ab\", \"c\"], [\"b\", \"c\"], [\"\xe2\x96\x81\", \"abc\"]]}}");
    Tokenizer *t = open_hf(p, err, sizeof err);
    if (!t) fprintf(stderr, "%s\n", err);
    CHECK(t);
    CHECK(tokenizer_vocab_size(t) == 13 && tokenizer_eod(t) == 2);
    CHECK_IDS(t, "abc", 1, 12);
    CHECK_IDS(t, "bc a", 1, 5, 10, 5, 6);
    CHECK_IDS(t, "abc</s>abc", 1, 12, 2, 12); /* every segment gets its "▁" */
    CHECK_IDS(t, "\xc3\xa9", 1, 5, 3, 4);     /* é: byte fallback */
    CHECK_IDS(t, "d", 1, 5, 0);               /* no byte tokens for d: unk */
    CHECK_IDS(t, "\xff", 1, 5, 0);            /* an invalid byte is an unknown character */
    int32_t ids[] = {12, 5, 10, 3, 4};
    char *text = tokenizer_decode(t, ids, 5);
    CHECK(strcmp(text, "abc bc\xc3\xa9") == 0); /* the first "▁" is stripped */
    free(text);
    tokenizer_free(t);
}

/* Byte-level BPE with a Split regex, ignore_merges and an added token. */
static void check_byte_level_semantics(void) {
    char vocab[16384];
    size_t n = 0;
    /* GPT-2's byte alphabet: printable bytes as themselves, others 256 + k. */
    int id = 0, shifted = 0;
    n += (size_t)snprintf(vocab + n, sizeof vocab - n, "{");
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + shifted++;
        char utf8[3] = {0};
        if (cp < 0x80) utf8[0] = (char)cp;
        else utf8[0] = (char)(0xc0 | (cp >> 6)), utf8[1] = (char)(0x80 | (cp & 0x3f));
        if (cp == '"' || cp == '\\') n += (size_t)snprintf(vocab + n, sizeof vocab - n, "\"\\%s\": %d, ", utf8, id++);
        else n += (size_t)snprintf(vocab + n, sizeof vocab - n, "\"%s\": %d, ", utf8, id++);
    }
    n += (size_t)snprintf(vocab + n, sizeof vocab - n,
                          "\"xy\": 256, \"yz\": 257, \"xyz\": 258, \"wxyz\": 259, \"xyx\": 260}");
    char json[20000];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [{\"id\": 261, \"content\": \"<|end|>\", \"special\": true}],"
             " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
             "  {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+|\\\\S+\"}, \"behavior\": "
             "\"Isolated\", \"invert\": false},"
             "  {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
             " \"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": %s,"
             "  \"merges\": [\"xy x\", \"x y\", \"y z\", \"xy z\"]}}",
             "true", vocab);
    char err[2048];
    const char *p = write_file("bl.json", json);
    write_file("tokenizer_config.json", "{\"eos_token\": \"<|end|>\"}");
    Tokenizer *t = open_hf(p, err, sizeof err);
    if (!t) fprintf(stderr, "%s\n", err);
    CHECK(t);
    CHECK(tokenizer_vocab_size(t) == 262 && tokenizer_eod(t) == 261);
    CHECK_IDS(t, "xyz", 258);                     /* x y z -> xy z -> xyz */
    /* Hugging Face's order: the "xy x" that the first merge makes ranks below
     * the second "x y" and goes first (GPT-2's rounds would give xy xy). */
    CHECK_IDS(t, "xyxy", 260, 'y');
    CHECK_IDS(t, "wxyz", 259);                    /* ignore_merges: the whole piece is a token */
    CHECK_IDS(t, "wxyz<|end|>yz", 259, 261, 257); /* the added token is cut out first */
    CHECK_IDS(t, "xyz \xffw", 258, ' ', 0xff, 'w'); /* byte b is id b here */
    int32_t ids[] = {260, ' ', 0xff, 261};
    char *text = tokenizer_decode(t, ids, 4);
    CHECK(strcmp(text, "xyx \xff<|end|>") == 0);
    free(text);
    tokenizer_free(t);
    /* Megatron's form: --tokenizer-model names the directory */
    char model_dir[600];
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    CHECK(mkdir(model_dir, 0755) == 0);
    write_file("model/tokenizer.json", json);
    write_file("model/tokenizer_config.json", "{\"eos_token\": {\"content\": \"<|end|>\"}}");
    t = open_hf(model_dir, err, sizeof err);
    CHECK(t && tokenizer_vocab_size(t) == 262 && tokenizer_eod(t) == 261);
    CHECK_IDS(t, "xyxy", 260, 'y');
    tokenizer_free(t);
    unlink(path_of("tokenizer_config.json"));
}

/* ------------------------------------------------------------ TikTokenizer */

static Tokenizer *open_tiktoken(const char *path, const char *pattern, int specials,
                                int64_t vocab_size, char *err, size_t size) {
    TokenizerOptions o = {.tokenizer_type = "TikTokenizer",
                          .tokenizer_model = (char *)path,
                          .tiktoken_pattern = (char *)pattern,
                          .tiktoken_num_special_tokens = specials,
                          .vocab_size = vocab_size};
    return tokenizer_open(&o, err, size);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const unsigned char *in, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[w++] = B64[v >> 18 & 63];
        out[w++] = B64[v >> 12 & 63];
        out[w++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[w++] = i + 2 < n ? B64[v & 63] : '=';
    }
    out[w] = '\0';
}

/* Ranks 0..255 are the bytes, then "ab" 256, "abc" 257, " a" 258. */
static const char *write_ranks(const char *name, bool json) {
    static char text[65536];
    size_t n = 0;
    const char *extra[] = {"ab", "abc", " a"};
    n += (size_t)snprintf(text + n, sizeof text - n, json ? "[" : "");
    for (int r = 0; r < 259; r++) {
        unsigned char bytes[4];
        size_t len = 1;
        if (r < 256) bytes[0] = (unsigned char)r;
        else len = strlen(extra[r - 256]), memcpy(bytes, extra[r - 256], len);
        char b64[16];
        base64(bytes, len, b64);
        if (json)
            n += (size_t)snprintf(text + n, sizeof text - n,
                                  "%s{\"rank\": %d, \"token_bytes\": \"%s\", \"token_str\": \"\"}",
                                  r ? ", " : "", r, b64);
        else
            n += (size_t)snprintf(text + n, sizeof text - n, "%s %d\n", b64, r);
    }
    if (json) snprintf(text + n, sizeof text - n, "]");
    return write_file(name, text);
}

static void check_tiktoken(void) {
    char err[2048];
    for (int json = 0; json < 2; json++) {
        const char *p = write_ranks(json ? "ranks.json" : "ranks.tiktoken", json);
        Tokenizer *t = open_tiktoken(p, "v2", 1000, 0, err, sizeof err);
        if (!t) fprintf(stderr, "%s\n", err);
        CHECK(t);
        CHECK(tokenizer_vocab_size(t) == 1259 && tokenizer_eod(t) == 2);
        CHECK_IDS(t, "abc a", 1257, 1258);
        CHECK_IDS(t, "ab<s>c</s><SPECIAL_42>", 1256, 1, 1000 + 'c', 2, 42);
        int32_t ids[] = {1, 1257, 999};
        char *text = tokenizer_decode(t, ids, 3);
        CHECK(strcmp(text, "<s>abc<SPECIAL_999>") == 0);
        free(text);
        tokenizer_free(t);
    }
    const char *p = write_ranks("ranks.tiktoken", false);
    Tokenizer *t = open_tiktoken(p, "v1", 7, 7 + 257, err, sizeof err); /* cut to 257 ranks */
    CHECK(t && tokenizer_vocab_size(t) == 264);
    CHECK_IDS(t, "abc", 7 + 256, 7 + 'c');
    tokenizer_free(t);
    EXPECT_ERROR(open_tiktoken(p, "v1", 1000, 5000, err, sizeof err), err, "--vocab-size 5000",
                 "259");
    EXPECT_ERROR(open_tiktoken(p, "v3", 1000, 0, err, sizeof err), err, "--tiktoken-pattern v3");
    EXPECT_ERROR(open_tiktoken(p, "v2", 3, 0, err, sizeof err), err,
                 "--tiktoken-num-special-tokens 3");
    EXPECT_ERROR(open_tiktoken(path_of("none.tiktoken"), "v2", 1000, 0, err, sizeof err), err,
                 "none.tiktoken", "--tokenizer-model");
    p = write_file("bad.tiktoken", "IQ== 0\nnot base64! 1\n");
    EXPECT_ERROR(open_tiktoken(p, "v2", 1000, 0, err, sizeof err), err, "bad.tiktoken",
                 "line 2", "<base64 token> <rank>");
    p = write_file("twice.tiktoken", "IQ== 0\nIg== 0\n");
    EXPECT_ERROR(open_tiktoken(p, "v2", 1000, 0, err, sizeof err), err, "twice.tiktoken",
                 "given twice");
    p = write_file("gap.tiktoken", "IQ== 0\nIg== 5\n");
    EXPECT_ERROR(open_tiktoken(p, "v2", 1000, 0, err, sizeof err), err, "gap.tiktoken", "rank 5");
    p = write_file("nobytes.tiktoken", "IQ== 0\nIg== 1\n");
    EXPECT_ERROR(open_tiktoken(p, "v2", 1000, 0, err, sizeof err), err, "nobytes.tiktoken",
                 "no token for byte 0x00");
    TokenizerOptions none = {.tokenizer_type = "TikTokenizer", .tiktoken_num_special_tokens = 1000};
    EXPECT_ERROR(tokenizer_open(&none, err, sizeof err), err, "--tokenizer-model");
}

/* ------------------------------------------------------------ NullTokenizer */

static void check_null(void) {
    char err[1024];
    TokenizerOptions o = {.tokenizer_type = "NullTokenizer"};
    EXPECT_ERROR(tokenizer_open(&o, err, sizeof err), err, "--vocab-size");
    o.vocab_size = 100;
    Tokenizer *t = tokenizer_open(&o, err, sizeof err);
    CHECK(t && tokenizer_vocab_size(t) == 100 && tokenizer_eod(t) == 99);
    CHECK_IDS(t, " 5 17\n\t99  0 ", 5, 17, 99, 0);
    int32_t ids[] = {5, 17, 99};
    char *text = tokenizer_decode(t, ids, 3);
    CHECK(strcmp(text, "5 17 99") == 0);
    free(text);
    /* A word that is no id stops the program with one message. */
    const char *bad[] = {"1 100", "1 x2", "-1"};
    for (int i = 0; i < 3; i++) {
        fflush(stdout); /* the child exits through exit(), which flushes */
        fflush(stderr);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            int32_t *out = NULL;
            size_t count = 0, cap = 0;
            freopen("/dev/null", "w", stderr);
            tokenizer_encode(t, bad[i], strlen(bad[i]), &out, &count, &cap);
            _exit(0);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    }
    tokenizer_free(t);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/gpt3d_tokfiles_XXXXXX");
    CHECK(mkdtemp(dir));
    check_bad_tokenizer_json();
    printf("bad tokenizer.json files: ok\n");
    check_char_level_semantics();
    printf("character-level BPE (Prepend/Replace, byte fallback, unk, template): ok\n");
    check_byte_level_semantics();
    printf("byte-level BPE (Split, merge order, ignore_merges, added tokens): ok\n");
    check_tiktoken();
    printf("TikTokenizer (.tiktoken and Megatron JSON, specials, cut, bad files): ok\n");
    check_null();
    printf("NullTokenizer: ok\n");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return 0;
}
