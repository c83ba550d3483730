/* GPT-2 forward and backward for the layers a rank holds, on a Backend.
 * Tensor and pipeline parallelism hook in around these steps; this file
 * keeps the math of one rank's share. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "model/gpt_model.h"
#include "tensor_parallel/tensor_parallel.h"

typedef struct {
    void *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    void *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} LayerParams;

typedef struct {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} LayerGrads;

/* Saved forward activations of one layer (act dtype unless noted). Residual
 * stream tensors hold this rank's rows (all N, or N/TP under sequence
 * parallelism); ln1_full/ln2_full are the all-gathered inputs of the
 * column-parallel layers (aliases of ln1/ln2 without sequence parallelism). */
typedef struct {
    void *ln1, *ln1_full, *qkv, *atty, *resid_mid, *ln2, *ln2_full, *fc1, *gelu, *resid_out;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd; /* fp32 */
    void *att_saved;                                 /* backend-defined */
} LayerActs;

struct GPTModel {
    Backend *be;
    TensorParallel tp;
    int rows; /* residual-stream rows this rank holds */
    GPTConfig cfg;
    ModelPartition part;
    ParamTable table;
    int B, T;
    int local_heads, local_ffn;
    int64_t local_vocab, vocab_begin;

    void *params;  /* act dtype, table.total_numel */
    float *grads;  /* fp32, table.total_numel */

    LayerParams *lp;
    LayerGrads *lg;
    void *wte, *wpe, *lnf_w, *lnf_b;
    float *dwte, *dwpe, *dlnf_w, *dlnf_b;

    /* Activations: one act-dtype block, one fp32 block, one act-dtype grad block. */
    void *act_block;
    float *stat_block;
    void *grad_block;
    size_t act_bytes, stat_bytes, grad_bytes;

    void *embed_out; /* residual stream entering layer 0 */
    LayerActs *la;
    void *lnf, *lnf_full;
    float *lnf_mean, *lnf_rstd;
    void *logits;
    float *ce_max, *ce_sums, *ce_losses; /* ce_sums: [sum of exps | target logits] */
    int32_t *tokens_dev, *targets_dev;

    /* Gradient scratch; full_scratch is an [N, C] buffer for the token
     * gathers and reductions of sequence parallelism. */
    void *d_resid, *d_ln, *d_qkv, *d_atty, *d_gelu, *d_fc1, *full_scratch;

    float *host_losses;
};

static void *param_ptr(GPTModel *m, const char *name) {
    int i = param_table_find(&m->table, name);
    GPT3D_CHECK(i >= 0, "parameter %s missing from the table", name);
    return (char *)m->params + backend_act_bytes(m->be, m->table.params[i].offset);
}

static float *grad_ptr(GPTModel *m, const char *name) {
    int i = param_table_find(&m->table, name);
    GPT3D_CHECK(i >= 0, "parameter %s missing from the table", name);
    return m->grads + m->table.params[i].offset;
}

static void bind_layer(GPTModel *m, int local, int layer) {
    char n[PARAM_NAME_MAX];
#define BIND(field, suffix)                                                      \
    snprintf(n, sizeof n, "decoder.layers.%d.%s", layer, suffix);                \
    m->lp[local].field = param_ptr(m, n);                                        \
    m->lg[local].field = grad_ptr(m, n);
    BIND(ln1_w, "input_layernorm.weight");
    BIND(ln1_b, "input_layernorm.bias");
    BIND(qkv_w, "self_attention.linear_qkv.weight");
    BIND(qkv_b, "self_attention.linear_qkv.bias");
    BIND(proj_w, "self_attention.linear_proj.weight");
    BIND(proj_b, "self_attention.linear_proj.bias");
    BIND(ln2_w, "pre_mlp_layernorm.weight");
    BIND(ln2_b, "pre_mlp_layernorm.bias");
    BIND(fc1_w, "mlp.linear_fc1.weight");
    BIND(fc1_b, "mlp.linear_fc1.bias");
    BIND(fc2_w, "mlp.linear_fc2.weight");
    BIND(fc2_b, "mlp.linear_fc2.bias");
#undef BIND
}

/* Carves consecutive sub-buffers out of one allocation. With base == NULL it
 * only measures, so sizing and carving share one list. */
typedef struct {
    char *base;
    size_t used;
} Carver;

static void *carve(Carver *c, size_t bytes) {
    size_t at = (c->used + 255) & ~(size_t)255;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}

static void layout_activations(GPTModel *m, Carver *act, Carver *stat, Carver *grad) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, C = (size_t)m->cfg.hidden_size, R = (size_t)m->rows;
    const size_t HS = C / (size_t)m->cfg.num_attention_heads;
    const size_t qkv_cols = 3 * HS * (size_t)m->local_heads, att_cols = HS * (size_t)m->local_heads;
    const size_t F = (size_t)m->local_ffn;
    const size_t att_saved = be->ops->attention_saved_bytes(be, m->B, m->T, m->local_heads, (int)HS);
    const bool sp = m->tp.sequence_parallel;

    m->embed_out = carve(act, backend_act_bytes(be, R * C));
    for (int l = 0; l < m->part.num_local_layers; l++) {
        LayerActs *a = &m->la[l];
        a->ln1 = carve(act, backend_act_bytes(be, R * C));
        a->ln1_full = sp ? carve(act, backend_act_bytes(be, N * C)) : a->ln1;
        a->qkv = carve(act, backend_act_bytes(be, N * qkv_cols));
        a->atty = carve(act, backend_act_bytes(be, N * att_cols));
        a->resid_mid = carve(act, backend_act_bytes(be, R * C));
        a->ln2 = carve(act, backend_act_bytes(be, R * C));
        a->ln2_full = sp ? carve(act, backend_act_bytes(be, N * C)) : a->ln2;
        a->fc1 = carve(act, backend_act_bytes(be, N * F));
        a->gelu = carve(act, backend_act_bytes(be, N * F));
        a->resid_out = carve(act, backend_act_bytes(be, R * C));
        a->att_saved = carve(act, att_saved);
        a->ln1_mean = carve(stat, R * sizeof(float));
        a->ln1_rstd = carve(stat, R * sizeof(float));
        a->ln2_mean = carve(stat, R * sizeof(float));
        a->ln2_rstd = carve(stat, R * sizeof(float));
    }
    if (m->part.has_head) {
        m->lnf = carve(act, backend_act_bytes(be, R * C));
        m->lnf_full = sp ? carve(act, backend_act_bytes(be, N * C)) : m->lnf;
        m->logits = carve(act, backend_act_bytes(be, N * (size_t)m->local_vocab));
        m->lnf_mean = carve(stat, R * sizeof(float));
        m->lnf_rstd = carve(stat, R * sizeof(float));
        m->ce_max = carve(stat, N * sizeof(float));
        m->ce_sums = carve(stat, 2 * N * sizeof(float));
        m->ce_losses = carve(stat, N * sizeof(float));
    }
    m->tokens_dev = carve(stat, N * sizeof(int32_t));
    m->targets_dev = carve(stat, N * sizeof(int32_t));

    m->d_resid = carve(grad, backend_act_bytes(be, R * C));
    m->d_ln = carve(grad, backend_act_bytes(be, R * C));
    m->d_qkv = carve(grad, backend_act_bytes(be, N * qkv_cols));
    m->d_atty = carve(grad, backend_act_bytes(be, N * att_cols));
    m->d_gelu = carve(grad, backend_act_bytes(be, N * F));
    m->d_fc1 = carve(grad, backend_act_bytes(be, N * F));
    m->full_scratch = sp ? carve(grad, backend_act_bytes(be, N * C)) : NULL;
}

GPTModel *gpt_model_create(Backend *be, const GPTConfig *cfg, const ModelPartition *part,
                           int micro_batch_size, const TensorParallel *tp) {
    GPTModel *m = xcalloc(1, sizeof *m);
    m->be = be;
    if (tp) {
        GPT3D_CHECK(tp->tp_size == part->tp_size && tp->tp_rank == part->tp_rank,
                    "tensor-parallel context and model partition disagree");
        m->tp = *tp;
    } else {
        GPT3D_CHECK(part->tp_size == 1, "a TP=%d partition needs a TensorParallel context",
                    part->tp_size);
        tensor_parallel_init(&m->tp, be, NULL, 1, 0, false);
    }
    m->rows = tp_local_rows(&m->tp, micro_batch_size * cfg->seq_length);
    m->cfg = *cfg;
    m->part = *part;
    m->B = micro_batch_size;
    m->T = cfg->seq_length;
    m->local_heads = cfg->num_attention_heads / part->tp_size;
    m->local_ffn = cfg->ffn_hidden_size / part->tp_size;
    m->local_vocab = cfg->padded_vocab_size / part->tp_size;
    m->vocab_begin = m->local_vocab * part->tp_rank;
    param_table_build(&m->table, cfg, part);

    m->params = be->ops->alloc(be, backend_act_bytes(be, m->table.total_numel));
    m->grads = be->ops->alloc(be, m->table.total_numel * sizeof(float));

    int L = part->num_local_layers;
    m->lp = xcalloc((size_t)(L ? L : 1), sizeof *m->lp);
    m->lg = xcalloc((size_t)(L ? L : 1), sizeof *m->lg);
    m->la = xcalloc((size_t)(L ? L : 1), sizeof *m->la);
    for (int l = 0; l < L; l++) bind_layer(m, l, part->first_layer + l);
    if (part->has_embedding || part->has_head) {
        m->wte = param_ptr(m, "embedding.word_embeddings.weight");
        m->dwte = grad_ptr(m, "embedding.word_embeddings.weight");
    }
    if (part->has_embedding) {
        m->wpe = param_ptr(m, "embedding.position_embeddings.weight");
        m->dwpe = grad_ptr(m, "embedding.position_embeddings.weight");
    }
    if (part->has_head) {
        m->lnf_w = param_ptr(m, "decoder.final_layernorm.weight");
        m->lnf_b = param_ptr(m, "decoder.final_layernorm.bias");
        m->dlnf_w = grad_ptr(m, "decoder.final_layernorm.weight");
        m->dlnf_b = grad_ptr(m, "decoder.final_layernorm.bias");
    }

    Carver act = {0}, stat = {0}, grad = {0};
    layout_activations(m, &act, &stat, &grad);
    m->act_bytes = act.used;
    m->stat_bytes = stat.used;
    m->grad_bytes = grad.used;
    act.base = m->act_block = be->ops->alloc(be, m->act_bytes);
    stat.base = (char *)(m->stat_block = be->ops->alloc(be, m->stat_bytes));
    grad.base = m->grad_block = be->ops->alloc(be, m->grad_bytes);
    act.used = stat.used = grad.used = 0;
    layout_activations(m, &act, &stat, &grad);

    m->host_losses = xmalloc((size_t)m->B * m->T * sizeof(float));
    return m;
}

void gpt_model_free(GPTModel *m) {
    if (!m) return;
    Backend *be = m->be;
    be->ops->free(be, m->params);
    be->ops->free(be, m->grads);
    be->ops->free(be, m->act_block);
    be->ops->free(be, m->stat_block);
    be->ops->free(be, m->grad_block);
    free(m->lp);
    free(m->lg);
    free(m->la);
    free(m->host_losses);
    param_table_free(&m->table);
    free(m);
}

const ParamTable *gpt_model_params(const GPTModel *m) { return &m->table; }
void *gpt_model_param_buffer(GPTModel *m) { return m->params; }
float *gpt_model_grad_buffer(GPTModel *m) { return m->grads; }
size_t gpt_model_activation_bytes(const GPTModel *m) {
    return m->act_bytes + m->stat_bytes + m->grad_bytes;
}

void gpt_model_init_params(GPTModel *m, float *master, size_t master_begin, size_t master_end) {
    Backend *be = m->be;
    size_t cap = 0;
    float *host = NULL, *staging = NULL;
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        const size_t n = (size_t)p->local_numel;
        if (n > cap) {
            cap = n;
            host = xrealloc(host, cap * sizeof *host);
            if (staging) be->ops->free(be, staging);
            staging = be->ops->alloc(be, cap * sizeof(float));
        }
        param_init_values(p, m->cfg.seed, host);
        be->ops->copy_to_device(be, staging, host, n * sizeof(float));
        be->ops->f32_to_act(be, (char *)m->params + backend_act_bytes(be, p->offset), staging, n);
        if (!master) continue;
        size_t lo = p->offset > master_begin ? p->offset : master_begin;
        size_t hi = p->offset + n < master_end ? p->offset + n : master_end;
        if (lo < hi)
            be->ops->copy_to_device(be, master + (lo - master_begin), host + (lo - p->offset),
                                    (hi - lo) * sizeof(float));
    }
    if (staging) be->ops->free(be, staging);
    free(host);
}

void gpt_model_zero_grad(GPTModel *m) {
    m->be->ops->memset_zero(m->be, m->grads, m->table.total_numel * sizeof(float));
}

static void layer_forward(GPTModel *m, int l, const void *resid_in) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    LayerActs *a = &m->la[l];
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
static void layer_backward(GPTModel *m, int l, const void *resid_in) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const LayerGrads *g = &m->lg[l];
    const LayerActs *a = &m->la[l];
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

static const void *layer_input(const GPTModel *m, int l) {
    return l == 0 ? m->embed_out : m->la[l - 1].resid_out;
}

double gpt_model_forward(GPTModel *m, const int32_t *tokens, const int32_t *targets) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int L = m->part.num_local_layers;
    GPT3D_CHECK(m->part.has_embedding && m->part.has_head,
                "gpt_model_forward runs a whole model; pipeline stages use the stage API");

    op->copy_to_device(be, m->tokens_dev, tokens, (size_t)N * sizeof(int32_t));
    op->copy_to_device(be, m->targets_dev, targets, (size_t)N * sizeof(int32_t));
    vocab_parallel_embedding_forward(tp, m->embed_out, m->full_scratch, m->tokens_dev, m->wte, N, C,
                                     (int)m->vocab_begin, (int)(m->vocab_begin + m->local_vocab));
    tp_position_embedding_add(tp, m->embed_out, m->wpe, N, m->T, C);
    for (int l = 0; l < L; l++) layer_forward(m, l, layer_input(m, l));

    const void *last = layer_input(m, L);
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    op->layernorm_forward(be, m->lnf, m->lnf_mean, m->lnf_rstd, last, m->lnf_w, m->lnf_b, R, C);
    /* The LM head is a column-parallel linear over the vocabulary slice. */
    column_parallel_linear_forward(tp, m->logits, m->lnf_full, m->lnf, m->wte, NULL, N, C, V, false,
                                   NULL);
    vocab_parallel_cross_entropy_forward(tp, m->ce_losses, m->ce_max, m->ce_sums, m->logits,
                                         m->targets_dev, N, V, vb, vs);
    op->copy_to_host(be, m->host_losses, m->ce_losses, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->host_losses[i];
    return sum;
}

void gpt_model_backward(GPTModel *m, float loss_scale_per_token) {
    Backend *be = m->be;
    const BackendOps *op = be->ops;
    TensorParallel *tp = &m->tp;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size;
    const int L = m->part.num_local_layers;
    const int V = (int)m->local_vocab, vb = (int)m->vocab_begin, vs = (int)m->cfg.vocab_size;
    void *dx_full = tp->sequence_parallel ? m->full_scratch : m->d_ln;

    vocab_parallel_cross_entropy_backward(tp, m->logits, m->logits, m->ce_max, m->ce_sums,
                                          m->targets_dev, N, V, vb, vs, loss_scale_per_token);
    column_parallel_linear_backward(tp, m->d_ln, dx_full, m->dwte, NULL, m->logits, m->lnf_full,
                                    m->wte, N, C, V);
    op->memset_zero(be, m->d_resid, backend_act_bytes(be, (size_t)R * C));
    op->layernorm_backward(be, m->d_resid, m->dlnf_w, m->dlnf_b, m->d_ln, layer_input(m, L),
                           m->lnf_w, m->lnf_mean, m->lnf_rstd, R, C);
    for (int l = L - 1; l >= 0; l--) layer_backward(m, l, layer_input(m, l));
    vocab_parallel_embedding_backward(tp, m->dwte, m->d_resid, m->full_scratch, m->tokens_dev, N, C,
                                      vb, vb + V);
    tp_position_embedding_backward(tp, m->dwpe, m->d_resid, N, m->T, C);
}

void gpt_model_reduce_sequence_parallel_grads(GPTModel *m) {
    if (!m->tp.sequence_parallel) return;
    /* Under sequence parallelism each TP rank saw only its tokens' share of
     * the gradients of the parameters replicated across TP. */
    for (int i = 0; i < m->table.count; i++) {
        const ParamInfo *p = &m->table.params[i];
        if (p->tensor_parallel_split) continue;
        comm_all_reduce(m->tp.comm, GROUP_TENSOR, m->grads + p->offset, (size_t)p->local_numel,
                        DTYPE_F32, REDUCE_SUM);
    }
}

double gpt_flops_per_token(const GPTConfig *cfg) {
    const double C = cfg->hidden_size, F = cfg->ffn_hidden_size, T = cfg->seq_length;
    const double L = cfg->num_layers, V = (double)cfg->padded_vocab_size;
    /* Forward per token: 2 flops per multiply-add of every matmul; the
     * attention scores and the weighted sum cost 2*T*C each, halved because
     * the mask is causal. Backward costs twice the forward. */
    const double per_layer = 2.0 * (3 * C * C + C * C + 2 * C * F) + 2.0 * T * C;
    const double forward = L * per_layer + 2.0 * C * V;
    return 3.0 * forward;
}
