/* model/gpt_model_internal.h — the GPTModel struct, shared by the files of
 * model/ only (gpt_model.c: construction and parameters; gpt_stage.c: the
 * forward and backward math). */
#ifndef GPT3D_MODEL_GPT_MODEL_INTERNAL_H
#define GPT3D_MODEL_GPT_MODEL_INTERNAL_H

#include "model/gpt_model.h"
#include "context_parallel/context_parallel.h"
#include "tensor_parallel/tensor_parallel.h"

/* A layer's parameters; NULL where the variant has none (biases, the
 * QK-norm weights q_ln_* and k_ln_* without --qk-layernorm). */
/* An MoE layer has no fc1/fc2 but a router, num_experts experts (arrays of
 * pointers, owned by the model) and optionally a shared expert. */
typedef struct {
    void *ln1_w, *ln1_b, *qkv_w, *qkv_b, *q_ln_w, *q_ln_b, *k_ln_w, *k_ln_b, *proj_w, *proj_b;
    void *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    void *router_w, *shared_fc1_w, *shared_fc2_w;
    void **expert_fc1_w, **expert_fc2_w;
} LayerParams;

typedef struct {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *q_ln_w, *q_ln_b, *k_ln_w, *k_ln_b, *proj_w, *proj_b;
    float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    float *router_w, *shared_fc1_w, *shared_fc2_w;
    float **expert_fc1_w, **expert_fc2_w;
} LayerGrads;

/* The host side of one MoE layer's dispatch of a micro-batch
 * (model/moe_layer.c): where each expert's rows begin in expert order
 * (expert_begin [E + 1], P rows in all), the tokens routed to each expert
 * before any dropping (counts [E], of the whole micro-batch), and the
 * layer's losses. */
/* Under expert parallelism the rows go to the ranks of their experts:
 * send_rows / recv_rows [EP] per peer, and the experts' own input rows in
 * groups by (source rank, local expert), group g = source * E_local + j
 * at rows [recv_begin[g], recv_begin[g + 1]) (P_recv in all). Without it
 * the groups are the experts (recv_begin = expert_begin, P_recv = P). */
typedef struct {
    int *expert_begin;
    double *counts;      /* [E] */
    double *slot_counts; /* [slots x E], per balance slot (counts itself for one slot) */
    int P;
    int64_t dropped;
    double aux_loss, z_loss;
    int *recv_begin, *send_rows, *recv_rows;
    int P_recv, groups;
} MoEPlan;

/* Saved forward activations of an MoE layer's MLP, for N tokens (all the
 * micro-batch's on this rank, gathered under sequence parallelism), R own
 * rows, P_max expert rows: router logits [R, E] (act, and fp32), routing
 * [N, K] (expert ids, probabilities, the expert row of each choice or -1
 * when dropped), the token of each expert row [P_max] (-1: padding), the
 * router's statistics [E + 1], the experts' inputs, fc1 outputs,
 * activations and outputs [P_max, ...], and the shared expert's fc1 output
 * and activation [N, ...]. */
typedef struct {
    void *logits_act;
    float *logits, *probs, *stats;
    int32_t *expert_ids, *slot_of, *row_of;
    void *expert_in, *expert_fc1, *expert_act, *expert_out, *shared_fc1, *shared_act;
    /* The rows the local experts compute on [P_recv_max, C], in and out
     * (expert_in / expert_out themselves without expert parallelism);
     * expert_fc1 and expert_act are [P_recv_max, ...]. */
    void *x_in, *y_out;
    /* Expert parallelism: room for recv_capacity received rows, in the
     * carved activations or, once a step needed more, in recv_block. */
    int recv_capacity;
    void *recv_block;
    MoEPlan plan;
} MoEActs;

/* Saved forward activations of one layer (act dtype unless noted). Residual
 * stream tensors hold this rank's rows (all N, or N/TP under sequence
 * parallelism); ln1_full/ln2_full are the all-gathered inputs of the
 * column-parallel layers (aliases of ln1/ln2 without sequence parallelism).
 * With --qk-layernorm, qkv_pre_norm is linear_qkv's output and qkv its
 * query/key-normalised (then rotated) copy; without, qkv_pre_norm and the
 * qk statistics are NULL. */
typedef struct {
    void *ln1, *ln1_full, *qkv_pre_norm, *qkv, *atty, *resid_mid, *ln2, *ln2_full, *fc1, *act,
        *resid_out;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd; /* fp32 */
    float *qk_mean, *qk_rstd; /* fp32 [N, local groups, heads per group + 1] */
    void *att_saved;          /* backend-defined */
    MoEActs moe;              /* MoE layers only (fc1, act NULL there) */
} LayerActs;

/* Everything one micro-batch keeps from its forward until its backward. A
 * pipeline stage holds several micro-batches in flight, one slot each. */
typedef struct {
    void *input; /* residual stream entering the stage: embedding output or received */
    LayerActs *la;
    void *lnf, *lnf_full;
    float *lnf_mean, *lnf_rstd;
    void *logits;
    float *ce_max, *ce_sums, *ce_losses; /* ce_sums: [sum of exps | target logits] */
    int32_t *tokens_dev, *targets_dev;
    /* Document masking of the micro-batch (gpt_model_set_documents): each
     * row's position and the first key it attends to; NULL when off. */
    int32_t *position_ids, *key_start;
    int32_t *position_ids_dev, *key_start_dev; /* where they live when on */
    uint64_t sample0; /* global index of the micro-batch's first sample (dropout keys) */
} ActivationSlot;

/* A range of the flat parameter/gradient buffers. */
typedef struct {
    size_t begin, end;
} BufferRange;

struct GPTModel {
    Backend *be;
    TensorParallel tp;
    ContextParallel cp; /* size 1 without context parallelism */
    int rows; /* residual-stream rows this rank holds */
    TransformerConfig cfg;
    ModelPartition part;
    ParamTable table;
    int B, T; /* T: the rows of each sequence this rank holds (the sequence / CP) */
    int local_heads, local_groups, local_ffn;
    /* Output widths of this rank's linear_qkv and linear_fc1 (SwiGLU: 2 F). */
    int local_qkv_width, local_fc1_width;
    /* Dropout is on while training (gpt_model_set_step), keyed by iteration. */
    int64_t iteration;
    bool training;
    int64_t local_vocab, vocab_begin;

    void *params;  /* act dtype, table.total_numel */
    float *grads;  /* fp32, table.total_numel */
    bool owns_buffers; /* false when bound by their owner (the distributed optimizer) */
    GPTBufferHooks hooks;
    /* Where the head (final layernorm), each local layer and the embeddings
     * lie in the flat buffers (for the hooks). */
    BufferRange head_params, embedding_params;
    BufferRange *layer_params, *layer_expert_params; /* the latter empty for a dense layer */

    LayerParams *lp;
    LayerGrads *lg;
    /* wout is the output layer: wte when tied. wpe, lnf_b: NULL when the
     * variant has none. */
    void *wte, *wpe, *wout, *lnf_w, *lnf_b;
    float *dwte, *dwpe, *dwout, *dlnf_w, *dlnf_b;

    /* Activations of all slots: one act-dtype block, one fp32 block; one
     * act-dtype block of gradient scratch shared by every backward. */
    void *act_block;
    float *stat_block;
    void *grad_block;
    size_t act_bytes, stat_bytes, grad_bytes;
    int num_slots;
    ActivationSlot *slots;
    /* Full recomputation: the activations of one unit of layers
     * (recompute_scratch[j] for its j-th layer), shared by every unit and
     * slot; slots keep the output of each unit's last layer, and the other
     * layers' outputs live in the scratch (own_out[j]). Selective: one
     * layer's core attention output and saved state (core_out, core_saved),
     * shared by every layer and slot. */
    LayerActs *recompute_scratch;
    void **own_out;
    int scratch_layers;
    void *core_out, *core_saved;

    /* Gradient scratch; full_scratch is an [N, C] buffer for the token
     * gathers and reductions of sequence parallelism. */
    void *d_resid, *d_ln, *d_qkv, *d_atty, *d_act, *d_fc1, *full_scratch;
    /* MoE layers' gradient scratch (model/moe_layer.c), carved when the
     * stage has one: expert rows [P_max, ...], the full-token inputs and
     * outputs [N, C] and the router's [R, E] and [N, K] pieces. */
    struct {
        void *d_expert_out, *d_expert_act, *d_expert_fc1, *d_expert_in;
        void *d_y_out, *d_x_in; /* the local experts' rows (aliases without EP) */
        int recv_capacity;      /* rows of d_x_in .. d_y_out, grown as the activations' */
        void *recv_block;
        void *d_shared_act, *d_shared_fc1, *dy_full, *dx_full, *dx_part, *d_logits_act;
        float *d_probs, *d_logits, *aux_grad;
    } moe_grad;
    /* Host scratch of the dispatch plan: the routing copied from the device
     * and the slot and row maps built from it. */
    struct {
        int32_t *ids, *slot_of, *row_of;
        float *probs, *stats_f;
        double *stats;
        int *order, *fill;
        int *own_counts, *peer_counts; /* [E], [EP x E]: rows per expert, per rank */
        struct Choice *choices;        /* [CP x N x K] with a capacity (moe_layer.c) */
        int32_t *cp_ids, *cp_probs;    /* [CP x N x K] every CP rank's routing (CP > 1) */
        int32_t *prob_bits;            /* [N x K] this rank's probabilities, sent as words */
        size_t *send_n, *recv_n;       /* [EP] elements per peer */
    } moe_host;
    /* The MoE loss terms' weight in the objective (gpt_model_set_moe_loss_scale)
     * and the sums reported by gpt_model_take_moe_stats. */
    double moe_loss_scale;
    double moe_stats[3];
    /* Per local MoE layer since the last gpt_model_take_moe_layer_stats:
     * [load balancing, z-loss, tokens per expert x E] (MOE_LAYER_STATS). */
    double *moe_layer_stats;
    bool recomputing; /* a full recomputation's forward: the losses are counted once */
    int P_max;      /* expert rows of one MoE layer's dispatch */
    int P_recv_max;  /* rows this rank's experts may receive (P_max without EP) */
    int P_recv_plan; /* rows their buffers are planned for (they grow beyond) */
    int local_moe_ffn, local_moe_fc1_width, local_shared_ffn, local_shared_fc1_width;
    /* Expert parallelism: this rank's experts [first_expert, + local_experts)
     * of each MoE layer, and its place in the expert group. */
    int first_expert, local_experts, ep_size, ep_rank;
    /* Expert tensor parallelism: TP (experts_tp_split: the experts run on
     * the TP group's N tokens) or 1 (each rank dispatches its own rows);
     * the dispatched tokens are rows [moe_token0, + moe_tokens) of the
     * micro-batch's B x T. */
    int etp_size, moe_tokens, moe_token0;
    bool experts_tp_split;
    Comm *ep_comm; /* NULL when ep_size == 1 */
    void *host_block; /* the MoE plans of every slot and layer, and their scratch */
    size_t host_bytes;

    float *host_losses;
    int32_t *local_ids; /* context parallelism: this rank's rows of a host id array */
    int32_t *local_targets;
    float *host_logits, *logits_staging; /* lazily made by gpt_model_last_logits */
    float *tp_grad_pack;                 /* packed partial gradients of TP-replicated parameters */
};

/* The unit of full recomputation that local layer l belongs to: layers
 * [first, first + count) recomputed together; count 0 when l keeps its
 * activations (gpt_model.c). */
typedef struct {
    int first, count;
} RecomputeUnit;
RecomputeUnit gpt_recompute_unit(const TransformerConfig *c, int num_local_layers, int l);

/* ---- the MoE MLP (model/moe_layer.c) ----
 * The MLP of an MoE layer on its pre-MLP norm output a->ln2 (own rows):
 * a->resid_out = this rank's rows of the routed and shared experts' sum
 * (before dropout and the residual). Backward: d_ln = d(a->ln2) from dy
 * (own rows of the MLP output's gradient). */
void moe_mlp_forward(GPTModel *m, int l, LayerActs *a);
void moe_mlp_backward(GPTModel *m, int l, const LayerActs *a, const void *dy);
/* The sizes of an MoE layer's expert dispatch (P_max) and widths. */
void moe_describe(GPTModel *m, Comm *comm);
/* Carves consecutive sub-buffers out of one allocation. With base == NULL
 * it only measures, so sizing and carving share one list (gpt_model.c). */
typedef struct Carver {
    char *base;
    size_t used;
} Carver;
void *carve(Carver *c, size_t bytes);
/* Carves an MoE layer's activations (act/stat: device; host: the plan). */
void moe_layout_acts(GPTModel *m, MoEActs *a, Carver *act, Carver *stat, Carver *host);
void moe_layout_grads(GPTModel *m, Carver *grad, Carver *stat, Carver *host);
/* Frees what an MoE layer's received rows grew into. */
void moe_free_recv_rows(GPTModel *m, MoEActs *a);
/* act [N, F] from an MLP's fc1 output ([N, F], or [N, F, 2] for SwiGLU)
 * by the variant's activation, and its backward (gpt_stage.c). */
void gpt_mlp_activation_forward(GPTModel *m, void *act, const void *fc1, int N, int F);
void gpt_mlp_activation_backward(GPTModel *m, void *d_fc1, const void *fc1, const void *d_act,
                                 int N, int F);
/* Whether local layer l is an MoE layer. */
static inline bool gpt_local_layer_is_moe(const GPTModel *m, int l) {
    return transformer_layer_is_moe(&m->cfg, m->part.first_layer + l);
}

#endif
