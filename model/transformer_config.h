/* model/transformer_config.h — the model's shape and architecture, once.
 *
 * Contract. TransformerConfig is the one description of a model that the
 * flags fill (TrainArgs.model), the model builds from, checkpoint metadata
 * stores (CheckpointMeta.model) and interop reads and writes. Its
 * architecture fields are listed once, in TRANSFORMER_ARCH_FIELDS: the
 * checkpoint metadata table, the validation and the comparison of a saved
 * model with a run's all expand that list, so a new field (an architecture
 * variant) is added in one place. The JSON key of a field is its name.
 *
 * Architecture fields define the parameters (their names and shapes): a
 * checkpoint loads only into the same architecture. seq_length, the
 * initialisation std, the seed and recomputation are run settings: they
 * may change between save and resume. */
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

#define TRANSFORMER_FIELD_TYPE_int int
#define TRANSFORMER_FIELD_TYPE_int64 int64_t
#define TRANSFORMER_DECLARE_FIELD(f, kind, max, what) TRANSFORMER_FIELD_TYPE_##kind f;

typedef struct {
    TRANSFORMER_ARCH_FIELDS(TRANSFORMER_DECLARE_FIELD)
    /* run settings */
    int seq_length;
    double init_method_std;
    uint64_t seed;
    /* Keep only each layer's output per micro-batch and recompute the rest
     * of the layer's forward in its backward (Megatron's full activation
     * recomputation): less activation memory, one more forward of compute. */
    bool recompute_activations;
} TransformerConfig;

/* false with a message prefixed by `where` when the architecture is not one
 * gpt3d can build: a field outside [1, maximum], hidden not divisible by
 * heads, a padded vocabulary smaller than the vocabulary. */
bool transformer_config_check(const TransformerConfig *c, const char *where, char *err,
                              size_t err_size);

/* The first architecture field in which a and b differ: its `what` and both
 * values; NULL when they describe the same parameters. */
const char *transformer_config_difference(const TransformerConfig *a, const TransformerConfig *b,
                                          long long *value_a, long long *value_b);

#endif
