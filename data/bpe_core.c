/* data/bpe_core.c — hash tables, BPE merging, the shared piece cache, the
 * byte-level alphabet and the regex pre-tokenizer loop (contract in
 * data/bpe_core.h). */
#include "data/bpe_core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pieces of up to this many symbols merge with a simple rescan; longer ones
 * use a heap so a megabyte of letters stays O(n log n). */
#define SHORT_PIECE 64
/* Only pieces of 2..CACHED_PIECE_MAX bytes are cached; longer ones rarely
 * repeat. */
#define CACHED_PIECE_MAX 128
#define EMPTY_PAIR UINT64_MAX

/* ------------------------------------------------------------ hashing */

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t bpe_hash_bytes(const unsigned char *p, size_t n) {
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

/* --------------------------------------------------- byte string -> id */

void byte_index_init(ByteIndex *v, size_t entries) {
    size_t cap = table_capacity_for(entries);
    v->slots = xcalloc(cap, sizeof *v->slots);
    v->mask = cap - 1;
}

void byte_index_free(ByteIndex *v) {
    free(v->slots);
    v->slots = NULL;
}

static ByteIndexSlot *byte_index_slot(const ByteIndex *v, const char *key, size_t len) {
    size_t i = (size_t)bpe_hash_bytes((const unsigned char *)key, len) & v->mask;
    while (v->slots[i].key && !(v->slots[i].len == len && memcmp(v->slots[i].key, key, len) == 0))
        i = (i + 1) & v->mask;
    return &v->slots[i];
}

bool byte_index_add(ByteIndex *v, const char *key, size_t len, int32_t id) {
    ByteIndexSlot *s = byte_index_slot(v, key, len);
    if (s->key) return false;
    *s = (ByteIndexSlot){.key = key, .len = len, .id = id};
    return true;
}

int32_t byte_index_find(const ByteIndex *v, const char *key, size_t len) {
    const ByteIndexSlot *s = byte_index_slot(v, key, len);
    return s->key ? s->id : -1;
}

/* ------------------------------------------------------- merge ranks */

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

void merge_table_init(MergeTable *m, size_t entries) {
    size_t cap = table_capacity_for(entries);
    m->slots = xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].pair = EMPTY_PAIR;
    m->mask = cap - 1;
}

void merge_table_free(MergeTable *m) {
    free(m->slots);
    m->slots = NULL;
}

static MergeSlot *merge_table_slot(const MergeTable *m, uint64_t key) {
    size_t i = (size_t)mix64(key) & m->mask;
    while (m->slots[i].pair != EMPTY_PAIR && m->slots[i].pair != key) i = (i + 1) & m->mask;
    return &m->slots[i];
}

void merge_table_set(MergeTable *m, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
    *merge_table_slot(m, pair_key(left, right)) =
        (MergeSlot){.pair = pair_key(left, right), .rank = rank, .merged = merged};
}

void merge_table_set_min(MergeTable *m, int32_t left, int32_t right, uint32_t rank,
                         int32_t merged) {
    MergeSlot *s = merge_table_slot(m, pair_key(left, right));
    if (s->pair == EMPTY_PAIR || rank < s->rank)
        *s = (MergeSlot){.pair = pair_key(left, right), .rank = rank, .merged = merged};
}

uint32_t merge_table_rank(const MergeTable *m, int32_t left, int32_t right, int32_t *merged) {
    const MergeSlot *s = merge_table_slot(m, pair_key(left, right));
    if (s->pair == EMPTY_PAIR) return BPE_NO_RANK;
    *merged = s->merged;
    return s->rank;
}

/* ------------------------------------------------------------------ BPE */

/* Merges the symbols of a short piece in place; returns how many remain.
 * Each step finds the lowest-ranked adjacent pair (the leftmost of equals)
 * and merges it: in rounds, with all of its occurrences left to right, as
 * encoder.py's bpe() does; else alone. */
static size_t bpe_merge_short(const MergeTable *m, int32_t *sym, size_t n, bool rounds) {
    uint32_t rank[SHORT_PIECE];
    int32_t merged[SHORT_PIECE];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = merge_table_rank(m, sym[i], sym[i + 1], &merged[i]);
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        uint32_t round = rank[best];
        if (round == BPE_NO_RANK) break;
        /* A rank names one merge result, so rank[i] == round marks an
         * occurrence; w <= r keeps the unread part of sym and rank intact. */
        size_t w = best;
        for (size_t r = best; r < n; w++) {
            if (r + 1 < n && rank[r] == round && (rounds || r == best)) {
                sym[w] = merged[r];
                r += 2;
            } else {
                sym[w] = sym[r++];
            }
        }
        n = w;
        for (size_t i = best ? best - 1 : 0; i + 1 < n; i++)
            rank[i] = merge_table_rank(m, sym[i], sym[i + 1], &merged[i]);
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
    int32_t *sym; /* -1 once merged into its left neighbour */
    uint32_t *next, *prev;
    PairCandidate *pending; /* pairs made this round, queued after it */
    size_t num_pending;
} LongPiece;

static void queue_pair(LongPiece *p, uint32_t pos) {
    if (pos == NO_POS || p->next[pos] == NO_POS) return;
    PairCandidate c = {.pos = pos, .left = p->sym[pos], .right = p->sym[p->next[pos]]};
    c.rank = merge_table_rank(p->merges, c.left, c.right, &c.merged);
    if (c.rank != BPE_NO_RANK) p->pending[p->num_pending++] = c;
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

/* Same order as the short versions, in O(n log n): candidates pop in (rank,
 * position) order; in rounds, pairs they create wait until the round ends. */
static size_t bpe_merge_long(const MergeTable *m, int32_t *sym, size_t n, bool rounds) {
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
        uint32_t round = BPE_NO_RANK;
        while (heap.size > 0 && (round == BPE_NO_RANK || heap.items[0].rank == round)) {
            PairCandidate c = heap_pop(&heap);
            if (!candidate_current(&p, &c)) continue;
            merge_candidate(&p, &c);
            if (!rounds) break; /* the pairs just made compete at once */
            round = c.rank;
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

size_t bpe_merge(const MergeTable *m, int32_t *sym, size_t n, BpeOrder order) {
    bool rounds = order == BPE_ROUNDS;
    return n > SHORT_PIECE ? bpe_merge_long(m, sym, n, rounds) : bpe_merge_short(m, sym, n, rounds);
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

static const unsigned char *cache_entry_bytes(const CacheEntry *e) {
    return (const unsigned char *)(e->ids + e->num_ids);
}

static bool cache_entry_is(const CacheEntry *e, uint64_t hash, const unsigned char *piece,
                           size_t len) {
    return e->hash == hash && e->len == len && memcmp(cache_entry_bytes(e), piece, len) == 0;
}

void piece_cache_init(PieceCache *c) {
    c->slots = xcalloc(CACHE_SLOTS, sizeof *c->slots);
    atomic_init(&c->entries, 0);
}

void piece_cache_destroy(PieceCache *c) {
    if (!c->slots) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        free(atomic_load_explicit(&c->slots[i], memory_order_relaxed));
    free(c->slots);
    c->slots = NULL;
}

/* Fewer than half the slots are ever used, so every probe ends. */
bool piece_cache_lookup(const PieceCache *c, uint64_t hash, const unsigned char *piece, size_t len,
                        int32_t **ids, size_t *count, size_t *cap) {
    for (size_t i = (size_t)hash & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const CacheEntry *e = atomic_load_explicit(&c->slots[i], memory_order_acquire);
        if (!e) return false;
        if (cache_entry_is(e, hash, piece, len)) {
            ids_append(ids, count, cap, e->ids, e->num_ids);
            return true;
        }
    }
}

void piece_cache_insert(PieceCache *c, uint64_t hash, const unsigned char *piece, size_t len,
                        const int32_t *ids, size_t num_ids) {
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
        void *seen = NULL;
        if (atomic_compare_exchange_strong_explicit(&c->slots[i], &seen, e, memory_order_release,
                                                    memory_order_acquire))
            return;
        if (cache_entry_is(seen, hash, piece, len)) { /* another thread was first */
            free(e);
            return;
        }
    }
}

/* ---------------------------------------------------- byte-level models */

void byte_alphabet(uint16_t byte_to_cp[256], int16_t cp_to_byte[BYTE_ALPHABET_SIZE]) {
    for (int cp = 0; cp < BYTE_ALPHABET_SIZE; cp++) cp_to_byte[cp] = -1;
    int shifted = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_to_cp[b] = (uint16_t)(printable ? b : 256 + shifted++);
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

size_t byte_level_token_bytes(const char *token, size_t len,
                              const int16_t cp_to_byte[BYTE_ALPHABET_SIZE], char *out) {
    const unsigned char *s = (const unsigned char *)token, *end = s + len;
    size_t n = 0;
    while (s < end) {
        if (s[0] < 0x80 || (s[0] & 0xe0) != 0xc0 || s + 1 >= end || (s[1] & 0xc0) != 0x80) {
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

size_t byte_level_char(const uint16_t byte_to_cp[256], int b, char out[2]) {
    uint16_t cp = byte_to_cp[b]; /* < U+0144: one or two UTF-8 bytes */
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

void byte_level_bpe_init(ByteLevelBpe *b) {
    memset(b, 0, sizeof *b);
    piece_cache_init(&b->cache);
}

void byte_level_bpe_destroy(ByteLevelBpe *b) {
    merge_table_free(&b->merges);
    piece_cache_destroy(&b->cache);
}

void byte_level_bpe_encode(ByteLevelBpe *b, const unsigned char *piece, size_t len, int32_t **ids,
                           size_t *count, size_t *cap) {
    if (len == 1) {
        tokenizer_ids_push(ids, count, cap, b->byte_id[piece[0]]);
        return;
    }
    /* The cache goes first: it also holds whole-token pieces, found once. */
    bool cached = len <= CACHED_PIECE_MAX;
    uint64_t hash = cached ? bpe_hash_bytes(piece, len) : 0;
    if (cached && piece_cache_lookup(&b->cache, hash, piece, len, ids, count, cap)) return;
    if (b->whole) {
        int32_t id = byte_index_find(b->whole, (const char *)piece, len);
        if (id >= 0) {
            tokenizer_ids_push(ids, count, cap, id);
            if (cached) piece_cache_insert(&b->cache, hash, piece, len, &id, 1);
            return;
        }
    }
    int32_t small[SHORT_PIECE];
    int32_t *sym = len <= SHORT_PIECE ? small : xmalloc(len * sizeof *sym);
    for (size_t i = 0; i < len; i++) sym[i] = b->byte_id[piece[i]];
    size_t n = bpe_merge(&b->merges, sym, len, b->order);
    ids_append(ids, count, cap, sym, n);
    if (cached) piece_cache_insert(&b->cache, hash, piece, len, sym, n);
    if (sym != small) free(sym);
}

typedef struct {
    ByteLevelBpe *bpe;
    int32_t **ids;
    size_t *count, *cap;
} ByteLevelSink;

static void byte_level_piece(void *ctx, const unsigned char *piece, size_t len) {
    ByteLevelSink *o = ctx;
    byte_level_bpe_encode(o->bpe, piece, len, o->ids, o->count, o->cap);
}

void byte_level_encode_text(ByteLevelBpe *b, const PreTokenizerRegex *regex,
                            const unsigned char *s, size_t len, pcre2_match_data *md,
                            int32_t **ids, size_t *count, size_t *cap) {
    ByteLevelSink sink = {b, ids, count, cap};
    for (size_t at = 0; at < len;) {
        size_t valid = bpe_valid_utf8_prefix(s + at, len - at);
        if (valid == 0) { /* a byte outside any valid sequence is a piece of its own */
            tokenizer_ids_push(ids, count, cap, b->byte_id[s[at++]]);
            continue;
        }
        if (regex) pretokenizer_regex_split(regex, s + at, valid, md, byte_level_piece, &sink);
        else byte_level_piece(&sink, s + at, valid);
        at += valid;
    }
}

/* ------------------------------------------------ regex pre-tokenizers */

/* Oniguruma's \s (Hugging Face's Split) and Rust regex's (tiktoken) are
 * Unicode White_Space; PCRE2 10.42's \s also matches U+180E. Spell it out,
 * inside and outside character classes, so the engines split alike. */
#define WS_SET                                                                               \
    "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}" \
    "\\x{3000}"

static char *spell_out_whitespace(const char *pattern) {
    size_t n = strlen(pattern);
    char *out = xmalloc(n * (sizeof WS_SET + 4) + 1);
    size_t w = 0;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = pattern[i];
        if (c == '\\' && i + 1 < n) {
            char e = pattern[++i];
            const char *put = NULL;
            if (e == 's') put = in_class ? WS_SET : "[" WS_SET "]";
            else if (e == 'S' && !in_class) put = "[^" WS_SET "]";
            if (put) {
                memcpy(out + w, put, strlen(put));
                w += strlen(put);
            } else {
                out[w++] = c;
                out[w++] = e;
            }
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            out[w++] = c;
            if (pattern[i + 1] == '^') out[w++] = pattern[++i];
            if (pattern[i + 1] == ']') out[w++] = pattern[++i]; /* a literal ] first */
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        out[w++] = c;
    }
    out[w] = '\0';
    return out;
}

bool pretokenizer_regex_compile(PreTokenizerRegex *r, const char *pattern, const char *owner,
                                char *err, size_t err_size) {
    int code;
    PCRE2_SIZE offset;
    char *spelled = spell_out_whitespace(pattern);
    r->code = pcre2_compile((PCRE2_SPTR)spelled, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                            &code, &offset, NULL);
    free(spelled);
    if (!r->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, err_size,
                 "%s: PCRE2 cannot compile the pre-tokenizer pattern at offset %zu (%s); it "
                 "needs PCRE2 built with Unicode support and Perl/Oniguruma syntax",
                 owner, (size_t)offset, (const char *)msg);
        return false;
    }
    r->jit = pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE) == 0;
    return true;
}

void pretokenizer_regex_free(PreTokenizerRegex *r) {
    if (r->code) pcre2_code_free(r->code);
    r->code = NULL;
}

/* One match at or after `at`: 1 with [*begin, *end), 0 when none is left. */
static int regex_find(const PreTokenizerRegex *r, const unsigned char *run, size_t len, size_t at,
                      pcre2_match_data *md, size_t *begin, size_t *end) {
    int rc = r->jit ? pcre2_jit_match(r->code, run, len, at, 0, md, NULL)
                    : PCRE2_ERROR_JIT_BADOPTION;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION)
        rc = pcre2_match(r->code, run, len, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc <= 0) return -1; /* a resource limit */
    const PCRE2_SIZE *span = pcre2_get_ovector_pointer(md);
    *begin = span[0];
    *end = span[1];
    return 1;
}

void pretokenizer_regex_split(const PreTokenizerRegex *r, const unsigned char *run, size_t len,
                              pcre2_match_data *md, PieceFn piece, void *ctx) {
    size_t gap = 0; /* start of the text no match has covered yet */
    for (size_t at = 0; at < len;) {
        size_t begin, end;
        int found = regex_find(r, run, len, at, md, &begin, &end);
        if (found == 0) break;
        if (found < 0) { /* PCRE2 gave up (a resource limit): go on one char */
            begin = at;
            end = at + utf8_char_len(run[at]);
        }
        if (end > len) end = len;
        if (end == begin) { /* an empty match splits nothing off: look further */
            at = begin + utf8_char_len(run[begin]);
            continue;
        }
        if (begin > gap) piece(ctx, run + gap, begin - gap);
        piece(ctx, run + begin, end - begin);
        gap = at = end;
    }
    if (gap < len) piece(ctx, run + gap, len - gap);
}

/* ---------------------------------------------------------------- UTF-8 */

size_t bpe_valid_utf8_prefix(const unsigned char *s, size_t n) {
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

char *decode_by_table(const char *bytes, const size_t *offsets, int64_t vocab_size,
                      const int32_t *ids, size_t count, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        if (ids[i] >= 0 && ids[i] < vocab_size) total += offsets[ids[i] + 1] - offsets[ids[i]];
    char *out = xmalloc(total + 1);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] >= vocab_size) continue; /* not a token: nothing */
        size_t begin = offsets[ids[i]], end = offsets[ids[i] + 1];
        memcpy(out + n, bytes + begin, end - begin);
        n += end - begin;
    }
    out[n] = '\0';
    if (len) *len = n;
    return out;
}

/* ---------------------------------------------------------------- files */

char *bpe_read_file(const char *path, const char *flag, size_t *len, char *err, size_t err_size) {
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
