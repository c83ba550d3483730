/* interop/interop.h — model weights in and out of Hugging Face and llm.c.
 *
 * Contract.
 * - Safetensors (Hugging Face's weight file): an 8-byte little-endian header
 *   length N, N bytes of JSON mapping tensor names to {dtype, shape,
 *   data_offsets [begin, end)} (offsets relative to the data section that
 *   follows the header) plus an optional "__metadata__" object of strings,
 *   then the raw little-endian data. The reader validates the whole header
 *   when it opens a file and reads F32, BF16 and F16 tensors as fp32 (both
 *   widen exactly). The writer writes F32 only, header padded with spaces to
 *   a multiple of 8 bytes, tensors in the order given, into PATH.tmp renamed
 *   to PATH when complete, so a failed export never leaves a partial file
 *   under the final name.
 * - ModelWeights: a whole model's canonical tensors (DESIGN.md: Megatron-core
 *   names, QKV [heads, 3, head_dim, C], linear_proj and linear_fc2 stored
 *   input-major) in host memory, written as a one-rank gpt3d checkpoint of
 *   iteration 0 without optimizer state, which pretrain_gpt loads at any
 *   layout with --finetune or --no-load-optim.
 * - ExportSource: a checkpoint of any layout, read whole tensor by whole
 *   tensor through the CheckpointReader, its shape checked against the model
 *   shape in metadata.json when opened.
 * - TensorMapping: one external tensor, its name, shape and how its elements
 *   map to one canonical tensor. Conversions are pure permutations (and, for
 *   the word embedding, dropping or zero-filling padded vocabulary rows), so
 *   values move bitwise.
 * - Hugging Face: DIR/config.json and DIR/model.safetensors (import also
 *   reads the shards of model.safetensors.index.json), unpadded vocabulary,
 *   in one of three architectures:
 *   GPT2LMHeadModel (the GPT-2 block): GPT-2's names and Conv1D
 *   (input-major) shapes; import accepts names with or without the
 *   "transformer." prefix and ignores the attn.bias / attn.masked_bias
 *   buffers of old files.
 *   LlamaForCausalLM (rotate-half RoPE over whole heads, RMSNorm, SwiGLU,
 *   grouped-query attention, biases on all linear layers or none, tied or
 *   untied output layer): "model." names, nn.Linear (out-major) q_proj,
 *   k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
 *   MixtralForCausalLM (Llama's attention and norms, no biases, every MLP a
 *   mixture of experts: a softmax router over all experts, the top
 *   num_experts_per_tok renormalised, no shared expert): the router
 *   block_sparse_moe.gate [E, C], each expert's w1 (gate), w3 (up), w2
 *   (down) as nn.Linear.
 *   A tied model's lm_head.weight, when a file has one, must equal the word
 *   embedding. Padded vocabulary rows of an imported model are zero.
 * - llm.c: the gpt2_124M.bin model file: 256 int32 header (magic 20240326,
 *   version 3 = fp32 or 5 = bf16, max_seq_len, vocab_size, num_layers,
 *   num_heads, channels, padded_vocab_size), then the parameters in llm.c's
 *   order, all layers of one kind together, weights out-major (nn.Linear).
 *   Export writes version 3 (or 5) with the vocabulary padded to a multiple
 *   of the given K; rows gpt3d holds are copied, rows beyond them are zero.
 * Every function that reads user files returns false/NULL with a message
 * naming the file and the fix in err; nothing here exits or prints. */
#ifndef GPT3D_INTEROP_H
#define GPT3D_INTEROP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/checkpoint.h"

/* ------------------------------------------------------------ model shape */

/* The GPT-2 shape of a checkpoint or an external model is its
 * TransformerConfig (model/transformer_config.h), checked by
 * transformer_config_check. */

/* ------------------------------------------------------------ safetensors */

#define SAFETENSORS_MAX_DIMS 8
/* The format's own limit on the header, which keeps a damaged length from
 * making us allocate gigabytes. */
#define SAFETENSORS_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef enum { SAFETENSORS_F32, SAFETENSORS_BF16, SAFETENSORS_F16 } SafetensorsDtype;

const char *safetensors_dtype_name(SafetensorsDtype t);

typedef struct {
    char *name;
    SafetensorsDtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte offsets within the data section */
} SafetensorsTensor;

typedef struct SafetensorsReader SafetensorsReader;

/* Opens and validates the whole header: its length against the file, JSON
 * object syntax, every entry's dtype, shape and data_offsets (inside the data
 * section, spanning exactly numel x dtype size), no duplicate names. */
SafetensorsReader *safetensors_open(const char *path, char *err, size_t err_size);
void safetensors_close(SafetensorsReader *r);
const char *safetensors_path(const SafetensorsReader *r);
int safetensors_num_tensors(const SafetensorsReader *r);
const SafetensorsTensor *safetensors_tensor(const SafetensorsReader *r, int i);
/* NULL when the file has no tensor of that name. */
const SafetensorsTensor *safetensors_find(const SafetensorsReader *r, const char *name);
/* A "__metadata__" string value, NULL when absent. */
const char *safetensors_metadata(const SafetensorsReader *r, const char *key);
/* Fills out[0, t->numel) with the tensor's values as fp32. */
bool safetensors_read_f32(SafetensorsReader *r, const SafetensorsTensor *t, float *out, char *err,
                          size_t err_size);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
} SafetensorsSpec;

typedef struct SafetensorsWriter SafetensorsWriter;

/* Writes the header for `count` F32 tensors (offsets consecutive in the
 * given order) and "__metadata__": {"format": "pt"} into PATH.tmp. */
SafetensorsWriter *safetensors_create(const char *path, const SafetensorsSpec *specs, int count,
                                      char *err, size_t err_size);
/* Appends the next tensor's data; numel must be that tensor's. */
bool safetensors_write_next(SafetensorsWriter *w, const float *data, int64_t numel, char *err,
                            size_t err_size);
/* Every tensor written: flush, fsync, rename PATH.tmp to PATH. Frees w. */
bool safetensors_finish(SafetensorsWriter *w, char *err, size_t err_size);
/* Removes PATH.tmp and frees w (after a failure). */
void safetensors_abort(SafetensorsWriter *w);

/* -------------------------------------------- canonical weights in memory */

typedef struct ModelWeights ModelWeights;

/* Every canonical parameter of the shape, zero-filled. */
ModelWeights *model_weights_create(const TransformerConfig *s);
void model_weights_free(ModelWeights *w);
const TransformerConfig *model_weights_shape(const ModelWeights *w);
/* The parameter's canonical tensor (NULL when the model has none of that
 * name); *numel receives its element count. */
float *model_weights_param(ModelWeights *w, const char *name, int64_t *numel);

typedef struct {
    int seq_length;             /* recorded in metadata.json */
    const char *tokenizer_type; /* "" or NULL: not recorded */
    const char *source;         /* recorded as the data description */
} WeightsSaveInfo;

/* Writes <save>/iter_0000000 (one rank file, TP = PP = DP = 1, no optimizer
 * state) and publishes it as the latest checkpoint. */
bool model_weights_save(const ModelWeights *w, const char *save_dir, const WeightsSaveInfo *info,
                       char *err, size_t err_size);

/* False with a message when save_dir already holds a checkpoint (or a
 * damaged latest_checkpointed_iteration.txt): an import must not replace a
 * run's history. */
bool import_check_save_dir(const char *save_dir, char *err, size_t err_size);
/* The tokenizer a vocabulary size implies: "GPT2BPETokenizer" for GPT-2's
 * 50257, "ByteTokenizer" for 257, "" otherwise. */
const char *import_default_tokenizer(int64_t vocab_size);

/* ------------------------------------------------- checkpoint as a source */

typedef struct {
    CheckpointReader *reader;
    CheckpointMeta meta;
    TransformerConfig shape;
    char dir[4096]; /* <load>/iter_%07d, for messages */
} ExportSource;

/* iteration < 0: the one latest_checkpointed_iteration.txt names. Checks
 * that the checkpoint holds every parameter of its model shape with its
 * canonical shape. */
bool export_source_open(ExportSource *src, const char *load_dir, int64_t iteration, char *err,
                        size_t err_size);
void export_source_close(ExportSource *src);
/* The whole canonical tensor of a parameter (malloc'd; caller frees). */
float *export_source_read(ExportSource *src, const char *name, int64_t *numel, char *err,
                          size_t err_size);

/* ------------------------------------------------------- tensor mappings */

typedef enum {
    LAYOUT_SAME,          /* external = canonical, element for element */
    LAYOUT_TRANSPOSE,     /* external [a, b] = transpose of canonical [b, a] */
    LAYOUT_QKV_IN_MAJOR,  /* Conv1D [C, 3C]; columns [q | k | v], head h at h*HS */
    LAYOUT_QKV_OUT_MAJOR, /* Linear [3C, C]; rows [q | k | v], head h at h*HS */
    LAYOUT_QKV_BIAS,      /* [3C]: [q | k | v], head h at h*HS */
    LAYOUT_VOCAB_ROWS,    /* [R, C]: rows [0, R) of canonical [V_pad, C]; zero past V_pad */
    /* Linear [rows, C] (or a bias [rows]) holding one `part` of linear_qkv
     * [groups, heads per group + 2, HS(, C)]: 0 the query heads (head h at
     * h*HS, of group h / heads per group), 1 the key and 2 the value head of
     * each group (group g at g*HS), as Llama's q_proj, k_proj, v_proj. */
    LAYOUT_QKV_PART,
    /* Linear [F, C] (or a bias [F]) holding one `part` of the SwiGLU
     * linear_fc1 [F, 2(, C)]: 0 the gate, 1 the up projection. */
    LAYOUT_GATED_PART,
} ExternalLayout;

#define INTEROP_NAME_MAX 128

typedef struct {
    char external_name[INTEROP_NAME_MAX];
    char canonical_name[INTEROP_NAME_MAX];
    int ndim;
    int64_t shape[2]; /* external shape */
    ExternalLayout layout;
    int part; /* LAYOUT_QKV_PART, LAYOUT_GATED_PART */
} TensorMapping;

int64_t tensor_mapping_numel(const TensorMapping *m);
/* external[0, numel) from the whole canonical tensor. */
void tensor_to_external(const TensorMapping *m, const TransformerConfig *s, const float *canonical,
                        float *external);
/* The whole canonical tensor from external[0, numel) (padded vocabulary rows
 * the external tensor lacks are zero). */
void tensor_from_external(const TensorMapping *m, const TransformerConfig *s, const float *external,
                          float *canonical);

/* GPT-2's Hugging Face tensors in model order (named_parameters()), names
 * with the "transformer." prefix. Caller frees. */
TensorMapping *hf_gpt2_mappings(const TransformerConfig *s, int *count);
/* LlamaForCausalLM's tensors in model order ("model." names; lm_head.weight
 * only for an untied output layer; biases as the config has them). */
TensorMapping *hf_llama_mappings(const TransformerConfig *s, int *count);
/* MixtralForCausalLM's: Llama's attention and norms, the router
 * block_sparse_moe.gate and each expert's w1 (gate), w3 (up), w2 (down). */
TensorMapping *hf_mixtral_mappings(const TransformerConfig *s, int *count);
/* llm.c's tensors in file order, one entry per layer of each kind, with the
 * word embedding padded to `llmc_padded_vocab` rows. Caller frees. */
TensorMapping *llmc_mappings(const TransformerConfig *s, int64_t llmc_padded_vocab, int *count);

/* ---------------------------------------------------------- Hugging Face */

#define HF_CONFIG_FILE "config.json"
#define HF_WEIGHTS_FILE "model.safetensors"
/* Large models come as shards listed by this index ("weight_map": tensor
 * name -> shard file in the same directory). */
#define HF_WEIGHTS_INDEX_FILE "model.safetensors.index.json"

/* Writes out_dir/config.json and out_dir/model.safetensors (creating
 * out_dir) in the first architecture that expresses the checkpoint's model
 * (GPT2LMHeadModel, LlamaForCausalLM, MixtralForCausalLM; an error saying why for each when
 * none does); *architecture (when not NULL), *tensors and *elements receive
 * what was written. */
bool hf_export(ExportSource *src, const char *out_dir, const char **architecture, int *tensors,
               int64_t *elements, char *err, size_t err_size);
/* Reads a config.json of model_type "gpt2" (GPT2Config), "llama"
 * (LlamaConfig) or "mixtral" (MixtralConfig): the shape (vocabulary padded to a multiple of
 * divisible_by) and refusal of options gpt3d does not implement (each named:
 * another activation, LayerNorm epsilon or RoPE scaling, cross attention,
 * attention scaled by layer index, biases on some linear layers only). */
bool hf_read_config(const char *path, int divisible_by, TransformerConfig *s, char *err, size_t err_size);
/* config.json + model.safetensors (or the shards its index lists) of
 * hf_dir as canonical weights; *architecture (when not NULL) receives the
 * architecture's name. */
ModelWeights *hf_import(const char *hf_dir, int divisible_by, const char **architecture, char *err,
                        size_t err_size);

/* ---------------------------------------------------------------- llm.c */

#define LLMC_MAGIC 20240326
#define LLMC_HEADER_INTS 256
#define LLMC_VERSION_FP32 3
#define LLMC_VERSION_BF16 5

/* Writes an llm.c model file, version 3 (fp32, bitwise) or with bf16 set
 * version 5 (rounded to nearest even: what llm.c's default bf16 CUDA build
 * loads); refuses a model llm.c cannot hold (ffn_hidden_size other than
 * 4 x hidden_size). */
bool llmc_export(ExportSource *src, const char *path, int divisible_by, bool bf16, char *err,
                 size_t err_size);
/* Reads an llm.c model file of version 3 or 5; the gpt3d vocabulary is
 * padded to a multiple of divisible_by. */
ModelWeights *llmc_import(const char *path, int divisible_by, char *err, size_t err_size);

#endif
