/* data/tokenizer_hf_encode.c — HuggingFaceTokenizer's encode and decode
 * (the model it runs is described in data/tokenizer_hf.h).
 *
 * Invalid UTF-8. Hugging Face's `tokenizers` only ever sees valid text (its
 * Python and Node bindings take strings, so invalid bytes were already
 * replaced by U+FFFD or refused by whoever decoded the file; the Node
 * binding refuses a Buffer). gpt3d keeps every byte
 * instead, the way GPT2BPETokenizer does, so decode(encode(x)) == x:
 * - byte-level models: each valid UTF-8 run is pre-tokenized on its own,
 *   exactly as the reference tokenizes that text, and a byte that is not
 *   part of a valid sequence is its own one-byte token;
 * - character-level models: an invalid byte is a character the vocabulary
 *   lacks, so it becomes its <0xXX> byte token (byte_fallback) or unk. */
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_hf.h"
#include "data/unicode_nfc.h"

#define META "\xe2\x96\x81"
#define META_LEN 3
/* Words of up to this many bytes are cached (character-level models). */
#define CACHED_WORD_MAX 128

typedef struct {
    HfTokenizer *h;
    int32_t **ids;
    size_t *count, *cap;
} IdOut;

/* ----------------------------------------------------------- byte-level */

static void byte_level_segment(IdOut *o, const unsigned char *s, size_t len,
                               pcre2_match_data *md) {
    HfTokenizer *h = o->h;
    unsigned char *spaced = NULL;
    if (h->add_prefix_space && s[0] != ' ') { /* ByteLevel's add_prefix_space */
        spaced = xmalloc(len + 1);
        spaced[0] = ' ';
        memcpy(spaced + 1, s, len);
        s = spaced;
        len++;
    }
    byte_level_encode_text(&h->bpe, h->has_split ? &h->split : NULL, s, len, md, o->ids, o->count,
                           o->cap);
    free(spaced);
}

/* ------------------------------------------------------ character-level */

/* A character (or invalid byte) the vocabulary lacks: its byte tokens, or
 * one unk for a run of them with fuse_unk, or nothing without an unk. */
static size_t push_unknown(const HfTokenizer *h, const unsigned char *c, size_t n, int32_t *sym,
                           size_t count, bool *last_unk) {
    bool bytes_known = h->byte_fallback;
    for (size_t k = 0; k < n; k++) bytes_known = bytes_known && h->byte_token[c[k]] >= 0;
    if (bytes_known) {
        for (size_t k = 0; k < n; k++) sym[count++] = h->byte_token[c[k]];
        *last_unk = false;
        return count;
    }
    if (h->unk < 0 || (h->fuse_unk && *last_unk)) return count;
    sym[count++] = h->unk;
    *last_unk = true;
    return count;
}

/* One word: its characters' ids, merged by rank. */
static void encode_word(IdOut *o, const unsigned char *w, size_t len) {
    HfTokenizer *h = o->h;
    if (h->ignore_merges) {
        int32_t id = byte_index_find(&h->pieces, (const char *)w, len);
        if (id >= 0) {
            tokenizer_ids_push(o->ids, o->count, o->cap, id);
            return;
        }
    }
    bool cached = len <= CACHED_WORD_MAX;
    uint64_t hash = cached ? bpe_hash_bytes(w, len) : 0;
    if (cached && piece_cache_lookup(&h->bpe.cache, hash, w, len, o->ids, o->count, o->cap))
        return;
    int32_t *sym = xmalloc(len * sizeof *sym); /* at most one symbol per byte */
    size_t n = 0;
    bool last_unk = false;
    for (size_t i = 0; i < len;) {
        size_t c = utf8_char_len(w[i]);
        if (i + c > len || bpe_valid_utf8_prefix(w + i, c) != c) c = 0; /* an invalid byte */
        int32_t id = c ? byte_index_find(&h->pieces, (const char *)w + i, c) : -1;
        if (id >= 0) {
            sym[n++] = id;
            last_unk = false;
        } else {
            n = push_unknown(h, w + i, c ? c : 1, sym, n, &last_unk);
        }
        i += c ? c : 1;
    }
    n = bpe_merge(&h->bpe.merges, sym, n, BPE_LOWEST_FIRST);
    ids_append(o->ids, o->count, o->cap, sym, n);
    if (cached) piece_cache_insert(&h->bpe.cache, hash, w, len, sym, n);
    free(sym);
}

/* The normalizer's / Metaspace's "▁" form of one segment. */
static unsigned char *metaspace_form(const HfTokenizer *h, const unsigned char *s, size_t len,
                                     bool at_start, size_t *out_len) {
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++) spaces += s[i] == ' ';
    unsigned char *out = xmalloc(META_LEN + len + 2 * spaces + 1);
    size_t n = 0;
    bool starts_meta = (h->replace_space && s[0] == ' ') ||
                       (len >= META_LEN && memcmp(s, META, META_LEN) == 0);
    bool prepend = h->prepend && (!h->prepend_first_only || at_start) &&
                   !(h->prepend_if_missing && starts_meta);
    if (prepend) {
        memcpy(out, META, META_LEN);
        n = META_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (h->replace_space && s[i] == ' ') {
            memcpy(out + n, META, META_LEN);
            n += META_LEN;
        } else {
            out[n++] = s[i];
        }
    }
    *out_len = n;
    return out;
}

static void char_level_segment(IdOut *o, const unsigned char *s, size_t len, bool at_start) {
    size_t n;
    unsigned char *text = metaspace_form(o->h, s, len, at_start, &n);
    if (!o->h->split_words && !o->h->cut_at_meta) {
        encode_word(o, text, n);
    } else { /* a word starts at each "▁" (Metaspace split: MergedWithNext), or
              * at each "▁" after another character (cut_at_meta) */
        bool every = o->h->split_words;
        size_t begin = 0;
        for (size_t i = 1; i + META_LEN <= n; i++) {
            if (memcmp(text + i, META, META_LEN) != 0) continue;
            bool after_meta = i >= META_LEN && memcmp(text + i - META_LEN, META, META_LEN) == 0;
            if (!every && after_meta) continue;
            encode_word(o, text + begin, i - begin);
            begin = i;
        }
        if (begin < n) encode_word(o, text + begin, n - begin);
    }
    free(text);
}

/* One stretch of text between added tokens: normalizer, pre-tokenizer, model. */
static void encode_segment(IdOut *o, const unsigned char *s, size_t len, bool at_start,
                           pcre2_match_data *md) {
    size_t n = len;
    unsigned char *normal = o->h->nfc ? unicode_nfc(s, len, &n) : NULL;
    if (normal) s = normal;
    if (n > 0) {
        if (o->h->byte_level) byte_level_segment(o, s, n, md);
        else char_level_segment(o, s, n, at_start);
    }
    free(normal);
}

/* ------------------------------------------------------------ the API */

void hf_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *count,
               size_t *cap) {
    HfTokenizer *h = t->impl;
    IdOut o = {h, ids, count, cap};
    pcre2_match_data *md =
        h->has_split ? pcre2_match_data_create_from_pattern(h->split.code, NULL) : NULL;
    GPT3D_CHECK(!h->has_split || md, "out of memory for PCRE2 match data");
    ids_append(ids, count, cap, h->prefix, (size_t)h->num_prefix);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t at = 0; at < len;) {
        size_t next = len, match_len = 0;
        int32_t added = -1;
        if (!added_tokens_next(&h->added, s, len, at, &next, &match_len, &added)) next = len;
        if (next > at) encode_segment(&o, s + at, next - at, at == 0, md);
        if (added >= 0 && next < len) tokenizer_ids_push(ids, count, cap, added);
        at = next + match_len;
    }
    ids_append(ids, count, cap, h->suffix, (size_t)h->num_suffix);
    if (md) pcre2_match_data_free(md);
}

char *hf_decode(const Tokenizer *t, const int32_t *ids, size_t count) {
    const HfTokenizer *h = t->impl;
    size_t n;
    char *out = decode_by_table(h->decode_bytes, h->decode_offsets, h->vocab_size, ids, count, &n);
    if (h->strip_leading_space && n > 0 && out[0] == ' ') memmove(out, out + 1, n); /* and the NUL */
    return out;
}
