/* Forward and backward of the layers a rank holds (one pipeline stage, this
 * rank's tensor-parallel share), one micro-batch per activation slot. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "model/gpt_model_internal.h"

static void layer_forward(GPTModel *m, int l, LayerActs *a, const void *resid_in) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int HS = C / m->cfg.num_attention_heads, NH = m->local_heads, F = m->local_ffn;

    op->layernorm_forward(be, a->ln1, a->ln1_mean, a->ln1_rstd, resid_in, p->ln1_w, p->ln1_b, R, C);
    column_parallel_linear_forward(tp, a->qkv, a->ln1_full, a->ln1, p->qkv_w, p->qkv_b, N, C,
                                   3 * NH * HS, false, NULL);
    op->attention_forward(be, a->atty, a->att_saved, a->qkv, m->B, m->T, NH, HS);
    row_parallel_linear_forward(tp, a->resid_mid, m->full_scratch, a->atty, p->proj_w, p->proj_b, N,
                                NH * HS, C, true, NULL);
    op->add(be, a->resid_mid, a->resid_mid, resid_in, (size_t)R * C);
    op->layernorm_forward(be, a->ln2, a->ln2_mean, a->ln2_rstd, a->resid_mid, p->ln2_w, p->ln2_b,
                          R, C);
    column_parallel_linear_forward(tp, a->fc1, a->ln2_full, a->ln2, p->fc1_w, p->fc1_b, N, C, F,
                                   false, NULL);
    op->gelu_forward(be, a->gelu, a->fc1, (size_t)N * F);
    row_parallel_linear_forward(tp, a->resid_out, m->full_scratch, a->gelu, p->fc2_w, p->fc2_b, N, F,
                                C, true, NULL);
    op->add(be, a->resid_out, a->resid_out, a->resid_mid, (size_t)R * C);
}

/* d_resid holds d(loss)/d(layer output) on entry and d(loss)/d(layer input)
 * on exit (this rank's rows). */
static void layer_backward(GPTModel *m, int l, const LayerActs *a, const void *resid_in) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const LayerGrads *g = &m->lg[l];
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int HS = C / m->cfg.num_attention_heads, NH = m->local_heads, F = m->local_ffn;
    void *dx_full = tp->sequence_parallel ? m->full_scratch : m->d_ln;

    row_parallel_linear_backward(tp, m->d_gelu, g->fc2_w, g->fc2_b, m->d_resid, m->full_scratch,
                                 a->gelu, p->fc2_w, N, F, C);
    op->gelu_backward(be, m->d_fc1, a->fc1, m->d_gelu, (size_t)N * F);
    column_parallel_linear_backward(tp, m->d_ln, dx_full, g->fc1_w, g->fc1_b, m->d_fc1, a->ln2_full,
                                    p->fc1_w, N, C, F);
    op->layernorm_backward(be, m->d_resid, g->ln2_w, g->ln2_b, m->d_ln, a->resid_mid, p->ln2_w,
                           a->ln2_mean, a->ln2_rstd, R, C);
    row_parallel_linear_backward(tp, m->d_atty, g->proj_w, g->proj_b, m->d_resid, m->full_scratch,
                                 a->atty, p->proj_w, N, NH * HS, C);
    op->attention_backward(be, m->d_qkv, m->d_atty, a->qkv, a->atty, a->att_saved, m->B, m->T, NH,
                           HS);
    column_parallel_linear_backward(tp, m->d_ln, dx_full, g->qkv_w, g->qkv_b, m->d_qkv, a->ln1_full,
                                    p->qkv_w, N, C, 3 * NH * HS);
    op->layernorm_backward(be, m->d_resid, g->ln1_w, g->ln1_b, m->d_ln, resid_in, p->ln1_w,
                           a->ln1_mean, a->ln1_rstd, R, C);
}

static const void *layer_input(const ActivationSlot *s, int l) {
    return l == 0 ? s->input : s->la[l - 1].resid_out;
}

/* Where layer l of a slot keeps its activations: its own, or (recomputing)
 * the shared scratch, writing its output into the slot's saved copy. */
static LayerActs *layer_acts(GPTModel *m, ActivationSlot *s, int l) {
    if (!m->cfg.recompute_activations) return &s->la[l];
    m->recompute_scratch.resid_out = s->la[l].resid_out;
    return &m->recompute_scratch;
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

/* Final layernorm, LM head (column-parallel over the vocabulary slice) and
 * vocab-parallel cross entropy; returns the summed token loss. */
static double head_forward(GPTModel *m, ActivationSlot *s) {
    Backend *be = m->be;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    const void *last = layer_input(s, m->part.num_local_layers);
    be->ops->layernorm_forward(be, s->lnf, s->lnf_mean, s->lnf_rstd, last, m->lnf_w, m->lnf_b, R, C);
    column_parallel_linear_forward(&m->tp, s->logits, s->lnf_full, s->lnf, m->wte, NULL, N, C, V,
                                   false, NULL);
    vocab_parallel_cross_entropy_forward(&m->tp, s->ce_losses, s->ce_max, s->ce_sums, s->logits,
                                         s->targets_dev, N, V, vb, vs);
    be->ops->copy_to_host(be, m->host_losses, s->ce_losses, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->host_losses[i];
    return sum;
}

static void head_backward(GPTModel *m, ActivationSlot *s, float loss_scale_per_token) {
    Backend *be = m->be;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    void *dx_full = m->tp.sequence_parallel ? m->full_scratch : m->d_ln;
    vocab_parallel_cross_entropy_backward(&m->tp, s->logits, s->logits, s->ce_max, s->ce_sums,
                                          s->targets_dev, N, V, vb, vs, loss_scale_per_token);
    column_parallel_linear_backward(&m->tp, m->d_ln, dx_full, m->dwte, NULL, s->logits, s->lnf_full,
                                    m->wte, N, C, V);
    be->ops->memset_zero(be, m->d_resid, backend_act_bytes(be, (size_t)R * C));
    be->ops->layernorm_backward(be, m->d_resid, m->dlnf_w, m->dlnf_b, m->d_ln,
                                layer_input(s, m->part.num_local_layers), m->lnf_w, s->lnf_mean,
                                s->lnf_rstd, R, C);
}

static void params_needed(GPTModel *m, BufferRange r) {
    if (m->hooks.params_needed && r.begin < r.end) m->hooks.params_needed(m->hooks.ctx, r.begin, r.end);
}
static void grads_ready(GPTModel *m, size_t ready_numel) {
    if (m->hooks.grads_ready) m->hooks.grads_ready(m->hooks.ctx, ready_numel);
}

double gpt_model_stage_forward(GPTModel *m, int slot, const int32_t *tokens,
                               const int32_t *targets) {
    Backend *be = m->be;
    ActivationSlot *s = slot_at(m, slot);
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    /* The embeddings hold the word embedding, which the head reads too. */
    if (m->part.has_embedding || m->part.has_head) params_needed(m, m->embedding_params);
    if (m->part.has_embedding) {
        be->ops->copy_to_device(be, s->tokens_dev, tokens, (size_t)N * sizeof(int32_t));
        vocab_parallel_embedding_forward(&m->tp, s->input, m->full_scratch, s->tokens_dev, m->wte, N,
                                         C, (int)m->vocab_begin,
                                         (int)(m->vocab_begin + m->local_vocab));
        tp_position_embedding_add(&m->tp, s->input, m->wpe, N, m->T, C);
    }
    for (int l = 0; l < m->part.num_local_layers; l++) {
        params_needed(m, m->layer_params[l]);
        layer_forward(m, l, layer_acts(m, s, l), layer_input(s, l));
    }
    if (!m->part.has_head) return 0.0;
    params_needed(m, m->head_params);
    be->ops->copy_to_device(be, s->targets_dev, targets, (size_t)N * sizeof(int32_t));
    return head_forward(m, s);
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
        LayerActs *a = layer_acts(m, s, l);
        /* Recomputing rewrites the saved output with bitwise the same values. */
        if (m->cfg.recompute_activations) layer_forward(m, l, a, layer_input(s, l));
        layer_backward(m, l, a, layer_input(s, l));
        grads_ready(m, m->layer_params[l].end);
    }
    if (m->part.has_embedding) {
        const int vb = (int)m->vocab_begin, ve = (int)(m->vocab_begin + m->local_vocab);
        vocab_parallel_embedding_backward(&m->tp, m->dwte, m->d_resid, m->full_scratch,
                                          s->tokens_dev, N, C, vb, ve);
        tp_position_embedding_backward(&m->tp, m->dwpe, m->d_resid, N, m->T, C);
    }
    grads_ready(m, m->table.total_numel);
}

double gpt_model_forward(GPTModel *m, const int32_t *tokens, const int32_t *targets) {
    GPT3D_CHECK(m->part.has_embedding && m->part.has_head,
                "gpt_model_forward runs a whole model; pipeline stages use the stage API");
    return gpt_model_stage_forward(m, 0, tokens, targets);
}

void gpt_model_backward(GPTModel *m, float loss_scale_per_token) {
    gpt_model_stage_backward(m, 0, loss_scale_per_token);
}

void gpt_model_reduce_sequence_parallel_grads(GPTModel *m) {
    gpt_model_reduce_sequence_parallel_grads_in(m, 0, m->table.total_numel);
}

/* Under sequence parallelism each TP rank saw only its tokens' share of the
 * gradients of the parameters replicated across TP. They are small and many
 * (layernorms, row-parallel biases, positions): one all-reduce over a packed
 * copy instead of one per parameter. */
static bool sp_replicated_in(const ParamInfo *p, size_t begin, size_t end) {
    return !p->tensor_parallel_split && p->offset >= begin && p->offset < end;
}

void gpt_model_reduce_sequence_parallel_grads_in(GPTModel *m, size_t begin, size_t end) {
    if (!m->tp.sequence_parallel) return;
    Backend *be = m->be;
    if (!m->sp_grad_pack) {
        size_t all = 0;
        for (int i = 0; i < m->table.count; i++)
            if (!m->table.params[i].tensor_parallel_split)
                all += (size_t)m->table.params[i].local_numel;
        m->sp_grad_pack = be->ops->alloc(be, all * sizeof(float));
    }
    size_t total = 0;
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        if (!sp_replicated_in(p, begin, end)) continue;
        be->ops->copy_device(be, m->sp_grad_pack + total, m->grads + p->offset,
                             (size_t)p->local_numel * sizeof(float));
        total += (size_t)p->local_numel;
    }
    if (!total) return;
    comm_all_reduce(m->tp.comm, GROUP_TENSOR, m->sp_grad_pack, total, DTYPE_F32, REDUCE_SUM);
    size_t at = 0;
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        if (!sp_replicated_in(p, begin, end)) continue;
        be->ops->copy_device(be, m->grads + p->offset, m->sp_grad_pack + at,
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

float *gpt_model_word_embedding_grad(GPTModel *m, size_t *numel) {
    int i = param_table_find(&m->table, "embedding.word_embeddings.weight");
    if (i < 0) return NULL;
    *numel = (size_t)m->table.params[i].local_numel;
    return m->grads + m->table.params[i].offset;
}

double gpt_flops_per_token(const TransformerConfig *cfg) {
    const double C = cfg->hidden_size, F = cfg->ffn_hidden_size, T = cfg->seq_length;
    const double L = cfg->num_layers, V = (double)cfg->padded_vocab_size;
    /* Forward per token: 2 flops per multiply-add of every matmul; the
     * attention scores and the weighted sum cost 2*T*C each, halved because
     * the mask is causal. Backward costs twice the forward. */
    const double per_layer = 2.0 * (3 * C * C + C * C + 2 * C * F) + 2.0 * T * C;
    const double forward = L * per_layer + 2.0 * C * V;
    return 3.0 * forward;
}
