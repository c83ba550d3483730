#include "model/transformer_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const POSITION_EMBEDDING_NAMES[] = {"learned_absolute", "rope", "none", NULL};
const char *const NORMALIZATION_NAMES[] = {"LayerNorm", "RMSNorm", NULL};
const char *const ACTIVATION_NAMES[] = {"gelu", "swiglu", "squared_relu", NULL};
const char *const RECOMPUTE_GRANULARITY_NAMES[] = {"", "selective", "full", NULL};
const char *const RECOMPUTE_METHOD_NAMES[] = {"uniform", "block", NULL};
const char *const MOE_SCORE_FUNCTION_NAMES[] = {"softmax", "sigmoid", NULL};
const char *const MOE_LOAD_BALANCING_NAMES[] = {"aux_loss", "seq_aux_loss", "none", NULL};
const char *const MOE_DROP_POLICY_NAMES[] = {"probs", "position", NULL};

#define VARIANT_INT_MAX (1 << 16)

void transformer_config_set_gpt2_variant(TransformerConfig *c) {
    c->position_embedding_type = POSITION_LEARNED_ABSOLUTE;
    c->rotary_base = 10000.0;
    c->rotary_percent = 1.0;
    c->rotary_interleaved = false;
    c->normalization = NORM_LAYERNORM;
    c->norm_epsilon = 1e-5;
    c->apply_layernorm_1p = false;
    c->activation = ACTIVATION_GELU;
    c->num_query_groups = c->num_attention_heads;
    /* 0 when the heads do not divide the hidden size: the check then says so. */
    c->kv_channels = c->num_attention_heads > 0 && c->hidden_size % c->num_attention_heads == 0
                         ? c->hidden_size / c->num_attention_heads
                         : 0;
    c->untie_embeddings_and_output_weights = false;
    c->add_bias_linear = true;
    c->add_qkv_bias = false;
    c->qk_layernorm = false;
    transformer_config_set_dense(c);
}

void transformer_config_set_dense(TransformerConfig *c) {
    c->num_experts = 0;
    c->moe_ffn_hidden_size = 0;
    c->moe_router_topk = 2;
    c->moe_router_score_function = MOE_SCORE_SOFTMAX;
    c->moe_router_pre_softmax = false;
    c->moe_layer_freq = 1;
    c->moe_shared_expert_intermediate_size = 0;
}

int transformer_choice_index(const char *const *names, const char *word) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], word)) return i;
    return -1;
}

static int choice_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

/* Per-kind range checks of the variant fields; false with the message. */
static bool variant_int_ok(int v) { return v >= 1 && v <= VARIANT_INT_MAX; }
static bool variant_count_ok(int v) { return v >= 0 && v <= VARIANT_INT_MAX; }
static bool variant_f64_ok(double v) { return isfinite(v) && v > 0; }

static bool check_fields(const TransformerConfig *c, const char *where, char *err,
                         size_t err_size) {
#define CHECK_RANGE(f, kind, max, what)                                                            \
    if ((long long)c->f < 1 || (long long)c->f > (long long)(max)) {                               \
        snprintf(err, err_size, "%s: %s = %lld must be between 1 and %lld", where, #f,            \
                 (long long)c->f, (long long)(max));                                               \
        return false;                                                                              \
    }
    TRANSFORMER_ARCH_FIELDS(CHECK_RANGE)
#undef CHECK_RANGE
#define CHECK_int(f, names)                                                                        \
    if (!variant_int_ok(c->f)) {                                                                   \
        snprintf(err, err_size, "%s: %s = %d must be between 1 and %d", where, #f, c->f,          \
                 VARIANT_INT_MAX);                                                                 \
        return false;                                                                              \
    }
#define CHECK_count(f, names)                                                                      \
    if (!variant_count_ok(c->f)) {                                                                 \
        snprintf(err, err_size, "%s: %s = %d must be between 0 and %d", where, #f, c->f,          \
                 VARIANT_INT_MAX);                                                                 \
        return false;                                                                              \
    }
#define CHECK_f64(f, names)                                                                        \
    if (!variant_f64_ok(c->f)) {                                                                   \
        snprintf(err, err_size, "%s: %s = %g must be a finite positive number", where, #f, c->f); \
        return false;                                                                              \
    }
#define CHECK_bool(f, names)
#define CHECK_choice(f, names)                                                                     \
    if (c->f < 0 || c->f >= choice_count(names)) {                                                 \
        snprintf(err, err_size, "%s: %s = %d is not a known choice", where, #f, c->f);            \
        return false;                                                                              \
    }
#define CHECK_VARIANT(f, kind, names, what) CHECK_##kind(f, names)
    TRANSFORMER_VARIANT_FIELDS(CHECK_VARIANT)
#undef CHECK_VARIANT
#undef CHECK_int
#undef CHECK_count
#undef CHECK_f64
#undef CHECK_bool
#undef CHECK_choice
    return true;
}

static bool check_moe(const TransformerConfig *c, const char *where, char *err, size_t err_size) {
    if (c->num_experts == 0) return true;
    if (c->moe_router_topk > c->num_experts) {
        snprintf(err, err_size,
                 "%s: --moe-router-topk %d is larger than the %d experts (--num-experts); a "
                 "token cannot be routed to more experts than exist",
                 where, c->moe_router_topk, c->num_experts);
        return false;
    }
    if (c->moe_ffn_hidden_size < 1) {
        snprintf(err, err_size, "%s: --moe-ffn-hidden-size must be at least 1 with --num-experts",
                 where);
        return false;
    }
    if (c->add_bias_linear) {
        snprintf(err, err_size,
                 "%s: the experts of --num-experts have no biases in gpt3d; add "
                 "--disable-bias-linear (as Mixtral and DeepSeek do)",
                 where);
        return false;
    }
    return true;
}

bool transformer_config_check_variant(const TransformerConfig *c, const char *where, char *err,
                                      size_t err_size) {
    if (c->num_query_groups < 1 || c->num_attention_heads % c->num_query_groups) {
        snprintf(err, err_size,
                 "%s: the %d attention heads are not divisible by the %d query groups "
                 "(--num-query-groups); every group needs the same number of query heads",
                 where, c->num_attention_heads, c->num_query_groups);
        return false;
    }
    if (c->padded_vocab_size < c->vocab_size) {
        snprintf(err, err_size, "%s: padded vocabulary %lld is smaller than the vocabulary %lld",
                 where, (long long)c->padded_vocab_size, (long long)c->vocab_size);
        return false;
    }
    if (c->position_embedding_type == POSITION_ROPE) {
        const int rot = transformer_rotary_dim(c);
        if (c->rotary_percent > 1.0 || rot < 2 || rot % 2) {
            snprintf(err, err_size,
                     "%s: --rotary-percent %g of the head dimension %d rotates %d features; it "
                     "must be at most 1 and give an even number of at least 2",
                     where, c->rotary_percent, c->kv_channels, rot);
            return false;
        }
    }
    return check_moe(c, where, err, err_size);
}

bool transformer_config_check(const TransformerConfig *c, const char *where, char *err,
                              size_t err_size) {
    if (c->kv_channels == 0 && c->num_attention_heads > 0 &&
        c->hidden_size % c->num_attention_heads) {
        snprintf(err, err_size, "%s: hidden size %d is not divisible by the %d attention heads",
                 where, c->hidden_size, c->num_attention_heads);
        return false;
    }
    if (!check_fields(c, where, err, err_size)) return false;
    return transformer_config_check_variant(c, where, err, err_size);
}

static void field_text(char *out, size_t size, const char *kind, const void *p,
                       const char *const *names) {
    if (!strcmp(kind, "int") || !strcmp(kind, "count")) {
        snprintf(out, size, "%d", *(const int *)p);
    } else if (!strcmp(kind, "int64")) {
        snprintf(out, size, "%lld", (long long)*(const int64_t *)p);
    } else if (!strcmp(kind, "bool")) {
        snprintf(out, size, "%s", *(const bool *)p ? "true" : "false");
    } else if (!strcmp(kind, "f64")) {
        const double v = *(const double *)p;
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(out, size, "%.*g", digits, v);
            if (strtod(out, NULL) == v) break;
        }
    } else {
        const int v = *(const int *)p;
        snprintf(out, size, "%s", v >= 0 && v < choice_count(names) ? names[v] : "(unknown)");
    }
}

void transformer_config_field_text(const TransformerConfig *c, const char *field, char *out,
                                   size_t size) {
    out[0] = 0;
#define ARCH_TEXT(f, kind, max, what)                                                              \
    if (!strcmp(field, #f)) field_text(out, size, #kind, &c->f, NULL);
#define VARIANT_TEXT(f, kind, names, what)                                                         \
    if (!strcmp(field, #f)) field_text(out, size, #kind, &c->f, names);
    TRANSFORMER_ARCH_FIELDS(ARCH_TEXT)
    TRANSFORMER_VARIANT_FIELDS(VARIANT_TEXT)
#undef ARCH_TEXT
#undef VARIANT_TEXT
}

const char *transformer_config_difference(const TransformerConfig *a, const TransformerConfig *b,
                                          char *text_a, char *text_b, size_t text_size) {
#define FIRST_DIFFERENCE(f, kind, extra, what)                                                     \
    if (a->f != b->f) {                                                                            \
        transformer_config_field_text(a, #f, text_a, text_size);                                   \
        transformer_config_field_text(b, #f, text_b, text_size);                                   \
        return what;                                                                               \
    }
    TRANSFORMER_ARCH_FIELDS(FIRST_DIFFERENCE)
    TRANSFORMER_VARIANT_FIELDS(FIRST_DIFFERENCE)
#undef FIRST_DIFFERENCE
    return NULL;
}
