/* The tensor-parallel GPT model under mpirun with 4 ranks: (1) the TENSOR
 * group's collectives of one forward and backward, counted and sized, at
 * TP = 2 and 4 with and without sequence parallelism, for 2 and 3 layers so
 * the per-layer increment is isolated; (2) the loss and every parameter
 * gradient of the same tiny model against TP = 1 (computed on each rank)
 * on the same tokens, also with --qk-layernorm (whose TP-partial norm
 * gradients join the one all-reduce of partial gradients). Expected counts
 * follow from Megatron's pattern:
 * - without SP: forward 2 all-reduces per layer (row-parallel outputs) +
 *   embedding 1 + cross entropy 2 (max, then sums); backward 2 per layer
 *   (column-parallel input gradients) + LM-head input gradient 1.
 * - with SP: forward per layer 2 all-gathers (column-parallel inputs) and
 *   2 reduce-scatters (row-parallel outputs), the embedding reduce-scatter,
 *   the LM-head all-gather and the cross-entropy all-reduces; backward the
 *   duals: per layer 2 all-gathers (row-parallel dy) and 2 reduce-scatters
 *   (column-parallel dx), the LM-head reduce-scatter and the embedding
 *   backward's all-gather. */
#include "model/gpt_model.h"
#include "test_tp_util.h"

enum { B = 2, T = 8, HIDDEN = 16, HEADS = 4, FFN = 32, VOCAB = 37, VPAD = 64 };
enum { N = B * T };

/* vocab 37 padded to 64: at TP = 4 the last slice [48, 64) is all padding. */
static TransformerConfig tiny_config(int layers, bool qk_layernorm) {
    TransformerConfig cfg = {.num_layers = layers,
                     .hidden_size = HIDDEN,
                     .num_attention_heads = HEADS,
                     .ffn_hidden_size = FFN,
                     .vocab_size = VOCAB,
                     .padded_vocab_size = VPAD,
                     .max_position_embeddings = T,
                     .seq_length = T,
                     .init_method_std = 0.1,
                     .seed = 1234};
    transformer_config_set_gpt2_variant(&cfg);
    cfg.qk_layernorm = qk_layernorm;
    return cfg;
}

/* The second sequence repeats part of the first, so ids recur. */
static void make_tokens(int32_t *tokens, int32_t *targets) {
    for (int i = 0; i < N; i++) {
        tokens[i] = (int32_t)(test_mix((uint64_t)(i % 12)) % VOCAB);
        targets[i] = (int32_t)(test_mix(1000 + (uint64_t)i) % VOCAB);
    }
}

static uint64_t name_hash(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; *c; c++)
        h = (h ^ (uint64_t)(unsigned char)*c) * 1099511628211ull;
    return h;
}

/* Biases and layernorms start at 0 and 1, which would hide a bias added on
 * every TP rank or a wrongly scaled layernorm: offset them by a function of
 * (name, canonical index), the same in every layout. */
static void perturb_constant_params(Backend *be, GPTModel *m) {
    const ParamTable *t = gpt_model_params(m);
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->params[i];
        if (p->init == PARAM_INIT_NORMAL) continue;
        const size_t n = (size_t)p->local_numel;
        float *v = xmalloc(n * sizeof *v);
        for (size_t j = 0; j < n; j++)
            v[j] = (p->init == PARAM_INIT_ONES ? 1.0f : 0.0f) +
                   test_value(name_hash(p->name), (size_t)p->local_begin + j, 0.1f);
        be->ops->copy_to_device(be, (float *)gpt_model_param_buffer(m) + p->offset, v,
                                n * sizeof *v);
        free(v);
    }
}

static GPTModel *tiny_model(Backend *be, int layers, const TensorParallel *tp, bool qk_layernorm) {
    TransformerConfig cfg = tiny_config(layers, qk_layernorm);
    ModelPartition part = {.tp_size = tp ? tp->tp_size : 1,
                           .tp_rank = tp ? tp->tp_rank : 0,
                           .first_layer = 0,
                           .num_local_layers = layers,
                           .has_embedding = true,
                           .has_head = true};
    GPTModel *m = gpt_model_create(be, &cfg, &part, B, tp, NULL, 1);
    gpt_model_init_params(m, NULL, 0);
    perturb_constant_params(be, m);
    gpt_model_zero_grad(m);
    return m;
}

/* ------------------------------------------------------ collective counts */

typedef struct {
    uint64_t calls[NUM_COLLECTIVES], bytes[NUM_COLLECTIVES];
} Traffic;

static Traffic tensor_traffic(const Comm *c) {
    Traffic t;
    for (int k = 0; k < NUM_COLLECTIVES; k++) {
        t.calls[k] = c->counters.calls[GROUP_TENSOR][k];
        t.bytes[k] = c->counters.bytes[GROUP_TENSOR][k];
    }
    return t;
}

static Traffic traffic_minus(Traffic a, const Traffic *b) {
    for (int k = 0; k < NUM_COLLECTIVES; k++) {
        a.calls[k] -= b->calls[k];
        a.bytes[k] -= b->bytes[k];
    }
    return a;
}

/* Collectives of one phase: all-reduces, all-gathers, reduce-scatters. */
typedef struct {
    uint64_t ar, ag, rs, ar_bytes, ag_bytes, rs_bytes;
} Expected;

static void check_traffic(const char *label, const char *phase, const Traffic *t,
                          const Expected *e) {
    const uint64_t want_calls[NUM_COLLECTIVES] = {
        [COLL_ALL_REDUCE] = e->ar, [COLL_ALL_GATHER] = e->ag, [COLL_REDUCE_SCATTER] = e->rs};
    const uint64_t want_bytes[NUM_COLLECTIVES] = {[COLL_ALL_REDUCE] = e->ar_bytes,
                                                  [COLL_ALL_GATHER] = e->ag_bytes,
                                                  [COLL_REDUCE_SCATTER] = e->rs_bytes};
    for (int k = 0; k < NUM_COLLECTIVES; k++) {
        TP_CHECK(t->calls[k] == want_calls[k], "%s %s: %llu %s calls, want %llu", label, phase,
                 (unsigned long long)t->calls[k], comm_collective_name(k),
                 (unsigned long long)want_calls[k]);
        TP_CHECK(t->bytes[k] == want_bytes[k], "%s %s: %llu %s bytes, want %llu", label, phase,
                 (unsigned long long)t->bytes[k], comm_collective_name(k),
                 (unsigned long long)want_bytes[k]);
    }
}

/* The model must not touch any group but TENSOR in forward and backward. */
static void check_only_tensor_group(const char *label, const Comm *c) {
    for (int g = 0; g < NUM_GROUPS; g++)
        for (int k = 0; k < NUM_COLLECTIVES; k++)
            TP_CHECK(g == GROUP_TENSOR || c->counters.calls[g][k] == 0, "%s: %s on the %s group",
                     label, comm_collective_name(k), comm_group_name(g));
}

/* Derived from the pattern in the header comment; act = fp32 (4 bytes).
 * Counted bytes (collectives.h): all-reduce n, all-gather the rank's chunk,
 * reduce-scatter the full input. */
static void expected_counts(int L, int tp_size, bool sp, Expected *fwd, Expected *bwd) {
    const uint64_t act = (uint64_t)N * HIDDEN * 4, chunk = act / (uint64_t)tp_size;
    const uint64_t ce = 3 * (uint64_t)N * 4; /* max [N], then sums [2N] */
    const uint64_t l = (uint64_t)L;
    if (!sp) {
        *fwd = (Expected){.ar = 2 * l + 3, .ar_bytes = (2 * l + 1) * act + ce};
        *bwd = (Expected){.ar = 2 * l + 1, .ar_bytes = (2 * l + 1) * act};
    } else {
        *fwd = (Expected){.ar = 2,
                          .ar_bytes = ce,
                          .ag = 2 * l + 1,
                          .ag_bytes = (2 * l + 1) * chunk,
                          .rs = 2 * l + 1,
                          .rs_bytes = (2 * l + 1) * act};
        *bwd = (Expected){.ag = 2 * l + 1,
                          .ag_bytes = (2 * l + 1) * chunk,
                          .rs = 2 * l + 1,
                          .rs_bytes = (2 * l + 1) * act};
    }
}

/* Forward + backward traffic of an L-layer model; checks it and returns
 * the total. */
static Traffic run_counted(Backend *be, TPGroup *g, int L, int32_t *tokens, int32_t *targets) {
    char label[128];
    snprintf(label, sizeof label, "%s L=%d", g->label, L);
    GPTModel *m = tiny_model(be, L, &g->tp, false);
    comm_reset_counters(&g->comm);
    gpt_model_forward(m, tokens, targets);
    const Traffic fwd = tensor_traffic(&g->comm);
    gpt_model_backward(m, 1.0f / N);
    const Traffic total = tensor_traffic(&g->comm);
    const Traffic bwd = traffic_minus(total, &fwd);
    check_only_tensor_group(label, &g->comm);

    Expected efwd, ebwd;
    expected_counts(L, g->tp.tp_size, g->tp.sequence_parallel, &efwd, &ebwd);
    check_traffic(label, "forward", &fwd, &efwd);
    check_traffic(label, "backward", &bwd, &ebwd);

    /* Under SP the replicated parameters' gradients (6 per layer, the final
     * layernorm's 2, positions 1) are then summed in one coalesced all-reduce
     * of all their elements. */
    comm_reset_counters(&g->comm);
    gpt_model_reduce_tensor_parallel_partial_grads(m);
    const uint64_t sp_reduces = g->tp.sequence_parallel ? 1 : 0;
    const uint64_t C = HIDDEN, sp_elements = (uint64_t)L * (6 * C) + 2 * C + (uint64_t)T * C;
    if (g->tp.sequence_parallel)
        TP_CHECK(g->comm.counters.bytes[GROUP_TENSOR][COLL_ALL_REDUCE] == 4 * sp_elements,
                 "%s: sequence-parallel gradient all-reduce of %llu bytes, want %llu", label,
                 (unsigned long long)g->comm.counters.bytes[GROUP_TENSOR][COLL_ALL_REDUCE],
                 (unsigned long long)(4 * sp_elements));
    TP_CHECK(g->comm.counters.calls[GROUP_TENSOR][COLL_ALL_REDUCE] == sp_reduces,
             "%s: %llu sequence-parallel gradient all-reduces, want %llu", label,
             (unsigned long long)g->comm.counters.calls[GROUP_TENSOR][COLL_ALL_REDUCE],
             (unsigned long long)sp_reduces);
    gpt_model_free(m);
    return total;
}

static void test_counts(Backend *be, TPGroup *g, int32_t *tokens, int32_t *targets) {
    const Traffic two = run_counted(be, g, 2, tokens, targets);
    const Traffic three = run_counted(be, g, 3, tokens, targets);
    const Traffic layer = traffic_minus(three, &two);
    /* Per layer: 4 all-reduces of [N, C], or 4 all-gathers and 4
     * reduce-scatters (2 forward + 2 backward each) under SP. */
    const bool sp = g->tp.sequence_parallel;
    const uint64_t act = (uint64_t)N * HIDDEN * 4;
    TP_CHECK(layer.calls[COLL_ALL_REDUCE] == (sp ? 0u : 4u), "%s: per-layer all-reduces", g->label);
    TP_CHECK(layer.calls[COLL_ALL_GATHER] == (sp ? 4u : 0u), "%s: per-layer all-gathers", g->label);
    TP_CHECK(layer.calls[COLL_REDUCE_SCATTER] == (sp ? 4u : 0u), "%s: per-layer reduce-scatters",
             g->label);
    /* Bytes as collectives.h counts them: an all-gather its chunk, a
     * reduce-scatter its full input. */
    const uint64_t ar_bytes = sp ? 0 : 4 * act, ag_bytes = sp ? 4 * act / g->tp.tp_size : 0;
    const uint64_t rs_bytes = sp ? 4 * act : 0;
    TP_CHECK(layer.bytes[COLL_ALL_REDUCE] == ar_bytes && layer.bytes[COLL_ALL_GATHER] == ag_bytes &&
                 layer.bytes[COLL_REDUCE_SCATTER] == rs_bytes,
             "%s: per-layer bytes", g->label);
    if (g->ps.rank != 0) return;
    printf("%s: per layer per micro-batch (B=%d T=%d C=%d, fp32): ", g->label, B, T, HIDDEN);
    if (!sp)
        printf("%llu all-reduces, %llu B (analytic 4*B*T*C*4 = %llu B)",
               (unsigned long long)layer.calls[COLL_ALL_REDUCE],
               (unsigned long long)layer.bytes[COLL_ALL_REDUCE], (unsigned long long)(4 * act));
    else
        printf("%llu all-gathers, %llu B sent (analytic 4*B*T*C*4/TP = %llu B); "
               "%llu reduce-scatters, %llu B input (analytic 4*B*T*C*4 = %llu B)",
               (unsigned long long)layer.calls[COLL_ALL_GATHER],
               (unsigned long long)layer.bytes[COLL_ALL_GATHER],
               (unsigned long long)(4 * act / g->tp.tp_size),
               (unsigned long long)layer.calls[COLL_REDUCE_SCATTER],
               (unsigned long long)layer.bytes[COLL_REDUCE_SCATTER], (unsigned long long)(4 * act));
    printf("; whole 3-layer fwd+bwd: all-reduce %llu B, all-gather %llu B, reduce-scatter %llu B\n",
           (unsigned long long)three.bytes[COLL_ALL_REDUCE],
           (unsigned long long)three.bytes[COLL_ALL_GATHER],
           (unsigned long long)three.bytes[COLL_REDUCE_SCATTER]);
}

/* ------------------------------------------------ equivalence with TP = 1 */

/* Gradient tolerance: fp32 rounding through two layers whose sums are
 * split and reordered across ranks, relative to the tensor's largest
 * gradient (measured: under 1e-6). */
#define GRAD_TOL TP_TOL

static float *param_grad(Backend *be, GPTModel *m, const ParamInfo *p) {
    return host_from_dev(be, gpt_model_grad_buffer(m) + p->offset, (size_t)p->local_numel);
}

/* This rank's gradient of p in canonical form: the TP shards concatenated
 * in rank order (dimension 0 first), or the replica itself, which must be
 * bitwise the same on every TP rank. */
static float *canonical_grad(Backend *be, TPGroup *g, GPTModel *m, const ParamInfo *p) {
    float *local = param_grad(be, m, p);
    const int S = g->tp.tp_size;
    float *all = xmalloc((size_t)p->local_numel * S * sizeof *all);
    MPI_Allgather(local, (int)p->local_numel, MPI_FLOAT, all, (int)p->local_numel, MPI_FLOAT,
                  g->ps.tp_comm);
    if (p->tensor_parallel_split) {
        free(local);
        return all;
    }
    for (int r = 1; r < S; r++)
        TP_CHECK(memcmp(all, all + (size_t)r * p->local_numel,
                        (size_t)p->local_numel * sizeof(float)) == 0,
                 "%s: replicated %s gradient differs between TP ranks 0 and %d", g->label, p->name,
                 r);
    free(all);
    return local;
}

/* With --qk-layernorm each TP rank's QK-norm gradients cover only its
 * heads: the one coalesced all-reduce of the TP-partial gradients also
 * carries them, with and without sequence parallelism. */
static void check_partial_grad_reduce(TPGroup *g, GPTModel *m, int L, bool qk_layernorm) {
    const uint64_t C = HIDDEN, HS = HIDDEN / HEADS;
    const uint64_t sp_elements = g->tp.sequence_parallel ? (uint64_t)L * 6 * C + 2 * C + T * C : 0;
    const uint64_t elements = sp_elements + (qk_layernorm ? (uint64_t)L * 4 * HS : 0);
    comm_reset_counters(&g->comm);
    gpt_model_reduce_tensor_parallel_partial_grads(m);
    const uint64_t calls = g->comm.counters.calls[GROUP_TENSOR][COLL_ALL_REDUCE];
    const uint64_t bytes = g->comm.counters.bytes[GROUP_TENSOR][COLL_ALL_REDUCE];
    TP_CHECK(calls == (elements ? 1u : 0u) && bytes == 4 * elements,
             "%s: partial-gradient all-reduce: %llu calls of %llu bytes, want %d of %llu", g->label,
             (unsigned long long)calls, (unsigned long long)bytes, elements ? 1 : 0,
             (unsigned long long)(4 * elements));
}

/* The key norm's bias shifts every key a query sees by the same vector,
 * which moves all of that query's scores by one constant: the softmax
 * does not change, so the bias's gradient is zero up to rounding, and a
 * relative comparison would compare rounding noise. */
static bool shift_invariant(const ParamInfo *p) {
    const char *suffix = "self_attention.k_layernorm.bias";
    const size_t n = strlen(p->name), k = strlen(suffix);
    return n >= k && !strcmp(p->name + n - k, suffix);
}

static void test_equivalence(Backend *be, TPGroup *g, int32_t *tokens, int32_t *targets,
                             bool qk_layernorm) {
    const int L = 2;
    GPTModel *ref = tiny_model(be, L, NULL, qk_layernorm);
    GPTModel *m = tiny_model(be, L, &g->tp, qk_layernorm);
    const double loss_ref = gpt_model_forward(ref, tokens, targets);
    gpt_model_backward(ref, 1.0f / N);
    const double loss = gpt_model_forward(m, tokens, targets);
    gpt_model_backward(m, 1.0f / N);
    check_partial_grad_reduce(g, m, L, qk_layernorm);
    TP_CHECK(fabs(loss - loss_ref) <= 1e-5 * fabs(loss_ref), "%s: loss %.9g, TP=1 %.9g", g->label,
             loss, loss_ref);

    const ParamTable *tt = gpt_model_params(m), *rt = gpt_model_params(ref);
    TP_CHECK(tt->count == rt->count, "%s: %d parameters, TP=1 has %d", g->label, tt->count,
             rt->count);
    double worst = 0.0;
    for (int i = 0; i < tt->count; i++) {
        const ParamInfo *p = &tt->params[i];
        const int j = param_table_find(rt, p->name);
        TP_CHECK(j >= 0, "%s: %s missing at TP=1", g->label, p->name);
        const ParamInfo *q = &rt->params[j];
        TP_CHECK(q->canonical_numel == p->canonical_numel &&
                     p->local_numel * (p->tensor_parallel_split ? g->tp.tp_size : 1) ==
                         q->local_numel,
                 "%s: %s shard sizes do not tile the canonical tensor", g->label, p->name);
        float *got = canonical_grad(be, g, m, p), *want = param_grad(be, ref, q);
        if (shift_invariant(p)) {
            /* only rounding (~1e-9 here; the other gradients are ~1e-2) */
            TP_CHECK(max_abs(want, (size_t)q->local_numel) < 1e-6 &&
                         max_abs(got, (size_t)q->local_numel) < 1e-6,
                     "%s: %s gradient is not ~0", g->label, p->name);
            free(got);
            free(want);
            continue;
        }
        const double err = elementwise_error(got, want, (size_t)q->local_numel);
        TP_CHECK(max_abs(want, (size_t)q->local_numel) > 0.0, "%s: %s has no gradient at TP=1",
                 g->label, p->name);
        TP_CHECK(err <= GRAD_TOL, "%s: %s gradient differs from TP=1 by %.3g of its magnitude",
                 g->label, p->name, err);
        if (err > worst) worst = err;
        free(got);
        free(want);
    }
    double worst_all = worst;
    MPI_Allreduce(&worst, &worst_all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (g->ps.rank == 0)
        printf("%s%s: loss %.9g vs TP=1 %.9g (rel %.2g); %d gradients, worst rel error %.2g\n",
               g->label, qk_layernorm ? " qk-layernorm" : "", loss, loss_ref,
               fabs(loss - loss_ref) / fabs(loss_ref), tt->count, worst_all);
    gpt_model_free(m);
    gpt_model_free(ref);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const double t0 = MPI_Wtime();
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    TP_CHECK(world == 4, "run with 4 ranks (got %d)", world);
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    TP_CHECK(be != NULL, "%s", err);
    int32_t tokens[N], targets[N];
    make_tokens(tokens, targets);

    const int sizes[] = {2, 4};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (int sp = 0; sp < 2; sp++) {
            TPGroup g;
            tp_group_init(&g, be, sizes[i], sp);
            test_counts(be, &g, tokens, targets);
            test_equivalence(be, &g, tokens, targets, false);
            test_equivalence(be, &g, tokens, targets, true);
            tp_group_destroy(&g);
        }

    backend_destroy(be);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_tp_model: TP=2,4 x SP off/on: all checks passed (%.2f s)\n", MPI_Wtime() - t0);
    MPI_Finalize();
    return 0;
}
