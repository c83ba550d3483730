/* model/transformer_config.h — the model's shape and architecture, once.
 *
 * Contract. TransformerConfig is the one description of a model that the
 * flags fill (TrainArgs.model), the model builds from, checkpoint metadata
 * stores (CheckpointMeta.model) and interop reads and writes. Its
 * architecture fields are listed once: the shape in TRANSFORMER_ARCH_FIELDS,
 * the architecture variant (positions, normalisation, activation, query
 * groups, biases, tied output layer) in TRANSFORMER_VARIANT_FIELDS. The
 * checkpoint metadata table, the validation, the comparison of a saved
 * model with a run's and checkpoint_info all expand those lists, so a new
 * field is added in one place. The JSON key of a field is its name.
 *
 * Architecture fields define the parameters and the function the model
 * computes: a checkpoint loads only into the same architecture. The run
 * settings below them (seq_length, the initialisation std, the seed,
 * recomputation, dropout) may change between save and resume.
 *
 * transformer_config_gpt2() gives the variant of every model gpt3d built
 * before the variants existed (and of checkpoints that do not name them):
 * learned positions, LayerNorm with bias, GELU, multi-head attention, tied
 * output layer, biases everywhere. */
#ifndef GPT3D_TRANSFORMER_CONFIG_H
#define GPT3D_TRANSFORMER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* X(field, kind, maximum, what): kind int or int64, every value in
 * [1, maximum]; `what` names the field for a user (its flag). */
#define TRANSFORMER_ARCH_FIELDS(X)                                                                 \
    X(num_layers, int, 1 << 16, "--num-layers")                                                    \
    X(hidden_size, int, 1 << 20, "--hidden-size")                                                  \
    X(num_attention_heads, int, 1 << 16, "--num-attention-heads")                                  \
    X(ffn_hidden_size, int, 1 << 24, "--ffn-hidden-size")                                          \
    X(vocab_size, int64, INT32_MAX, "a vocabulary size")                                           \
    X(padded_vocab_size, int64, INT32_MAX,                                                         \
      "a padded vocabulary (--make-vocab-size-divisible-by) of")                                   \
    X(max_position_embeddings, int, 1 << 24, "--max-position-embeddings")

typedef enum { POSITION_LEARNED_ABSOLUTE, POSITION_ROPE, POSITION_NONE } PositionEmbeddingType;
typedef enum { NORM_LAYERNORM, NORM_RMSNORM } NormalizationType;
typedef enum { ACTIVATION_GELU, ACTIVATION_SWIGLU, ACTIVATION_SQUARED_RELU } ActivationType;

/* Names of the choices, indexed by the enums, NULL-terminated; the flags and
 * the metadata use these words (Megatron's). */
extern const char *const POSITION_EMBEDDING_NAMES[];
extern const char *const NORMALIZATION_NAMES[];
extern const char *const ACTIVATION_NAMES[];

/* X(field, kind, choices, what): kind int (in [1, 2^16]), count (in
 * [0, 2^16], 0 meaning none), bool, f64 (finite, > 0) or choice (an enum
 * stored as int, named by `choices`). The list is the dense variant's
 * fields (checkpoint format 3) followed by the mixture of experts' (format
 * 5), so the metadata knows which files carry which. */
#define TRANSFORMER_VARIANT_FIELDS(X) TRANSFORMER_DENSE_VARIANT_FIELDS(X) TRANSFORMER_MOE_FIELDS(X)
#define TRANSFORMER_DENSE_VARIANT_FIELDS(X)                                                        \
    X(position_embedding_type, choice, POSITION_EMBEDDING_NAMES, "--position-embedding-type")     \
    X(rotary_base, f64, NULL, "--rotary-base")                                                     \
    X(rotary_percent, f64, NULL, "--rotary-percent")                                               \
    X(rotary_interleaved, bool, NULL, "--rotary-interleaved")                                      \
    X(normalization, choice, NORMALIZATION_NAMES, "--normalization")                               \
    X(norm_epsilon, f64, NULL, "--norm-epsilon")                                                   \
    X(apply_layernorm_1p, bool, NULL, "--apply-layernorm-1p")                                      \
    X(activation, choice, ACTIVATION_NAMES, "the MLP activation (--swiglu, --squared-relu)")       \
    X(num_query_groups, int, NULL, "--num-query-groups")                                           \
    X(kv_channels, int, NULL, "--kv-channels")                                                     \
    X(untie_embeddings_and_output_weights, bool, NULL, "--untie-embeddings-and-output-weights")   \
    X(add_bias_linear, bool, NULL, "--disable-bias-linear (linear biases)")                        \
    X(add_qkv_bias, bool, NULL, "--add-qkv-bias")                                                  \
    X(qk_layernorm, bool, NULL, "--qk-layernorm")

/* Mixture of experts (Megatron's flags). num_experts 0 is a dense model;
 * otherwise layer l (0-based) has an MoE MLP when l % moe_layer_freq == 0:
 * a router over num_experts SwiGLU/GELU experts of moe_ffn_hidden_size
 * features each, moe_router_topk of them per token, plus a shared expert
 * of moe_shared_expert_intermediate_size features (0: none). */
extern const char *const MOE_SCORE_FUNCTION_NAMES[]; /* "softmax", "sigmoid" */
typedef enum { MOE_SCORE_SOFTMAX, MOE_SCORE_SIGMOID } MoEScoreFunction;
#define TRANSFORMER_MOE_FIELDS(X)                                                                  \
    X(num_experts, count, NULL, "--num-experts")                                                   \
    X(moe_ffn_hidden_size, count, NULL, "--moe-ffn-hidden-size")                                   \
    X(moe_router_topk, int, NULL, "--moe-router-topk")                                             \
    X(moe_router_score_function, choice, MOE_SCORE_FUNCTION_NAMES, "--moe-router-score-function") \
    X(moe_router_pre_softmax, bool, NULL, "--moe-router-pre-softmax")                              \
    X(moe_layer_freq, int, NULL, "--moe-layer-freq")                                               \
    X(moe_shared_expert_intermediate_size, count, NULL, "--moe-shared-expert-intermediate-size")

#define TRANSFORMER_FIELD_TYPE_int int
#define TRANSFORMER_FIELD_TYPE_count int
#define TRANSFORMER_FIELD_TYPE_int64 int64_t
#define TRANSFORMER_FIELD_TYPE_bool bool
#define TRANSFORMER_FIELD_TYPE_f64 double
#define TRANSFORMER_FIELD_TYPE_choice int
#define TRANSFORMER_DECLARE_FIELD(f, kind, extra, what) TRANSFORMER_FIELD_TYPE_##kind f;

typedef enum { MOE_BALANCE_AUX_LOSS, MOE_BALANCE_SEQ_AUX_LOSS, MOE_BALANCE_NONE } MoELoadBalancing;
typedef enum { MOE_DROP_PROBS, MOE_DROP_POSITION } MoEDropPolicy;
extern const char *const MOE_LOAD_BALANCING_NAMES[]; /* "aux_loss", "seq_aux_loss", "none" */
extern const char *const MOE_DROP_POLICY_NAMES[];    /* "probs", "position" */

typedef enum { RECOMPUTE_NONE = 0, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL } RecomputeGranularity;
typedef enum { RECOMPUTE_UNIFORM = 0, RECOMPUTE_BLOCK } RecomputeMethod;
/* Megatron's flag words: --recompute-granularity, --recompute-method. */
extern const char *const RECOMPUTE_GRANULARITY_NAMES[]; /* "", "selective", "full" */
extern const char *const RECOMPUTE_METHOD_NAMES[];      /* "uniform", "block" */

typedef struct {
    TRANSFORMER_ARCH_FIELDS(TRANSFORMER_DECLARE_FIELD)
    TRANSFORMER_VARIANT_FIELDS(TRANSFORMER_DECLARE_FIELD)
    /* run settings */
    int seq_length;
    double init_method_std;
    uint64_t seed;
    /* Activation recomputation, Megatron's: NONE keeps every activation;
     * SELECTIVE recomputes each layer's core attention (softmax, dropout,
     * probabilities x values) from its saved queries, keys and values in
     * backward; FULL keeps only the input of a unit of layers per
     * micro-batch and recomputes the unit's forward in its backward: with
     * UNIFORM every local layer, in units of recompute_num_layers
     * consecutive layers; with BLOCK the first recompute_num_layers local
     * layers of the stage, one by one, and the others not at all. The
     * numbers are bitwise those of no recomputation. */
    RecomputeGranularity recompute_granularity;
    RecomputeMethod recompute_method;
    int recompute_num_layers;
    /* Dropout probabilities (Megatron's --hidden-dropout, on the embedding
     * output and each sublayer's output before its residual add, and
     * --attention-dropout, on the attention probabilities). */
    double hidden_dropout, attention_dropout;
    /* Mixture of experts, run settings: the load-balancing loss
     * (Megatron's --moe-router-load-balancing-type, --moe-aux-loss-coeff),
     * the router z-loss (--moe-z-loss-coeff), and the expert capacity
     * (--moe-expert-capacity-factor, 0: dropless; tokens beyond it dropped
     * by --moe-token-drop-policy; --moe-pad-expert-input-to-capacity). */
    MoELoadBalancing moe_load_balancing;
    double moe_aux_loss_coeff, moe_z_loss_coeff;
    double moe_expert_capacity_factor;
    MoEDropPolicy moe_token_drop_policy;
    bool moe_pad_expert_input_to_capacity;
    /* Expert parallelism: the received rows' buffers are planned for this
     * many times the balanced load (--moe-expert-rows-factor; 0: 2) and
     * grow beyond it when a step needs. */
    double moe_expert_rows_factor;
} TransformerConfig;

/* The GPT-2 variant's fields (see above), leaving the shape alone;
 * num_query_groups and kv_channels follow the heads and hidden size. */
void transformer_config_set_gpt2_variant(TransformerConfig *c);
/* The MoE fields of a dense model (num_experts 0, Megatron's defaults for
 * the rest), which the GPT-2 variant includes. */
void transformer_config_set_dense(TransformerConfig *c);

/* Head dimension, query heads per group and the width of one row of the
 * fused QKV projection: the model, the counts and interop share them. */
static inline int transformer_head_dim(const TransformerConfig *c) { return c->kv_channels; }
static inline int transformer_heads_per_group(const TransformerConfig *c) {
    return c->num_attention_heads / c->num_query_groups;
}
static inline int64_t transformer_qkv_width(const TransformerConfig *c) {
    return (int64_t)c->num_query_groups * (transformer_heads_per_group(c) + 2) * c->kv_channels;
}
/* Features of each head that RoPE rotates (Megatron: kv_channels x
 * rotary_percent, rounded down). */
static inline int transformer_rotary_dim(const TransformerConfig *c) {
    return (int)(c->kv_channels * c->rotary_percent);
}
/* Whether the output layer is the word embedding (tied) or its own. */
static inline bool transformer_tied_output(const TransformerConfig *c) {
    return !c->untie_embeddings_and_output_weights;
}

/* Whether layer l (0-based, of the whole model) has an MoE MLP. */
static inline bool transformer_layer_is_moe(const TransformerConfig *c, int l) {
    return c->num_experts > 0 && l % c->moe_layer_freq == 0;
}

/* MoE layers of the whole model: ceil(num_layers / moe_layer_freq). */
static inline int transformer_moe_layer_count(const TransformerConfig *c) {
    return c->num_experts > 0 ? (c->num_layers + c->moe_layer_freq - 1) / c->moe_layer_freq : 0;
}

/* false with a message prefixed by `where` when the architecture is not one
 * gpt3d can build: a field out of range, heads not divisible by query
 * groups, a padded vocabulary smaller than the vocabulary, a rotary
 * dimension that is odd or zero. */
bool transformer_config_check(const TransformerConfig *c, const char *where, char *err,
                              size_t err_size);
/* Only the rules between the architecture fields (query groups, the
 * vocabulary padding, the rotary dimension, the experts' top-k, size and
 * biases), for
 * the flag parser, which leaves the sizes' ranges to the memory plan. */
bool transformer_config_check_variant(const TransformerConfig *c, const char *where, char *err,
                                      size_t err_size);

/* A field's value as text: integers in decimal, booleans true/false, f64
 * as the shortest decimal that reads back exactly, choices by name. */
#define TRANSFORMER_FIELD_TEXT_MAX 48
void transformer_config_field_text(const TransformerConfig *c, const char *field, char *out,
                                   size_t size);

/* The first architecture field in which a and b differ: its `what`, and
 * both values as text; NULL when they describe the same model. */
const char *transformer_config_difference(const TransformerConfig *a, const TransformerConfig *b,
                                          char *text_a, char *text_b, size_t text_size);

/* The index in `names` (NULL-terminated) of `word`, -1 when absent. */
int transformer_choice_index(const char *const *names, const char *word);

#endif
