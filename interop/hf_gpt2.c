/* Hugging Face GPT-2 (GPT2LMHeadModel): its GPT2Config fields and which
 * gpt3d models it expresses (the GPT-2 block only). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "interop/hf_internal.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

#define LAYERNORM_EPS 1e-5

static void gpt2_write_config(cJSON *root, const TransformerConfig *s) {
    cJSON_AddNumberToObject(root, "n_layer", s->num_layers);
    cJSON_AddNumberToObject(root, "n_head", s->num_attention_heads);
    cJSON_AddNumberToObject(root, "n_embd", s->hidden_size);
    cJSON_AddNumberToObject(root, "n_positions", s->max_position_embeddings);
    cJSON_AddNumberToObject(root, "n_ctx", s->max_position_embeddings);
    if (s->ffn_hidden_size == 4 * s->hidden_size) cJSON_AddNullToObject(root, "n_inner");
    else cJSON_AddNumberToObject(root, "n_inner", s->ffn_hidden_size);
    cJSON_AddNumberToObject(root, "vocab_size", (double)s->vocab_size);
    cJSON_AddNumberToObject(root, "layer_norm_epsilon", LAYERNORM_EPS);
    cJSON_AddStringToObject(root, "activation_function", "gelu_new");
    cJSON_AddTrueToObject(root, "tie_word_embeddings");
    /* Dropout is a setting of a training run, not of the model: HF's
     * defaults (0.1) would change the model a user continues elsewhere. */
    cJSON_AddNumberToObject(root, "attn_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "embd_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "resid_pdrop", 0.0);
}

/* Options of GPT2Config that change the model's function in ways gpt3d
 * does not implement. */
static bool check_supported(const cJSON *root, const char *path, char *err, size_t err_size) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "gelu_new") &&
                                         strcmp(act->valuestring, "gelu_pytorch_tanh"))))
        return interop_fail(err, err_size,
                            "'%s': activation_function must be \"gelu_new\" (the tanh GELU "
                            "gpt3d computes)",
                            path);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    if (eps && (!cJSON_IsNumber(eps) || fabs(eps->valuedouble - LAYERNORM_EPS) > 1e-12))
        return interop_fail(err, err_size,
                            "'%s': layer_norm_epsilon must be 1e-05 (the value gpt3d uses)", path);
    const struct {
        const char *name;
        bool required; /* the value gpt3d's model has */
    } flags[] = {{"tie_word_embeddings", true}, {"scale_attn_weights", true},
                 {"scale_attn_by_inverse_layer_idx", false}, {"add_cross_attention", false}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, flags[i].name);
        if (item && (!cJSON_IsBool(item) || cJSON_IsTrue(item) != flags[i].required))
            return interop_fail(err, err_size, "'%s': %s must be %s for a gpt3d model", path,
                                flags[i].name, flags[i].required ? "true" : "false");
    }
    return true;
}

static bool gpt2_read_config(const cJSON *root, const char *path, int divisible_by,
                             TransformerConfig *s, char *err, size_t err_size) {
    static const char *const LAYERS[] = {"n_layer", "num_hidden_layers"};
    static const char *const HEADS[] = {"n_head", "num_attention_heads"};
    static const char *const HIDDEN[] = {"n_embd", "hidden_size"};
    static const char *const POSITIONS[] = {"n_positions", "max_position_embeddings", "n_ctx"};
    static const char *const VOCAB[] = {"vocab_size"};
    static const char *const INNER[] = {"n_inner"};
    static const char WHAT[] = "a GPT2Config field";
    int64_t layers = 0, heads = 0, hidden = 0, positions = 0, vocab = 0, inner = 0;
    bool has_inner = false;
    if (!check_supported(root, path, err, err_size) ||
        !hf_require_int(root, LAYERS, 2, path, WHAT, &layers, err, err_size) ||
        !hf_require_int(root, HEADS, 2, path, WHAT, &heads, err, err_size) ||
        !hf_require_int(root, HIDDEN, 2, path, WHAT, &hidden, err, err_size) ||
        !hf_require_int(root, POSITIONS, 3, path, WHAT, &positions, err, err_size) ||
        !hf_require_int(root, VOCAB, 1, path, WHAT, &vocab, err, err_size) ||
        !hf_config_int(root, INNER, 1, path, &inner, &has_inner, err, err_size))
        return false;
    s->num_layers = (int)layers;
    s->num_attention_heads = (int)heads;
    s->hidden_size = (int)hidden;
    s->max_position_embeddings = (int)positions;
    s->vocab_size = vocab;
    s->ffn_hidden_size = (int)(has_inner ? inner : 4 * hidden);
    s->padded_vocab_size = gpt_padded_vocab_size(vocab, divisible_by);
    transformer_config_set_gpt2_variant(s);
    return hf_check_shape(s, path, err, err_size);
}

/* Attention-mask buffers older transformers versions saved with the
 * weights: "h.<i>.attn.bias" and "h.<i>.attn.masked_bias". */
static bool gpt2_is_buffer(const char *name) {
    if (!strncmp(name, "transformer.", 12)) name += 12;
    if (strncmp(name, "h.", 2)) return false;
    const char *p = name + 2;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    return !strcmp(p, ".attn.bias") || !strcmp(p, ".attn.masked_bias");
}

const HFArchitecture HF_GPT2_ARCHITECTURE = {
    .model_type = "gpt2",
    .architecture = "GPT2LMHeadModel",
    .expresses = interop_is_gpt2_block,
    .write_config = gpt2_write_config,
    .read_config = gpt2_read_config,
    .mappings = hf_gpt2_mappings,
    .optional_prefix = "transformer.",
    .is_buffer = gpt2_is_buffer,
};
