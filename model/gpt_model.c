/* GPTModel construction: parameters of the layers a rank holds, their
 * binding to the flat buffers, activation slots, initial values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "model/gpt_model_internal.h"

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

/* NULL when the variant has no such parameter (a bias, a position table). */
static void *optional_param_ptr(GPTModel *m, const char *name) {
    return param_table_find(&m->table, name) >= 0 ? param_ptr(m, name) : NULL;
}
static float *optional_grad_ptr(GPTModel *m, const char *name) {
    return param_table_find(&m->table, name) >= 0 ? grad_ptr(m, name) : NULL;
}

static void bind_layer(GPTModel *m, int local, int layer) {
    char n[PARAM_NAME_MAX];
#define BIND(field, suffix)                                                      \
    snprintf(n, sizeof n, "decoder.layers.%d.%s", layer, suffix);                \
    m->lp[local].field = optional_param_ptr(m, n);                               \
    m->lg[local].field = optional_grad_ptr(m, n);
    BIND(ln1_w, "input_layernorm.weight");
    BIND(ln1_b, "input_layernorm.bias");
    BIND(qkv_w, "self_attention.linear_qkv.weight");
    BIND(qkv_b, "self_attention.linear_qkv.bias");
    BIND(q_ln_w, "self_attention.q_layernorm.weight");
    BIND(q_ln_b, "self_attention.q_layernorm.bias");
    BIND(k_ln_w, "self_attention.k_layernorm.weight");
    BIND(k_ln_b, "self_attention.k_layernorm.bias");
    BIND(proj_w, "self_attention.linear_proj.weight");
    BIND(proj_b, "self_attention.linear_proj.bias");
    BIND(ln2_w, "pre_mlp_layernorm.weight");
    BIND(ln2_b, "pre_mlp_layernorm.bias");
    BIND(fc1_w, "mlp.linear_fc1.weight");
    BIND(fc1_b, "mlp.linear_fc1.bias");
    BIND(fc2_w, "mlp.linear_fc2.weight");
    BIND(fc2_b, "mlp.linear_fc2.bias");
    BIND(router_w, "mlp.router.weight");
    BIND(shared_fc1_w, "mlp.shared_experts.linear_fc1.weight");
    BIND(shared_fc2_w, "mlp.shared_experts.linear_fc2.weight");
    if (!transformer_layer_is_moe(&m->cfg, layer)) return;
    LayerParams *p = &m->lp[local];
    LayerGrads *g = &m->lg[local];
    const int E = m->local_experts;
    if (!p->expert_fc1_w) {
        p->expert_fc1_w = xcalloc((size_t)E, sizeof(void *));
        p->expert_fc2_w = xcalloc((size_t)E, sizeof(void *));
        g->expert_fc1_w = xcalloc((size_t)E, sizeof(float *));
        g->expert_fc2_w = xcalloc((size_t)E, sizeof(float *));
    }
    for (int j = 0; j < E; j++) { /* local expert j is global expert first_expert + j */
        const int e = m->first_expert + j;
        snprintf(n, sizeof n, "decoder.layers.%d.mlp.experts.local_experts.%d.linear_fc1.weight",
                 layer, e);
        p->expert_fc1_w[j] = param_ptr(m, n);
        g->expert_fc1_w[j] = grad_ptr(m, n);
        snprintf(n, sizeof n, "decoder.layers.%d.mlp.experts.local_experts.%d.linear_fc2.weight",
                 layer, e);
        p->expert_fc2_w[j] = param_ptr(m, n);
        g->expert_fc2_w[j] = grad_ptr(m, n);
    }
#undef BIND
}

void *carve(Carver *c, size_t bytes) {
    size_t at = (c->used + 255) & ~(size_t)255;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}

RecomputeUnit gpt_recompute_unit(const TransformerConfig *c, int num_local_layers, int l) {
    RecomputeUnit u = {l, 0};
    if (c->recompute_granularity != RECOMPUTE_FULL || c->recompute_num_layers < 1) return u;
    const int n = c->recompute_num_layers;
    if (c->recompute_method == RECOMPUTE_BLOCK) {
        if (l < n) u.count = 1;
        return u;
    }
    u.first = l - l % n;
    u.count = num_local_layers - u.first < n ? num_local_layers - u.first : n;
    return u;
}

/* Layers of scratch a full recomputation needs: its largest unit. */
static int recompute_scratch_layers(const TransformerConfig *c, int num_local_layers) {
    int most = 0;
    for (int l = 0; l < num_local_layers; l++) {
        const int count = gpt_recompute_unit(c, num_local_layers, l).count;
        if (count > most) most = count;
    }
    return most;
}

/* What attention keeps for its backward: the backend's own state, or
 * under context parallelism the ring's log-sum-exp of each row. */
static size_t attention_state_bytes(const GPTModel *m) {
    if (m->cp.size > 1) return (size_t)m->B * m->local_heads * m->T * sizeof(float);
    return m->be->ops->attention_saved_bytes(m->be, m->B, m->T, m->local_heads, m->local_groups,
                                             transformer_head_dim(&m->cfg));
}

/* Which MLPs a set of saved activations serves: a layer's own, or the
 * shared scratch of full recomputation, which serves every local layer. */
typedef struct {
    bool dense, moe;
} MlpKinds;

static MlpKinds layer_mlp(const GPTModel *m, int l) {
    const bool moe = gpt_local_layer_is_moe(m, l);
    return (MlpKinds){!moe, moe};
}

static MlpKinds any_layer_mlp(const GPTModel *m) {
    MlpKinds k = {false, false};
    for (int l = 0; l < m->part.num_local_layers; l++) {
        k.dense |= !gpt_local_layer_is_moe(m, l);
        k.moe |= gpt_local_layer_is_moe(m, l);
    }
    return k;
}

/* One layer's saved activations (see LayerActs). With selective
 * recomputation the core attention's output and state are the shared
 * m->core_out / m->core_saved, carved once. */
static void layout_layer(GPTModel *m, LayerActs *a, MlpKinds mlp, Carver *act, Carver *stat,
                         Carver *host) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, C = (size_t)m->cfg.hidden_size, R = (size_t)m->rows;
    const size_t HS = (size_t)transformer_head_dim(&m->cfg);
    const size_t qkv_cols = (size_t)m->local_qkv_width, att_cols = HS * (size_t)m->local_heads;
    const size_t F = (size_t)m->local_ffn, fc1_cols = (size_t)m->local_fc1_width;
    const size_t att_saved = attention_state_bytes(m);
    const bool sp = m->tp.sequence_parallel;
    a->ln1 = carve(act, backend_act_bytes(be, R * C));
    a->ln1_full = sp ? carve(act, backend_act_bytes(be, N * C)) : a->ln1;
    if (m->cfg.qk_layernorm) /* the norms' input, kept for their backward */
        a->qkv_pre_norm = carve(act, backend_act_bytes(be, N * qkv_cols));
    a->qkv = carve(act, backend_act_bytes(be, N * qkv_cols));
    const bool selective = m->cfg.recompute_granularity == RECOMPUTE_SELECTIVE;
    a->atty = selective ? m->core_out : carve(act, backend_act_bytes(be, N * att_cols));
    a->resid_mid = carve(act, backend_act_bytes(be, R * C));
    a->ln2 = carve(act, backend_act_bytes(be, R * C));
    a->ln2_full = sp ? carve(act, backend_act_bytes(be, N * C)) : a->ln2;
    if (mlp.dense) {
        a->fc1 = carve(act, backend_act_bytes(be, N * fc1_cols));
        a->act = carve(act, backend_act_bytes(be, N * F));
    }
    if (mlp.moe) moe_layout_acts(m, &a->moe, act, stat, host);
    a->resid_out = carve(act, backend_act_bytes(be, R * C));
    a->att_saved = selective ? m->core_saved : carve(act, att_saved);
    a->ln1_mean = carve(stat, R * sizeof(float));
    a->ln1_rstd = carve(stat, R * sizeof(float));
    a->ln2_mean = carve(stat, R * sizeof(float));
    a->ln2_rstd = carve(stat, R * sizeof(float));
    if (m->cfg.qk_layernorm) {
        const size_t normed_heads = (size_t)m->local_heads + (size_t)m->local_groups;
        a->qk_mean = carve(stat, N * normed_heads * sizeof(float));
        a->qk_rstd = carve(stat, N * normed_heads * sizeof(float));
    }
}

static void layout_slot(GPTModel *m, ActivationSlot *s, Carver *act, Carver *stat, Carver *host) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, C = (size_t)m->cfg.hidden_size, R = (size_t)m->rows;
    const bool sp = m->tp.sequence_parallel;

    s->input = carve(act, backend_act_bytes(be, R * C));
    const int L = m->part.num_local_layers;
    for (int l = 0; l < L; l++) {
        const RecomputeUnit u = gpt_recompute_unit(&m->cfg, L, l);
        if (!u.count)
            layout_layer(m, &s->la[l], layer_mlp(m, l), act, stat, host);
        else if (l == u.first + u.count - 1) /* a unit's output is all a slot keeps of it */
            s->la[l].resid_out = carve(act, backend_act_bytes(be, R * C));
        else
            s->la[l].resid_out = m->own_out[l - u.first];
    }
    if (m->part.has_head) {
        s->lnf = carve(act, backend_act_bytes(be, R * C));
        s->lnf_full = sp ? carve(act, backend_act_bytes(be, N * C)) : s->lnf;
        s->logits = carve(act, backend_act_bytes(be, N * (size_t)m->local_vocab));
        s->lnf_mean = carve(stat, R * sizeof(float));
        s->lnf_rstd = carve(stat, R * sizeof(float));
        s->ce_max = carve(stat, N * sizeof(float));
        s->ce_sums = carve(stat, 2 * N * sizeof(float));
        s->ce_losses = carve(stat, N * sizeof(float));
    }
    s->tokens_dev = carve(stat, N * sizeof(int32_t));
    s->targets_dev = carve(stat, N * sizeof(int32_t));
    s->position_ids_dev = carve(stat, N * sizeof(int32_t));
    s->key_start_dev = carve(stat, N * sizeof(int32_t));
}

static void layout_activations(GPTModel *m, Carver *act, Carver *stat, Carver *grad,
                               Carver *host) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, C = (size_t)m->cfg.hidden_size, R = (size_t)m->rows;
    const size_t HS = (size_t)transformer_head_dim(&m->cfg);
    const size_t qkv_cols = (size_t)m->local_qkv_width, att_cols = HS * (size_t)m->local_heads;
    const size_t F = (size_t)m->local_ffn, fc1_cols = (size_t)m->local_fc1_width;
    if (m->cfg.recompute_granularity == RECOMPUTE_SELECTIVE) {
        m->core_out = carve(act, backend_act_bytes(be, N * att_cols));
        m->core_saved = carve(act, attention_state_bytes(m));
    }
    for (int j = 0; j < m->scratch_layers; j++) {
        layout_layer(m, &m->recompute_scratch[j], any_layer_mlp(m), act, stat, host);
        m->own_out[j] = m->recompute_scratch[j].resid_out;
    }
    for (int i = 0; i < m->num_slots; i++) layout_slot(m, &m->slots[i], act, stat, host);
    m->d_resid = carve(grad, backend_act_bytes(be, R * C));
    m->d_ln = carve(grad, backend_act_bytes(be, R * C));
    m->d_qkv = carve(grad, backend_act_bytes(be, N * qkv_cols));
    m->d_atty = carve(grad, backend_act_bytes(be, N * att_cols));
    m->d_act = carve(grad, backend_act_bytes(be, N * F));
    m->d_fc1 = carve(grad, backend_act_bytes(be, N * fc1_cols));
    m->full_scratch = m->tp.sequence_parallel ? carve(grad, backend_act_bytes(be, N * C)) : NULL;
    if (any_layer_mlp(m).moe) moe_layout_grads(m, grad, stat, host);
    /* Context parallelism: the ring's buffers with the gradient scratch
     * (shared by every layer), the coordinates with the statistics. */
    const ContextParallel *cp = &m->cp;
    const size_t ring = context_parallel_ring_bytes(be, cp->size, cp->seq_length, m->B,
                                                    m->local_qkv_width);
    if (ring) {
        void *ring_at = carve(grad, ring);
        int32_t *coords = carve(stat, context_parallel_coord_bytes(cp->size, cp->seq_length, m->B));
        if (grad->base) context_parallel_bind(&m->cp, ring_at, coords);
    }
}

/* Everything about a model that is decided before any device memory
 * exists: its shape, parameter table, host bookkeeping and the sizes the
 * Carver measures. Planning and creation share it, so a plan cannot drift
 * from what creation allocates. */
static GPTModel *model_describe(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                                int micro_batch_size, const TensorParallel *tp, Comm *comm,
                                int num_slots) {
    GPT3D_CHECK(num_slots >= 1, "a model needs at least one activation slot");
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
    m->cfg = *cfg;
    m->part = *part;
    m->part.cp_size = part->cp_size > 1 ? part->cp_size : 1;
    m->B = micro_batch_size;
    m->moe_loss_scale = 1.0;
    m->local_qkv_width = (int)(transformer_qkv_width(cfg) / part->tp_size);
    context_parallel_init(&m->cp, be, comm, m->part.cp_size, part->cp_size > 1 ? part->cp_rank : 0,
                          cfg->seq_length, micro_batch_size, m->local_qkv_width);
    m->T = m->cp.local_rows;
    m->rows = tp_local_rows(&m->tp, micro_batch_size * m->T);
    m->local_heads = cfg->num_attention_heads / part->tp_size;
    m->local_groups = cfg->num_query_groups / part->tp_size;
    m->local_ffn = cfg->ffn_hidden_size / part->tp_size;
    m->local_fc1_width = m->local_ffn * (cfg->activation == ACTIVATION_SWIGLU ? 2 : 1);
    m->local_vocab = cfg->padded_vocab_size / part->tp_size;
    m->vocab_begin = m->local_vocab * part->tp_rank;
    param_table_build(&m->table, cfg, part);
    moe_describe(m, comm);

    int L = part->num_local_layers;
    m->lp = xcalloc((size_t)(L ? L : 1), sizeof *m->lp);
    m->lg = xcalloc((size_t)(L ? L : 1), sizeof *m->lg);
    m->num_slots = num_slots;
    m->slots = xcalloc((size_t)num_slots, sizeof *m->slots);
    for (int i = 0; i < num_slots; i++)
        m->slots[i].la = xcalloc((size_t)(L ? L : 1), sizeof(LayerActs));
    m->scratch_layers = recompute_scratch_layers(cfg, L);
    m->recompute_scratch = xcalloc((size_t)m->scratch_layers + 1, sizeof(LayerActs));
    m->own_out = xcalloc((size_t)m->scratch_layers + 1, sizeof(void *));
    Carver act = {0}, stat = {0}, grad = {0}, host = {0};
    layout_activations(m, &act, &stat, &grad, &host);
    m->host_bytes = host.used;
    m->act_bytes = act.used;
    m->stat_bytes = stat.used;
    m->grad_bytes = grad.used;
    return m;
}

void gpt_model_plan(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                    int micro_batch_size, const TensorParallel *tp, Comm *comm, int num_slots,
                    GPTMemoryPlan *plan) {
    GPTModel *m = model_describe(be, cfg, part, micro_batch_size, tp, comm, num_slots);
    plan->param_bytes = backend_act_bytes(be, m->table.total_numel);
    plan->grad_bytes = m->table.total_numel * sizeof(float);
    plan->activation_bytes = gpt_model_activation_bytes(m);
    plan->flat_numel = m->table.total_numel;
    plan->expert_numel = m->table.total_numel - m->table.expert_begin;
    gpt_model_free(m);
}

/* The buffer range of the `count` parameters from table index `first`
 * (they are consecutive in the flat buffers). */
static BufferRange param_range(const GPTModel *m, int first, int count) {
    const ParamInfo *a = &m->table.params[first], *b = &m->table.params[first + count - 1];
    return (BufferRange){a->offset, b->offset + (size_t)b->local_numel};
}

/* Where each part of the stage lies in the flat buffers, for the hooks:
 * the table lists the head (an untied output layer, the final norm; last
 * stage), the layers last first, then the embeddings, then the expert
 * region (each MoE layer's routed experts, last layer first; see
 * param_table_build). */
static void locate_parts(GPTModel *m) {
    int at = 0;
    if (m->part.has_head) {
        const int head = gpt_norm_param_count(&m->cfg) + (transformer_tied_output(&m->cfg) ? 0 : 1);
        m->head_params = param_range(m, at, head);
        at += head;
    }
    for (int l = m->part.num_local_layers - 1; l >= 0; l--) {
        const int per_layer = gpt_layer_dense_param_count(&m->cfg, m->part.first_layer + l);
        m->layer_params[l] = param_range(m, at, per_layer);
        at += per_layer;
    }
    int experts = 0;
    for (int l = 0; l < m->part.num_local_layers; l++)
        experts += gpt_local_expert_param_count(&m->cfg, &m->part, m->part.first_layer + l);
    const int embeddings = m->table.count - at - experts;
    if (embeddings > 0) m->embedding_params = param_range(m, at, embeddings);
    at += embeddings;
    for (int l = m->part.num_local_layers - 1; l >= 0; l--) {
        const int count = gpt_local_expert_param_count(&m->cfg, &m->part, m->part.first_layer + l);
        m->layer_expert_params[l] = count ? param_range(m, at, count) : (BufferRange){0, 0};
        at += count;
    }
}

GPTModel *gpt_model_create_unbound(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                                   int micro_batch_size, const TensorParallel *tp, Comm *comm,
                                   int num_slots) {
    GPTModel *m = model_describe(be, cfg, part, micro_batch_size, tp, comm, num_slots);
    m->layer_params = xcalloc((size_t)(part->num_local_layers ? part->num_local_layers : 1),
                              sizeof *m->layer_params);
    m->layer_expert_params = xcalloc((size_t)(part->num_local_layers ? part->num_local_layers : 1),
                                     sizeof *m->layer_expert_params);
    locate_parts(m);
    Carver act = {0}, stat = {0}, grad = {0}, host = {0};
    act.base = m->act_block = be->ops->alloc(be, m->act_bytes);
    stat.base = (char *)(m->stat_block = be->ops->alloc(be, m->stat_bytes));
    grad.base = m->grad_block = be->ops->alloc(be, m->grad_bytes);
    host.base = m->host_block = m->host_bytes ? xcalloc(1, m->host_bytes) : NULL;
    layout_activations(m, &act, &stat, &grad, &host);
    for (int i = 0; i < m->num_slots; i++) m->slots[i].position_ids = m->cp.positions_dev;
    m->host_losses = xmalloc((size_t)m->B * m->T * sizeof(float));
    if (m->cp.size > 1) {
        m->local_ids = xmalloc((size_t)m->B * m->T * sizeof(int32_t));
        m->local_targets = xmalloc((size_t)m->B * m->T * sizeof(int32_t));
    }
    return m;
}

void gpt_model_bind_buffers(GPTModel *m, void *params, float *grads) {
    const ModelPartition *part = &m->part;
    m->params = params;
    m->grads = grads;
    for (int l = 0; l < part->num_local_layers; l++) bind_layer(m, l, part->first_layer + l);
    m->wte = optional_param_ptr(m, GPT_WORD_EMBEDDING);
    m->dwte = optional_grad_ptr(m, GPT_WORD_EMBEDDING);
    m->wpe = optional_param_ptr(m, GPT_POSITION_EMBEDDING);
    m->dwpe = optional_grad_ptr(m, GPT_POSITION_EMBEDDING);
    if (part->has_head) {
        const bool tied = transformer_tied_output(&m->cfg);
        m->wout = tied ? m->wte : param_ptr(m, GPT_OUTPUT_LAYER);
        m->dwout = tied ? m->dwte : grad_ptr(m, GPT_OUTPUT_LAYER);
        m->lnf_w = param_ptr(m, "decoder.final_layernorm.weight");
        m->lnf_b = optional_param_ptr(m, "decoder.final_layernorm.bias");
        m->dlnf_w = grad_ptr(m, "decoder.final_layernorm.weight");
        m->dlnf_b = optional_grad_ptr(m, "decoder.final_layernorm.bias");
    }
}

GPTModel *gpt_model_create(Backend *be, const TransformerConfig *cfg, const ModelPartition *part,
                           int micro_batch_size, const TensorParallel *tp, Comm *comm,
                           int num_slots) {
    GPTModel *m = gpt_model_create_unbound(be, cfg, part, micro_batch_size, tp, comm, num_slots);
    m->owns_buffers = true;
    gpt_model_bind_buffers(m, be->ops->alloc(be, backend_act_bytes(be, m->table.total_numel)),
                           be->ops->alloc(be, m->table.total_numel * sizeof(float)));
    return m;
}

void gpt_model_set_buffer_hooks(GPTModel *m, const GPTBufferHooks *hooks) {
    m->hooks = hooks ? *hooks : (GPTBufferHooks){0};
}

void gpt_model_free(GPTModel *m) {
    if (!m) return;
    Backend *be = m->be;
    if (m->owns_buffers) {
        be->ops->free(be, m->params);
        be->ops->free(be, m->grads);
    }
    free(m->layer_params);
    free(m->layer_expert_params);
    be->ops->free(be, m->act_block);
    be->ops->free(be, m->stat_block);
    be->ops->free(be, m->grad_block);
    for (int l = 0; l < m->part.num_local_layers; l++) {
        free(m->lp[l].expert_fc1_w);
        free(m->lp[l].expert_fc2_w);
        free(m->lg[l].expert_fc1_w);
        free(m->lg[l].expert_fc2_w);
    }
    free(m->lp);
    free(m->lg);
    free(m->host_block);
    free(m->moe_layer_stats);
    for (int i = 0; i < m->num_slots; i++) {
        for (int l = 0; l < m->part.num_local_layers; l++) moe_free_recv_rows(m, &m->slots[i].la[l].moe);
        free(m->slots[i].la);
    }
    for (int j = 0; j < m->scratch_layers; j++) moe_free_recv_rows(m, &m->recompute_scratch[j].moe);
    if (m->moe_grad.recv_block) be->ops->free(be, m->moe_grad.recv_block);
    free(m->slots);
    free(m->recompute_scratch);
    free(m->own_out);
    free(m->host_losses);
    free(m->local_ids);
    free(m->local_targets);
    free(m->host_logits);
    if (m->logits_staging) be->ops->free(be, m->logits_staging);
    if (m->tp_grad_pack) be->ops->free(be, m->tp_grad_pack);
    param_table_free(&m->table);
    free(m);
}

const ParamTable *gpt_model_params(const GPTModel *m) { return &m->table; }
void *gpt_model_param_buffer(GPTModel *m) { return m->params; }
float *gpt_model_grad_buffer(GPTModel *m) { return m->grads; }
size_t gpt_model_activation_bytes(const GPTModel *m) {
    return m->act_bytes + m->stat_bytes + m->grad_bytes;
}

/* Normal-initialised parameters are generated on the device by the backend
 * (in parallel, where they live); the few constant ones (layernorm ones,
 * zero biases) are filled on the host. A parameter that lies inside one
 * master range is generated straight into that master and cast from there,
 * which spares a staging buffer and a copy of the whole model. */
typedef struct {
    float *host, *staging;
    size_t cap;
} InitScratch;

static const GPTMasterRange *range_holding(const GPTMasterRange *r, int count, size_t b, size_t e) {
    for (int i = 0; i < count; i++)
        if (b >= r[i].begin && e <= r[i].end) return &r[i];
    return NULL;
}

static void init_param(GPTModel *m, const ParamInfo *p, const GPTMasterRange *masters, int count,
                       InitScratch *s) {
    Backend *be = m->be;
    const size_t n = (size_t)p->local_numel, b = p->offset, e = b + n;
    void *param = (char *)m->params + backend_act_bytes(be, b);
    const GPTMasterRange *home = range_holding(masters, count, b, e);
    float *values = home ? home->master + (b - home->begin) : NULL;
    if (!values) {
        if (n > s->cap) {
            s->cap = n;
            if (s->staging) be->ops->free(be, s->staging);
            s->staging = be->ops->alloc(be, n * sizeof(float));
            s->host = xrealloc(s->host, n * sizeof *s->host);
        }
        values = s->staging;
    }
    if (p->init == PARAM_INIT_NORMAL) {
        be->ops->init_normal(be, values, n, m->cfg.seed, rng_stream_from_name(p->name),
                             (uint64_t)p->local_begin, p->init_std);
    } else {
        float *h = home ? xmalloc(n * sizeof *h) : s->host;
        param_init_values(p, m->cfg.seed, h);
        be->ops->copy_to_device(be, values, h, n * sizeof(float));
        if (home) free(h);
    }
    be->ops->f32_to_act(be, param, values, n);
    if (home) return;
    /* Straddling ranges (or none): copy the part each range holds. */
    for (int i = 0; i < count; i++) {
        const size_t lo = b > masters[i].begin ? b : masters[i].begin;
        const size_t hi = e < masters[i].end ? e : masters[i].end;
        if (lo < hi)
            be->ops->copy_device(be, masters[i].master + (lo - masters[i].begin), values + (lo - b),
                                 (hi - lo) * sizeof(float));
    }
}

void gpt_model_init_params(GPTModel *m, const GPTMasterRange *masters, int count) {
    InitScratch s = {0};
    for (int i = 0; i < m->table.count; i++) init_param(m, &m->table.params[i], masters, count, &s);
    if (s.staging) m->be->ops->free(m->be, s.staging);
    free(s.host);
}

void gpt_model_zero_grad(GPTModel *m) {
    m->be->ops->memset_zero(m->be, m->grads, m->table.total_numel * sizeof(float));
}

