/* data/tokenizer_hf.c — HuggingFaceTokenizer: loads a BPE tokenizer.json
 * (the family and the steps are in data/tokenizer_hf.h; encoding is in
 * tokenizer_hf_encode.c).
 *
 * Everything a file sets that would change the ids and that is not
 * implemented here is refused with one message naming the field, its value
 * and the file: other models (WordPiece, Unigram, WordLevel), normalizers
 * (NFKC, Lowercase, ...), pre-tokenizers (Digits, Whitespace, ...), Split
 * behaviours other than Isolated, BPE dropout, subword prefixes, added
 * tokens with lstrip / rstrip / single_word. Fields that only shape
 * offsets, padding, truncation or pairs are ignored.
 *
 * The end-of-document id is the eos_token of the tokenizer_config.json that
 * sits beside tokenizer.json (what Megatron's HuggingFaceTokenizer takes from
 * transformers); without one, the first added token among </s>,
 * <|end_of_text|>, <|endoftext|>, <eos>. vocab_size is the largest id + 1
 * over the vocabulary and the added tokens. */
#include <cjson/cJSON.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/tokenizer_hf.h"

#define META "\xe2\x96\x81" /* "▁", U+2581, SentencePiece's space */
typedef struct {
    const char *path;
    char *err;
    size_t err_size;
    const char **vocab_token; /* id -> token string (points into the cJSON tree), or NULL */
    size_t vocab_ids;         /* entries of vocab_token: the vocabulary's largest id + 1 */
} Loader;

#define LFAIL(L, ...)                                                                              \
    do {                                                                                           \
        char detail_[512];                                                                         \
        snprintf(detail_, sizeof detail_, __VA_ARGS__);                                            \
        snprintf((L)->err, (L)->err_size, "--tokenizer-model '%s': %s", (L)->path, detail_);     \
        return false;                                                                              \
    } while (0)

static const char *type_of(const cJSON *node) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(node, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static bool flag_true(const cJSON *node, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(node, key));
}

static const char *string_of(const cJSON *node, const char *key) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(node, key);
    return cJSON_IsString(s) ? s->valuestring : NULL;
}

static void hf_destroy(void *impl) {
    HfTokenizer *h = impl;
    if (!h) return;
    byte_level_bpe_destroy(&h->bpe);
    byte_index_free(&h->whole);
    free(h->whole_keys);
    pretokenizer_regex_free(&h->split);
    byte_index_free(&h->pieces);
    free(h->token_text);
    added_tokens_free(&h->added);
    free(h->decode_bytes);
    free(h->decode_offsets);
    free(h);
}

/* ------------------------------------------------------------ the model */

static bool load_vocab(HfTokenizer *h, Loader *L, const cJSON *vocab) {
    if (!cJSON_IsObject(vocab) || !vocab->child)
        LFAIL(L, "model.vocab must be a non-empty object mapping token strings to ids");
    size_t n = 0, text = 0;
    int64_t max_id = -1;
    for (const cJSON *v = vocab->child; v; v = v->next, n++) {
        double id = v->valuedouble;
        if (!cJSON_IsNumber(v) || !(id >= 0 && id < 2147483647.0) || id != (double)(int64_t)id)
            LFAIL(L, "model.vocab: the id of \"%.40s\" must be a non-negative integer", v->string);
        if ((int64_t)id > max_id) max_id = (int64_t)id;
        text += strlen(v->string);
    }
    h->vocab_size = max_id + 1;
    L->vocab_ids = (size_t)h->vocab_size;
    L->vocab_token = xcalloc(L->vocab_ids, sizeof *L->vocab_token);
    h->token_text = xmalloc(text + 1);
    byte_index_init(&h->pieces, n);
    size_t used = 0;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        size_t len = strlen(v->string);
        int32_t id = (int32_t)v->valuedouble;
        memcpy(h->token_text + used, v->string, len);
        if (!byte_index_add(&h->pieces, h->token_text + used, len, id))
            LFAIL(L, "model.vocab: token \"%.40s\" appears twice", v->string);
        if (L->vocab_token[id])
            LFAIL(L, "model.vocab: tokens \"%.40s\" and \"%.40s\" share id %d", L->vocab_token[id],
                  v->string, id);
        L->vocab_token[id] = v->string;
        used += len;
    }
    return true;
}

/* One merge, "left right" (the older form) or ["left", "right"]. */
static bool merge_parts(const cJSON *m, const char **left, size_t *left_len, const char **right,
                        size_t *right_len) {
    if (cJSON_IsString(m)) {
        const char *space = strchr(m->valuestring, ' ');
        if (!space || space == m->valuestring || !space[1] || strchr(space + 1, ' ')) return false;
        *left = m->valuestring;
        *left_len = (size_t)(space - m->valuestring);
        *right = space + 1;
        *right_len = strlen(space + 1);
        return true;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
        cJSON_IsString(m->child->next)) {
        *left = m->child->valuestring;
        *left_len = strlen(*left);
        *right = m->child->next->valuestring;
        *right_len = strlen(*right);
        return true;
    }
    return false;
}

static bool load_merges(HfTokenizer *h, Loader *L, const cJSON *merges) {
    if (!cJSON_IsArray(merges)) LFAIL(L, "model.merges must be an array");
    merge_table_init(&h->bpe.merges, (size_t)cJSON_GetArraySize(merges));
    char *joined = NULL;
    size_t joined_cap = 0;
    uint32_t rank = 0;
    bool ok = true;
    for (const cJSON *m = merges->child; m && ok; m = m->next, rank++) {
        const char *left, *right;
        size_t ln, rn;
        if (!merge_parts(m, &left, &ln, &right, &rn)) {
            snprintf(L->err, L->err_size,
                     "--tokenizer-model '%s': model.merges[%u] is not \"left right\" or "
                     "[\"left\", \"right\"]",
                     L->path, rank);
            ok = false;
            break;
        }
        if (ln + rn > joined_cap) joined = xrealloc(joined, joined_cap = 2 * (ln + rn));
        memcpy(joined, left, ln);
        memcpy(joined + ln, right, rn);
        int32_t l = byte_index_find(&h->pieces, left, ln), r = byte_index_find(&h->pieces, right, rn);
        int32_t lr = byte_index_find(&h->pieces, joined, ln + rn);
        if (l < 0 || r < 0 || lr < 0) {
            snprintf(L->err, L->err_size,
                     "--tokenizer-model '%s': model.merges[%u] \"%.*s %.*s\" uses or makes a "
                     "token that is not in model.vocab",
                     L->path, rank, (int)(ln < 40 ? ln : 40), left, (int)(rn < 40 ? rn : 40),
                     right);
            ok = false;
            break;
        }
        /* Hugging Face keeps the first rank of a repeated pair. */
        int32_t seen;
        if (merge_table_rank(&h->bpe.merges, l, r, &seen) == BPE_NO_RANK)
            merge_table_set(&h->bpe.merges, l, r, rank, lr);
    }
    free(joined);
    return ok;
}

static bool check_model(HfTokenizer *h, Loader *L, const cJSON *model) {
    const char *type = type_of(model);
    if (!cJSON_IsObject(model)) LFAIL(L, "has no \"model\" object; is this a tokenizer.json?");
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        LFAIL(L,
              "model type %s is not supported: HuggingFaceTokenizer reads BPE models (GPT-2, "
              "Llama, Qwen, Mistral style tokenizer.json)",
              type ? type : "(none)");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0)
        LFAIL(L, "model.dropout %g is not supported (BPE dropout is random; use null)",
              dropout->valuedouble);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = string_of(model, keys[i]);
        if (s && *s) LFAIL(L, "model.%s \"%s\" is not supported", keys[i], s);
    }
    h->byte_fallback = flag_true(model, "byte_fallback");
    h->fuse_unk = flag_true(model, "fuse_unk");
    return true;
}

/* ------------------------------------------------- normalizer and pre-tokenizer */

static bool parse_normalizer(HfTokenizer *h, Loader *L, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return true;
    const char *type = type_of(n);
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        for (const cJSON *item = list ? list->child : NULL; item; item = item->next)
            if (!parse_normalizer(h, L, item)) return false;
        return true;
    }
    if (type && strcmp(type, "NFC") == 0) {
        h->nfc = true;
        return true;
    }
    if (type && strcmp(type, "Prepend") == 0) {
        const char *what = string_of(n, "prepend");
        if (!what || strcmp(what, META) != 0)
            LFAIL(L, "normalizer Prepend \"%s\" is not supported (only \"" META "\")",
                  what ? what : "");
        h->prepend = true;
        return true;
    }
    if (type && strcmp(type, "Replace") == 0) {
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = string_of(pattern, "String"), *to = string_of(n, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, META) != 0)
            LFAIL(L, "normalizer Replace is supported only as \" \" -> \"" META "\"");
        h->replace_space = true;
        return true;
    }
    LFAIL(L,
          "normalizer type %s is not supported: HuggingFaceTokenizer understands none, NFC, or "
          "Prepend \"" META "\" and Replace \" \" -> \"" META "\" (Llama 2 / Mistral style)",
          type ? type : "(none)");
}

static bool parse_split(HfTokenizer *h, Loader *L, const cJSON *p) {
    const char *behavior = string_of(p, "behavior");
    if (h->has_split) LFAIL(L, "pre_tokenizer: only one Split is supported");
    if (!behavior || strcmp(behavior, "Isolated") != 0 || flag_true(p, "invert"))
        LFAIL(L, "pre_tokenizer Split with behavior %s%s is not supported (only Isolated)",
              behavior ? behavior : "(none)", flag_true(p, "invert") ? " and invert" : "");
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const char *regex = string_of(pattern, "Regex"), *literal = string_of(pattern, "String");
    if (!regex && !literal) LFAIL(L, "pre_tokenizer Split has no pattern Regex or String");
    char *compiled;
    if (regex) {
        compiled = xmalloc(strlen(regex) + 1);
        strcpy(compiled, regex);
    } else {
        compiled = xmalloc(strlen(literal) + 5);
        sprintf(compiled, "\\Q%s\\E", literal);
    }
    char owner[600];
    snprintf(owner, sizeof owner, "--tokenizer-model '%s' (pre_tokenizer Split)", L->path);
    bool ok = pretokenizer_regex_compile(&h->split, compiled, owner, L->err, L->err_size);
    free(compiled);
    h->has_split = ok;
    return ok;
}

/* Hugging Face's ByteLevel regex is GPT-2's (data/tokenizer_gpt2.c). */
static const char BYTE_LEVEL_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static bool parse_byte_level(HfTokenizer *h, Loader *L, const cJSON *p, bool after_split) {
    h->byte_level = true;
    h->add_prefix_space = flag_true(p, "add_prefix_space");
    if (after_split && h->add_prefix_space)
        LFAIL(L, "pre_tokenizer ByteLevel with add_prefix_space after a Split is not supported");
    const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
    if (cJSON_IsFalse(use_regex)) return true;
    if (after_split) LFAIL(L, "pre_tokenizer ByteLevel with use_regex after a Split is not supported");
    bool ok = pretokenizer_regex_compile(&h->split, BYTE_LEVEL_PATTERN,
                                         "HuggingFaceTokenizer ByteLevel", L->err, L->err_size);
    h->has_split = ok;
    return ok;
}

static bool parse_metaspace(HfTokenizer *h, Loader *L, const cJSON *p) {
    const char *replacement = string_of(p, "replacement");
    if (!replacement || strcmp(replacement, META) != 0)
        LFAIL(L, "pre_tokenizer Metaspace with replacement \"%s\" is not supported (only \"" META
                 "\")",
              replacement ? replacement : "");
    const char *scheme = string_of(p, "prepend_scheme");
    if (scheme) {
        if (strcmp(scheme, "always") && strcmp(scheme, "first") && strcmp(scheme, "never"))
            LFAIL(L, "pre_tokenizer Metaspace prepend_scheme \"%s\" is unknown", scheme);
        h->prepend = strcmp(scheme, "never") != 0;
        h->prepend_first_only = strcmp(scheme, "first") == 0;
    } else {
        h->prepend = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space"));
    }
    h->prepend_if_missing = true;
    h->replace_space = true;
    h->split_words = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "split"));
    return true;
}

static bool parse_pre_tokenizer(HfTokenizer *h, Loader *L, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return true;
    const char *type = type_of(p);
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        for (const cJSON *item = list ? list->child : NULL; item; item = item->next) {
            const char *t = type_of(item);
            if (h->byte_level) LFAIL(L, "pre_tokenizer: nothing may follow ByteLevel in a Sequence");
            bool ok = t && strcmp(t, "Split") == 0       ? parse_split(h, L, item)
                      : t && strcmp(t, "ByteLevel") == 0 ? parse_byte_level(h, L, item, h->has_split)
                                                         : parse_pre_tokenizer(h, L, item);
            if (!ok) return false;
        }
        if (h->has_split && !h->byte_level)
            LFAIL(L, "pre_tokenizer Split without ByteLevel is not supported");
        return true;
    }
    if (type && strcmp(type, "ByteLevel") == 0) return parse_byte_level(h, L, p, false);
    if (type && strcmp(type, "Metaspace") == 0) return parse_metaspace(h, L, p);
    LFAIL(L,
          "pre_tokenizer type %s is not supported: HuggingFaceTokenizer understands ByteLevel, "
          "Split (Isolated) followed by ByteLevel, Metaspace, or none",
          type ? type : "(none)");
}

/* ------------------------------------------------- post-processor and decoder */

static bool push_template_id(HfTokenizer *h, Loader *L, int32_t id, bool before) {
    int *n = before ? &h->num_prefix : &h->num_suffix;
    if (*n == HF_MAX_TEMPLATE) LFAIL(L, "post_processor adds too many tokens");
    (before ? h->prefix : h->suffix)[(*n)++] = id;
    return true;
}

/* TemplateProcessing's "single": special tokens before and after $A. */
static bool parse_template(HfTokenizer *h, Loader *L, const cJSON *p) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    bool before = true;
    for (const cJSON *item = single ? single->child : NULL; item; item = item->next) {
        if (cJSON_GetObjectItemCaseSensitive(item, "Sequence")) {
            before = false;
            continue;
        }
        const char *name = string_of(cJSON_GetObjectItemCaseSensitive(item, "SpecialToken"), "id");
        const cJSON *entry = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(entry, "ids");
        if (!cJSON_IsArray(list))
            LFAIL(L, "post_processor TemplateProcessing: special token \"%s\" has no ids",
                  name ? name : "?");
        for (const cJSON *id = list->child; id; id = id->next)
            if (!cJSON_IsNumber(id) || !push_template_id(h, L, (int32_t)id->valuedouble, before))
                return false;
    }
    return true;
}

static bool parse_post_processor(HfTokenizer *h, Loader *L, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return true;
    const char *type = type_of(p);
    if (type && strcmp(type, "ByteLevel") == 0) return true; /* offsets only */
    if (type && strcmp(type, "TemplateProcessing") == 0) return parse_template(h, L, p);
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        for (const cJSON *item = list ? list->child : NULL; item; item = item->next)
            if (!parse_post_processor(h, L, item)) return false;
        return true;
    }
    if (type && (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0)) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2)
            LFAIL(L, "post_processor %s needs cls and sep as [token, id]", type);
        return push_template_id(h, L, (int32_t)cJSON_GetArrayItem(cls, 1)->valuedouble, true) &&
               push_template_id(h, L, (int32_t)cJSON_GetArrayItem(sep, 1)->valuedouble, false);
    }
    LFAIL(L, "post_processor type %s is not supported", type ? type : "(none)");
}

/* Decoders of the character-level family drop the space of the "▁" that
 * the normalizer put first (Strip, or Metaspace's own prepend). */
static void parse_decoder(HfTokenizer *h, const cJSON *d) {
    const char *type = type_of(d);
    if (!type) return;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        for (const cJSON *item = list ? list->child : NULL; item; item = item->next)
            parse_decoder(h, item);
    } else if (strcmp(type, "Strip") == 0) {
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(d, "start");
        const char *content = string_of(d, "content");
        if (content && strcmp(content, " ") == 0 && cJSON_IsNumber(start) && start->valuedouble >= 1)
            h->strip_leading_space = true;
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *scheme = string_of(d, "prepend_scheme");
        h->strip_leading_space = scheme ? strcmp(scheme, "never") != 0
                                        : !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "add_prefix_space"));
    }
}

/* ------------------------------------------------------- added tokens */

static bool load_added(HfTokenizer *h, Loader *L, const cJSON *list, const char ***content_of) {
    if (list && !cJSON_IsArray(list)) LFAIL(L, "added_tokens must be an array");
    int64_t max_id = h->vocab_size - 1;
    for (const cJSON *t = list ? list->child : NULL; t; t = t->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(t, "id");
        const char *content = string_of(t, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= 2147483647.0 ||
            !content)
            LFAIL(L, "added_tokens: every entry needs an integer id >= 0 and a content string");
        const char *flags[] = {"lstrip", "rstrip", "single_word"};
        for (int i = 0; i < 3; i++)
            if (flag_true(t, flags[i]))
                LFAIL(L, "added token \"%.40s\" sets %s, which is not supported", content, flags[i]);
        if ((int64_t)id->valuedouble > max_id) max_id = (int64_t)id->valuedouble;
    }
    h->vocab_size = max_id + 1;
    *content_of = xcalloc((size_t)h->vocab_size, sizeof **content_of);
    for (const cJSON *t = list ? list->child : NULL; t; t = t->next) {
        const char *content = string_of(t, "content");
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(t, "id")->valuedouble;
        added_tokens_add(&h->added, content, strlen(content), id);
        (*content_of)[id] = content;
    }
    added_tokens_finish(&h->added);
    return true;
}

/* ------------------------------------------------------- byte tables */

static bool find_byte_level_ids(HfTokenizer *h, Loader *L) {
    uint16_t byte_to_cp[256];
    int16_t cp_to_byte[BYTE_ALPHABET_SIZE];
    byte_alphabet(byte_to_cp, cp_to_byte);
    for (int b = 0; b < 256; b++) {
        char utf8[2];
        size_t n = byte_level_char(byte_to_cp, b, utf8);
        h->bpe.byte_id[b] = byte_index_find(&h->pieces, utf8, n);
        if (h->bpe.byte_id[b] < 0)
            LFAIL(L, "model.vocab has no token for byte 0x%02x (\"%.*s\"); a ByteLevel "
                     "vocabulary has one for each of the 256 bytes",
                  b, (int)n, utf8);
    }
    return true;
}

/* A byte without its <0xXX> token falls back to unk, as in Hugging Face. */
static bool find_byte_fallback_ids(HfTokenizer *h) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        h->byte_token[b] = byte_index_find(&h->pieces, name, 6);
    }
    return true;
}

static bool find_unk(HfTokenizer *h, Loader *L, const cJSON *model) {
    const char *unk = string_of(model, "unk_token");
    h->unk = -1;
    if (!unk) return true;
    h->unk = byte_index_find(&h->pieces, unk, strlen(unk));
    if (h->unk < 0) h->unk = byte_index_find(&h->added.index, unk, strlen(unk));
    if (h->unk < 0) LFAIL(L, "model.unk_token \"%.40s\" is not a token", unk);
    return true;
}

/* The bytes a vocabulary token stands for, written to out (room for its
 * length): byte-level characters back to bytes, or "▁" to a space and
 * <0xXX> to its byte. */
static size_t vocab_token_bytes(const HfTokenizer *h, const char *token, int32_t id,
                                const int16_t cp_to_byte[BYTE_ALPHABET_SIZE], char *out) {
    size_t len = strlen(token);
    if (h->byte_level) return byte_level_token_bytes(token, len, cp_to_byte, out);
    for (int b = 0; b < 256 && len == 6; b++)
        if (h->byte_token[b] == id) {
            out[0] = (char)b;
            return 1;
        }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (strncmp(token + i, META, 3) == 0) {
            out[n++] = ' ';
            i += 3;
        } else {
            out[n++] = token[i++];
        }
    }
    return n;
}

static void build_tables(HfTokenizer *h, const Loader *L, const char **added_content) {
    uint16_t byte_to_cp[256];
    int16_t cp_to_byte[BYTE_ALPHABET_SIZE];
    byte_alphabet(byte_to_cp, cp_to_byte);
    size_t total = 0, vocab_total = 0, vocab_n = (size_t)h->vocab_size;
    for (size_t id = 0; id < L->vocab_ids; id++)
        if (L->vocab_token[id]) vocab_total += strlen(L->vocab_token[id]);
    for (size_t id = 0; id < vocab_n; id++)
        if (added_content[id]) total += strlen(added_content[id]);
    total += vocab_total;
    h->decode_bytes = xmalloc(total + 1);
    h->decode_offsets = xmalloc((vocab_n + 1) * sizeof *h->decode_offsets);
    h->decode_offsets[0] = 0;
    if (h->ignore_merges && h->byte_level) {
        h->whole_keys = xmalloc(vocab_total + 1);
        byte_index_init(&h->whole, vocab_n);
    }
    size_t whole_used = 0;
    for (size_t id = 0; id < vocab_n; id++) {
        char *out = h->decode_bytes + h->decode_offsets[id];
        const char *token = id < L->vocab_ids ? L->vocab_token[id] : NULL;
        size_t n = 0;
        if (added_content[id]) {
            n = strlen(added_content[id]);
            memcpy(out, added_content[id], n);
        } else if (token) {
            n = vocab_token_bytes(h, token, (int32_t)id, cp_to_byte, out);
        }
        h->decode_offsets[id + 1] = h->decode_offsets[id] + n;
        if (h->whole_keys && token) {
            size_t k = byte_level_token_bytes(token, strlen(token), cp_to_byte,
                                              h->whole_keys + whole_used);
            byte_index_add(&h->whole, h->whole_keys + whole_used, k, (int32_t)id);
            whole_used += k;
        }
    }
    if (h->whole_keys) h->bpe.whole = &h->whole;
}

/* Without a pre-tokenizer a whole segment is one BPE word, which merges in
 * O(n log n) and is never cached. When no token holds a "▁" right after
 * another character (SentencePiece vocabularies: "▁" only leads a token or
 * repeats), no merge can cross the point before such a "▁", so the word is
 * cut there with the same result and the short words are cached. */
static bool meta_cut_is_safe(const HfTokenizer *h, const Loader *L) {
    if (h->ignore_merges) return false; /* a whole word might be one token */
    for (size_t id = 0; id < L->vocab_ids; id++) {
        const char *t = L->vocab_token[id], *m = t;
        while (t && *m && (m = strstr(m + 1, META)) != NULL)
            if (m - t < 3 || memcmp(m - 3, META, 3) != 0) return false;
    }
    return true;
}

/* --------------------------------------------------- end of document */

static int32_t token_id(const HfTokenizer *h, const char *token) {
    int32_t id = byte_index_find(&h->added.index, token, strlen(token));
    return id >= 0 ? id : byte_index_find(&h->pieces, token, strlen(token));
}

/* eos_token of tokenizer_config.json beside the file: a string or
 * {"content": ...}; NULL when there is none. */
static char *config_eos_token(const char *path) {
    char *copy = xmalloc(strlen(path) + 1);
    strcpy(copy, path);
    const char *dir = dirname(copy);
    char *config_path = xmalloc(strlen(dir) + 32);
    sprintf(config_path, "%s/tokenizer_config.json", dir);
    free(copy);
    size_t len;
    char ignored[256];
    char *text = bpe_read_file(config_path, "tokenizer_config.json", &len, ignored, sizeof ignored);
    free(config_path);
    if (!text) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token");
    const char *name = cJSON_IsString(eos) ? eos->valuestring : string_of(eos, "content");
    char *found = NULL;
    if (name) {
        found = xmalloc(strlen(name) + 1);
        strcpy(found, name);
    }
    cJSON_Delete(root);
    return found;
}

static bool find_eod(const HfTokenizer *h, Loader *L, int32_t *eod) {
    char *eos = config_eos_token(L->path);
    if (eos) {
        *eod = token_id(h, eos);
        if (*eod < 0) {
            char name[64];
            snprintf(name, sizeof name, "%s", eos);
            free(eos);
            LFAIL(L, "the eos_token \"%s\" of the tokenizer_config.json beside it is not a token",
                  name);
        }
        free(eos);
        return true;
    }
    const char *known[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"};
    for (int i = 0; i < 4; i++)
        if ((*eod = byte_index_find(&h->added.index, known[i], strlen(known[i]))) >= 0) return true;
    LFAIL(L,
          "cannot tell the end-of-document token: no tokenizer_config.json with an eos_token "
          "beside it, and no added token </s>, <|end_of_text|>, <|endoftext|> or <eos>");
}

/* ------------------------------------------------------------- creation */

static bool load(HfTokenizer *h, Loader *L, const cJSON *root, int32_t *eod) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char **added_content = NULL;
    bool ok = check_model(h, L, model) &&
              load_vocab(h, L, cJSON_GetObjectItemCaseSensitive(model, "vocab")) &&
              load_merges(h, L, cJSON_GetObjectItemCaseSensitive(model, "merges")) &&
              parse_normalizer(h, L, cJSON_GetObjectItemCaseSensitive(root, "normalizer")) &&
              parse_pre_tokenizer(h, L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (ok && h->byte_level && (h->prepend || h->replace_space))
        LFAIL(L, "a ByteLevel pre_tokenizer with a \"" META "\" normalizer is not supported");
    h->ignore_merges = flag_true(model, "ignore_merges");
    ok = ok && parse_post_processor(h, L, cJSON_GetObjectItemCaseSensitive(root, "post_processor")) &&
         load_added(h, L, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &added_content) &&
         (h->byte_level ? find_byte_level_ids(h, L) : find_byte_fallback_ids(h)) &&
         find_unk(h, L, model) && find_eod(h, L, eod);
    if (ok) {
        parse_decoder(h, cJSON_GetObjectItemCaseSensitive(root, "decoder"));
        h->cut_at_meta = !h->byte_level && meta_cut_is_safe(h, L);
        build_tables(h, L, added_content);
    }
    free(added_content);
    return ok;
}

/* Megatron passes the model's directory (what transformers loads from):
 * then its tokenizer.json is meant. */
static char *tokenizer_json_path(const char *model) {
    struct stat st;
    bool dir = stat(model, &st) == 0 && S_ISDIR(st.st_mode);
    char *path = xmalloc(strlen(model) + 32);
    sprintf(path, dir ? "%s/tokenizer.json" : "%s", model);
    return path;
}

Tokenizer *hf_tokenizer_create(const char *model, char *err, size_t err_size) {
    if (!model || !*model) {
        snprintf(err, err_size,
                 "--tokenizer-type HuggingFaceTokenizer needs --tokenizer-model "
                 "path/to/tokenizer.json (or the directory that holds it)");
        return NULL;
    }
    char *path = tokenizer_json_path(model);
    size_t len;
    char *text = bpe_read_file(path, "--tokenizer-model", &len, err, err_size);
    if (!text) {
        size_t n = strlen(err);
        snprintf(err + n, err_size - n,
                 "; give a local tokenizer.json or the model directory that holds it (gpt3d "
                 "does not download from the Hugging Face Hub)");
        free(path);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        snprintf(err, err_size, "--tokenizer-model '%s': not a JSON object (a tokenizer.json)",
                 path);
        cJSON_Delete(root);
        free(path);
        return NULL;
    }
    HfTokenizer *h = xcalloc(1, sizeof *h);
    byte_level_bpe_init(&h->bpe);
    h->bpe.order = BPE_LOWEST_FIRST;
    added_tokens_init(&h->added);
    Loader L = {.path = path, .err = err, .err_size = err_size};
    int32_t eod = -1;
    bool ok = load(h, &L, root, &eod);
    free(L.vocab_token);
    cJSON_Delete(root);
    free(path);
    if (!ok) {
        hf_destroy(h);
        return NULL;
    }
    Tokenizer *t = xcalloc(1, sizeof *t);
    *t = (Tokenizer){.type_name = "HuggingFaceTokenizer",
                     .vocab_size = h->vocab_size,
                     .eod = eod,
                     .encode = hf_encode,
                     .decode = hf_decode,
                     .destroy = hf_destroy,
                     .impl = h};
    return t;
}
