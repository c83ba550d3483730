/* model/gpt_model.h — the GPT decoder (GPT-2 and Llama-style variants) on a Backend.
 *
 * Contract.
 * - TransformerConfig is the model shape; the parameter table lists every parameter
 *   this rank holds with its Megatron-core name, canonical full shape, the
 *   canonical flat interval [local_begin, local_begin + local_numel) this
 *   rank owns (the tensor-parallel split dimension is dimension 0, so a TP
 *   shard is one contiguous interval), its offset in the rank's flat
 *   parameter and gradient buffers, and its init rule.
 * - Parameters live in one contiguous act-dtype allocation, gradients in one
 *   contiguous fp32 allocation with the same offsets, ordered as gradients
 *   become ready in backward (last layer first, word embedding last).
 * - Initial values are a pure function of (seed, parameter name, canonical
 *   element index), so every layout starts from bitwise the same model.
 * - gpt_model_forward() runs one micro-batch and returns its summed token
 *   loss; gpt_model_backward() then ADDS that micro-batch's gradients,
 *   scaled by `loss_scale_per_token`, into the gradient buffer.
 * - Activations for one micro-batch live in one act-dtype allocation, one
 *   fp32 allocation (statistics, loss pieces) and one act-dtype gradient
 *   scratch, sized at creation for micro_batch x seq_length. */
#ifndef GPT3D_MODEL_GPT_MODEL_H
#define GPT3D_MODEL_GPT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/transformer_config.h"
#include "tensor_parallel/tensor_parallel.h"

/* The model's shape and architecture: model/transformer_config.h. */

/* Rounds vocab_size up to a multiple of `divisible_by` (Megatron: times TP). */
int64_t gpt_padded_vocab_size(int64_t vocab_size, int divisible_by);

typedef enum { PARAM_INIT_NORMAL, PARAM_INIT_ZEROS, PARAM_INIT_ONES } ParamInitKind;

#define PARAM_MAX_DIMS 4
#define PARAM_NAME_MAX 96

typedef struct {
    char name[PARAM_NAME_MAX];
    int ndim;
    int64_t shape[PARAM_MAX_DIMS]; /* canonical full shape */
    int64_t canonical_numel;
    bool tensor_parallel_split;  /* split on dimension 0 across TP */
    int64_t local_begin;         /* canonical flat index of this rank's first element */
    int64_t local_numel;
    size_t offset;               /* element offset in the flat param/grad buffers */
    bool weight_decay;           /* false for biases and layernorm */
    bool embedding_or_output;    /* word embedding (every copy) or output layer: the
                                    parameters --decoupled-lr applies to, as Megatron's
                                    is_embedding_or_output_parameter */
    bool counts_in_grad_norm;    /* false for this rank's replica of a parameter
                                    another rank counts (TP copies, tied embedding copy) */
    bool tied_copy;              /* the last stage's copy of the tied word embedding
                                    (the first stage's is the one saved and counted) */
    bool grad_partial_over_heads; /* replicated over TP, but each TP rank's gradient
                                     covers only its own attention heads (the QK-norm
                                     weights): always summed over the TP group */
    bool expert;                  /* a routed expert's weight: held by one expert-parallel
                                     rank, reduced over the expert-data-parallel group */
    ParamInitKind init;
    double init_std;
} ParamInfo;

/* The routed experts' parameters come after all others (the expert
 * region [expert_begin, total_numel), empty without experts): the
 * optimizer shards the two regions over different groups. */
typedef struct {
    ParamInfo *params;
    int count;
    size_t total_numel; /* flat buffer length, including alignment padding */
    size_t expert_begin;
} ParamTable;

/* What this rank holds: its TP slice, its contiguous range of layers,
 * whether it holds the embedding (first stage) and the head (last stage),
 * and its part of each sequence under context parallelism (cp_size 0 or 1:
 * all of it; context_parallel.h says which rows). */
/* Expert parallelism: ep_rank of ep_size (0 or 1: every expert) holds the
 * experts [ep_rank E / EP, (ep_rank + 1) E / EP) of each MoE layer, split
 * over TP by features unless etp_size is 1.
 * region_align (elements; 0: none) is where the expert region may begin
 * and the table end: the distributed optimizer's bucket unit. */
typedef struct {
    int tp_size, tp_rank;
    int first_layer, num_local_layers;
    bool has_embedding, has_head;
    int cp_size, cp_rank;
    int ep_size, ep_rank;
    int etp_size; /* the experts' TP split: 0 or tp_size (the dense one), or 1 (whole) */
    size_t region_align;
} ModelPartition;

void param_table_build(ParamTable *t, const TransformerConfig *cfg, const ModelPartition *part);
void param_table_free(ParamTable *t);
/* Names of the parameters outside the layers (Megatron-core's). */
#define GPT_WORD_EMBEDDING "embedding.word_embeddings.weight"
#define GPT_POSITION_EMBEDDING "embedding.position_embeddings.weight"
#define GPT_OUTPUT_LAYER "output_layer.weight"
/* Parameters of transformer layer `layer` (0-based, of the whole model:
 * an MoE layer has other parameters than a dense one) and of one norm in
 * this variant. */
int gpt_layer_param_count(const TransformerConfig *cfg, int layer);
/* The same without its routed experts (which lie in the expert region),
 * and the routed experts' parameters a rank of `part` holds of it. */
int gpt_layer_dense_param_count(const TransformerConfig *cfg, int layer);
int gpt_local_expert_param_count(const TransformerConfig *cfg, const ModelPartition *part,
                                 int layer);
int gpt_norm_param_count(const TransformerConfig *cfg);
/* Index of a parameter by name, -1 when absent. */
int param_table_find(const ParamTable *t, const char *name);
/* Canonical parameter count of the whole model (each parameter once), and
 * the parameters a token passes through (an MoE layer's routed experts
 * counted K of E times). */
int64_t gpt_canonical_param_count(const TransformerConfig *cfg);
int64_t gpt_active_param_count(const TransformerConfig *cfg);
/* Host fp32 initial values of p's local interval (local_numel elements). */
void param_init_values(const ParamInfo *p, uint64_t seed, float *out);

/* A closed-form lower bound of the bytes the largest rank of a TP x PP
 * layout needs for weights and gradients (the canonical count spread evenly)
 * plus its host parameter table (of the max_rank_layers layers of the
 * pipeline rank holding the most). It builds nothing, so an absurd shape
 * (--num-layers 100000000) is refused in microseconds instead of stalling in
 * a table of 10^9 entries. */
double gpt_model_min_rank_bytes(const TransformerConfig *cfg, int tp_size, int pp_size,
                                int ep_size, int etp_size, int max_rank_layers,
                                size_t act_elem_bytes);

typedef struct GPTModel GPTModel;

/* What gpt_model_create would allocate on the backend, measured by the same
 * code without allocating (the Carver's measure pass). */
typedef struct {
    size_t param_bytes, grad_bytes, activation_bytes;
    size_t flat_numel;   /* length of the flat buffers the optimizer shards */
    size_t expert_numel; /* of which the expert region (sharded over the expert-data group) */
} GPTMemoryPlan;
void gpt_model_plan(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                    int micro_batch_size, const TensorParallel *tp, Comm *comm, int num_slots,
                    GPTMemoryPlan *plan);

/* tp: the tensor-parallel context (NULL for one rank); its size and rank
 * must match the partition's. comm: the run's Comm, over which the
 * attention ring of context parallelism runs (part->cp_size > 1; NULL
 * otherwise is fine). Host id
 * arrays passed in (tokens, targets, documents) always hold whole
 * sequences; the model takes its own rows of them, and the summed loss it
 * returns is its rows' part. num_slots: micro-batches whose activations
 * can be held at once (1 without pipelining; min(P - stage, M) for 1F1B).
 * The model allocates and owns its parameter and gradient buffers. */
GPTModel *gpt_model_create(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                           int micro_batch_size, const TensorParallel *tp, Comm *comm,
                           int num_slots);
/* The same without parameter and gradient buffers: their owner (the
 * distributed optimizer) sizes them from gpt_model_params() and binds them
 * before any other call. Bound buffers (at least table.total_numel
 * elements each) are not freed by the model. */
GPTModel *gpt_model_create_unbound(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                                   int micro_batch_size, const TensorParallel *tp, Comm *comm,
                                   int num_slots);
void gpt_model_bind_buffers(GPTModel *m, void *params, float *grads);
void gpt_model_free(GPTModel *m);

/* What the buffers' owner learns from a stage's forward and backward, so it
 * can overlap communication with them. params_needed: the forward is about
 * to read the parameters of the buffer range [begin, end). grads_ready: the
 * running backward will not touch the gradients of [0, ready_numel) again
 * (called after the head, after each layer and at the end of a backward;
 * ready_numel grows within one backward). */
typedef struct {
    void *ctx;
    void (*params_needed)(void *ctx, size_t begin, size_t end);
    void (*grads_ready)(void *ctx, size_t ready_numel);
} GPTBufferHooks;
void gpt_model_set_buffer_hooks(GPTModel *m, const GPTBufferHooks *hooks);
const ParamTable *gpt_model_params(const GPTModel *m);
/* The flat buffers (device pointers of the model's backend). */
void *gpt_model_param_buffer(GPTModel *m);
float *gpt_model_grad_buffer(GPTModel *m);
/* Bytes of the activation allocations. */
size_t gpt_model_activation_bytes(const GPTModel *m);

/* fp32 master weights of the flat buffer range [begin, end), at master[0, end - begin). */
typedef struct {
    size_t begin, end;
    float *master;
} GPTMasterRange;

/* Writes the initial values of every local parameter into the param buffer
 * and their fp32 values into every master range (none: count 0). */
void gpt_model_init_params(GPTModel *m, const GPTMasterRange *masters, int count);

void gpt_model_zero_grad(GPTModel *m);

/* ---- pipeline stage API ----
 * A stage runs its layers for the micro-batch in `slot`. The first stage
 * embeds `tokens`; a later stage reads the activation received into
 * gpt_model_stage_input(). The last stage computes the loss on `targets` and
 * returns the summed token loss (0 elsewhere); an earlier stage leaves its
 * output in gpt_model_stage_output(). Backward of a slot starts, on a
 * non-last stage, from d(output) received into gpt_model_stage_output_grad()
 * and leaves d(input) in gpt_model_stage_input_grad() (the same buffer:
 * send it before the next backward). Host id arrays hold B*T ids; p2p
 * buffers hold gpt_model_stage_activation_numel() act-dtype elements. */
int gpt_model_num_slots(const GPTModel *m);
size_t gpt_model_stage_activation_numel(const GPTModel *m);
void *gpt_model_stage_input(GPTModel *m, int slot);
void *gpt_model_stage_output(GPTModel *m, int slot);
void *gpt_model_stage_output_grad(GPTModel *m);
void *gpt_model_stage_input_grad(GPTModel *m);
double gpt_model_stage_forward(GPTModel *m, int slot, const int32_t *tokens,
                               const int32_t *targets);
void gpt_model_stage_backward(GPTModel *m, int slot, float loss_scale_per_token);
/* Dropout (cfg hidden_dropout, attention_dropout) is applied only while
 * training; its masks are keyed by the iteration and by each token's global
 * coordinates, so set the iteration and, before a slot's forward, the
 * global index of its micro-batch's first sample (layout-independent: the
 * sample's index in the data order). The backward of the slot, and its
 * recomputation, reuse them. Off (evaluation) until set. */
void gpt_model_set_step(GPTModel *m, int64_t iteration, bool training);
void gpt_model_set_first_sample(GPTModel *m, int slot, int64_t first_sample);
/* Document masking of the micro-batch in `slot` (data.h's
 * document_masks_apply): host arrays of B*T position ids (learned position
 * embedding and RoPE read them instead of t) and key starts (attention of
 * row i sees keys key_start[i] .. i of its sequence); NULL for the plain
 * positions and causal mask, the default. Kept for the slot's backward and
 * recomputation, until set again. A target of LOSS_IGNORED_TARGET
 * (backend.h) is left out of the loss and its gradient. */
void gpt_model_set_documents(GPTModel *m, int slot, const int32_t *position_ids,
                             const int32_t *key_start);
/* Mixture of experts. Each MoE layer adds its load-balancing loss and
 * z-loss of every micro-batch to the objective with weight `scale` (1 by
 * default; the trainer: one over the global batch's micro-batches), in
 * whatever backward follows. */
void gpt_model_set_moe_loss_scale(GPTModel *m, double scale);
/* The sums over this stage's MoE layers and the training forwards since the
 * last call (recomputations and evaluation not counted) of the
 * load-balancing loss, the z-loss and the tokens dropped beyond capacity
 * (unweighted), into out[3]; then zeroes them. The same on every TP and
 * CP rank of the stage. */
void gpt_model_take_moe_stats(GPTModel *m, double out[3]);
/* The same per MoE layer (--moe-per-layer-logging): for each layer l this
 * stage holds, out[l * (2 + E) + k] += its load-balancing loss (k = 0),
 * z-loss (1) and tokens routed to expert e before dropping (2 + e), l the
 * layer's global index (out holds num_layers x (2 + E) values); then
 * zeroes them. */
void gpt_model_take_moe_layer_stats(GPTModel *m, double *out);
/* Host fp32 copy of the logits of slot 0's last forward on the last stage:
 * [B*T, V_local] for this rank's vocabulary slice (padded columns included;
 * V_local returned). Valid until the next call or a backward (which
 * overwrites the logits with their gradient). For sampling tools. */
const float *gpt_model_last_logits(GPTModel *m, int *V_local);
/* This stage's gradient of the tied word embedding when the other end of
 * the pipeline holds the other copy (first or last stage of several, tied
 * output layer); NULL otherwise. */
float *gpt_model_tied_embedding_grad(GPTModel *m, size_t *numel);

/* A whole model on one stage, slot 0: tokens and targets are host arrays of
 * B*T ids. Returns the sum over the B*T token losses (fp64 sum of fp32
 * losses, fixed order). */
double gpt_model_forward(GPTModel *m, const int32_t *tokens, const int32_t *targets);
/* Backward of the last forward; d(loss)/d(token loss) = loss_scale_per_token. */
void gpt_model_backward(GPTModel *m, float loss_scale_per_token);

/* After the last micro-batch's backward: sums over the TP group the
 * gradients of TP-replicated parameters that each TP rank holds only a part
 * of: those marked grad_partial_over_heads (the QK-norm weights, at every
 * TP > 1) and, with sequence parallelism, every replicated parameter
 * (layernorms, row-parallel biases, position embedding: each rank saw only
 * its tokens). No-op when there are none. The _in form does it for the
 * parameters whose first element lies in the buffer range [begin, end) (one
 * call per gradient bucket). */
void gpt_model_reduce_tensor_parallel_partial_grads(GPTModel *m);
void gpt_model_reduce_tensor_parallel_partial_grads_in(GPTModel *m, size_t begin, size_t end);

/* Model FLOPs per token for forward+backward (Megatron's accounting: matmuls
 * 2 flops per MAC, causal attention counted at half, backward = 2x forward;
 * an MoE layer's active experts, shared expert and router). */
double gpt_flops_per_token(const TransformerConfig *cfg);

#endif
