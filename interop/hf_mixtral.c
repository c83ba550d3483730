/* Hugging Face Mixtral (MixtralForCausalLM): its MixtralConfig fields and
 * which gpt3d models it expresses: Llama's decoder layer (hf_llama.c) with
 * every MLP a mixture of experts: a softmax router choosing
 * num_experts_per_tok of num_local_experts SwiGLU experts, their weights
 * renormalised over the chosen ones (gpt3d's softmax over the top-k
 * logits, without --moe-router-pre-softmax), no shared expert, no biases. */
#include <stdio.h>
#include <string.h>

#include "interop/hf_internal.h"
#include "interop/interop_internal.h"

/* MixtralConfig's defaults for fields a config.json may leave out. */
#define MIXTRAL_DEFAULT_RMS_EPS 1e-5
#define MIXTRAL_DEFAULT_ROPE_THETA 1e6
#define MIXTRAL_DEFAULT_EXPERTS 8
#define MIXTRAL_DEFAULT_TOPK 2
/* Training settings written as MixtralConfig's defaults, ignored on read. */
#define MIXTRAL_ROUTER_AUX_LOSS_COEF 0.001

/* The first MoE setting Mixtral's sparse block does not compute, written
 * into text; NULL when none. */
static const char *moe_difference(const TransformerConfig *s, char *text, size_t size) {
    if (s->num_experts == 0)
        return "no --num-experts (a dense MLP; Mixtral's are mixtures of experts)";
    if (s->moe_layer_freq != 1)
        snprintf(text, size, "--moe-layer-freq %d (every Mixtral layer is a mixture of experts)",
                 s->moe_layer_freq);
    else if (s->moe_shared_expert_intermediate_size)
        snprintf(text, size,
                 "--moe-shared-expert-intermediate-size %d (Mixtral has no shared expert)",
                 s->moe_shared_expert_intermediate_size);
    else if (s->moe_router_score_function != MOE_SCORE_SOFTMAX)
        snprintf(text, size, "--moe-router-score-function %s (Mixtral's router is a softmax)",
                 MOE_SCORE_FUNCTION_NAMES[s->moe_router_score_function]);
    else if (s->moe_router_pre_softmax)
        return "--moe-router-pre-softmax (Mixtral renormalises the chosen experts' weights)";
    else if (s->add_bias_linear || s->add_qkv_bias)
        return "linear biases (Mixtral has none)";
    else
        return NULL;
    return text;
}

static bool mixtral_expresses(const TransformerConfig *s, char *why, size_t why_size) {
    char text[160];
    const char *what = hf_llama_family_difference(s);
    if (!what) what = moe_difference(s, text, sizeof text);
    if (what) snprintf(why, why_size, "it has %s", what);
    return what == NULL;
}

static void mixtral_write_config(cJSON *root, const TransformerConfig *s) {
    hf_llama_family_write_config(root, s, s->moe_ffn_hidden_size);
    cJSON_AddNumberToObject(root, "num_local_experts", s->num_experts);
    cJSON_AddNumberToObject(root, "num_experts_per_tok", s->moe_router_topk);
    cJSON_AddNullToObject(root, "sliding_window");
    cJSON_AddNumberToObject(root, "router_aux_loss_coef", MIXTRAL_ROUTER_AUX_LOSS_COEF);
    cJSON_AddFalseToObject(root, "output_router_logits");
    cJSON_AddNumberToObject(root, "router_jitter_noise", 0.0);
}

/* gpt3d's attention is full causal: a sliding window changes the model
 * unless it covers every position. */
static bool check_sliding_window(const cJSON *root, const char *path, int positions, char *err,
                                 size_t err_size) {
    static const char *const WINDOW[] = {"sliding_window"};
    int64_t window = 0;
    bool present = false;
    if (!hf_config_int(root, WINDOW, 1, path, &window, &present, err, err_size)) return false;
    if (present && window < positions)
        return interop_fail(err, err_size,
                            "'%s': sliding_window %lld is shorter than max_position_embeddings "
                            "%d; gpt3d's attention is full causal, so only sliding_window null "
                            "(or at least the positions) converts",
                            path, (long long)window, positions);
    return true;
}

static bool mixtral_read_config(const cJSON *root, const char *path, int divisible_by,
                                TransformerConfig *s, char *err, size_t err_size) {
    static const HFLlamaDefaults DEFAULTS = {
        .rms_norm_eps = MIXTRAL_DEFAULT_RMS_EPS,
        .rope_theta = MIXTRAL_DEFAULT_ROPE_THETA,
        .what = "a MixtralConfig field",
    };
    static const char *const EXPERTS[] = {"num_local_experts"}, *const TOPK[] = {
                                                                    "num_experts_per_tok"};
    int64_t experts = MIXTRAL_DEFAULT_EXPERTS, topk = MIXTRAL_DEFAULT_TOPK;
    bool present = false;
    if (!hf_llama_family_read_config(root, path, divisible_by, &DEFAULTS, s, err, err_size) ||
        !check_sliding_window(root, path, s->max_position_embeddings, err, err_size) ||
        !hf_config_int(root, EXPERTS, 1, path, &experts, &present, err, err_size) ||
        !hf_config_int(root, TOPK, 1, path, &topk, &present, err, err_size))
        return false;
    if (topk > experts)
        return interop_fail(err, err_size,
                            "'%s': num_experts_per_tok %lld is larger than num_local_experts "
                            "%lld; a token cannot be routed to more experts than exist",
                            path, (long long)topk, (long long)experts);
    /* intermediate_size is each expert's; gpt3d's --ffn-hidden-size, which
     * no layer uses, takes the same value (as Megatron's Mixtral recipes). */
    s->num_experts = (int)experts;
    s->moe_router_topk = (int)topk;
    s->moe_ffn_hidden_size = s->ffn_hidden_size;
    s->moe_router_score_function = MOE_SCORE_SOFTMAX;
    s->moe_router_pre_softmax = false;
    s->moe_layer_freq = 1;
    s->moe_shared_expert_intermediate_size = 0;
    return hf_check_shape(s, path, err, err_size);
}

const HFArchitecture HF_MIXTRAL_ARCHITECTURE = {
    .model_type = "mixtral",
    .architecture = "MixtralForCausalLM",
    .expresses = mixtral_expresses,
    .write_config = mixtral_write_config,
    .read_config = mixtral_read_config,
    .mappings = hf_mixtral_mappings,
    .optional_prefix = NULL,
    .is_buffer = hf_llama_family_is_buffer,
};
