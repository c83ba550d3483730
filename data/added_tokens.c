/* data/added_tokens.c — leftmost-longest search for added tokens (contract
 * in data/added_tokens.h).
 *
 * Added-token sets are small (hundreds, Megatron's TikTokenizer a thousand)
 * and their contents share a few lengths, so instead of an automaton each
 * text position whose first two bytes start some token is tried against
 * the contents of every length, longest first, by one hash lookup each. On
 * ordinary text almost no position passes the two-byte filter. */
#include "data/added_tokens.h"

#include <stdlib.h>
#include <string.h>

void added_tokens_init(AddedTokens *a) {
    memset(a, 0, sizeof *a);
    a->second = xcalloc(65536 / 8, 1);
}

void added_tokens_free(AddedTokens *a) {
    byte_index_free(&a->index);
    free(a->contents);
    free(a->lengths);
    free(a->second);
    free(a->pending_offsets);
    free(a->pending_lengths);
    free(a->pending_ids);
    memset(a, 0, sizeof *a);
}

void added_tokens_add(AddedTokens *a, const char *content, size_t len, int32_t id) {
    if (len == 0) return;
    if (a->used + len > a->cap) {
        while (a->used + len > a->cap) a->cap = a->cap ? 2 * a->cap : 4096;
        a->contents = xrealloc(a->contents, a->cap);
    }
    if (a->count == a->pending_cap) {
        a->pending_cap = a->pending_cap ? 2 * a->pending_cap : 64;
        a->pending_offsets = xrealloc(a->pending_offsets, a->pending_cap * sizeof(size_t));
        a->pending_lengths = xrealloc(a->pending_lengths, a->pending_cap * sizeof(size_t));
        a->pending_ids = xrealloc(a->pending_ids, a->pending_cap * sizeof(int32_t));
    }
    memcpy(a->contents + a->used, content, len);
    a->pending_offsets[a->count] = a->used;
    a->pending_lengths[a->count] = len;
    a->pending_ids[a->count] = id;
    a->used += len;
    a->count++;
}

static int longest_first(const void *x, const void *y) {
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* The contents buffer no longer moves: index it. */
void added_tokens_finish(AddedTokens *a) {
    byte_index_init(&a->index, a->count);
    a->lengths = xmalloc((a->count + 1) * sizeof *a->lengths);
    for (size_t i = 0; i < a->count; i++) {
        const unsigned char *c = (const unsigned char *)a->contents + a->pending_offsets[i];
        size_t len = a->pending_lengths[i];
        byte_index_add(&a->index, (const char *)c, len, a->pending_ids[i]);
        a->first[c[0]] = true;
        if (len >= 2) {
            unsigned two = (unsigned)c[0] << 8 | c[1];
            a->second[two >> 3] |= (uint8_t)(1u << (two & 7));
        }
        bool seen = false;
        for (size_t k = 0; k < a->num_lengths; k++) seen |= a->lengths[k] == len;
        if (!seen) a->lengths[a->num_lengths++] = len;
    }
    qsort(a->lengths, a->num_lengths, sizeof *a->lengths, longest_first);
}

static bool match_at(const AddedTokens *a, const unsigned char *s, size_t len, size_t p,
                     size_t *match_len, int32_t *id) {
    bool two_ok = false;
    if (p + 1 < len) {
        unsigned two = (unsigned)s[p] << 8 | s[p + 1];
        two_ok = a->second[two >> 3] & (1u << (two & 7));
    }
    for (size_t k = 0; k < a->num_lengths; k++) {
        size_t n = a->lengths[k];
        if (p + n > len || (n >= 2 && !two_ok)) continue;
        int32_t found = byte_index_find(&a->index, (const char *)s + p, n);
        if (found >= 0) {
            *match_len = n;
            *id = found;
            return true;
        }
    }
    return false;
}

bool added_tokens_next(const AddedTokens *a, const unsigned char *s, size_t len, size_t from,
                       size_t *at, size_t *match_len, int32_t *id) {
    if (a->count == 0) return false;
    for (size_t p = from; p < len; p++) {
        if (!a->first[s[p]]) continue;
        if (match_at(a, s, len, p, match_len, id)) {
            *at = p;
            return true;
        }
    }
    return false;
}
