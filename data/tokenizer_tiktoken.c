/* data/tokenizer_tiktoken.c — TikTokenizer, as Megatron-LM defines it
 * (megatron/core/tokenizers/text/libraries/tiktoken_tokenizer.py).
 *
 * - --tokenizer-model: a ranks file, either tiktoken's own format (one
 *   "base64(token bytes) rank" per line, as cl100k_base.tiktoken) or
 *   Megatron's JSON list of {"rank", "token_bytes", "token_str"}. Ranks must
 *   be 0..n-1, each once, and every single byte must be a token.
 * - --tiktoken-num-special-tokens K (Megatron's default 1000): ids 0..K-1
 *   are special tokens, <unk> <s> </s> <mask> <pad> <cls> <sep> and then
 *   <SPECIAL_7> ... <SPECIAL_{K-1}>; a token of rank r has id r + K.
 *   Megatron encodes with allowed_special="all", so a special token's text
 *   in the input becomes its id. EOD is </s> (id 2).
 * - --vocab-size V: keep the first V - K ranks (Megatron's cut); the file
 *   must have that many. Without it V = K + the ranks in the file (Megatron's
 *   own default, 131072, fits only files of 130072 ranks at K = 1000).
 * - --tiktoken-pattern v1 | v2: Megatron's two pre-tokenizer patterns.
 * Merging is tiktoken's: a pair may merge when its concatenation is a
 * token, lowest rank first, the leftmost of equals (BPE_LOWEST_FIRST over
 * a table of every split of every token).
 * Invalid UTF-8 (which tiktoken's str input cannot hold): as GPT2BPETokenizer,
 * each invalid byte is its own one-byte token. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/added_tokens.h"
#include "data/bpe_core.h"

static const char *const MEGATRON_SPECIALS[] = {"<unk>", "<s>",   "</s>", "<mask>",
                                                "<pad>", "<cls>", "<sep>"};
#define NUM_MEGATRON_SPECIALS 7
#define EOS_INDEX 2

/* Megatron's _PATTERN_TIKTOKEN_V1 and _PATTERN_TIKTOKEN_V2. */
static const char PATTERN_V1[] =
    "[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|"
    "\\s+";
static const char PATTERN_V2[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct {
    ByteLevelBpe bpe;
    PreTokenizerRegex pattern;
    AddedTokens specials;
    char *token_bytes;      /* every token's bytes: specials' text, then the ranks' */
    size_t *token_offsets;  /* id i is [offsets[i], offsets[i+1]) */
    int64_t vocab_size;
} TikToken;

static void tiktoken_destroy(void *impl) {
    TikToken *k = impl;
    if (!k) return;
    byte_level_bpe_destroy(&k->bpe);
    pretokenizer_regex_free(&k->pattern);
    added_tokens_free(&k->specials);
    free(k->token_bytes);
    free(k->token_offsets);
    free(k);
}

/* ------------------------------------------------------------ reading */

static int base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes s[0, n) into out (room for n bytes); -1 when it is not base64. */
static long base64_decode(const char *s, size_t n, unsigned char *out) {
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    uint32_t acc = 0;
    int bits = 0;
    long w = 0;
    for (size_t i = 0; i < n; i++) {
        int v = base64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[w++] = (unsigned char)(acc >> bits);
        }
    }
    return w;
}

/* The ranks as (bytes, rank) in rank order, read from either format. */
typedef struct {
    unsigned char *bytes; /* all tokens, concatenated */
    size_t *offsets;      /* rank r is [offsets[r], offsets[r+1]) */
    size_t count;
} Ranks;

/* Records rank's length; false when the rank is out of range or repeated. */
static bool ranks_put(Ranks *r, size_t rank, size_t n, size_t *filled, const char *path,
                      size_t where, char *err, size_t err_size) {
    if (rank >= r->count || r->offsets[rank + 1] != SIZE_MAX) {
        snprintf(err, err_size,
                 "--tokenizer-model '%s' entry %zu: rank %zu is %s; the ranks of a tiktoken "
                 "file are 0..%zu, each once",
                 path, where, rank, rank >= r->count ? "out of range" : "given twice",
                 r->count - 1);
        return false;
    }
    r->offsets[rank + 1] = n; /* a length for now; prefix sums later */
    (*filled)++;
    return true;
}

static bool parse_tiktoken_line(const char *line, size_t n, unsigned char *tmp, long *len,
                                size_t *rank) {
    const char *space = memchr(line, ' ', n);
    if (!space || space == line || space + 1 == line + n) return false;
    *len = base64_decode(line, (size_t)(space - line), tmp);
    char *end;
    const char *digits = space + 1;
    if (*len <= 0 || *digits < '0' || *digits > '9') return false;
    unsigned long long v = strtoull(digits, &end, 10);
    if (end != line + n) return false;
    *rank = (size_t)v;
    return true;
}

/* Two passes over the file: lengths per rank, then the bytes in rank order. */
static bool read_tiktoken_lines(Ranks *r, const char *text, size_t len, const char *path,
                                char *err, size_t err_size) {
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    lines += len > 0 && text[len - 1] != '\n';
    r->count = lines;
    r->offsets = xmalloc((lines + 1) * sizeof *r->offsets);
    for (size_t i = 0; i <= lines; i++) r->offsets[i] = SIZE_MAX;
    unsigned char *tmp = xmalloc(len + 1);
    unsigned char *scratch = xmalloc(len + 1);
    size_t filled = 0, line_no = 0, used = 0;
    bool ok = true;
    size_t *starts = xmalloc((lines + 1) * sizeof *starts);
    for (size_t at = 0; at < len && ok;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - at;
        const char *line = text + at;
        at = end + 1;
        line_no++;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0) {
            r->count--; /* a blank line is no entry */
            continue;
        }
        long blen;
        size_t rank;
        if (!parse_tiktoken_line(line, n, tmp, &blen, &rank)) {
            snprintf(err, err_size,
                     "--tokenizer-model '%s' line %zu: \"%.*s\" is not \"<base64 token> <rank>\" "
                     "(a tiktoken ranks file, e.g. cl100k_base.tiktoken)",
                     path, line_no, (int)(n < 60 ? n : 60), line);
            ok = false;
            break;
        }
        ok = ranks_put(r, rank, (size_t)blen, &filled, path, line_no, err, err_size);
        memcpy(scratch + used, tmp, (size_t)blen);
        if (ok && rank < lines) starts[rank] = used;
        used += (size_t)blen;
    }
    if (ok && filled != r->count) {
        snprintf(err, err_size, "--tokenizer-model '%s': ranks are missing; they must be 0..%zu",
                 path, r->count - 1);
        ok = false;
    }
    if (ok) { /* lengths -> offsets, and the bytes in rank order */
        r->bytes = xmalloc(used + 1);
        r->offsets[0] = 0;
        for (size_t k = 0; k < r->count; k++) {
            size_t n = r->offsets[k + 1];
            memcpy(r->bytes + r->offsets[k], scratch + starts[k], n);
            r->offsets[k + 1] = r->offsets[k] + n;
        }
    }
    free(starts);
    free(tmp);
    free(scratch);
    return ok;
}

/* Megatron's JSON: [{"rank": i, "token_bytes": base64, "token_str": ...}, ...]. */
static bool read_megatron_json(Ranks *r, const char *text, size_t len, const char *path,
                               char *err, size_t err_size) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    bool ok = cJSON_IsArray(root);
    if (!ok) snprintf(err, err_size, "--tokenizer-model '%s': not a JSON list of ranks", path);
    r->count = ok ? (size_t)cJSON_GetArraySize(root) : 0;
    r->offsets = xmalloc((r->count + 1) * sizeof *r->offsets);
    r->bytes = xmalloc(len + 1);
    r->offsets[0] = 0;
    size_t i = 0;
    for (const cJSON *e = ok ? root->child : NULL; e && ok; e = e->next, i++) {
        const cJSON *rank = cJSON_GetObjectItemCaseSensitive(e, "rank");
        const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(e, "token_bytes");
        long n = cJSON_IsString(b64) ? base64_decode(b64->valuestring, strlen(b64->valuestring),
                                                     r->bytes + r->offsets[i])
                                     : -1;
        if (!cJSON_IsNumber(rank) || rank->valuedouble != (double)i || n <= 0) {
            snprintf(err, err_size,
                     "--tokenizer-model '%s' entry %zu: needs \"rank\": %zu and base64 "
                     "\"token_bytes\" (Megatron's tiktoken JSON)",
                     path, i, i);
            ok = false;
            break;
        }
        r->offsets[i + 1] = r->offsets[i] + (size_t)n;
    }
    cJSON_Delete(root);
    return ok;
}

static bool read_ranks(Ranks *r, const char *path, char *err, size_t err_size) {
    size_t len;
    char *text = bpe_read_file(path, "--tokenizer-model", &len, err, err_size);
    if (!text) return false;
    size_t first = 0;
    while (first < len && (text[first] == ' ' || text[first] == '\n')) first++;
    bool ok = first < len && text[first] == '['
                  ? read_megatron_json(r, text, len, path, err, err_size)
                  : read_tiktoken_lines(r, text, len, path, err, err_size);
    if (ok && r->count == 0) {
        snprintf(err, err_size, "--tokenizer-model '%s': no ranks in the file", path);
        ok = false;
    }
    free(text);
    return ok;
}

/* ------------------------------------------------------------ tables */

static bool build_merges(TikToken *k, const Ranks *r, size_t num_ranks, int32_t first_id,
                         const char *path, char *err, size_t err_size) {
    ByteIndex index;
    byte_index_init(&index, num_ranks);
    for (size_t i = 0; i < num_ranks; i++) {
        const char *b = (const char *)r->bytes + r->offsets[i];
        if (!byte_index_add(&index, b, r->offsets[i + 1] - r->offsets[i], first_id + (int32_t)i)) {
            snprintf(err, err_size, "--tokenizer-model '%s': rank %zu repeats an earlier token",
                     path, i);
            byte_index_free(&index);
            return false;
        }
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        k->bpe.byte_id[b] = byte_index_find(&index, &c, 1);
        if (k->bpe.byte_id[b] < 0) {
            snprintf(err, err_size,
                     "--tokenizer-model '%s': no token for byte 0x%02x among the ranks kept; "
                     "every single byte must be a token",
                     path, b);
            byte_index_free(&index);
            return false;
        }
    }
    merge_table_init(&k->bpe.merges, 4 * num_ranks);
    for (size_t i = 0; i < num_ranks; i++) {
        const char *b = (const char *)r->bytes + r->offsets[i];
        size_t n = r->offsets[i + 1] - r->offsets[i];
        for (size_t cut = 1; cut < n; cut++) {
            int32_t left = byte_index_find(&index, b, cut);
            int32_t right = left >= 0 ? byte_index_find(&index, b + cut, n - cut) : -1;
            if (right >= 0)
                merge_table_set_min(&k->bpe.merges, left, right, (uint32_t)i, first_id + (int32_t)i);
        }
    }
    byte_index_free(&index);
    return true;
}

static void build_specials_and_decode(TikToken *k, const Ranks *r, int num_special,
                                      size_t num_ranks) {
    char name[32];
    size_t special_bytes = 0;
    for (int i = 0; i < num_special; i++)
        special_bytes += i < NUM_MEGATRON_SPECIALS ? strlen(MEGATRON_SPECIALS[i])
                                                   : (size_t)snprintf(name, sizeof name, "<SPECIAL_%d>", i);
    size_t total = special_bytes + r->offsets[num_ranks];
    k->token_bytes = xmalloc(total + 1);
    k->token_offsets = xmalloc(((size_t)k->vocab_size + 1) * sizeof *k->token_offsets);
    k->token_offsets[0] = 0;
    for (int i = 0; i < num_special; i++) {
        const char *text = MEGATRON_SPECIALS[i < NUM_MEGATRON_SPECIALS ? i : 0];
        if (i >= NUM_MEGATRON_SPECIALS) {
            snprintf(name, sizeof name, "<SPECIAL_%d>", i);
            text = name;
        }
        size_t n = strlen(text);
        memcpy(k->token_bytes + k->token_offsets[i], text, n);
        k->token_offsets[i + 1] = k->token_offsets[i] + n;
        added_tokens_add(&k->specials, text, n, i);
    }
    added_tokens_finish(&k->specials);
    memcpy(k->token_bytes + special_bytes, r->bytes, r->offsets[num_ranks]);
    for (size_t i = 0; i < num_ranks; i++)
        k->token_offsets[num_special + i + 1] = special_bytes + r->offsets[i + 1];
}

/* ------------------------------------------------------------ encoding */

static void tiktoken_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                            size_t *count, size_t *cap) {
    TikToken *k = t->impl;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(k->pattern.code, NULL);
    GPT3D_CHECK(md != NULL, "out of memory for PCRE2 match data");
    const unsigned char *s = (const unsigned char *)text;
    for (size_t at = 0; at < len;) {
        size_t next = len, match_len = 0;
        int32_t special = -1;
        if (!added_tokens_next(&k->specials, s, len, at, &next, &match_len, &special)) next = len;
        byte_level_encode_text(&k->bpe, &k->pattern, s + at, next - at, md, ids, count, cap);
        if (special >= 0) tokenizer_ids_push(ids, count, cap, special);
        at = next + match_len;
    }
    pcre2_match_data_free(md);
}

static char *tiktoken_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    const TikToken *k = t->impl;
    return decode_by_table(k->token_bytes, k->token_offsets, k->vocab_size, ids, count, NULL);
}

/* ------------------------------------------------------------ creation */

static bool check_options(const TokenizerOptions *o, const char **pattern, char *err,
                          size_t err_size) {
    if (!o->tokenizer_model || !*o->tokenizer_model) {
        snprintf(err, err_size,
                 "--tokenizer-type TikTokenizer needs --tokenizer-model FILE (a tiktoken ranks "
                 "file such as cl100k_base.tiktoken, or Megatron's tiktoken JSON)");
        return false;
    }
    const char *p = o->tiktoken_pattern && *o->tiktoken_pattern ? o->tiktoken_pattern : "v2";
    if (strcmp(p, "v1") && strcmp(p, "v2")) {
        snprintf(err, err_size, "--tiktoken-pattern %s: use v1 or v2 (Megatron's two patterns)", p);
        return false;
    }
    *pattern = strcmp(p, "v1") == 0 ? PATTERN_V1 : PATTERN_V2;
    if (o->tiktoken_num_special_tokens < NUM_MEGATRON_SPECIALS) {
        snprintf(err, err_size,
                 "--tiktoken-num-special-tokens %d: must be at least %d (<unk> <s> </s> <mask> "
                 "<pad> <cls> <sep>); Megatron's default is 1000",
                 o->tiktoken_num_special_tokens, NUM_MEGATRON_SPECIALS);
        return false;
    }
    if (o->vocab_size < 0 || (o->vocab_size > 0 && o->vocab_size <= o->tiktoken_num_special_tokens) ||
        o->vocab_size > INT32_MAX) {
        snprintf(err, err_size,
                 "--vocab-size %lld: with TikTokenizer it must exceed "
                 "--tiktoken-num-special-tokens (%d)",
                 (long long)o->vocab_size, o->tiktoken_num_special_tokens);
        return false;
    }
    return true;
}

Tokenizer *tiktoken_tokenizer_create(const TokenizerOptions *o, char *err, size_t err_size) {
    const char *pattern;
    if (!check_options(o, &pattern, err, err_size)) return NULL;
    Ranks r = {0};
    TikToken *k = xcalloc(1, sizeof *k);
    byte_level_bpe_init(&k->bpe);
    k->bpe.order = BPE_LOWEST_FIRST;
    added_tokens_init(&k->specials);
    int num_special = o->tiktoken_num_special_tokens;
    bool ok = read_ranks(&r, o->tokenizer_model, err, err_size);
    size_t num_ranks = r.count;
    if (ok && o->vocab_size > 0) {
        num_ranks = (size_t)(o->vocab_size - num_special);
        if (num_ranks > r.count) {
            snprintf(err, err_size,
                     "--vocab-size %lld needs %zu ranks after %d special tokens, but "
                     "--tokenizer-model '%s' has %zu; give --vocab-size %zu or less",
                     (long long)o->vocab_size, num_ranks, num_special, o->tokenizer_model, r.count,
                     r.count + (size_t)num_special);
            ok = false;
        }
    }
    if (ok && num_ranks + (size_t)num_special > INT32_MAX) {
        snprintf(err, err_size, "--tokenizer-model '%s': too many ranks", o->tokenizer_model);
        ok = false;
    }
    k->vocab_size = (int64_t)num_ranks + num_special;
    ok = ok && build_merges(k, &r, num_ranks, num_special, o->tokenizer_model, err, err_size) &&
         pretokenizer_regex_compile(&k->pattern, pattern, "--tiktoken-pattern", err, err_size);
    if (ok) build_specials_and_decode(k, &r, num_special, num_ranks);
    free(r.bytes);
    free(r.offsets);
    if (!ok) {
        tiktoken_destroy(k);
        return NULL;
    }
    Tokenizer *t = xcalloc(1, sizeof *t);
    *t = (Tokenizer){.type_name = "TikTokenizer",
                     .vocab_size = k->vocab_size,
                     .eod = EOS_INDEX,
                     .encode = tiktoken_encode,
                     .decode = tiktoken_decode,
                     .destroy = tiktoken_destroy,
                     .impl = k};
    return t;
}
