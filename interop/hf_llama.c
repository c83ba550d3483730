/* Hugging Face Llama (LlamaForCausalLM): its LlamaConfig fields and which
 * gpt3d models it expresses: rotate-half RoPE on every feature of a head,
 * RMSNorm, SwiGLU, grouped-query attention, tied or untied output layer,
 * biases on every linear layer or on none, a dense MLP. The rules and
 * config fields of that decoder layer are shared with Mixtral
 * (hf_mixtral.c, the hf_llama_family_* functions of hf_internal.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "interop/hf_internal.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

/* LlamaConfig's defaults for fields a config.json may leave out. */
#define LLAMA_DEFAULT_RMS_EPS 1e-6
#define LLAMA_DEFAULT_ROPE_THETA 10000.0

const char *hf_llama_family_difference(const TransformerConfig *s) {
    if (s->position_embedding_type != POSITION_ROPE)
        return "--position-embedding-type other than rope";
    if (s->rotary_interleaved) return "--rotary-interleaved (Llama rotates halves)";
    if (s->rotary_percent != 1.0)
        return "--rotary-percent other than 1 (Llama rotates every feature)";
    if (s->normalization != NORM_RMSNORM) return "--normalization LayerNorm (Llama uses RMSNorm)";
    if (s->apply_layernorm_1p) return "--apply-layernorm-1p";
    if (s->activation != ACTIVATION_SWIGLU) return "an MLP activation other than --swiglu";
    if (s->qk_layernorm) return "--qk-layernorm";
    if (s->add_qkv_bias && !s->add_bias_linear)
        return "--add-qkv-bias without linear biases (Llama's attention_bias biases o_proj too)";
    return NULL;
}

static bool llama_expresses(const TransformerConfig *s, char *why, size_t why_size) {
    const char *what = hf_llama_family_difference(s);
    char experts[96];
    if (!what && s->num_experts > 0) {
        snprintf(experts, sizeof experts,
                 "--num-experts %d (a mixture of experts; Llama's MLP is dense)", s->num_experts);
        what = experts;
    }
    if (what) snprintf(why, why_size, "it has %s", what);
    return what == NULL;
}

void hf_llama_family_write_config(cJSON *root, const TransformerConfig *s,
                                  int intermediate_size) {
    cJSON_AddNumberToObject(root, "hidden_size", s->hidden_size);
    cJSON_AddNumberToObject(root, "intermediate_size", intermediate_size);
    cJSON_AddNumberToObject(root, "num_hidden_layers", s->num_layers);
    cJSON_AddNumberToObject(root, "num_attention_heads", s->num_attention_heads);
    cJSON_AddNumberToObject(root, "num_key_value_heads", s->num_query_groups);
    cJSON_AddNumberToObject(root, "head_dim", transformer_head_dim(s));
    cJSON_AddNumberToObject(root, "max_position_embeddings", s->max_position_embeddings);
    cJSON_AddNumberToObject(root, "vocab_size", (double)s->vocab_size);
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddNumberToObject(root, "rms_norm_eps", s->norm_epsilon);
    cJSON_AddNumberToObject(root, "rope_theta", s->rotary_base);
    cJSON_AddBoolToObject(root, "tie_word_embeddings", transformer_tied_output(s));
    /* A training setting, not the model's; see the GPT-2 config. */
    cJSON_AddNumberToObject(root, "attention_dropout", 0.0);
}

static void llama_write_config(cJSON *root, const TransformerConfig *s) {
    hf_llama_family_write_config(root, s, s->ffn_hidden_size);
    cJSON_AddNullToObject(root, "rope_scaling");
    cJSON_AddBoolToObject(root, "attention_bias", s->add_bias_linear);
    cJSON_AddBoolToObject(root, "mlp_bias", s->add_bias_linear);
    cJSON_AddNumberToObject(root, "pretraining_tp", 1);
}

/* Fields whose other values change the function in ways gpt3d does not
 * compute: each gets one message naming it. */
static bool check_supported(const cJSON *root, const char *path, char *err, size_t err_size) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
        return interop_fail(err, err_size,
                            "'%s': hidden_act must be \"silu\" (gpt3d's --swiglu); other "
                            "activations do not convert",
                            path);
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (scaling && !cJSON_IsNull(scaling)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(scaling, "rope_type");
        if (!type) type = cJSON_GetObjectItemCaseSensitive(scaling, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "default"))
            return interop_fail(err, err_size,
                                "'%s': rope_scaling of type '%s' (a long-context RoPE scaling, "
                                "as Llama 3.1's \"llama3\") is not implemented in gpt3d; only "
                                "plain RoPE (rope_scaling null) converts",
                                path, cJSON_IsString(type) ? type->valuestring : "?");
    }
    static const char *const MUST_BE_ONE[] = {"pretraining_tp", "partial_rotary_factor"};
    for (size_t i = 0; i < sizeof MUST_BE_ONE / sizeof MUST_BE_ONE[0]; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, MUST_BE_ONE[i]);
        if (item && !cJSON_IsNull(item) && (!cJSON_IsNumber(item) || item->valuedouble != 1.0))
            return interop_fail(err, err_size, "'%s': %s must be 1 for a gpt3d model", path,
                                MUST_BE_ONE[i]);
    }
    return true;
}

/* rope_theta at the top level, or inside rope_parameters (newer
 * transformers), whose rope_type must then be the plain one; *theta
 * unchanged (the architecture's default) when neither has it. */
static bool read_rope_theta(const cJSON *root, const char *path, double *theta, char *err,
                            size_t err_size) {
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (params && !cJSON_IsNull(params)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(params, "rope_type");
        if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "default")))
            return interop_fail(err, err_size,
                                "'%s': rope_parameters.rope_type '%s' is not implemented in "
                                "gpt3d; only \"default\" RoPE converts",
                                path, cJSON_IsString(type) ? type->valuestring : "?");
        if (!hf_config_positive(params, "rope_theta", path, theta, err, err_size)) return false;
    }
    return hf_config_positive(root, "rope_theta", path, theta, err, err_size);
}

static bool read_biases(const cJSON *root, const char *path, bool *bias, char *err,
                        size_t err_size) {
    bool attention = false, mlp = false;
    if (!hf_config_bool(root, "attention_bias", path, &attention, err, err_size) ||
        !hf_config_bool(root, "mlp_bias", path, &mlp, err, err_size))
        return false;
    if (attention != mlp)
        return interop_fail(err, err_size,
                            "'%s': attention_bias %s with mlp_bias %s: gpt3d's linear biases "
                            "(--disable-bias-linear) are on every linear layer or on none",
                            path, attention ? "true" : "false", mlp ? "true" : "false");
    *bias = attention;
    return true;
}

bool hf_llama_family_read_config(const cJSON *root, const char *path, int divisible_by,
                                 const HFLlamaDefaults *d, TransformerConfig *s, char *err,
                                 size_t err_size) {
    static const char *const LAYERS[] = {"num_hidden_layers"}, *const HEADS[] = {"num_attention_heads"};
    static const char *const HIDDEN[] = {"hidden_size"}, *const FFN[] = {"intermediate_size"};
    static const char *const POSITIONS[] = {"max_position_embeddings"}, *const VOCAB[] = {"vocab_size"};
    static const char *const GROUPS[] = {"num_key_value_heads"}, *const HEAD_DIM[] = {"head_dim"};
    const char *what = d->what;
    int64_t layers = 0, heads = 0, hidden = 0, ffn = 0, positions = 0, vocab = 0, groups = 0,
            head_dim = 0;
    bool has_groups = false, has_head_dim = false, tied = false;
    double eps = d->rms_norm_eps, theta = d->rope_theta;
    if (!check_supported(root, path, err, err_size) ||
        !hf_require_int(root, LAYERS, 1, path, what, &layers, err, err_size) ||
        !hf_require_int(root, HEADS, 1, path, what, &heads, err, err_size) ||
        !hf_require_int(root, HIDDEN, 1, path, what, &hidden, err, err_size) ||
        !hf_require_int(root, FFN, 1, path, what, &ffn, err, err_size) ||
        !hf_require_int(root, POSITIONS, 1, path, what, &positions, err, err_size) ||
        !hf_require_int(root, VOCAB, 1, path, what, &vocab, err, err_size) ||
        !hf_config_int(root, GROUPS, 1, path, &groups, &has_groups, err, err_size) ||
        !hf_config_int(root, HEAD_DIM, 1, path, &head_dim, &has_head_dim, err, err_size) ||
        !hf_config_positive(root, "rms_norm_eps", path, &eps, err, err_size) ||
        !read_rope_theta(root, path, &theta, err, err_size) ||
        !hf_config_bool(root, "tie_word_embeddings", path, &tied, err, err_size))
        return false;
    if (!has_head_dim && hidden % heads)
        return interop_fail(err, err_size,
                            "'%s': hidden_size %lld is not divisible by num_attention_heads %lld "
                            "and there is no head_dim",
                            path, (long long)hidden, (long long)heads);
    s->num_layers = (int)layers;
    s->num_attention_heads = (int)heads;
    s->hidden_size = (int)hidden;
    s->ffn_hidden_size = (int)ffn;
    s->max_position_embeddings = (int)positions;
    s->vocab_size = vocab;
    s->padded_vocab_size = gpt_padded_vocab_size(vocab, divisible_by);
    transformer_config_set_gpt2_variant(s); /* then every variant field Llama sets */
    s->position_embedding_type = POSITION_ROPE;
    s->rotary_base = theta;
    s->normalization = NORM_RMSNORM;
    s->norm_epsilon = eps;
    s->activation = ACTIVATION_SWIGLU;
    s->num_query_groups = (int)(has_groups ? groups : heads);
    s->kv_channels = (int)(has_head_dim ? head_dim : hidden / heads);
    s->untie_embeddings_and_output_weights = !tied;
    s->add_bias_linear = false;
    return true;
}

static bool llama_read_config(const cJSON *root, const char *path, int divisible_by,
                              TransformerConfig *s, char *err, size_t err_size) {
    static const HFLlamaDefaults DEFAULTS = {
        .rms_norm_eps = LLAMA_DEFAULT_RMS_EPS,
        .rope_theta = LLAMA_DEFAULT_ROPE_THETA,
        .what = "a LlamaConfig field",
    };
    bool bias = false;
    if (!hf_llama_family_read_config(root, path, divisible_by, &DEFAULTS, s, err, err_size) ||
        !read_biases(root, path, &bias, err, err_size))
        return false;
    s->add_bias_linear = bias;
    return hf_check_shape(s, path, err, err_size);
}

/* The rotary frequencies some transformers versions saved per layer. */
bool hf_llama_family_is_buffer(const char *name) {
    const char *suffix = ".self_attn.rotary_emb.inv_freq";
    const size_t n = strlen(name), k = strlen(suffix);
    return !strncmp(name, "model.layers.", 13) && n > k && !strcmp(name + n - k, suffix);
}

const HFArchitecture HF_LLAMA_ARCHITECTURE = {
    .model_type = "llama",
    .architecture = "LlamaForCausalLM",
    .expresses = llama_expresses,
    .write_config = llama_write_config,
    .read_config = llama_read_config,
    .mappings = hf_llama_mappings,
    .optional_prefix = NULL,
    .is_buffer = hf_llama_family_is_buffer,
};
