/* data/tokenizer_gpt2.c — GPT2BPETokenizer: GPT-2's byte-level BPE.
 *
 * Encoding follows OpenAI's encoder.py (openai/gpt-2) step by step:
 * pre-tokenise with the GPT-2 regex, map each piece's bytes to GPT-2's
 * byte-level alphabet, apply BPE merges by rank (lowest-ranked adjacent pair
 * first, every occurrence left to right, repeat), look the symbols up in the
 * vocabulary. We work on ids instead of strings: the vocabulary is only
 * needed at load time to turn each merge "a b" into (id a, id b) -> (rank,
 * id ab), and a piece starts as the ids of its single bytes.
 *
 * Choices that differ from a literal port, and why:
 * - `\s` in the pattern is spelled out as Unicode's White_Space set, which is
 *   what Python's `regex` module (used by encoder.py) matches. PCRE2 10.42's
 *   \s also matches U+180E, which left White_Space in Unicode 6.3.
 * - \p{L} and \p{N} come from PCRE2's Unicode tables (Unicode 14 in 10.42).
 *   Characters assigned since (rare CJK extensions, historic scripts) are
 *   "other" here and may split differently from a newer reference.
 * - Invalid UTF-8 (which Python's str cannot even hold) never crashes: the
 *   text is cut into maximal valid UTF-8 runs, each run is tokenised on its
 *   own exactly as the reference tokenises that text, and every byte that is
 *   not part of a valid sequence becomes its own single-byte token. Decoding
 *   gives the original bytes back. Validating ourselves also lets PCRE2 skip
 *   its own per-call UTF check, which would rescan the rest of the text at
 *   every match (quadratic on long documents).
 * - The BPE machinery (merging, the lock-free piece cache, the regex loop)
 *   lives in data/bpe_core.c, shared with HuggingFaceTokenizer and
 *   TikTokenizer; this file loads GPT-2's two files and glues it together.
 * - Files: vocab.json must map distinct ids 0..n-1 (n = vocab_size) and hold
 *   a token for each of the 256 bytes and <|endoftext|> (the EOD id).
 *   merges.txt may start with a "#version" line; blank lines and CR before
 *   LF are ignored; every other line is "left right" with tokens (and their
 *   concatenation) in the vocabulary. Unlike encoder.py, which drops the
 *   first and the last line unseen, a file without header or final newline
 *   loses no merge.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/bpe_core.h"

#define GPT2_EOD_TOKEN "<|endoftext|>"

/* White_Space as Python's `regex` module matches it (see the top comment). */
#define WS                                                                                 \
    "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}" \
    "\\x{3000}"
static const char GPT2_PRETOKENIZE_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS
    "])|[" WS "]+";
#undef WS

typedef struct {
    ByteLevelBpe bpe;
    int64_t vocab_size;
    char *decode_bytes;     /* raw bytes of every token, concatenated */
    size_t *decode_offsets; /* token i is [offsets[i], offsets[i+1]) */
    PreTokenizerRegex pretokenizer;
} Gpt2Bpe;

static void gpt2_destroy(void *impl) {
    Gpt2Bpe *g = impl;
    if (!g) return;
    byte_level_bpe_destroy(&g->bpe);
    free(g->decode_bytes);
    free(g->decode_offsets);
    pretokenizer_regex_free(&g->pretokenizer);
    free(g);
}

/* ------------------------------------------------------------- loading */

static size_t line_of_offset(const char *text, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset; i++) line += text[i] == '\n';
    return line;
}

/* Checks one "token": id entry and records it in the index. */
static bool vocab_add_entry(ByteIndex *index, const cJSON *item, int64_t vocab_size,
                            const char *path, char *err, size_t err_size) {
    double v = item->valuedouble;
    /* The range check comes first: converting a huge double to int64 is undefined. */
    if (!cJSON_IsNumber(item) || !(v >= 0 && v < (double)vocab_size) || v != (double)(int64_t)v) {
        snprintf(err, err_size,
                 "--vocab-file '%s': the id of token \"%.40s\" must be an integer in [0, %lld) "
                 "(the file has %lld tokens); is this GPT-2's vocab.json?",
                 path, item->string, (long long)vocab_size, (long long)vocab_size);
        return false;
    }
    if (!byte_index_add(index, item->string, strlen(item->string), (int32_t)v)) {
        snprintf(err, err_size, "--vocab-file '%s': token \"%.40s\" appears twice", path,
                 item->string);
        return false;
    }
    return true;
}

/* Parses vocab.json into `index` (keys point into *root, which the caller
 * frees after loading the merges) and the decode table of g. */
static bool load_vocab(Gpt2Bpe *g, const char *path, cJSON **root, ByteIndex *index,
                       const int16_t cp_to_byte[BYTE_ALPHABET_SIZE], char *err,
                       size_t err_size) {
    size_t len;
    char *text = bpe_read_file(path, "--vocab-file", &len, err, err_size);
    if (!text) return false;
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!*root) {
        size_t at = end ? (size_t)(end - text) : 0;
        snprintf(err, err_size,
                 "--vocab-file '%s': not valid JSON (line %zu, byte %zu); expected GPT-2's "
                 "vocab.json, an object mapping token strings to ids",
                 path, line_of_offset(text, at), at);
        free(text);
        return false;
    }
    free(text);
    int64_t n = cJSON_IsObject(*root) ? cJSON_GetArraySize(*root) : 0;
    if (n == 0) {
        snprintf(err, err_size,
                 "--vocab-file '%s': expected a non-empty JSON object mapping token strings "
                 "to ids (GPT-2's vocab.json)",
                 path);
        return false;
    }
    byte_index_init(index, (size_t)n);
    g->vocab_size = n;
    const cJSON **by_id = xcalloc((size_t)n, sizeof *by_id);
    bool ok = true;
    for (const cJSON *item = (*root)->child; item && ok; item = item->next) {
        ok = vocab_add_entry(index, item, n, path, err, err_size);
        if (!ok) break;
        int32_t id = (int32_t)item->valuedouble;
        if (by_id[id]) {
            snprintf(err, err_size,
                     "--vocab-file '%s': tokens \"%.40s\" and \"%.40s\" share id %d; ids must "
                     "be distinct",
                     path, by_id[id]->string, item->string, id);
            ok = false;
        }
        by_id[id] = item;
    }
    if (ok) { /* n distinct ids in [0, n): every id has a token */
        size_t total = 0;
        for (int64_t i = 0; i < n; i++) total += strlen(by_id[i]->string);
        g->decode_bytes = xmalloc(total + 1);
        g->decode_offsets = xmalloc(((size_t)n + 1) * sizeof *g->decode_offsets);
        g->decode_offsets[0] = 0;
        for (int64_t i = 0; i < n; i++) {
            char *out = g->decode_bytes + g->decode_offsets[i];
            g->decode_offsets[i + 1] =
                g->decode_offsets[i] + byte_level_token_bytes(by_id[i]->string, strlen(by_id[i]->string), cp_to_byte, out);
        }
    }
    free(by_id);
    return ok;
}

static bool find_byte_ids(Gpt2Bpe *g, const ByteIndex *index, const uint16_t byte_to_cp[256],
                          const char *path, char *err, size_t err_size) {
    for (int b = 0; b < 256; b++) {
        char utf8[2];
        size_t n = byte_level_char(byte_to_cp, b, utf8);
        g->bpe.byte_id[b] = byte_index_find(index, utf8, n);
        if (g->bpe.byte_id[b] < 0) {
            snprintf(err, err_size,
                     "--vocab-file '%s': no token for byte 0x%02x (\"%.*s\"); a GPT-2 byte-level "
                     "vocabulary has one for each of the 256 bytes",
                     path, b, (int)n, utf8);
            return false;
        }
    }
    return true;
}

/* One merges.txt line "left right" -> its pair and result in the vocab. */
static bool parse_merge_line(const char *line, size_t len, const ByteIndex *index,
                             int32_t *left, int32_t *right, int32_t *merged, const char *path,
                             size_t line_no, char *err, size_t err_size) {
    const char *space = memchr(line, ' ', len);
    size_t left_len = space ? (size_t)(space - line) : 0;
    if (!space || left_len == 0 || left_len + 1 == len ||
        memchr(space + 1, ' ', len - left_len - 1)) {
        snprintf(err, err_size,
                 "--merge-file '%s' line %zu: \"%.*s\" is not a merge \"left right\" (two "
                 "tokens separated by one space); is this GPT-2's merges.txt?",
                 path, line_no, (int)(len < 60 ? len : 60), line);
        return false;
    }
    char *joined = xmalloc(len);
    memcpy(joined, line, left_len);
    memcpy(joined + left_len, space + 1, len - left_len - 1);
    *left = byte_index_find(index, line, left_len);
    *right = byte_index_find(index, space + 1, len - left_len - 1);
    *merged = byte_index_find(index, joined, len - 1);
    free(joined);
    if (*left < 0 || *right < 0 || *merged < 0) {
        snprintf(err, err_size,
                 "--merge-file '%s' line %zu: merge \"%.*s\" uses or makes a token that is not in "
                 "the --vocab-file; are the two files from the same tokenizer?",
                 path, line_no, (int)(len < 60 ? len : 60), line);
        return false;
    }
    return true;
}

static bool load_merges(Gpt2Bpe *g, const char *path, const ByteIndex *index, char *err,
                        size_t err_size) {
    size_t len;
    char *text = bpe_read_file(path, "--merge-file", &len, err, err_size);
    if (!text) return false;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    merge_table_init(&g->bpe.merges, lines);
    uint32_t rank = 0;
    size_t line_no = 0;
    bool ok = true;
    for (size_t start = 0; start < len && ok;) {
        const char *nl = memchr(text + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - start;
        const char *line = text + start;
        start = end + 1;
        line_no++;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (memchr(line, '\0', n)) {
            snprintf(err, err_size, "--merge-file '%s' line %zu: contains a NUL byte; is this a "
                     "text file (GPT-2's merges.txt)?", path, line_no);
            ok = false;
        } else if (n == 0 || (line_no == 1 && n >= 8 && memcmp(line, "#version", 8) == 0)) {
            continue;
        } else {
            int32_t left, right, merged;
            ok = parse_merge_line(line, n, index, &left, &right, &merged, path, line_no, err,
                                  err_size);
            if (!ok) break;
            /* A repeated pair keeps its last rank, as Python's dict(zip(...)) does. */
            merge_table_set(&g->bpe.merges, left, right, rank++, merged);
        }
    }
    free(text);
    return ok;
}

/* ------------------------------------------------------------- encoding */

static void gpt2_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                        size_t *count, size_t *cap) {
    Gpt2Bpe *g = t->impl;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(g->pretokenizer.code, NULL);
    GPT3D_CHECK(md != NULL, "out of memory for PCRE2 match data");
    byte_level_encode_text(&g->bpe, &g->pretokenizer, (const unsigned char *)text, len, md, ids,
                           count, cap);
    pcre2_match_data_free(md);
}

static char *gpt2_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    const Gpt2Bpe *g = t->impl;
    return decode_by_table(g->decode_bytes, g->decode_offsets, g->vocab_size, ids, count, NULL);
}

/* ------------------------------------------------------------- creation */

Tokenizer *gpt2_bpe_tokenizer_create(const char *vocab_file, const char *merge_file, char *err,
                                     size_t err_size) {
    if (!vocab_file || !*vocab_file || !merge_file || !*merge_file) {
        snprintf(err, err_size,
                 "GPT2BPETokenizer needs --vocab-file (GPT-2's vocab.json) and --merge-file "
                 "(GPT-2's merges.txt); tools/fetch_gpt2_vocab.sh DIR downloads both");
        return NULL;
    }
    Gpt2Bpe *g = xcalloc(1, sizeof *g);
    byte_level_bpe_init(&g->bpe);
    uint16_t byte_to_cp[256];
    int16_t cp_to_byte[BYTE_ALPHABET_SIZE];
    byte_alphabet(byte_to_cp, cp_to_byte);
    cJSON *root = NULL;
    ByteIndex index = {0};
    int32_t eod = -1;
    bool ok = load_vocab(g, vocab_file, &root, &index, cp_to_byte, err, err_size) &&
              find_byte_ids(g, &index, byte_to_cp, vocab_file, err, err_size) &&
              load_merges(g, merge_file, &index, err, err_size);
    if (ok) {
        eod = byte_index_find(&index, GPT2_EOD_TOKEN, strlen(GPT2_EOD_TOKEN));
        if (eod < 0) {
            snprintf(err, err_size, "--vocab-file '%s': has no " GPT2_EOD_TOKEN
                     " token, which GPT2BPETokenizer uses as end of document", vocab_file);
            ok = false;
        }
    }
    byte_index_free(&index);
    cJSON_Delete(root);
    ok = ok && pretokenizer_regex_compile(&g->pretokenizer, GPT2_PRETOKENIZE_PATTERN,
                                          "GPT2BPETokenizer", err, err_size);
    if (!ok) {
        gpt2_destroy(g);
        return NULL;
    }
    Tokenizer *t = xcalloc(1, sizeof *t);
    *t = (Tokenizer){.type_name = "GPT2BPETokenizer",
                     .vocab_size = g->vocab_size,
                     .eod = eod,
                     .encode = gpt2_encode,
                     .decode = gpt2_decode,
                     .destroy = gpt2_destroy,
                     .impl = g};
    return t;
}
