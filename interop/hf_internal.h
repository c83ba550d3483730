/* interop/hf_internal.h — one Hugging Face architecture as data for the
 * export and import drivers of hf.c.
 *
 * Each architecture owns its config.json (written and read), the rule for
 * which gpt3d models it expresses and its tensor names; the drivers own the
 * files (config.json, one model.safetensors or an index of shards) and the
 * checks every architecture shares (no tensor missing, none unexpected,
 * shapes as the config implies, a tied lm_head equal to the embedding). */
#ifndef GPT3D_HF_INTERNAL_H
#define GPT3D_HF_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "interop/interop.h"

typedef struct {
    const char *model_type;   /* config.json "model_type" */
    const char *architecture; /* config.json "architectures"[0], for messages too */
    /* Whether the architecture computes what the gpt3d model s computes;
     * when not, why (a phrase naming the first field it cannot hold). */
    bool (*expresses)(const TransformerConfig *s, char *why, size_t why_size);
    /* The architecture's own config.json fields. */
    void (*write_config)(cJSON *root, const TransformerConfig *s);
    /* The model config.json describes (vocabulary padded to divisible_by),
     * or false with a message naming the file and the field. */
    bool (*read_config)(const cJSON *root, const char *path, int divisible_by,
                        TransformerConfig *s, char *err, size_t err_size);
    TensorMapping *(*mappings)(const TransformerConfig *s, int *count);
    /* A prefix of the mappings' names that files may lack ("transformer."
     * in GPT-2's released files); NULL when names are always complete. */
    const char *optional_prefix;
    /* Buffers (not parameters) that some transformers versions saved. */
    bool (*is_buffer)(const char *name);
} HFArchitecture;

extern const HFArchitecture HF_GPT2_ARCHITECTURE, HF_LLAMA_ARCHITECTURE, HF_MIXTRAL_ARCHITECTURE;

/* The Llama family (LlamaForCausalLM, MixtralForCausalLM), whose decoder
 * layers share attention, norms and config fields (hf_llama.c). */
typedef struct {
    double rms_norm_eps, rope_theta; /* the config class's defaults */
    const char *what;                /* "a LlamaConfig field", for messages */
} HFLlamaDefaults;
/* The first thing of s that Llama's decoder layer does not compute (a
 * phrase naming the flag), NULL when none: rotate-half RoPE on whole
 * heads, RMSNorm, SwiGLU, no qk norms, no query bias without the others. */
const char *hf_llama_family_difference(const TransformerConfig *s);
/* The fields both configs have, intermediate_size given. */
void hf_llama_family_write_config(cJSON *root, const TransformerConfig *s, int intermediate_size);
/* Those fields read into s (every variant field set; no biases; dense:
 * the caller adds its own fields, then checks with hf_check_shape), and
 * refusal of the activations and RoPE scalings gpt3d does not compute. */
bool hf_llama_family_read_config(const cJSON *root, const char *path, int divisible_by,
                                 const HFLlamaDefaults *d, TransformerConfig *s, char *err,
                                 size_t err_size);
/* The per-layer rotary frequencies some transformers versions saved. */
bool hf_llama_family_is_buffer(const char *name);

/* config.json readers. The first of `names` present; *present false when
 * none is. False (with err) when it is not a positive integer. */
bool hf_config_int(const cJSON *root, const char *const *names, int count, const char *path,
                   int64_t *value, bool *present, char *err, size_t err_size);
/* As hf_config_int, but absence is an error naming names[0] and `what`. */
bool hf_require_int(const cJSON *root, const char *const *names, int count, const char *path,
                    const char *what, int64_t *value, char *err, size_t err_size);
/* A number field: *value unchanged when absent; false when not a finite
 * positive number. */
bool hf_config_positive(const cJSON *root, const char *name, const char *path, double *value,
                        char *err, size_t err_size);
/* A boolean field: *value unchanged when absent; false when not a bool. */
bool hf_config_bool(const cJSON *root, const char *name, const char *path, bool *value, char *err,
                    size_t err_size);

/* A small text file (config.json, the shard index) as a string. */
char *hf_read_text_file(const char *path, char *err, size_t err_size);
/* hf_read_config, also giving the architecture model_type names. */
const HFArchitecture *hf_read_model_config(const char *path, int divisible_by,
                                           TransformerConfig *s, char *err, size_t err_size);

/* Checks the shape read from `path` (transformer_config_check). */
bool hf_check_shape(const TransformerConfig *s, const char *path, char *err, size_t err_size);

#endif
