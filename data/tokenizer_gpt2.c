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
 * - The BPE cache (piece bytes -> ids) is one table shared by all threads,
 *   read without locks and bounded in size (see "the cache" below).
 * - Files: vocab.json must map distinct ids 0..n-1 (n = vocab_size) and hold
 *   a token for each of the 256 bytes and <|endoftext|> (the EOD id).
 *   merges.txt may start with a "#version" line; blank lines and CR before
 *   LF are ignored; every other line is "left right" with tokens (and their
 *   concatenation) in the vocabulary. Unlike encoder.py, which drops the
 *   first and the last line unseen, a file without header or final newline
 *   loses no merge.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

#define GPT2_EOD_TOKEN "<|endoftext|>"
/* Byte-level code points are 0..323: bytes kept as themselves, or 256 + n. */
#define BYTE_ALPHABET_SIZE 324
/* Pieces of up to this many bytes merge with a simple rescan; longer ones
 * use a heap so a megabyte of letters stays O(n log n). */
#define SHORT_PIECE 64
/* Only pieces of 2..CACHED_PIECE_MAX bytes are cached; longer ones rarely
 * repeat. */
#define CACHED_PIECE_MAX 128
#define NO_RANK UINT32_MAX

/* White_Space as Python's `regex` module matches it (see the top comment). */
#define WS                                                                                 \
    "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}" \
    "\\x{3000}"
static const char GPT2_PRETOKENIZE_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS
    "])|[" WS "]+";
#undef WS

/* ------------------------------------------------------------ hashing */

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0x100000001b3ULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, p + i, 8);
        h = (h ^ chunk) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    uint64_t tail = 0;
    memcpy(&tail, p + i, n - i);
    return mix64(h ^ tail);
}

static size_t table_capacity_for(size_t entries) {
    size_t cap = 16;
    while (cap < 2 * entries) cap *= 2;
    return cap;
}

/* -------------------------------------------------- byte-level alphabet */

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
 * are shifted to 256 + n in byte order, so every byte is a visible char. */
static void byte_alphabet(uint16_t byte_to_cp[256], int16_t cp_to_byte[BYTE_ALPHABET_SIZE]) {
    for (int cp = 0; cp < BYTE_ALPHABET_SIZE; cp++) cp_to_byte[cp] = -1;
    int shifted = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_to_cp[b] = (uint16_t)(printable ? b : 256 + shifted++);
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

/* Raw bytes of one vocabulary token. Characters outside the byte alphabet
 * (possible only in hand-made vocabularies) are kept as their UTF-8 bytes. */
static size_t token_to_bytes(const char *token, const int16_t cp_to_byte[BYTE_ALPHABET_SIZE],
                             char *out) {
    const unsigned char *s = (const unsigned char *)token;
    size_t n = 0;
    while (*s) {
        if (s[0] < 0x80 || (s[0] & 0xe0) != 0xc0 || (s[1] & 0xc0) != 0x80) {
            int b = s[0] < 0x80 ? cp_to_byte[s[0]] : -1;
            out[n++] = b >= 0 ? (char)b : (char)s[0];
            s++;
            continue;
        }
        uint32_t cp = ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f);
        if (cp < BYTE_ALPHABET_SIZE && cp_to_byte[cp] >= 0) {
            out[n++] = (char)cp_to_byte[cp];
        } else {
            out[n++] = (char)s[0];
            out[n++] = (char)s[1];
        }
        s += 2;
    }
    return n;
}

/* ------------------------------------------- vocabulary index (load time) */

typedef struct {
    const char *token; /* NULL = empty slot; points into the cJSON tree */
    size_t len;
    int32_t id;
} VocabSlot;

typedef struct {
    VocabSlot *slots;
    size_t mask;
} VocabIndex;

static void vocab_index_init(VocabIndex *v, size_t entries) {
    size_t cap = table_capacity_for(entries);
    v->slots = xcalloc(cap, sizeof *v->slots);
    v->mask = cap - 1;
}

static VocabSlot *vocab_index_slot(const VocabIndex *v, const char *token, size_t len) {
    size_t i = (size_t)hash_bytes((const unsigned char *)token, len) & v->mask;
    while (v->slots[i].token &&
           !(v->slots[i].len == len && memcmp(v->slots[i].token, token, len) == 0))
        i = (i + 1) & v->mask;
    return &v->slots[i];
}

static int32_t vocab_index_find(const VocabIndex *v, const char *token, size_t len) {
    const VocabSlot *s = vocab_index_slot(v, token, len);
    return s->token ? s->id : -1;
}

/* ------------------------------------------------------- merge ranks */

typedef struct {
    uint64_t pair; /* left id << 32 | right id; EMPTY_PAIR when unused */
    uint32_t rank;
    int32_t merged;
} MergeSlot;

#define EMPTY_PAIR UINT64_MAX

typedef struct {
    MergeSlot *slots;
    size_t mask;
} MergeTable;

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

static void merge_table_init(MergeTable *m, size_t entries) {
    size_t cap = table_capacity_for(entries);
    m->slots = xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].pair = EMPTY_PAIR;
    m->mask = cap - 1;
}

static MergeSlot *merge_table_slot(const MergeTable *m, uint64_t key) {
    size_t i = (size_t)mix64(key) & m->mask;
    while (m->slots[i].pair != EMPTY_PAIR && m->slots[i].pair != key) i = (i + 1) & m->mask;
    return &m->slots[i];
}

/* Rank of the adjacent pair (left, right), NO_RANK when it never merges. */
static uint32_t merge_rank(const MergeTable *m, int32_t left, int32_t right, int32_t *merged) {
    const MergeSlot *s = merge_table_slot(m, pair_key(left, right));
    if (s->pair == EMPTY_PAIR) return NO_RANK;
    *merged = s->merged;
    return s->rank;
}

/* ------------------------------------------------------------ the cache */

/* Piece bytes -> ids, shared by all threads. Lookups are plain atomic loads,
 * so threads that only read never write a shared cache line; a mutex here
 * made two threads slower than one. Entries are only ever added (by CAS into
 * an empty slot) until the table holds CACHE_MAX_ENTRIES, then it stays as
 * it is: memory is bounded, nothing is freed while another thread may read
 * it, and the pieces seen first are mostly the frequent ones anyway. */
#define CACHE_SLOTS ((size_t)1 << 19)
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)

typedef struct {
    uint64_t hash;
    uint32_t len;
    uint32_t num_ids;
    int32_t ids[]; /* followed by the piece's len bytes */
} CacheEntry;

typedef struct {
    _Atomic(CacheEntry *) *slots;
    char pad_before[64]; /* keep the counter off the line readers load */
    atomic_size_t entries;
    char pad_after[64];
} PieceCache;

static const unsigned char *cache_entry_bytes(const CacheEntry *e) {
    return (const unsigned char *)(e->ids + e->num_ids);
}

static bool cache_entry_is(const CacheEntry *e, uint64_t hash, const unsigned char *piece,
                           size_t len) {
    return e->hash == hash && e->len == len && memcmp(cache_entry_bytes(e), piece, len) == 0;
}

static void piece_cache_init(PieceCache *c) {
    c->slots = xcalloc(CACHE_SLOTS, sizeof *c->slots);
    atomic_init(&c->entries, 0);
}

static void piece_cache_destroy(PieceCache *c) {
    if (!c->slots) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        free(atomic_load_explicit(&c->slots[i], memory_order_relaxed));
    free(c->slots);
}

/* Fewer than half the slots are ever used, so every probe ends. */
static const CacheEntry *piece_cache_find(const PieceCache *c, uint64_t hash,
                                          const unsigned char *piece, size_t len) {
    for (size_t i = (size_t)hash & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const CacheEntry *e = atomic_load_explicit(&c->slots[i], memory_order_acquire);
        if (!e || cache_entry_is(e, hash, piece, len)) return e;
    }
}

static void piece_cache_insert(PieceCache *c, uint64_t hash, const unsigned char *piece,
                               size_t len, const int32_t *ids, size_t num_ids) {
    if (atomic_load_explicit(&c->entries, memory_order_relaxed) >= CACHE_MAX_ENTRIES ||
        atomic_fetch_add_explicit(&c->entries, 1, memory_order_relaxed) >= CACHE_MAX_ENTRIES)
        return;
    CacheEntry *e = xmalloc(sizeof *e + num_ids * sizeof *ids + len);
    e->hash = hash;
    e->len = (uint32_t)len;
    e->num_ids = (uint32_t)num_ids;
    memcpy(e->ids, ids, num_ids * sizeof *ids);
    memcpy(e->ids + num_ids, piece, len);
    for (size_t i = (size_t)hash & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        CacheEntry *seen = NULL;
        if (atomic_compare_exchange_strong_explicit(&c->slots[i], &seen, e, memory_order_release,
                                                    memory_order_acquire))
            return;
        if (cache_entry_is(seen, hash, piece, len)) { /* another thread was first */
            free(e);
            return;
        }
    }
}

typedef struct {
    int32_t **ids;
    size_t *count;
    size_t *cap;
} IdSink;

static void sink_append(IdSink *out, const int32_t *ids, size_t n) {
    tokenizer_ids_reserve(out->ids, out->count, out->cap, n);
    memcpy(*out->ids + *out->count, ids, n * sizeof *ids);
    *out->count += n;
}

/* ------------------------------------------------------- the tokenizer */

typedef struct {
    int32_t byte_id[256];
    MergeTable merges;
    int64_t vocab_size;
    char *decode_bytes;       /* raw bytes of every token, concatenated */
    size_t *decode_offsets;   /* token i is [offsets[i], offsets[i+1]) */
    pcre2_code *pretokenizer; /* compiled anchored: one piece per call */
    bool jit;
    PieceCache cache;
} Gpt2Bpe;

static void gpt2_destroy(void *impl) {
    Gpt2Bpe *g = impl;
    if (!g) return;
    free(g->merges.slots);
    free(g->decode_bytes);
    free(g->decode_offsets);
    if (g->pretokenizer) pcre2_code_free(g->pretokenizer);
    piece_cache_destroy(&g->cache);
    free(g);
}

/* ------------------------------------------------------------- loading */

static char *read_whole_file(const char *path, const char *flag, size_t *len, char *err,
                             size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open %s '%s': %s", flag, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0, got;
    char *buf = xmalloc(cap + 1);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) buf = xrealloc(buf, (cap *= 2) + 1);
    if (ferror(f) | fclose(f)) {
        snprintf(err, err_size, "cannot read %s '%s': %s", flag, path, strerror(errno));
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static size_t line_of_offset(const char *text, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset; i++) line += text[i] == '\n';
    return line;
}

/* Checks one "token": id entry and records it in the index. */
static bool vocab_add_entry(VocabIndex *index, const cJSON *item, int64_t vocab_size,
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
    size_t len = strlen(item->string);
    VocabSlot *slot = vocab_index_slot(index, item->string, len);
    if (slot->token) {
        snprintf(err, err_size, "--vocab-file '%s': token \"%.40s\" appears twice", path,
                 item->string);
        return false;
    }
    *slot = (VocabSlot){.token = item->string, .len = len, .id = (int32_t)v};
    return true;
}

/* Parses vocab.json into `index` (keys point into *root, which the caller
 * frees after loading the merges) and the decode table of g. */
static bool load_vocab(Gpt2Bpe *g, const char *path, cJSON **root, VocabIndex *index,
                       const int16_t cp_to_byte[BYTE_ALPHABET_SIZE], char *err,
                       size_t err_size) {
    size_t len;
    char *text = read_whole_file(path, "--vocab-file", &len, err, err_size);
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
    vocab_index_init(index, (size_t)n);
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
                g->decode_offsets[i] + token_to_bytes(by_id[i]->string, cp_to_byte, out);
        }
    }
    free(by_id);
    return ok;
}

static bool find_byte_ids(Gpt2Bpe *g, const VocabIndex *index, const uint16_t byte_to_cp[256],
                          const char *path, char *err, size_t err_size) {
    for (int b = 0; b < 256; b++) {
        uint16_t cp = byte_to_cp[b]; /* < U+0144: one or two UTF-8 bytes */
        char utf8[2] = {(char)(cp < 0x80 ? cp : 0xc0 | (cp >> 6)), (char)(0x80 | (cp & 0x3f))};
        size_t n = cp < 0x80 ? 1 : 2;
        g->byte_id[b] = vocab_index_find(index, utf8, n);
        if (g->byte_id[b] < 0) {
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
static bool parse_merge_line(const char *line, size_t len, const VocabIndex *index,
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
    *left = vocab_index_find(index, line, left_len);
    *right = vocab_index_find(index, space + 1, len - left_len - 1);
    *merged = vocab_index_find(index, joined, len - 1);
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

static bool load_merges(Gpt2Bpe *g, const char *path, const VocabIndex *index, char *err,
                        size_t err_size) {
    size_t len;
    char *text = read_whole_file(path, "--merge-file", &len, err, err_size);
    if (!text) return false;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    merge_table_init(&g->merges, lines);
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
            MergeSlot *slot = merge_table_slot(&g->merges, pair_key(left, right));
            *slot = (MergeSlot){.pair = pair_key(left, right), .rank = rank++, .merged = merged};
        }
    }
    free(text);
    return ok;
}

static bool compile_pretokenizer(Gpt2Bpe *g, char *err, size_t err_size) {
    int code;
    PCRE2_SIZE offset;
    g->pretokenizer = pcre2_compile((PCRE2_SPTR)GPT2_PRETOKENIZE_PATTERN, PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &code, &offset, NULL);
    if (!g->pretokenizer) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, err_size,
                 "GPT2BPETokenizer: this PCRE2 library cannot compile GPT-2's pattern (%s); "
                 "it needs PCRE2 built with Unicode support",
                 (const char *)msg);
        return false;
    }
    g->jit = pcre2_jit_compile(g->pretokenizer, PCRE2_JIT_COMPLETE) == 0;
    return true;
}

/* ------------------------------------------------------------------ BPE */

/* Merges the symbols of a short piece in place; returns how many remain.
 * Each round finds the lowest-ranked adjacent pair and merges all of its
 * occurrences left to right, exactly as encoder.py's bpe() does. */
static size_t bpe_merge_short(const MergeTable *m, int32_t *sym, size_t n) {
    uint32_t rank[SHORT_PIECE];
    int32_t merged[SHORT_PIECE];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = merge_rank(m, sym[i], sym[i + 1], &merged[i]);
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        uint32_t round = rank[best];
        if (round == NO_RANK) break;
        /* Ranks are unique per pair, so rank[i] == round marks an occurrence;
         * w <= r keeps the unread part of sym and rank intact. */
        size_t w = best;
        for (size_t r = best; r < n; w++) {
            if (r + 1 < n && rank[r] == round) {
                sym[w] = merged[r];
                r += 2;
            } else {
                sym[w] = sym[r++];
            }
        }
        n = w;
        for (size_t i = best ? best - 1 : 0; i + 1 < n; i++)
            rank[i] = merge_rank(m, sym[i], sym[i + 1], &merged[i]);
    }
    return n;
}

/* A mergeable adjacent pair: symbol at `pos` and its right neighbour. */
typedef struct {
    uint32_t rank;
    uint32_t pos;
    int32_t left, right, merged;
} PairCandidate;

typedef struct {
    PairCandidate *items;
    size_t size;
} CandidateHeap;

static bool candidate_before(const PairCandidate *a, const PairCandidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(CandidateHeap *h, PairCandidate c) {
    size_t i = h->size++;
    while (i > 0 && candidate_before(&c, &h->items[(i - 1) / 2])) {
        h->items[i] = h->items[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->items[i] = c;
}

static PairCandidate heap_pop(CandidateHeap *h) {
    PairCandidate top = h->items[0], last = h->items[--h->size];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->size) break;
        if (child + 1 < h->size && candidate_before(&h->items[child + 1], &h->items[child]))
            child++;
        if (!candidate_before(&h->items[child], &last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->size > 0) h->items[i] = last;
    return top;
}

#define NO_POS UINT32_MAX

typedef struct {
    const MergeTable *merges;
    int32_t *sym;  /* -1 once merged into its left neighbour */
    uint32_t *next, *prev;
    PairCandidate *pending; /* pairs made this round, queued after it */
    size_t num_pending;
} LongPiece;

static void queue_pair(LongPiece *p, uint32_t pos) {
    if (pos == NO_POS || p->next[pos] == NO_POS) return;
    PairCandidate c = {.pos = pos, .left = p->sym[pos], .right = p->sym[p->next[pos]]};
    c.rank = merge_rank(p->merges, c.left, c.right, &c.merged);
    if (c.rank != NO_RANK) p->pending[p->num_pending++] = c;
}

/* Still the pair it was when queued? (A symbol only ever grows, so an
 * unchanged id at both ends means nothing happened to either.) */
static bool candidate_current(const LongPiece *p, const PairCandidate *c) {
    uint32_t right = p->next[c->pos];
    return p->sym[c->pos] == c->left && right != NO_POS && p->sym[right] == c->right;
}

static void merge_candidate(LongPiece *p, const PairCandidate *c) {
    uint32_t right = p->next[c->pos];
    p->sym[c->pos] = c->merged;
    p->sym[right] = -1;
    p->next[c->pos] = p->next[right];
    if (p->next[right] != NO_POS) p->prev[p->next[right]] = c->pos;
    queue_pair(p, p->prev[c->pos]);
    queue_pair(p, c->pos);
}

/* Same rounds as bpe_merge_short, in O(n log n): candidates of one rank pop
 * in position order; pairs they create wait until the round ends. */
static size_t bpe_merge_long(const MergeTable *m, int32_t *sym, size_t n) {
    LongPiece p = {.merges = m, .sym = sym};
    p.next = xmalloc(n * sizeof *p.next);
    p.prev = xmalloc(n * sizeof *p.prev);
    p.pending = xmalloc(2 * n * sizeof *p.pending);
    CandidateHeap heap = {.items = xmalloc(3 * n * sizeof *heap.items)};
    for (size_t i = 0; i < n; i++) {
        p.next[i] = i + 1 < n ? (uint32_t)(i + 1) : NO_POS;
        p.prev[i] = i > 0 ? (uint32_t)(i - 1) : NO_POS;
    }
    for (size_t i = 0; i + 1 < n; i++) queue_pair(&p, (uint32_t)i);
    while (heap.size > 0 || p.num_pending > 0) {
        for (size_t i = 0; i < p.num_pending; i++) heap_push(&heap, p.pending[i]);
        p.num_pending = 0;
        uint32_t round = NO_RANK;
        while (heap.size > 0 && (round == NO_RANK || heap.items[0].rank == round)) {
            PairCandidate c = heap_pop(&heap);
            if (!candidate_current(&p, &c)) continue;
            round = c.rank;
            merge_candidate(&p, &c);
        }
    }
    size_t w = 0;
    for (uint32_t i = 0; i != NO_POS; i = p.next[i]) sym[w++] = sym[i];
    free(p.next);
    free(p.prev);
    free(p.pending);
    free(heap.items);
    return w;
}

/* ------------------------------------------------------------- encoding */

static void encode_piece(Gpt2Bpe *g, const unsigned char *piece, size_t len, IdSink *out) {
    if (len == 1) {
        tokenizer_ids_push(out->ids, out->count, out->cap, g->byte_id[piece[0]]);
        return;
    }
    bool cached = len <= CACHED_PIECE_MAX;
    uint64_t hash = cached ? hash_bytes(piece, len) : 0;
    if (cached) {
        const CacheEntry *e = piece_cache_find(&g->cache, hash, piece, len);
        if (e) {
            sink_append(out, e->ids, e->num_ids);
            return;
        }
    }
    int32_t small[SHORT_PIECE];
    int32_t *sym = len <= SHORT_PIECE ? small : xmalloc(len * sizeof *sym);
    for (size_t i = 0; i < len; i++) sym[i] = g->byte_id[piece[i]];
    size_t n = len <= SHORT_PIECE ? bpe_merge_short(&g->merges, sym, len)
                                  : bpe_merge_long(&g->merges, sym, len);
    sink_append(out, sym, n);
    if (cached) piece_cache_insert(&g->cache, hash, piece, len, sym, n);
    if (sym != small) free(sym);
}

/* Length of the longest valid UTF-8 prefix of s[0, n) (RFC 3629: no
 * overlongs, surrogates or code points above U+10FFFF). */
static size_t valid_utf8_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* ASCII fast path */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return i;
        }
        if (i + need >= n || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80) return i;
        i += need + 1;
    }
    return i;
}

/* Length of the UTF-8 character starting at s (valid text). */
static size_t utf8_char_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* Pre-tokenises one valid UTF-8 run as the whole subject of the regex. */
static void encode_valid_run(Gpt2Bpe *g, const unsigned char *run, size_t len,
                             pcre2_match_data *md, IdSink *out) {
    PCRE2_SIZE *span = pcre2_get_ovector_pointer(md);
    for (size_t at = 0; at < len;) {
        int rc = g->jit ? pcre2_jit_match(g->pretokenizer, run, len, at, 0, md, NULL)
                        : PCRE2_ERROR_JIT_BADOPTION;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION)
            rc = pcre2_match(g->pretokenizer, run, len, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             md, NULL);
        size_t end = rc > 0 ? span[1] : at;
        /* The pattern matches some piece at any position of valid text; if
         * PCRE2 ever disagreed (a resource limit), keep going one char. */
        if (rc <= 0 || span[0] != at || end <= at) end = at + utf8_char_len(run[at]);
        if (end > len) end = len;
        encode_piece(g, run + at, end - at, out);
        at = end;
    }
}

static void gpt2_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                        size_t *count, size_t *cap) {
    Gpt2Bpe *g = t->impl;
    IdSink out = {ids, count, cap};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(g->pretokenizer, NULL);
    GPT3D_CHECK(md != NULL, "out of memory for PCRE2 match data");
    const unsigned char *s = (const unsigned char *)text;
    for (size_t at = 0; at < len;) {
        size_t valid = valid_utf8_prefix(s + at, len - at);
        if (valid > 0) {
            encode_valid_run(g, s + at, valid, md, &out);
            at += valid;
        } else { /* a byte outside any valid sequence is a piece of its own */
            tokenizer_ids_push(ids, count, cap, g->byte_id[s[at]]);
            at++;
        }
    }
    pcre2_match_data_free(md);
}

static char *gpt2_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    const Gpt2Bpe *g = t->impl;
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        if (ids[i] >= 0 && ids[i] < g->vocab_size)
            total += g->decode_offsets[ids[i] + 1] - g->decode_offsets[ids[i]];
    char *out = xmalloc(total + 1);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] >= g->vocab_size) continue; /* not a token: nothing */
        size_t begin = g->decode_offsets[ids[i]], end = g->decode_offsets[ids[i] + 1];
        memcpy(out + n, g->decode_bytes + begin, end - begin);
        n += end - begin;
    }
    out[n] = '\0';
    return out;
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
    piece_cache_init(&g->cache);
    uint16_t byte_to_cp[256];
    int16_t cp_to_byte[BYTE_ALPHABET_SIZE];
    byte_alphabet(byte_to_cp, cp_to_byte);
    cJSON *root = NULL;
    VocabIndex index = {0};
    int32_t eod = -1;
    bool ok = load_vocab(g, vocab_file, &root, &index, cp_to_byte, err, err_size) &&
              find_byte_ids(g, &index, byte_to_cp, vocab_file, err, err_size) &&
              load_merges(g, merge_file, &index, err, err_size);
    if (ok) {
        eod = vocab_index_find(&index, GPT2_EOD_TOKEN, strlen(GPT2_EOD_TOKEN));
        if (eod < 0) {
            snprintf(err, err_size, "--vocab-file '%s': has no " GPT2_EOD_TOKEN
                     " token, which GPT2BPETokenizer uses as end of document", vocab_file);
            ok = false;
        }
    }
    free(index.slots);
    cJSON_Delete(root);
    ok = ok && compile_pretokenizer(g, err, err_size);
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
