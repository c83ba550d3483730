/* The MLP of a mixture-of-experts layer: a router picks moe_router_topk of
 * num_experts experts for every token, the tokens are gathered into expert
 * order, each expert (a SwiGLU or GELU MLP of moe_ffn_hidden_size features)
 * runs on its rows, and the outputs are summed back per token weighted by
 * the routing probabilities, plus the shared expert's output.
 *
 * Layout. Every tensor-parallel rank holds every expert's TP share of
 * features (Megatron's expert tensor parallelism = TP), so the experts run
 * on all N tokens of the micro-batch (gathered under sequence parallelism)
 * and their summed output is a partial sum reduced over TP like a
 * row-parallel layer's. The router runs on the rank's own rows; its
 * choices are all-gathered, so every TP rank dispatches alike.
 *
 * The dispatch plan (which expert row each choice lands in, which choices
 * are dropped beyond an expert's capacity) is built on the host from the
 * routing of the whole micro-batch: the same tokens make the same plan in
 * every layout, which is what makes losses layout-independent. Capacity
 * is counted over the micro-batch's B x seq_length tokens.
 *
 * Losses (Megatron's): the load-balancing loss coeff * E / (K * T^2) *
 * sum_e count_e * sum_t score_t,e over the T tokens of the micro-batch
 * (count_e: the choices of expert e before dropping; score: see
 * moe_router_forward), and the z-loss coeff_z * mean_t lse_t^2. Each enters
 * the objective with weight m->moe_loss_scale (the trainer: one over the
 * global batch's micro-batches, as Megatron scales them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "model/gpt_model_internal.h"

/* One choice (token, k) of the micro-batch for the capacity decision: its
 * expert, its place in the whole micro-batch (token order, then k) and
 * probability, and where it lives (context-parallel rank, index there). */
typedef struct Choice {
    int expert, rank, index;
    float prob;
    int64_t key;
} Choice;

static int moe_capacity(const GPTModel *m) {
    const TransformerConfig *c = &m->cfg;
    const double tokens = (double)m->B * m->cp.seq_length * c->moe_router_topk;
    return (int)ceil(tokens / c->num_experts * c->moe_expert_capacity_factor);
}

static bool capacity_on(const GPTModel *m) { return m->cfg.moe_expert_capacity_factor > 0; }

/* The load-balancing loss is balanced over "slots": the micro-batch
 * (aux_loss: one slot of B x S tokens) or each of its B sequences
 * (seq_aux_loss: B slots of S tokens, the loss their mean). */
static bool per_sequence(const GPTModel *m) {
    return m->cfg.moe_load_balancing == MOE_BALANCE_SEQ_AUX_LOSS;
}
static int balance_slots(const GPTModel *m) { return per_sequence(m) ? m->B : 1; }
static double slot_tokens(const GPTModel *m) {
    return (double)m->cp.seq_length * (per_sequence(m) ? 1 : m->B);
}

/* The part [first, first + count) of this rank's own rows (global rows
 * [own, own + R) of its B x T) that lies in slot b; count 0 for none. */
static void slot_rows(const GPTModel *m, int b, int *first, int *count) {
    const int own = tp_first_row(&m->tp, m->B * m->T), R = m->rows;
    if (!per_sequence(m)) {
        *first = 0;
        *count = R;
        return;
    }
    const int lo = own > b * m->T ? own : b * m->T;
    const int hi = own + R < (b + 1) * m->T ? own + R : (b + 1) * m->T;
    *first = lo - own;
    *count = hi > lo ? hi - lo : 0;
}

void moe_describe(GPTModel *m, Comm *comm) {
    const TransformerConfig *c = &m->cfg;
    if (c->num_experts == 0) return;
    m->ep_size = m->part.ep_size > 1 ? m->part.ep_size : 1;
    m->ep_rank = m->ep_size > 1 ? m->part.ep_rank : 0;
    m->ep_comm = m->ep_size > 1 ? comm : NULL;
    GPT3D_CHECK(m->ep_size == 1 || comm, "expert parallelism needs a Comm");
    GPT3D_CHECK(c->num_experts % m->ep_size == 0, "%d experts over %d expert-parallel ranks",
                c->num_experts, m->ep_size);
    m->local_experts = c->num_experts / m->ep_size;
    m->first_expert = m->ep_rank * m->local_experts;
    const int tp = m->part.tp_size, gate = c->activation == ACTIVATION_SWIGLU ? 2 : 1;
    const int N = m->B * m->T, K = c->moe_router_topk;
    /* Expert tensor parallelism: the dense TP (the experts run on all the
     * TP group's tokens, their output a partial sum), or 1 (each rank
     * dispatches its own sequence-parallel rows to whole experts). */
    m->etp_size = m->part.etp_size > 0 ? m->part.etp_size : tp;
    GPT3D_CHECK(m->etp_size == tp || m->etp_size == 1, "expert tensor parallelism %d with TP %d",
                m->etp_size, tp);
    m->experts_tp_split = m->etp_size == tp;
    GPT3D_CHECK(m->experts_tp_split || m->tp.sequence_parallel,
                "expert tensor parallelism below TP needs sequence parallelism");
    m->moe_tokens = m->experts_tp_split ? N : m->rows;
    m->moe_token0 = m->experts_tp_split ? 0 : tp_first_row(&m->tp, N);
    m->local_moe_ffn = c->moe_ffn_hidden_size / m->etp_size;
    m->local_moe_fc1_width = gate * m->local_moe_ffn;
    m->local_shared_ffn = c->moe_shared_expert_intermediate_size / tp;
    m->local_shared_fc1_width = gate * m->local_shared_ffn;
    const bool padded = capacity_on(m) && c->moe_pad_expert_input_to_capacity;
    m->P_max = padded ? c->num_experts * moe_capacity(m) : m->moe_tokens * K;
    m->moe_layer_stats = xcalloc((size_t)(m->part.num_local_layers ? m->part.num_local_layers : 1) *
                                     (2 + (size_t)c->num_experts),
                                 sizeof(double));
    /* Each expert-parallel peer may send every choice of its micro-batch
     * (dropless) or a full capacity per expert (padded) to this rank. */
    m->P_recv_max = m->ep_size == 1 ? m->P_max
                    : padded         ? m->ep_size * m->local_experts * moe_capacity(m)
                                     : m->ep_size * m->moe_tokens * K;
    /* The buffers of the received rows are planned for
     * moe_expert_rows_factor (default 2) times the balanced load (P_max)
     * and grow when a step brings more (ensure_recv_rows): the worst case,
     * every peer's choices at one rank, is EP times the balanced load,
     * which a static allocation could not afford at scale. */
    const double factor = c->moe_expert_rows_factor > 0 ? c->moe_expert_rows_factor : 2.0;
    const double plan = ceil(factor * m->P_max);
    m->P_recv_plan = plan < m->P_recv_max ? (int)(plan > 1 ? plan : 1) : m->P_recv_max;
}

/* The experts' own rows (in, fc1 output, activation, out) of `rows` rows
 * out of one carver. */
static void carve_recv_rows(const GPTModel *m, Carver *c, size_t rows, void **x_in, void **fc1,
                            void **act, void **y_out) {
    const Backend *be = m->be;
    const size_t C = (size_t)m->cfg.hidden_size;
    *x_in = carve(c, backend_act_bytes(be, rows * C));
    *fc1 = carve(c, backend_act_bytes(be, rows * (size_t)m->local_moe_fc1_width));
    *act = carve(c, backend_act_bytes(be, rows * (size_t)m->local_moe_ffn));
    *y_out = carve(c, backend_act_bytes(be, rows * C));
}

/* Room for `rows` received rows in (*block, *capacity), reallocated with a
 * quarter to spare when the planned or last size is too small. */
static bool grow_recv_rows(GPTModel *m, void **block, int *capacity, int rows, void **x_in,
                           void **fc1, void **act, void **y_out) {
    if (rows <= *capacity) return false;
    Backend *be = m->be;
    const size_t n = (size_t)rows + (size_t)rows / 4;
    Carver c = {0};
    carve_recv_rows(m, &c, n, x_in, fc1, act, y_out);
    if (*block) be->ops->free(be, *block);
    *block = be->ops->alloc(be, c.used);
    c = (Carver){.base = *block, .used = 0};
    carve_recv_rows(m, &c, n, x_in, fc1, act, y_out);
    *capacity = (int)n;
    return true;
}

static void ensure_recv_rows(GPTModel *m, MoEActs *a) {
    grow_recv_rows(m, &a->recv_block, &a->recv_capacity, a->plan.P_recv, &a->x_in, &a->expert_fc1,
                   &a->expert_act, &a->y_out);
}

static void ensure_recv_grad_rows(GPTModel *m, int rows) {
    grow_recv_rows(m, &m->moe_grad.recv_block, &m->moe_grad.recv_capacity, rows,
                   &m->moe_grad.d_x_in, &m->moe_grad.d_expert_fc1, &m->moe_grad.d_expert_act,
                   &m->moe_grad.d_y_out);
}

void moe_free_recv_rows(GPTModel *m, MoEActs *a) {
    if (a->recv_block) m->be->ops->free(m->be, a->recv_block);
    a->recv_block = NULL;
}

void moe_layout_acts(GPTModel *m, MoEActs *a, Carver *act, Carver *stat, Carver *host) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, R = (size_t)m->rows, C = (size_t)m->cfg.hidden_size;
    const size_t E = (size_t)m->cfg.num_experts, K = (size_t)m->cfg.moe_router_topk;
    const size_t P = (size_t)m->P_max;
    const bool ep = m->ep_size > 1;
    a->logits_act = carve(act, backend_act_bytes(be, R * E));
    a->expert_in = carve(act, backend_act_bytes(be, P * C));
    if (ep) {
        carve_recv_rows(m, act, (size_t)m->P_recv_plan, &a->x_in, &a->expert_fc1, &a->expert_act,
                        &a->y_out);
        a->expert_out = carve(act, backend_act_bytes(be, P * C));
    } else { /* the experts compute on the dispatched rows themselves */
        void *unused;
        carve_recv_rows(m, act, P, &unused, &a->expert_fc1, &a->expert_act, &a->y_out);
        a->x_in = a->expert_in;
        a->expert_out = a->y_out;
    }
    a->recv_capacity = m->P_recv_plan;
    if (m->local_shared_ffn) {
        a->shared_fc1 = carve(act, backend_act_bytes(be, N * (size_t)m->local_shared_fc1_width));
        a->shared_act = carve(act, backend_act_bytes(be, N * (size_t)m->local_shared_ffn));
    }
    a->logits = carve(stat, R * E * sizeof(float));
    const size_t NT = (size_t)m->moe_tokens; /* the rows this rank dispatches */
    a->probs = carve(stat, NT * K * sizeof(float));
    const size_t slots = (size_t)balance_slots(m);
    a->stats = carve(stat, slots * (E + 1) * sizeof(float));
    a->expert_ids = carve(stat, NT * K * sizeof(int32_t));
    a->slot_of = carve(stat, NT * K * sizeof(int32_t));
    a->row_of = carve(stat, P * sizeof(int32_t));
    a->plan.expert_begin = carve(host, (E + 1) * sizeof(int));
    a->plan.counts = carve(host, E * sizeof(double));
    a->plan.slot_counts = slots > 1 ? carve(host, slots * E * sizeof(double)) : a->plan.counts;
    const size_t groups = (size_t)m->ep_size * (size_t)m->local_experts;
    a->plan.recv_begin = ep ? carve(host, (groups + 1) * sizeof(int)) : a->plan.expert_begin;
    a->plan.send_rows = carve(host, (size_t)m->ep_size * sizeof(int));
    a->plan.recv_rows = carve(host, (size_t)m->ep_size * sizeof(int));
}

void moe_layout_grads(GPTModel *m, Carver *grad, Carver *stat, Carver *host) {
    Backend *be = m->be;
    const size_t N = (size_t)m->B * m->T, R = (size_t)m->rows, C = (size_t)m->cfg.hidden_size;
    const size_t E = (size_t)m->cfg.num_experts, K = (size_t)m->cfg.moe_router_topk;
    const size_t P = (size_t)m->P_max;
    const bool ep = m->ep_size > 1;
    m->moe_grad.d_expert_out = carve(grad, backend_act_bytes(be, P * C));
    carve_recv_rows(m, grad, (size_t)m->P_recv_plan, &m->moe_grad.d_x_in, &m->moe_grad.d_expert_fc1,
                    &m->moe_grad.d_expert_act, &m->moe_grad.d_y_out);
    if (!ep) m->moe_grad.d_y_out = m->moe_grad.d_expert_out;
    m->moe_grad.d_expert_in = ep ? carve(grad, backend_act_bytes(be, P * C)) : m->moe_grad.d_x_in;
    m->moe_grad.recv_capacity = m->P_recv_plan;
    if (m->local_shared_ffn) {
        m->moe_grad.d_shared_act =
            carve(grad, backend_act_bytes(be, N * (size_t)m->local_shared_ffn));
        m->moe_grad.d_shared_fc1 =
            carve(grad, backend_act_bytes(be, N * (size_t)m->local_shared_fc1_width));
    }
    m->moe_grad.dy_full = m->tp.sequence_parallel ? carve(grad, backend_act_bytes(be, N * C)) : NULL;
    m->moe_grad.dx_full = m->tp.sequence_parallel ? carve(grad, backend_act_bytes(be, N * C)) : NULL;
    m->moe_grad.dx_part = carve(grad, backend_act_bytes(be, N * C));
    m->moe_grad.d_logits_act = carve(grad, backend_act_bytes(be, R * E));
    const size_t NT = (size_t)m->moe_tokens;
    m->moe_grad.d_probs = carve(stat, NT * K * sizeof(float));
    m->moe_grad.d_logits = carve(stat, R * E * sizeof(float));
    m->moe_grad.aux_grad = carve(stat, (size_t)balance_slots(m) * E * sizeof(float));
    m->moe_host.ids = carve(host, NT * K * sizeof(int32_t));
    m->moe_host.slot_of = carve(host, NT * K * sizeof(int32_t));
    m->moe_host.row_of = carve(host, P * sizeof(int32_t));
    m->moe_host.probs = carve(host, NT * K * sizeof(float));
    m->moe_host.order = carve(host, NT * K * sizeof(int));
    m->moe_host.fill = carve(host, E * sizeof(int));
    if (capacity_on(m)) {
        const size_t cp = (size_t)m->cp.size;
        m->moe_host.choices = carve(host, cp * NT * K * sizeof(Choice));
        m->moe_host.cp_ids = cp > 1 ? carve(host, cp * NT * K * sizeof(int32_t)) : NULL;
        m->moe_host.cp_probs = cp > 1 ? carve(host, cp * NT * K * sizeof(int32_t)) : NULL;
        m->moe_host.prob_bits = cp > 1 ? carve(host, NT * K * sizeof(int32_t)) : NULL;
    }
    const size_t slots = (size_t)balance_slots(m);
    m->moe_host.stats = carve(host, slots * (E + 1) * sizeof(double));
    m->moe_host.stats_f = carve(host, slots * (E + 1) * sizeof(float));
    m->moe_host.own_counts = carve(host, E * sizeof(int));
    m->moe_host.peer_counts = carve(host, (size_t)m->ep_size * E * sizeof(int));
    m->moe_host.send_n = carve(host, (size_t)m->ep_size * sizeof(size_t));
    m->moe_host.recv_n = carve(host, (size_t)m->ep_size * sizeof(size_t));
}

/* ---- the dispatch plan ---- */

static int by_expert_then_place(const void *a, const void *b) {
    const Choice *x = a, *y = b;
    if (x->expert != y->expert) return x->expert < y->expert ? -1 : 1;
    return (x->key > y->key) - (x->key < y->key);
}

static int by_probability_then_place(const void *a, const void *b) {
    const Choice *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return (x->key > y->key) - (x->key < y->key);
}

/* Every choice of the micro-batch: this rank's, or under context
 * parallelism every CP rank's (all-gathered), keyed by its token's place
 * in the sequence, so the decision is the one a single rank makes. */
static int gather_choices(GPTModel *m, Choice *out) {
    const int K = m->cfg.moe_router_topk, NK = m->moe_tokens * K, CP = m->cp.size;
    const int32_t *ids = m->moe_host.ids;
    const float *probs = m->moe_host.probs;
    if (CP > 1) {
        int32_t *all_ids = m->moe_host.cp_ids, *all_probs = m->moe_host.cp_probs;
        int32_t *bits = m->moe_host.prob_bits; /* the probabilities as 32-bit words */
        memcpy(bits, probs, (size_t)NK * sizeof *bits);
        comm_host_all_gather(m->cp.comm, GROUP_CONTEXT, all_ids, ids, (size_t)NK, HOST_I32);
        comm_host_all_gather(m->cp.comm, GROUP_CONTEXT, all_probs, bits, (size_t)NK, HOST_I32);
        ids = all_ids;
        probs = (const float *)all_probs;
    }
    const int S = m->cp.seq_length;
    for (int r = 0; r < CP; r++)
        for (int i = 0; i < NK; i++) {
            const int q = i / K, b = q / m->T, t = q % m->T;
            const int place = CP > 1 ? context_parallel_coordinate(CP, r, S, t) : t;
            Choice *c = &out[r * NK + i];
            c->expert = ids[r * NK + i];
            c->rank = r;
            c->index = i;
            memcpy(&c->prob, &probs[r * NK + i], sizeof c->prob);
            c->key = ((int64_t)b * S + place) * K + i % K;
        }
    return CP * NK;
}

/* Marks this rank's choices beyond their expert's capacity `cap` (over
 * the whole micro-batch) as dropped (slot -1): each expert keeps its first
 * `cap` choices in token order (position policy) or its `cap` most
 * probable, ties in token order (probs policy). Returns the choices
 * dropped in the whole micro-batch. */
static int64_t drop_beyond_capacity(GPTModel *m, int cap) {
    Choice *all = m->moe_host.choices;
    const int n = gather_choices(m, all);
    qsort(all, (size_t)n, sizeof *all, by_expert_then_place);
    int64_t dropped = 0;
    for (int from = 0; from < n;) {
        int to = from;
        while (to < n && all[to].expert == all[from].expert) to++;
        if (to - from > cap) {
            if (m->cfg.moe_token_drop_policy == MOE_DROP_PROBS)
                qsort(all + from, (size_t)(to - from), sizeof *all, by_probability_then_place);
            for (int j = from + cap; j < to; j++)
                if (all[j].rank == m->cp.rank) m->moe_host.slot_of[all[j].index] = -1;
            dropped += to - from - cap;
        }
        from = to;
    }
    return dropped;
}

/* Sums of the router statistics over the ranks holding the micro-batch's
 * other rows (TP under sequence parallelism, CP), and the choice counts
 * over CP (under TP the choices are already all-gathered). */
static void reduce_router_stats(GPTModel *m, MoEPlan *pl, double *stats) {
    const size_t E = (size_t)m->cfg.num_experts, slots = (size_t)balance_slots(m);
    if (m->tp.sequence_parallel && m->tp.comm)
        comm_host_all_reduce(m->tp.comm, GROUP_TENSOR, stats, slots * (E + 1), HOST_F64, REDUCE_SUM);
    if (!m->experts_tp_split && m->tp.comm) { /* each TP rank routed its own rows only */
        comm_host_all_reduce(m->tp.comm, GROUP_TENSOR, pl->counts, E, HOST_F64, REDUCE_SUM);
        if (slots > 1)
            comm_host_all_reduce(m->tp.comm, GROUP_TENSOR, pl->slot_counts, slots * E, HOST_F64,
                                 REDUCE_SUM);
    }
    if (m->cp.comm) {
        comm_host_all_reduce(m->cp.comm, GROUP_CONTEXT, stats, slots * (E + 1), HOST_F64, REDUCE_SUM);
        comm_host_all_reduce(m->cp.comm, GROUP_CONTEXT, pl->counts, E, HOST_F64, REDUCE_SUM);
        if (slots > 1)
            comm_host_all_reduce(m->cp.comm, GROUP_CONTEXT, pl->slot_counts, slots * E, HOST_F64,
                                 REDUCE_SUM);
    }
}

/* The load-balancing loss's gradient per choice of expert e in a slot:
 * coeff E / (K T_slot^2) / slots (the loss is the slots' mean). */
static double aux_per_count(const GPTModel *m) {
    const TransformerConfig *c = &m->cfg;
    const double T = slot_tokens(m);
    return c->moe_aux_loss_coeff * c->num_experts / ((double)c->moe_router_topk * T * T) /
           balance_slots(m);
}

static bool balancing(const GPTModel *m) {
    return m->cfg.moe_load_balancing != MOE_BALANCE_NONE && m->cfg.moe_aux_loss_coeff != 0;
}

static void plan_losses(GPTModel *m, MoEActs *a) {
    Backend *be = m->be;
    const TransformerConfig *c = &m->cfg;
    const int E = c->num_experts, slots = balance_slots(m);
    MoEPlan *pl = &a->plan;
    float *stats_f = m->moe_host.stats_f;
    double *stats = m->moe_host.stats;
    const size_t n = (size_t)slots * (E + 1);
    be->ops->copy_to_host(be, stats_f, a->stats, n * sizeof *stats_f);
    for (size_t i = 0; i < n; i++) stats[i] = stats_f[i];
    reduce_router_stats(m, pl, stats);
    double dot = 0.0, lse2 = 0.0;
    for (int b = 0; b < slots; b++) {
        for (int e = 0; e < E; e++)
            dot += pl->slot_counts[(size_t)b * E + e] * stats[(size_t)b * (E + 1) + e];
        lse2 += stats[(size_t)b * (E + 1) + E];
    }
    pl->aux_loss = balancing(m) ? aux_per_count(m) * dot : 0.0;
    pl->z_loss = c->moe_z_loss_coeff * lse2 / ((double)m->B * m->cp.seq_length);
}

/* Expert parallelism: where this rank's expert-ordered rows go (the
 * experts of peer j are j * E_local .. (j + 1) * E_local - 1, so peer j's
 * rows are one run) and, from every peer's rows per expert (exchanged
 * first), where the rows for this rank's experts arrive. */
static void exchange_plan(GPTModel *m, MoEActs *a) {
    MoEPlan *pl = &a->plan;
    const int E = m->cfg.num_experts, EL = m->local_experts, EP = m->ep_size;
    pl->groups = EP * EL;
    if (EP == 1) {
        pl->P_recv = pl->P;
        pl->send_rows[0] = pl->recv_rows[0] = pl->P;
        return;
    }
    const int *begin = pl->expert_begin;
    int *own = m->moe_host.own_counts, *peer = m->moe_host.peer_counts;
    for (int e = 0; e < E; e++) own[e] = begin[e + 1] - begin[e];
    comm_host_all_gather(m->ep_comm, GROUP_EXPERT, peer, own, (size_t)E, HOST_I32);
    int at = 0;
    for (int s = 0; s < EP; s++) {
        pl->send_rows[s] = begin[(s + 1) * EL] - begin[s * EL];
        pl->recv_rows[s] = 0;
        for (int j = 0; j < EL; j++) {
            pl->recv_begin[s * EL + j] = at;
            const int n = peer[s * E + m->first_expert + j];
            pl->recv_rows[s] += n;
            at += n;
        }
    }
    pl->recv_begin[EP * EL] = at;
    pl->P_recv = at;
    GPT3D_CHECK(at <= m->P_recv_max, "MoE: %d rows received, at most %d can come", at,
                m->P_recv_max);
}

/* Rows to their experts' ranks (forward: dispatch) or back to the ranks
 * of their tokens (return); a copy-free identity without expert
 * parallelism, where the two buffers are one. */
static void exchange_rows(GPTModel *m, const MoEPlan *pl, void *dst, const void *src, bool dispatch) {
    if (m->ep_size == 1) return;
    const size_t C = (size_t)m->cfg.hidden_size;
    size_t *send = m->moe_host.send_n, *recv = m->moe_host.recv_n;
    for (int s = 0; s < m->ep_size; s++) {
        send[s] = C * (size_t)(dispatch ? pl->send_rows[s] : pl->recv_rows[s]);
        recv[s] = C * (size_t)(dispatch ? pl->recv_rows[s] : pl->send_rows[s]);
    }
    comm_all_to_all_v(m->ep_comm, GROUP_EXPERT, dst, recv, src, send, m->be->act_dtype);
}

/* From the routing of the N tokens (ids, probs on the device): counts,
 * drops, each choice's expert row (slot_of) and each expert row's token
 * (row_of), copied to the device. */
static void build_plan(GPTModel *m, MoEActs *a) {
    Backend *be = m->be;
    const int E = m->cfg.num_experts, K = m->cfg.moe_router_topk;
    const int NK = m->moe_tokens * K;
    int32_t *ids = m->moe_host.ids, *slot = m->moe_host.slot_of, *row = m->moe_host.row_of;
    int *order = m->moe_host.order, *begin = a->plan.expert_begin;
    MoEPlan *pl = &a->plan;
    be->ops->copy_to_host(be, ids, a->expert_ids, (size_t)NK * sizeof(int32_t));
    be->ops->copy_to_host(be, m->moe_host.probs, a->probs, (size_t)NK * sizeof(float));
    /* Choices bucketed by expert, in token order within each (begin as
     * the bucket starts, then reused for the expert rows below). */
    memset(begin, 0, (size_t)(E + 1) * sizeof *begin);
    for (int i = 0; i < NK; i++) begin[ids[i] + 1]++;
    for (int e = 0; e < E; e++) {
        pl->counts[e] = begin[e + 1];
        begin[e + 1] += begin[e];
    }
    if (per_sequence(m)) { /* row n of the B x T is in sequence n / T */
        memset(pl->slot_counts, 0, (size_t)m->B * E * sizeof *pl->slot_counts);
        for (int i = 0; i < NK; i++)
            pl->slot_counts[(size_t)((m->moe_token0 + i / K) / m->T) * E + ids[i]] += 1;
    }
    int *fill = m->moe_host.fill;
    memcpy(fill, begin, (size_t)E * sizeof *fill);
    for (int i = 0; i < NK; i++) order[fill[ids[i]]++] = i;
    const bool capped = capacity_on(m);
    const int cap = capped ? moe_capacity(m) : 0;
    for (int i = 0; i < NK; i++) slot[i] = 0;
    const int64_t dropped = capped ? drop_beyond_capacity(m, cap) : 0;
    const bool pad = capped && m->cfg.moe_pad_expert_input_to_capacity;
    int P = 0;
    int64_t kept = 0;
    for (int e = 0; e < E; e++) {
        const int first = P, from = begin[e], to = begin[e + 1];
        for (int j = from; j < to; j++) {
            const int i = order[j];
            if (slot[i] < 0) continue;
            slot[i] = P;
            row[P++] = i / K;
        }
        kept += P - first;
        while (pad && P - first < cap) row[P++] = -1;
        begin[e] = first;
    }
    begin[E] = P;
    pl->P = P;
    pl->dropped = dropped; /* of the whole micro-batch (every CP rank's) */
    GPT3D_CHECK(capped || kept == NK, "a dropless plan kept %lld of %d choices", (long long)kept, NK);
    GPT3D_CHECK(P <= m->P_max, "MoE dispatch of %d rows exceeds the plan's %d", P, m->P_max);
    be->ops->copy_to_device(be, a->slot_of, slot, (size_t)NK * sizeof(int32_t));
    be->ops->copy_to_device(be, a->row_of, row, (size_t)P * sizeof(int32_t));
    plan_losses(m, a);
    exchange_plan(m, a);
}

/* ---- forward and backward ---- */

static void route(GPTModel *m, const LayerParams *p, MoEActs *a, const void *ln2) {
    Backend *be = m->be;
    const TransformerConfig *c = &m->cfg;
    const int R = m->rows, C = c->hidden_size, E = c->num_experts, K = c->moe_router_topk;
    const int own = tp_first_row(&m->tp, m->B * m->T) - m->moe_token0;
    be->ops->matmul_forward(be, a->logits_act, ln2, p->router_w, NULL, R, C, E, false);
    be->ops->act_to_f32(be, a->logits, a->logits_act, (size_t)R * E);
    const int slots = balance_slots(m);
    if (slots > 1) /* a sequence without rows here sums nothing */
        be->ops->memset_zero(be, a->stats, (size_t)slots * (E + 1) * sizeof(float));
    for (int b = 0; b < slots; b++) {
        int first, count;
        slot_rows(m, b, &first, &count);
        if (!count) continue;
        const size_t row = (size_t)own + (size_t)first;
        be->ops->moe_router_forward(be, a->expert_ids + row * K, a->probs + row * K,
                                    a->stats + (size_t)b * (E + 1), a->logits + (size_t)first * E,
                                    count, E, K, c->moe_router_score_function == MOE_SCORE_SIGMOID,
                                    c->moe_router_pre_softmax);
    }
    if (m->experts_tp_split && m->tp.sequence_parallel && m->tp.comm) {
        /* In place: rank r's rows sit at r * R * K already. */
        comm_all_gather(m->tp.comm, GROUP_TENSOR, a->expert_ids, a->expert_ids + (size_t)own * K,
                        (size_t)R * K, DTYPE_F32);
        comm_all_gather(m->tp.comm, GROUP_TENSOR, a->probs, a->probs + (size_t)own * K,
                        (size_t)R * K, DTYPE_F32);
    }
}

/* One matrix product per group of rows [begin[g], begin[g + 1]) of `in`
 * ([P, IC]) into `out` ([P, OC]) with the weight of local expert
 * g mod `weights`: the experts' grouped GEMM, one backend call. */
typedef struct {
    const int *begin;
    int groups, weights, IC, OC;
    bool in_major;
} ExpertGroup;

/* Host arrays of one pointer per group, each group's expert's. */
static const void **weights_per_group(const ExpertGroup *g, void *const *w) {
    const void **per_group = xmalloc((size_t)(g->groups > 0 ? g->groups : 1) * sizeof *per_group);
    for (int k = 0; k < g->groups; k++) per_group[k] = w[k % g->weights];
    return per_group;
}

static void grouped_matmul_forward(GPTModel *m, const ExpertGroup *g, void *out, void *in,
                                   void *const *w) {
    const void **per_group = weights_per_group(g, w);
    m->be->ops->grouped_matmul_forward(m->be, out, in, per_group, g->begin, g->groups, g->IC,
                                       g->OC, g->in_major);
    free(per_group);
}

/* d_in = d_out . W^T per group's rows; its weight's gradient += its part. */
static void grouped_matmul_backward(GPTModel *m, const ExpertGroup *g, void *d_in, float *const *dw,
                                    void *d_out, void *in, void *const *w) {
    const void **per_group = weights_per_group(g, w);
    float **dw_per_group = xmalloc((size_t)(g->groups > 0 ? g->groups : 1) * sizeof *dw_per_group);
    for (int k = 0; k < g->groups; k++) dw_per_group[k] = dw[k % g->weights];
    m->be->ops->grouped_matmul_backward(m->be, d_in, dw_per_group, d_out, in, per_group, g->begin,
                                        g->groups, g->IC, g->OC, g->in_major);
    free(dw_per_group);
    free(per_group);
}

static ExpertGroup fc1_group(const GPTModel *m, const MoEActs *a) {
    return (ExpertGroup){a->plan.recv_begin, a->plan.groups, m->local_experts, m->cfg.hidden_size,
                         m->local_moe_fc1_width, false};
}
static ExpertGroup fc2_group(const GPTModel *m, const MoEActs *a) {
    return (ExpertGroup){a->plan.recv_begin, a->plan.groups, m->local_experts, m->local_moe_ffn,
                         m->cfg.hidden_size, true};
}

static void experts_forward(GPTModel *m, const LayerParams *p, MoEActs *a) {
    const ExpertGroup fc1 = fc1_group(m, a), fc2 = fc2_group(m, a);
    ensure_recv_rows(m, a);
    exchange_rows(m, &a->plan, a->x_in, a->expert_in, true);
    grouped_matmul_forward(m, &fc1, a->expert_fc1, a->x_in, p->expert_fc1_w);
    gpt_mlp_activation_forward(m, a->expert_act, a->expert_fc1, a->plan.P_recv, m->local_moe_ffn);
    grouped_matmul_forward(m, &fc2, a->y_out, a->expert_act, p->expert_fc2_w);
    exchange_rows(m, &a->plan, a->expert_out, a->y_out, false);
}

/* The shared expert's partial sum over this rank's features, on the N
 * gathered rows, into `out` [N, C]. */
static void shared_expert_forward(GPTModel *m, const LayerParams *p, MoEActs *a, void *out,
                                  const void *x_full) {
    Backend *be = m->be;
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    be->ops->matmul_forward(be, a->shared_fc1, x_full, p->shared_fc1_w, NULL, N, C,
                            m->local_shared_fc1_width, false);
    gpt_mlp_activation_forward(m, a->shared_act, a->shared_fc1, N, m->local_shared_ffn);
    be->ops->matmul_forward(be, out, a->shared_act, p->shared_fc2_w, NULL, N, m->local_shared_ffn,
                            C, true);
}

void moe_mlp_forward(GPTModel *m, int l, LayerActs *la) {
    Backend *be = m->be;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    MoEActs *a = &la->moe;
    const int N = m->B * m->T, C = m->cfg.hidden_size, K = m->cfg.moe_router_topk;
    const int NT = m->moe_tokens;
    const bool shared = m->local_shared_ffn > 0;
    if (tp->sequence_parallel) tp_gather_tokens(tp, la->ln2_full, la->ln2, N, C);
    route(m, p, a, la->ln2);
    build_plan(m, a);
    be->ops->moe_gather_rows(be, a->expert_in, m->experts_tp_split ? la->ln2_full : la->ln2,
                             a->row_of, a->plan.P, C);
    experts_forward(m, p, a);
    if (m->experts_tp_split) {
        /* The partial sum of this rank's features: the shared expert's,
         * then the routed experts' weighted in, reduced over TP. */
        void *partial = tp->sequence_parallel ? m->full_scratch : la->resid_out;
        if (shared) shared_expert_forward(m, p, a, partial, la->ln2_full);
        be->ops->moe_combine_forward(be, partial, a->expert_out, a->probs, a->slot_of, N, K, C,
                                     shared);
        if (tp->sequence_parallel)
            tp_reduce_scatter_tokens(tp, la->resid_out, partial, N, C);
        else
            tp_all_reduce(tp, la->resid_out, (size_t)N * C);
    } else {
        /* Whole experts on this rank's own rows: their sum is complete; the
         * shared expert's partial sum is reduced over TP first. */
        if (shared) {
            shared_expert_forward(m, p, a, m->full_scratch, la->ln2_full);
            tp_reduce_scatter_tokens(tp, la->resid_out, m->full_scratch, N, C);
        }
        be->ops->moe_combine_forward(be, la->resid_out, a->expert_out, a->probs, a->slot_of, NT, K,
                                     C, shared);
    }
    if (m->training && !m->recomputing) {
        m->moe_stats[0] += a->plan.aux_loss;
        m->moe_stats[1] += a->plan.z_loss;
        m->moe_stats[2] += (double)a->plan.dropped;
        double *layer = m->moe_layer_stats + (size_t)l * (2 + m->cfg.num_experts);
        layer[0] += a->plan.aux_loss;
        layer[1] += a->plan.z_loss;
        for (int e = 0; e < m->cfg.num_experts; e++) layer[2 + e] += a->plan.counts[e];
    }
}

static void experts_backward(GPTModel *m, const LayerParams *p, const LayerGrads *g,
                             const MoEActs *a) {
    const ExpertGroup fc1 = fc1_group(m, a), fc2 = fc2_group(m, a);
    ensure_recv_grad_rows(m, a->plan.P_recv);
    exchange_rows(m, &a->plan, m->moe_grad.d_y_out, m->moe_grad.d_expert_out, true);
    grouped_matmul_backward(m, &fc2, m->moe_grad.d_expert_act, g->expert_fc2_w,
                            m->moe_grad.d_y_out, a->expert_act, p->expert_fc2_w);
    gpt_mlp_activation_backward(m, m->moe_grad.d_expert_fc1, a->expert_fc1,
                                m->moe_grad.d_expert_act, a->plan.P_recv, m->local_moe_ffn);
    grouped_matmul_backward(m, &fc1, m->moe_grad.d_x_in, g->expert_fc1_w,
                            m->moe_grad.d_expert_fc1, a->x_in, p->expert_fc1_w);
    exchange_rows(m, &a->plan, m->moe_grad.d_expert_in, m->moe_grad.d_x_in, false);
}

/* The router's gradient on its own rows: through the (TP-summed) routing
 * probabilities, the load-balancing loss and the z-loss; the input's
 * part is added into m->d_ln. */
static void router_backward(GPTModel *m, const LayerParams *p, const LayerGrads *g,
                            const LayerActs *la) {
    Backend *be = m->be;
    const TransformerConfig *c = &m->cfg;
    const MoEActs *a = &la->moe;
    const int R = m->rows, C = c->hidden_size, E = c->num_experts, K = c->moe_router_topk;
    const int own = tp_first_row(&m->tp, m->B * m->T) - m->moe_token0, slots = balance_slots(m);
    const double scale = m->moe_loss_scale;
    const bool aux = balancing(m);
    if (aux) {
        float *grad = m->moe_host.stats_f;
        const double per_count = scale * aux_per_count(m);
        for (size_t i = 0; i < (size_t)slots * E; i++)
            grad[i] = (float)(per_count * a->plan.slot_counts[i]);
        be->ops->copy_to_device(be, m->moe_grad.aux_grad, grad, (size_t)slots * E * sizeof *grad);
    }
    const float z_grad = (float)(scale * c->moe_z_loss_coeff / ((double)m->B * m->cp.seq_length));
    for (int b = 0; b < slots; b++) {
        int first, count;
        slot_rows(m, b, &first, &count);
        if (!count) continue;
        const size_t row = (size_t)own + (size_t)first;
        be->ops->moe_router_backward(be, m->moe_grad.d_logits + (size_t)first * E,
                                     m->moe_grad.d_probs + row * K, a->logits + (size_t)first * E,
                                     a->expert_ids + row * K, a->probs + row * K,
                                     aux ? m->moe_grad.aux_grad + (size_t)b * E : NULL, z_grad,
                                     count, E, K,
                                     c->moe_router_score_function == MOE_SCORE_SIGMOID,
                                     c->moe_router_pre_softmax);
    }
    be->ops->f32_to_act(be, m->moe_grad.d_logits_act, m->moe_grad.d_logits, (size_t)R * E);
    be->ops->matmul_backward(be, m->moe_grad.dx_part, g->router_w, NULL, m->moe_grad.d_logits_act,
                             la->ln2, p->router_w, R, C, E, false);
    be->ops->add_inplace(be, m->d_ln, m->moe_grad.dx_part, (size_t)R * C);
}

/* The shared expert's backward from dy_full [N, C]: its input's partial
 * gradient into dx_part [N, C]. */
static void shared_expert_backward(GPTModel *m, const LayerParams *p, const LayerGrads *g,
                                   const LayerActs *la, const void *dy_full) {
    Backend *be = m->be;
    const MoEActs *a = &la->moe;
    const int N = m->B * m->T, C = m->cfg.hidden_size;
    const int F = m->local_shared_ffn, W = m->local_shared_fc1_width;
    be->ops->matmul_backward(be, m->moe_grad.d_shared_act, g->shared_fc2_w, NULL, dy_full,
                             a->shared_act, p->shared_fc2_w, N, F, C, true);
    gpt_mlp_activation_backward(m, m->moe_grad.d_shared_fc1, a->shared_fc1,
                                m->moe_grad.d_shared_act, N, F);
    be->ops->matmul_backward(be, m->moe_grad.dx_part, g->shared_fc1_w, NULL,
                             m->moe_grad.d_shared_fc1, la->ln2_full, p->shared_fc1_w, N, C, W, false);
}

void moe_mlp_backward(GPTModel *m, int l, const LayerActs *la, const void *dy) {
    Backend *be = m->be;
    TensorParallel *tp = &m->tp;
    const LayerParams *p = &m->lp[l];
    const LayerGrads *g = &m->lg[l];
    const MoEActs *a = &la->moe;
    const int N = m->B * m->T, R = m->rows, C = m->cfg.hidden_size, K = m->cfg.moe_router_topk;
    const int NT = m->moe_tokens;
    const bool split = m->experts_tp_split, shared = m->local_shared_ffn > 0;
    const void *dy_full = dy;
    if (tp->sequence_parallel && (split || shared)) {
        tp_gather_tokens(tp, m->moe_grad.dy_full, dy, N, C);
        dy_full = m->moe_grad.dy_full;
    }
    be->ops->moe_combine_backward(be, m->moe_grad.d_expert_out, m->moe_grad.d_probs,
                                  split ? dy_full : dy, a->expert_out, a->probs, a->slot_of, NT, K,
                                  a->plan.P, C);
    /* Split experts' outputs are partial sums over TP, and so are the dots. */
    if (split && tp->comm)
        comm_all_reduce(tp->comm, GROUP_TENSOR, m->moe_grad.d_probs, (size_t)NT * K, DTYPE_F32,
                        REDUCE_SUM);
    experts_backward(m, p, g, a);
    if (split) {
        void *dx_full = tp->sequence_parallel ? m->moe_grad.dx_full : m->d_ln;
        be->ops->moe_combine_forward(be, dx_full, m->moe_grad.d_expert_in, NULL, a->slot_of, N, K,
                                     C, false);
        if (shared) {
            shared_expert_backward(m, p, g, la, dy_full);
            be->ops->add_inplace(be, dx_full, m->moe_grad.dx_part, (size_t)N * C);
        }
        if (tp->sequence_parallel)
            tp_reduce_scatter_tokens(tp, m->d_ln, dx_full, N, C);
        else
            tp_all_reduce(tp, m->d_ln, (size_t)N * C);
    } else {
        be->ops->moe_combine_forward(be, m->d_ln, m->moe_grad.d_expert_in, NULL, a->slot_of, NT, K,
                                     C, false);
        if (shared) {
            shared_expert_backward(m, p, g, la, dy_full);
            tp_reduce_scatter_tokens(tp, m->moe_grad.dx_full, m->moe_grad.dx_part, N, C);
            be->ops->add_inplace(be, m->d_ln, m->moe_grad.dx_full, (size_t)R * C);
        }
    }
    router_backward(m, p, g, la);
}
void gpt_model_set_moe_loss_scale(GPTModel *m, double scale) { m->moe_loss_scale = scale; }

void gpt_model_take_moe_layer_stats(GPTModel *m, double *out) {
    const size_t width = 2 + (size_t)m->cfg.num_experts;
    if (!m->moe_layer_stats) return;
    for (int l = 0; l < m->part.num_local_layers; l++) {
        double *mine = m->moe_layer_stats + (size_t)l * width;
        double *to = out + (size_t)(m->part.first_layer + l) * width;
        for (size_t k = 0; k < width; k++) to[k] += mine[k];
        memset(mine, 0, width * sizeof *mine);
    }
}

void gpt_model_take_moe_stats(GPTModel *m, double out[3]) {
    for (int i = 0; i < 3; i++) {
        out[i] = m->moe_stats[i];
        m->moe_stats[i] = 0.0;
    }
}
