/* Forward and backward of the layers a rank holds (one pipeline stage, this
 * rank's tensor-parallel share), one micro-batch per activation slot. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "model/gpt_model_internal.h"

/* ---- the variant's pieces ---- */

static float norm_offset(const GPTModel *m) { return m->cfg.apply_layernorm_1p ? 1.0f : 0.0f; }

/* LayerNorm or RMSNorm over this rank's R rows (RMSNorm leaves mean alone). */
static void norm_forward(GPTModel *m, void *out, float *mean, float *rstd, const void *in,
                         const void *w, const void *b, int R) {
    Backend *be = m->be;
    const int C = m->cfg.hidden_size;
    const float eps = (float)m->cfg.norm_epsilon;
    if (m->cfg.normalization == NORM_RMSNORM)
        be->ops->rmsnorm_forward(be, out, rstd, in, w, R, C, eps, norm_offset(m));
    else
        be->ops->layernorm_forward(be, out, mean, rstd, in, w, b, R, C, eps, norm_offset(m));
}

static void norm_backward(GPTModel *m, void *dinp, float *dw, float *db, const void *dout,
                          const void *in, const void *w, const float *mean, const float *rstd,
                          int R) {
    Backend *be = m->be;
    const int C = m->cfg.hidden_size;
    if (m->cfg.normalization == NORM_RMSNORM)
        be->ops->rmsnorm_backward(be, dinp, dw, dout, in, w, rstd, R, C, norm_offset(m));
    else
        be->ops->layernorm_backward(be, dinp, dw, db, dout, in, w, mean, rstd, R, C,
                                    norm_offset(m));
}

void gpt_mlp_activation_forward(GPTModel *m, void *act, const void *fc1, int N, int F) {
    Backend *be = m->be;
    switch ((ActivationType)m->cfg.activation) {
    case ACTIVATION_SWIGLU: be->ops->swiglu_forward(be, act, fc1, N, F); return;
    case ACTIVATION_SQUARED_RELU: be->ops->squared_relu_forward(be, act, fc1, (size_t)N * F); return;
    case ACTIVATION_GELU: be->ops->gelu_forward(be, act, fc1, (size_t)N * F); return;
    }
}

void gpt_mlp_activation_backward(GPTModel *m, void *d_fc1, const void *fc1, const void *d_act,
                                 int N, int F) {
    Backend *be = m->be;
    switch ((ActivationType)m->cfg.activation) {
    case ACTIVATION_SWIGLU: be->ops->swiglu_backward(be, d_fc1, fc1, d_act, N, F); return;
    case ACTIVATION_SQUARED_RELU:
        be->ops->squared_relu_backward(be, d_fc1, fc1, d_act, (size_t)N * F);
        return;
    case ACTIVATION_GELU: be->ops->gelu_backward(be, d_fc1, fc1, d_act, (size_t)N * F); return;
    }
}

static void rope(GPTModel *m, const ActivationSlot *s, void *qkv, bool backward) {
    if (m->cfg.position_embedding_type != POSITION_ROPE) return;
    Backend *be = m->be;
    const TransformerConfig *c = &m->cfg;
    const int HS = transformer_head_dim(c), rot = transformer_rotary_dim(c);
    const float base = (float)c->rotary_base;
    if (backward)
        be->ops->rope_backward(be, qkv, m->B, m->T, m->local_heads, m->local_groups, HS, rot, base,
                               c->rotary_interleaved, s->position_ids);
    else
        be->ops->rope_forward(be, qkv, m->B, m->T, m->local_heads, m->local_groups, HS, rot, base,
                              c->rotary_interleaved, s->position_ids);
}

/* --qk-layernorm: the query and key heads of linear_qkv's output are
 * normalised (into a->qkv, before RoPE); qkv_pre_norm keeps the input. */
static QKNormShape qk_norm_shape(const GPTModel *m) {
    return (QKNormShape){.N = m->B * m->T,
                         .NH = m->local_heads,
                         .NG = m->local_groups,
                         .HS = transformer_head_dim(&m->cfg),
                         .rms = m->cfg.normalization == NORM_RMSNORM,
                         .eps = (float)m->cfg.norm_epsilon,
                         .weight_offset = norm_offset(m)};
}

/* Where linear_qkv writes: the norms' saved input, or straight into qkv. */
static void *qkv_projection_out(const LayerActs *a) {
    return a->qkv_pre_norm ? a->qkv_pre_norm : a->qkv;
}

static void query_key_norm_forward(GPTModel *m, LayerActs *a, const LayerParams *p) {
    if (!m->cfg.qk_layernorm) return;
    const QKNormShape shape = qk_norm_shape(m);
    m->be->ops->qk_norm_forward(m->be, a->qkv, a->qk_mean, a->qk_rstd, a->qkv_pre_norm, p->q_ln_w,
                                p->q_ln_b, p->k_ln_w, p->k_ln_b, &shape);
}

/* In place on d_qkv. The weight gradients cover this rank's heads only;
 * the TP sum comes later (gpt_model_reduce_tensor_parallel_partial_grads). */
static void query_key_norm_backward(GPTModel *m, const LayerActs *a, const LayerParams *p,
                                    const LayerGrads *g) {
    if (!m->cfg.qk_layernorm) return;
    const QKNormShape shape = qk_norm_shape(m);
    m->be->ops->qk_norm_backward(m->be, m->d_qkv, g->q_ln_w, g->q_ln_b, g->k_ln_w, g->k_ln_b,
                                 m->d_qkv, a->qkv_pre_norm, p->q_ln_w, p->k_ln_w, a->qk_mean,
                                 a->qk_rstd, &shape);
}

/* ---- dropout, keyed by global coordinates ----
 * Sites: the embedding output, each layer's attention and MLP outputs and
 * its attention probabilities. The stream names (iteration, layer, site);
 * the counter the element's global token row and canonical feature. */
enum { DROP_EMBEDDING, DROP_ATTENTION_OUT, DROP_MLP_OUT, DROP_ATTENTION_PROBS };

static bool dropping(const GPTModel *m, double p) { return m->training && p > 0; }

static uint64_t dropout_stream(const GPTModel *m, int layer, int site) {
    char name[96];
    snprintf(name, sizeof name, "dropout/iteration %lld/layer %d/site %d",
             (long long)m->iteration, layer, site);
    return rng_stream_from_name(name);
}

static uint32_t dropout_threshold(double p) {
    const double t = nearbyint(p * 4294967296.0);
    return t >= 4294967295.0 ? UINT32_MAX : (uint32_t)t;
}

/* The residual-stream rows this rank holds are tokens of the micro-batch:
 * all of them, or its sequence-parallel share, of its context-parallel
 * rows. A mask is keyed by the token's place in the micro-batch, so the
 * rows go in runs of consecutive places (one run without context
 * parallelism; one per chunk of a sequence with it). */
static DropoutKey hidden_dropout_key(const GPTModel *m, const ActivationSlot *s, int layer,
                                     int site) {
    const double p = m->cfg.hidden_dropout;
    return (DropoutKey){.seed = m->cfg.seed,
                        .stream = dropout_stream(m, layer, site),
                        .row0 = s->sample0 * (uint64_t)m->cfg.seq_length,
                        .row_stride = (uint64_t)m->cfg.hidden_size,
                        .col0 = 0,
                        .threshold = dropout_threshold(p),
                        .scale = (float)(1.0 / (1.0 - p))};
}

/* Place in the micro-batch of the rank's local row q (of its B x T rows). */
static uint64_t token_place(const GPTModel *m, int q) {
    const int b = q / m->T, i = q % m->T;
    const int at = m->cp.size > 1
                       ? context_parallel_coordinate(m->cp.size, m->cp.rank, m->cp.seq_length, i)
                       : i;
    return (uint64_t)b * (uint64_t)m->cfg.seq_length + (uint64_t)at;
}

/* dst = dropout of src over this rank's rows (dst may alias src). */
static void hidden_dropout_rows(GPTModel *m, const ActivationSlot *s, int layer, int site,
                                void *dst, const void *src, bool backward) {
    Backend *be = m->be;
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    const int first = tp_first_row(&m->tp, N);
    const size_t row_bytes = backend_act_bytes(be, (size_t)C);
    const DropoutKey key = hidden_dropout_key(m, s, layer, site);
    for (int r = 0; r < m->rows;) {
        int n = 1;
        while (r + n < m->rows && token_place(m, first + r + n) == token_place(m, first + r) + (uint64_t)n)
            n++;
        DropoutKey k = key;
        k.row0 += token_place(m, first + r);
        char *d = (char *)dst + (size_t)r * row_bytes;
        const char *x = (const char *)src + (size_t)r * row_bytes;
        if (backward)
            be->ops->dropout_backward(be, d, x, n, C, &k);
        else
            be->ops->dropout_forward(be, d, x, n, C, &k);
        r += n;
    }
}

static void hidden_dropout(GPTModel *m, const ActivationSlot *s, int layer, int site, void *x,
                           bool backward) {
    if (!dropping(m, m->cfg.hidden_dropout)) return;
    hidden_dropout_rows(m, s, layer, site, x, x, backward);
}

/* NULL without attention dropout (evaluation, p = 0). */
static const AttentionDropout *attention_dropout(GPTModel *m, const ActivationSlot *s, int layer,
                                                 AttentionDropout *d) {
    const double p = m->cfg.attention_dropout;
    if (!dropping(m, p)) return NULL;
    *d = (AttentionDropout){.seed = m->cfg.seed,
                            .stream = dropout_stream(m, layer, DROP_ATTENTION_PROBS),
                            .sample0 = s->sample0,
                            .head0 = (uint64_t)m->tp.tp_rank * m->local_heads,
                            .heads_total = (uint64_t)m->cfg.num_attention_heads,
                            .threshold = dropout_threshold(p),
                            .scale = (float)(1.0 / (1.0 - p))};
    return d;
}

/* ---- core attention: on the rank's rows, or a ring over the CP group ---- */

static void core_attention_forward(GPTModel *m, const ActivationSlot *s, int layer,
                                   const LayerActs *a) {
    Backend *be = m->be;
    const int HS = transformer_head_dim(&m->cfg);
    AttentionDropout drop;
    const AttentionDropout *d = attention_dropout(m, s, layer, &drop);
    if (m->cp.size > 1)
        context_parallel_attention_forward(&m->cp, a->atty, a->att_saved, a->qkv, m->local_heads,
                                           m->local_groups, HS, s->key_start, d);
    else
        be->ops->attention_forward(be, a->atty, a->att_saved, a->qkv, m->B, m->T, m->local_heads,
                                   m->local_groups, HS, s->key_start, d);
}

static void core_attention_backward(GPTModel *m, const ActivationSlot *s, int layer,
                                    const LayerActs *a) {
    Backend *be = m->be;
    const int HS = transformer_head_dim(&m->cfg);
    AttentionDropout drop;
    const AttentionDropout *d = attention_dropout(m, s, layer, &drop);
    if (m->cp.size > 1)
        context_parallel_attention_backward(&m->cp, m->d_qkv, m->d_atty, a->qkv, a->atty,
                                            a->att_saved, m->local_heads, m->local_groups, HS,
                                            s->key_start, d);
    else
        be->ops->attention_backward(be, m->d_qkv, m->d_atty, a->qkv, a->atty, a->att_saved, m->B,
                                    m->T, m->local_heads, m->local_groups, HS, s->key_start, d);
}

/* ---- the MLP: dense, or a mixture of experts (moe_layer.c) ---- */

/* a->resid_out = this rank's rows of the MLP's output (before dropout and
 * the residual) from a->ln2. */
static void mlp_forward(GPTModel *m, int l, LayerActs *a) {
    if (gpt_local_layer_is_moe(m, l)) {
        moe_mlp_forward(m, l, a);
        return;
    }
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const int N = m->B * m->T, C = m->cfg.hidden_size, F = m->local_ffn;
    column_parallel_linear_forward(tp, a->fc1, a->ln2_full, a->ln2, p->fc1_w, p->fc1_b, N, C,
                                   m->local_fc1_width, false, NULL);
    gpt_mlp_activation_forward(m, a->act, a->fc1, N, F);
    row_parallel_linear_forward(tp, a->resid_out, m->full_scratch, a->act, p->fc2_w, p->fc2_b, N, F,
                                C, true, NULL);
}

/* m->d_ln = d(a->ln2) from dy, the gradient of this rank's rows of the
 * MLP's output. */
static void mlp_backward(GPTModel *m, int l, const LayerActs *a, const void *dy) {
    if (gpt_local_layer_is_moe(m, l)) {
        moe_mlp_backward(m, l, a, dy);
        return;
    }
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const LayerGrads *g = &m->lg[l];
    const int N = m->B * m->T, C = m->cfg.hidden_size, F = m->local_ffn;
    void *dx_full = tp->sequence_parallel ? m->full_scratch : m->d_ln;
    row_parallel_linear_backward(tp, m->d_act, g->fc2_w, g->fc2_b, dy, m->full_scratch, a->act,
                                 p->fc2_w, N, F, C);
    gpt_mlp_activation_backward(m, m->d_fc1, a->fc1, m->d_act, N, F);
    column_parallel_linear_backward(tp, m->d_ln, dx_full, g->fc1_w, g->fc1_b, m->d_fc1, a->ln2_full,
                                    p->fc1_w, N, C, m->local_fc1_width);
}

/* ---- one transformer layer ---- */

static void layer_forward(GPTModel *m, const ActivationSlot *s, int l, LayerActs *a,
                          const void *resid_in) {
    Backend *be = m->be;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size, layer = m->part.first_layer + l;
    const int HS = transformer_head_dim(&m->cfg), NH = m->local_heads;

    norm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, resid_in, p->ln1_w, p->ln1_b, R);
    column_parallel_linear_forward(tp, qkv_projection_out(a), a->ln1_full, a->ln1, p->qkv_w,
                                   p->qkv_b, N, C, m->local_qkv_width, false, NULL);
    query_key_norm_forward(m, a, p);
    rope(m, s, a->qkv, false);
    core_attention_forward(m, s, layer, a);
    row_parallel_linear_forward(tp, a->resid_mid, m->full_scratch, a->atty, p->proj_w, p->proj_b, N,
                                NH * HS, C, true, NULL);
    hidden_dropout(m, s, layer, DROP_ATTENTION_OUT, a->resid_mid, false);
    be->ops->add(be, a->resid_mid, a->resid_mid, resid_in, (size_t)R * C);
    norm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->resid_mid, p->ln2_w, p->ln2_b, R);
    mlp_forward(m, l, a);
    hidden_dropout(m, s, layer, DROP_MLP_OUT, a->resid_out, false);
    be->ops->add(be, a->resid_out, a->resid_out, a->resid_mid, (size_t)R * C);
}

/* The gradient of a sublayer's output (before its dropout): d_resid
 * itself, or with dropout its masked copy in d_ln, which is free until the
 * sublayer's norm backward writes it. */
static const void *sublayer_output_grad(GPTModel *m, const ActivationSlot *s, int layer, int site) {
    if (!dropping(m, m->cfg.hidden_dropout)) return m->d_resid;
    hidden_dropout_rows(m, s, layer, site, m->d_ln, m->d_resid, true);
    return m->d_ln;
}

/* d_resid holds d(loss)/d(layer output) on entry and d(loss)/d(layer input)
 * on exit (this rank's rows). */
static void layer_backward(GPTModel *m, const ActivationSlot *s, int l, const LayerActs *a,
                           const void *resid_in) {
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const LayerGrads *g = &m->lg[l];
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size, layer = m->part.first_layer + l;
    const int HS = transformer_head_dim(&m->cfg), NH = m->local_heads;
    void *dx_full = tp->sequence_parallel ? m->full_scratch : m->d_ln;

    mlp_backward(m, l, a, sublayer_output_grad(m, s, layer, DROP_MLP_OUT));
    norm_backward(m, m->d_resid, g->ln2_w, g->ln2_b, m->d_ln, a->resid_mid, p->ln2_w, a->ln2_mean,
                  a->ln2_rstd, R);
    /* Selective recomputation: the core attention again, from the saved
     * (normalised, rotated) qkv, into the shared core buffers. */
    if (m->cfg.recompute_granularity == RECOMPUTE_SELECTIVE)
        core_attention_forward(m, s, layer, a);
    row_parallel_linear_backward(tp, m->d_atty, g->proj_w, g->proj_b,
                                 sublayer_output_grad(m, s, layer, DROP_ATTENTION_OUT),
                                 m->full_scratch, a->atty, p->proj_w, N, NH * HS, C);
    core_attention_backward(m, s, layer, a);
    rope(m, s, m->d_qkv, true);
    query_key_norm_backward(m, a, p, g);
    column_parallel_linear_backward(tp, m->d_ln, dx_full, g->qkv_w, g->qkv_b, m->d_qkv, a->ln1_full,
                                    p->qkv_w, N, C, m->local_qkv_width);
    norm_backward(m, m->d_resid, g->ln1_w, g->ln1_b, m->d_ln, resid_in, p->ln1_w, a->ln1_mean,
                  a->ln1_rstd, R);
}

static const void *layer_input(const ActivationSlot *s, int l) {
    return l == 0 ? s->input : s->la[l - 1].resid_out;
}

/* Where layer l of a slot keeps its activations: its own, or (in a unit
 * of full recomputation) the unit's shared scratch, its output going where
 * the slot keeps it (the slot's copy for a unit's last layer, the scratch's
 * own buffer for the others). */
static LayerActs *layer_acts(GPTModel *m, ActivationSlot *s, int l) {
    const RecomputeUnit u = gpt_recompute_unit(&m->cfg, m->part.num_local_layers, l);
    if (!u.count) return &s->la[l];
    LayerActs *a = &m->recompute_scratch[l - u.first];
    a->resid_out = s->la[l].resid_out;
    return a;
}

static ActivationSlot *slot_at(GPTModel *m, int slot) {
    GPT3D_CHECK(slot >= 0 && slot < m->num_slots, "activation slot %d of %d", slot, m->num_slots);
    return &m->slots[slot];
}

int gpt_model_num_slots(const GPTModel *m) { return m->num_slots; }
size_t gpt_model_stage_activation_numel(const GPTModel *m) {
    return (size_t)m->rows * (size_t)m->cfg.hidden_size;
}
void *gpt_model_stage_input(GPTModel *m, int slot) { return slot_at(m, slot)->input; }
void *gpt_model_stage_output(GPTModel *m, int slot) {
    ActivationSlot *s = slot_at(m, slot);
    return (void *)layer_input(s, m->part.num_local_layers);
}
void *gpt_model_stage_output_grad(GPTModel *m) { return m->d_resid; }
void *gpt_model_stage_input_grad(GPTModel *m) { return m->d_resid; }

/* Final norm, output layer (column-parallel over the vocabulary slice) and
 * vocab-parallel cross entropy; returns the summed loss of the tokens whose
 * (host) target is not LOSS_IGNORED_TARGET. */
static double head_forward(GPTModel *m, ActivationSlot *s, const int32_t *targets) {
    Backend *be = m->be;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    const void *last = layer_input(s, m->part.num_local_layers);
    norm_forward(m, s->lnf, s->lnf_mean, s->lnf_rstd, last, m->lnf_w, m->lnf_b, R);
    column_parallel_linear_forward(&m->tp, s->logits, s->lnf_full, s->lnf, m->wout, NULL, N, C, V,
                                   false, NULL);
    vocab_parallel_cross_entropy_forward(&m->tp, s->ce_losses, s->ce_max, s->ce_sums, s->logits,
                                         s->targets_dev, N, V, vb, vs);
    be->ops->copy_to_host(be, m->host_losses, s->ce_losses, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) sum += m->host_losses[i];
    return sum;
}

static void head_backward(GPTModel *m, ActivationSlot *s, float loss_scale_per_token) {
    Backend *be = m->be;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    void *dx_full = m->tp.sequence_parallel ? m->full_scratch : m->d_ln;
    vocab_parallel_cross_entropy_backward(&m->tp, s->logits, s->logits, s->ce_max, s->ce_sums,
                                          s->targets_dev, N, V, vb, vs, loss_scale_per_token);
    column_parallel_linear_backward(&m->tp, m->d_ln, dx_full, m->dwout, NULL, s->logits,
                                    s->lnf_full, m->wout, N, C, V);
    be->ops->memset_zero(be, m->d_resid, backend_act_bytes(be, (size_t)R * C));
    norm_backward(m, m->d_resid, m->dlnf_w, m->dlnf_b, m->d_ln,
                  layer_input(s, m->part.num_local_layers), m->lnf_w, s->lnf_mean, s->lnf_rstd, R);
}

static void params_needed(GPTModel *m, BufferRange r) {
    if (m->hooks.params_needed && r.begin < r.end) m->hooks.params_needed(m->hooks.ctx, r.begin, r.end);
}
static void grads_ready(GPTModel *m, size_t ready_numel) {
    if (m->hooks.grads_ready) m->hooks.grads_ready(m->hooks.ctx, ready_numel);
}

/* This rank's rows of a host array of whole sequences: the array itself,
 * or under context parallelism its rows copied into `scratch`. */
static const int32_t *own_rows(const GPTModel *m, int32_t *scratch, const int32_t *whole) {
    if (m->cp.size == 1) return whole;
    context_parallel_take_rows(&m->cp, scratch, whole);
    return scratch;
}

double gpt_model_stage_forward(GPTModel *m, int slot, const int32_t *tokens,
                               const int32_t *targets) {
    Backend *be = m->be;
    ActivationSlot *s = slot_at(m, slot);
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    /* The embeddings hold the word embedding, which a tied head reads too. */
    if (m->part.has_embedding || m->part.has_head) params_needed(m, m->embedding_params);
    if (m->part.has_embedding) {
        be->ops->copy_to_device(be, s->tokens_dev, own_rows(m, m->local_ids, tokens),
                                (size_t)N * sizeof(int32_t));
        vocab_parallel_embedding_forward(&m->tp, s->input, m->full_scratch, s->tokens_dev, m->wte, N,
                                         C, (int)m->vocab_begin,
                                         (int)(m->vocab_begin + m->local_vocab));
        if (m->wpe) tp_position_embedding_add(&m->tp, s->input, m->wpe, s->position_ids, N, m->T, C);
        hidden_dropout(m, s, -1, DROP_EMBEDDING, s->input, false);
    }
    for (int l = 0; l < m->part.num_local_layers; l++) {
        params_needed(m, m->layer_params[l]);
        params_needed(m, m->layer_expert_params[l]);
        layer_forward(m, s, l, layer_acts(m, s, l), layer_input(s, l));
    }
    if (!m->part.has_head) return 0.0;
    params_needed(m, m->head_params);
    const int32_t *own_targets = own_rows(m, m->local_targets, targets);
    be->ops->copy_to_device(be, s->targets_dev, own_targets, (size_t)N * sizeof(int32_t));
    return head_forward(m, s, own_targets);
}

void gpt_model_stage_backward(GPTModel *m, int slot, float loss_scale_per_token) {
    ActivationSlot *s = slot_at(m, slot);
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    /* A non-last stage finds d(output) in d_resid, received from the next stage. */
    if (m->part.has_head) {
        head_backward(m, s, loss_scale_per_token);
        grads_ready(m, m->head_params.end);
    }
    for (int l = m->part.num_local_layers - 1; l >= 0; l--) {
        /* Entering a unit of full recomputation at its last layer: its
         * forward again, from the unit's saved input, rewriting the saved
         * output with bitwise the same values. */
        const RecomputeUnit u = gpt_recompute_unit(&m->cfg, m->part.num_local_layers, l);
        if (u.count && l == u.first + u.count - 1) {
            m->recomputing = true;
            for (int k = u.first; k <= l; k++) layer_forward(m, s, k, layer_acts(m, s, k), layer_input(s, k));
            m->recomputing = false;
        }
        layer_backward(m, s, l, layer_acts(m, s, l), layer_input(s, l));
        grads_ready(m, m->layer_params[l].end);
    }
    if (m->part.has_embedding) {
        const int vb = (int)m->vocab_begin, ve = (int)(m->vocab_begin + m->local_vocab);
        hidden_dropout(m, s, -1, DROP_EMBEDDING, m->d_resid, true);
        vocab_parallel_embedding_backward(&m->tp, m->dwte, m->d_resid, m->full_scratch,
                                          s->tokens_dev, N, C, vb, ve);
        if (m->wpe)
            tp_position_embedding_backward(&m->tp, m->dwpe, m->d_resid, s->position_ids, N, m->T, C);
    }
    grads_ready(m, m->table.total_numel);
}

void gpt_model_set_step(GPTModel *m, int64_t iteration, bool training) {
    m->iteration = iteration;
    m->training = training;
}

void gpt_model_set_first_sample(GPTModel *m, int slot, int64_t first_sample) {
    slot_at(m, slot)->sample0 = (uint64_t)first_sample;
}

void gpt_model_set_documents(GPTModel *m, int slot, const int32_t *position_ids,
                             const int32_t *key_start) {
    ActivationSlot *s = slot_at(m, slot);
    const size_t bytes = (size_t)m->B * m->T * sizeof(int32_t);
    /* Under context parallelism positions are never implied by the row:
     * the default is each row's place in the sequence. */
    s->position_ids = position_ids ? s->position_ids_dev : m->cp.positions_dev;
    s->key_start = key_start ? s->key_start_dev : NULL;
    if (position_ids)
        m->be->ops->copy_to_device(m->be, s->position_ids_dev,
                                   own_rows(m, m->local_ids, position_ids), bytes);
    if (key_start)
        m->be->ops->copy_to_device(m->be, s->key_start_dev, own_rows(m, m->local_ids, key_start),
                                   bytes);
}

double gpt_model_forward(GPTModel *m, const int32_t *tokens, const int32_t *targets) {
    GPT3D_CHECK(m->part.has_embedding && m->part.has_head,
                "gpt_model_forward runs a whole model; pipeline stages use the stage API");
    return gpt_model_stage_forward(m, 0, tokens, targets);
}

void gpt_model_backward(GPTModel *m, float loss_scale_per_token) {
    gpt_model_stage_backward(m, 0, loss_scale_per_token);
}

void gpt_model_reduce_tensor_parallel_partial_grads(GPTModel *m) {
    gpt_model_reduce_tensor_parallel_partial_grads_in(m, 0, m->table.total_numel);
}

/* Whether each TP rank holds only a part of p's gradient: the QK-norm
 * weights (their rank's heads) always, every replicated parameter under
 * sequence parallelism (their rank's tokens). */
static bool grad_partial_over_tp(const GPTModel *m, const ParamInfo *p) {
    if (p->expert) return false; /* whole experts: summed over the expert-data group */
    return p->grad_partial_over_heads || (m->tp.sequence_parallel && !p->tensor_parallel_split);
}

static bool partial_grad_in(const GPTModel *m, const ParamInfo *p, size_t begin, size_t end) {
    return grad_partial_over_tp(m, p) && p->offset >= begin && p->offset < end;
}

/* The partial gradients are small and many (norms, row-parallel biases,
 * positions): one all-reduce over a packed copy instead of one per
 * parameter. */
void gpt_model_reduce_tensor_parallel_partial_grads_in(GPTModel *m, size_t begin, size_t end) {
    if (m->tp.tp_size == 1) return;
    Backend *be = m->be;
    if (!m->tp_grad_pack) {
        size_t all = 0;
        for (int i = 0; i < m->table.count; i++)
            if (grad_partial_over_tp(m, &m->table.params[i]))
                all += (size_t)m->table.params[i].local_numel;
        if (!all) return;
        m->tp_grad_pack = be->ops->alloc(be, all * sizeof(float));
    }
    size_t total = 0;
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        if (!partial_grad_in(m, p, begin, end)) continue;
        be->ops->copy_device(be, m->tp_grad_pack + total, m->grads + p->offset,
                             (size_t)p->local_numel * sizeof(float));
        total += (size_t)p->local_numel;
    }
    if (!total) return;
    comm_all_reduce(m->tp.comm, GROUP_TENSOR, m->tp_grad_pack, total, DTYPE_F32, REDUCE_SUM);
    size_t at = 0;
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        if (!partial_grad_in(m, p, begin, end)) continue;
        be->ops->copy_device(be, m->grads + p->offset, m->tp_grad_pack + at,
                             (size_t)p->local_numel * sizeof(float));
        at += (size_t)p->local_numel;
    }
}

const float *gpt_model_last_logits(GPTModel *m, int *V_local) {
    GPT3D_CHECK(m->part.has_head, "logits exist on the last pipeline stage only");
    Backend *be = m->be;
    const size_t n = (size_t)m->B * m->T * (size_t)m->local_vocab;
    if (!m->host_logits) {
        m->host_logits = xmalloc(n * sizeof(float));
        m->logits_staging = be->ops->alloc(be, n * sizeof(float));
    }
    be->ops->act_to_f32(be, m->logits_staging, m->slots[0].logits, n);
    be->ops->copy_to_host(be, m->host_logits, m->logits_staging, n * sizeof(float));
    *V_local = (int)m->local_vocab;
    return m->host_logits;
}

float *gpt_model_tied_embedding_grad(GPTModel *m, size_t *numel) {
    if (!transformer_tied_output(&m->cfg) || m->part.has_embedding == m->part.has_head) return NULL;
    int i = param_table_find(&m->table, GPT_WORD_EMBEDDING);
    if (i < 0) return NULL;
    *numel = (size_t)m->table.params[i].local_numel;
    return m->grads + m->table.params[i].offset;
}

double gpt_flops_per_token(const TransformerConfig *cfg) {
    const double C = cfg->hidden_size, F = cfg->ffn_hidden_size, T = cfg->seq_length;
    const double L = cfg->num_layers, V = (double)cfg->padded_vocab_size;
    const double attn_width = (double)cfg->num_attention_heads * transformer_head_dim(cfg);
    const double gate = cfg->activation == ACTIVATION_SWIGLU ? 2.0 : 1.0;
    /* Forward per token: 2 flops per multiply-add of every matmul (QKV with
     * its query groups, the projection, fc1 with SwiGLU's gate, fc2, and
     * the output layer, tied or not); the attention scores and the weighted
     * sum cost 2*T*(heads*head dim) each, halved because the mask is causal.
     * An MoE layer's MLP is its K routed experts, the shared expert and the
     * router (the active parameters). Backward costs twice the forward. */
    const double projections = C * ((double)transformer_qkv_width(cfg) + attn_width);
    const double attention = 2.0 * projections + 2.0 * T * attn_width;
    const double dense_mlp = 2.0 * (C * gate * F + F * C);
    const double Fm = cfg->moe_ffn_hidden_size, Fs = cfg->moe_shared_expert_intermediate_size;
    const double moe_mlp = 2.0 * (cfg->moe_router_topk * (C * gate * Fm + Fm * C) +
                                  (C * gate * Fs + Fs * C) + C * cfg->num_experts);
    const double moe_layers = transformer_moe_layer_count(cfg);
    const double forward = L * attention + (L - moe_layers) * dense_mlp + moe_layers * moe_mlp +
                           2.0 * C * V;
    return 3.0 * forward;
}
