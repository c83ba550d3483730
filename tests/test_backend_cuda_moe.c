/* tests/test_backend_cuda_moe.c — the CUDA backend's mixture-of-experts ops
 * against the CPU backend: the router forward and backward (softmax over
 * the selected K, softmax over all E first, sigmoid; with and without the
 * load-balancing and z-loss gradients), the gather into expert order and
 * the weighted combine back, forward and backward.
 *
 * Same scheme as test_backend_cuda_arch.c: bf16-rounded activations on both
 * sides, overwritten outputs poisoned with NaN, every op twice for bitwise
 * determinism. The router's logits are fp32 on both backends, so the
 * selected experts must match exactly (rows with tied logits included, where
 * the lower index wins, also checked here on the host); both backends do
 * the router math in double, so its fp32 outputs agree to a few ulps.
 * Gathers are copies and the combine backward's expert rows one fp32
 * product rounded once, so both match the CPU exactly. The dispatch is
 * built the way a capacity-limited MoE layer builds it: tokens in expert
 * order, over-capacity ones dropped (slot -1), short experts padded (row
 * -1). The experts' grouped GEMM against the CPU's per-group products, on
 * the layer's grouping (weights repeating, empty groups, more groups than
 * one grouped call takes), with the GEMM count showing the grouped path
 * ran rather than its one-by-one fallback. Exits 77 without a GPU; with --cpu-standin a CPU backend takes the
 * CUDA backend's place (a harness self-test, see test_backend_cuda_util.h). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "test_backend_cuda_util.h"

/* fp32 outputs of double router math: one rounding to fp32 (2^-24) and at
 * most the last bits of a device exp() against the host's. */
static const double ROUTER_TOL = 1e-6;

/* The CUDA bf16 output must be the CPU's fp32 result rounded once to bf16. */
static int compare_rounded(const char *what, Pair *p, const void *cu_act, const float *cpu_dev,
                           size_t n) {
    float *got = act_download(p->cu, cu_act, n);
    float *want = download(p->cpu, cpu_dev, n);
    round_like_act(p->cu, want, n);
    int rc = compare_f32(what, got, want, n, 0.0);
    free(got);
    free(want);
    return rc;
}

static int act_bytes_equal(const char *what, Backend *cu, const void *first_host, const void *dev,
                           size_t n) {
    void *second = bytes_download(cu, dev, backend_act_bytes(cu, n));
    int rc = same_bytes(what, first_host, second, backend_act_bytes(cu, n));
    free(second);
    return rc;
}

static int32_t *ids_download(Backend *be, const int32_t *dev, size_t n) {
    int32_t *h = xmalloc(n * sizeof(int32_t) + 1);
    be->ops->copy_to_host(be, h, dev, n * sizeof(int32_t));
    return h;
}

/* An int32 device buffer of n elements set to -7 (no valid expert id). */
static int32_t *ids_poisoned(Backend *be, size_t n) {
    int32_t *h = xmalloc(n * sizeof(int32_t) + 1);
    for (size_t i = 0; i < n; i++) h[i] = -7;
    int32_t *dev = upload(be, h, n * sizeof(int32_t));
    free(h);
    return dev;
}

typedef struct {
    int R, E, K, C;
    bool sigmoid, pre_softmax;
} MoeShape;

/* Rows with ties: row 0 all equal (experts 0..K-1 in order), row 1 two
 * equal best logits (the lower index first), row 2 K + 1 equal best logits
 * (the last of them left out), row 3 a tie just below the best. */
static void plant_ties(float *x, int E, int K) {
    for (int e = 0; e < E; e++) x[e] = 0.25f;
    float *r1 = x + E;
    r1[E - 2] = 20.0f, r1[1] = 20.0f;
    float *r2 = x + 2 * (size_t)E;
    for (int j = 0; j <= K && j < E; j++) r2[(E - 1 - 3 * j + 3 * (size_t)E) % E] = 18.0f;
    float *r3 = x + 3 * (size_t)E;
    r3[E / 2] = 20.0f, r3[E - 1] = 15.0f, r3[0] = 15.0f;
}

/* The tie rule on the host: the ids of a row name its K best logits, best
 * first, equal logits in index order, all distinct. */
static int check_top_k(const int32_t *ids, const float *logits, int R, int E, int K) {
    for (int r = 0; r < R; r++) {
        const float *x = logits + (size_t)r * E;
        const int32_t *id = ids + (size_t)r * K;
        for (int k = 0; k < K; k++) {
            if (id[k] < 0 || id[k] >= E) {
                fprintf(stderr, "  row %d slot %d: expert %d out of range\n", r, k, id[k]);
                return 1;
            }
            if (k > 0 && !(x[id[k]] < x[id[k - 1]] ||
                           (x[id[k]] == x[id[k - 1]] && id[k] > id[k - 1]))) {
                fprintf(stderr, "  row %d: slot %d (expert %d) does not follow slot %d (expert %d)\n",
                        r, k, id[k], k - 1, id[k - 1]);
                return 1;
            }
        }
        /* No unselected expert beats the last selected one. */
        const int last = id[K - 1];
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int k = 0; k < K; k++) taken |= id[k] == e;
            if (!taken && (x[e] > x[last] || (x[e] == x[last] && e < last))) {
                fprintf(stderr, "  row %d: expert %d should have been selected over %d\n", r, e,
                        last);
                return 1;
            }
        }
    }
    return 0;
}

/* Router forward and backward; leaves the CPU's expert ids and probs in
 * ids_out / probs_out (host, malloc'd) for the dispatch. */
static int router_case(Pair *p, TestRng *rng, const MoeShape *s, int32_t **ids_out,
                       float **probs_out) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const int R = s->R, E = s->E, K = s->K;
    const size_t RE = (size_t)R * E, RK = (size_t)R * K;
    float *x = rand_floats(rng, RE, -4, 4);
    /* Uneven load (experts e % 4 == 3 favoured), so the dispatch below has
     * both overflowing and short experts. */
    for (size_t i = 0; i < RE; i++) x[i] += 0.75f * (float)((i % E) % 4);
    plant_ties(x, E, K);
    float *cx = upload(cpu, x, RE * 4), *gx = upload(cu, x, RE * 4);
    int32_t *cids = ids_poisoned(cpu, RK), *gids = ids_poisoned(cu, RK);
    float *cprobs = f32_poisoned(cpu, RK), *gprobs = f32_poisoned(cu, RK);
    float *cstats = f32_poisoned(cpu, (size_t)E + 1), *gstats = f32_poisoned(cu, (size_t)E + 1);

    cpu->ops->moe_router_forward(cpu, cids, cprobs, cstats, cx, R, E, K, s->sigmoid,
                                 s->pre_softmax);
    cu->ops->moe_router_forward(cu, gids, gprobs, gstats, gx, R, E, K, s->sigmoid,
                                s->pre_softmax);
    int32_t *hc = ids_download(cpu, cids, RK), *hg = ids_download(cu, gids, RK);
    for (size_t i = 0; i < RK; i++)
        if (hc[i] != hg[i]) {
            fprintf(stderr, "  moe_router_forward: row %zu slot %zu: CUDA expert %d, CPU %d\n",
                    i / K, i % K, hg[i], hc[i]);
            return 1;
        }
    CHECK(!check_top_k(hg, x, R, E, K));
    for (int k = 0; k < K; k++) CHECK(hg[k] == k); /* row 0: all tied */
    CHECK(!compare_f32_dev("moe_router_forward probs", p, gprobs, cprobs, RK, ROUTER_TOL));
    CHECK(!compare_f32_dev("moe_router_forward stats", p, gstats, cstats, (size_t)E + 1,
                           ROUTER_TOL));
    /* Determinism: again over poisoned outputs. */
    void *probs1 = bytes_download(cu, gprobs, RK * 4), *stats1 = bytes_download(cu, gstats, (E + 1) * 4);
    poison_f32(cu, gprobs, RK), poison_f32(cu, gstats, (size_t)E + 1);
    cu->ops->moe_router_forward(cu, gids, gprobs, gstats, gx, R, E, K, s->sigmoid,
                                s->pre_softmax);
    void *probs2 = bytes_download(cu, gprobs, RK * 4), *stats2 = bytes_download(cu, gstats, (E + 1) * 4);
    CHECK(!same_bytes("moe_router_forward probs", probs1, probs2, RK * 4));
    CHECK(!same_bytes("moe_router_forward stats", stats1, stats2, (E + 1) * 4));

    /* Backward on the CPU's ids (equal to CUDA's, checked above). */
    float *dprobs = rand_floats(rng, RK, -1, 1), *aux = rand_floats(rng, (size_t)E, -0.5f, 0.5f);
    float *cdp = upload(cpu, dprobs, RK * 4), *gdp = upload(cu, dprobs, RK * 4);
    float *caux = upload(cpu, aux, (size_t)E * 4), *gaux = upload(cu, aux, (size_t)E * 4);
    float *cdl = f32_poisoned(cpu, RE), *gdl = f32_poisoned(cu, RE);
    for (int variant = 0; variant < 3; variant++) {
        /* 0: through probs only; 1: + load balancing; 2: + both and the z-loss. */
        const bool with_aux = variant >= 1;
        const float z = variant == 2 ? 1e-3f : 0.0f;
        fprintf(stderr, "    router backward%s%s\n", with_aux ? " +aux" : "", z ? " +z" : "");
        poison_f32(cpu, cdl, RE), poison_f32(cu, gdl, RE);
        cpu->ops->moe_router_backward(cpu, cdl, cdp, cx, cids, cprobs, with_aux ? caux : NULL, z,
                                      R, E, K, s->sigmoid, s->pre_softmax);
        cu->ops->moe_router_backward(cu, gdl, gdp, gx, gids, gprobs,
                                     with_aux ? gaux : NULL, z, R, E, K, s->sigmoid,
                                     s->pre_softmax);
        CHECK(!compare_f32_dev("moe_router_backward dlogits", p, gdl, cdl, RE, ROUTER_TOL));
        void *d1 = bytes_download(cu, gdl, RE * 4);
        poison_f32(cu, gdl, RE);
        cu->ops->moe_router_backward(cu, gdl, gdp, gx, gids, gprobs, with_aux ? gaux : NULL, z, R,
                                     E, K, s->sigmoid, s->pre_softmax);
        void *d2 = bytes_download(cu, gdl, RE * 4);
        CHECK(!same_bytes("moe_router_backward dlogits", d1, d2, RE * 4));
        free(d1), free(d2);
    }

    *ids_out = hc;
    *probs_out = download(cpu, cprobs, RK);
    void *host[] = {x, hg, probs1, probs2, stats1, stats2, dprobs, aux};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    void *cbufs[] = {cx, cids, cprobs, cstats, cdp, caux, cdl};
    for (size_t i = 0; i < sizeof cbufs / sizeof *cbufs; i++) cpu->ops->free(cpu, cbufs[i]);
    void *gbufs[] = {gx, gids, gprobs, gstats, gdp, gaux, gdl};
    for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++) cu->ops->free(cu, gbufs[i]);
    return 0;
}

/* The dispatch of a capacity-limited layer: expert e owns rows [e * cap,
 * (e + 1) * cap) of the expert-order buffer; tokens fill them in (n, k)
 * order; one past capacity is dropped (slot -1); unfilled rows are padding
 * (rows[] -1). */
static void build_dispatch(const int32_t *ids, int N, int E, int K, int cap, int32_t *rows,
                           int32_t *slot) {
    int *fill = xmalloc((size_t)E * sizeof(int) + 1);
    memset(fill, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < E * cap; i++) rows[i] = -1;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            const int e = ids[(size_t)n * K + k];
            if (fill[e] >= cap) {
                slot[(size_t)n * K + k] = -1;
                continue;
            }
            const int pos = e * cap + fill[e]++;
            rows[pos] = n;
            slot[(size_t)n * K + k] = pos;
        }
    free(fill);
}

static int dispatch_case(Pair *p, TestRng *rng, const MoeShape *s, const int32_t *ids,
                         const float *probs) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const int N = s->R, E = s->E, K = s->K, C = s->C;
    /* An even share: with the router's uneven load, some experts overflow
     * and some are short. */
    const int cap = (N * K + E - 1) / E, P = E * cap;
    const size_t NC = (size_t)N * C, PC = (size_t)P * C, NK = (size_t)N * K;
    int32_t *rows = xmalloc((size_t)P * sizeof(int32_t) + 1), *slot = xmalloc(NK * sizeof(int32_t) + 1);
    build_dispatch(ids, N, E, K, cap, rows, slot);
    size_t dropped = 0, padding = 0;
    for (size_t i = 0; i < NK; i++) dropped += slot[i] < 0;
    for (int i = 0; i < P; i++) padding += rows[i] < 0;
    fprintf(stderr, "    dispatch N=%d C=%d capacity %d: %zu of %zu slots dropped, %zu of %d rows "
                    "padding\n", N, C, cap, dropped, NK, padding, P);
    CHECK(dropped > 0 && padding > 0); /* both paths exercised */
    int32_t *crows = upload(cpu, rows, (size_t)P * 4), *grows = upload(cu, rows, (size_t)P * 4);
    int32_t *cslot = upload(cpu, slot, NK * 4), *gslot = upload(cu, slot, NK * 4);
    float *cprobs = upload(cpu, probs, NK * 4), *gprobs = upload(cu, probs, NK * 4);

    /* gather: a copy, exact. */
    float *tok = rand_bf16(rng, NC, -2, 2);
    float *ctok = upload(cpu, tok, NC * 4), *cg = cpu->ops->alloc(cpu, PC * 4 + 1);
    void *gtok = act_upload(cu, tok, NC), *gg = act_poisoned(cu, PC);
    cpu->ops->moe_gather_rows(cpu, cg, ctok, crows, P, C);
    cu->ops->moe_gather_rows(cu, gg, gtok, grows, P, C);
    CHECK(!compare_rounded("moe_gather_rows", p, gg, cg, PC));

    /* combine forward: overwrite, accumulate, and unweighted (probs NULL). */
    float *eo = rand_bf16(rng, PC, -2, 2), *base = rand_bf16(rng, NC, -1, 1);
    float *ceo = upload(cpu, eo, PC * 4), *cout = cpu->ops->alloc(cpu, NC * 4 + 1);
    void *geo = act_upload(cu, eo, PC), *gout = act_poisoned(cu, NC);
    for (int variant = 0; variant < 3; variant++) {
        static const char *const names[3] = {"moe_combine_forward", "moe_combine_forward accumulate",
                                             "moe_combine_forward probs NULL"};
        const bool acc = variant == 1;
        const float *cw = variant == 2 ? NULL : cprobs, *gw = variant == 2 ? NULL : gprobs;
        if (acc) {
            cpu->ops->copy_to_device(cpu, cout, base, NC * 4);
            void *fresh = act_upload(cu, base, NC);
            cu->ops->copy_device(cu, gout, fresh, backend_act_bytes(cu, NC));
            cu->ops->free(cu, fresh);
        } else {
            poison_f32(cpu, cout, NC), poison_act(cu, gout, NC);
        }
        cpu->ops->moe_combine_forward(cpu, cout, ceo, cw, cslot, N, K, C, acc);
        cu->ops->moe_combine_forward(cu, gout, geo, gw, gslot, N, K, C, acc);
        CHECK(!compare_act(names[variant], p, gout, cout, NC, BF16_TOL));
        if (!acc) {
            void *first = bytes_download(cu, gout, backend_act_bytes(cu, NC));
            poison_act(cu, gout, NC);
            cu->ops->moe_combine_forward(cu, gout, geo, gw, gslot, N, K, C, acc);
            CHECK(!act_bytes_equal(names[variant], cu, first, gout, NC));
            free(first);
        }
    }

    /* combine backward. */
    float *dout = rand_bf16(rng, NC, -1, 1);
    float *cdout = upload(cpu, dout, NC * 4), *cde = f32_poisoned(cpu, PC);
    float *cdp = f32_poisoned(cpu, NK), *gdp = f32_poisoned(cu, NK);
    void *gdout = act_upload(cu, dout, NC), *gde = act_poisoned(cu, PC);
    cpu->ops->moe_combine_backward(cpu, cde, cdp, cdout, ceo, cprobs, cslot, N, K, P, C);
    cu->ops->moe_combine_backward(cu, gde, gdp, gdout, geo, gprobs, gslot, N, K, P, C);
    CHECK(!compare_rounded("moe_combine_backward d_expert_out", p, gde, cde, PC));
    CHECK(!compare_f32_dev("moe_combine_backward dprobs", p, gdp, cdp, NK, F32_TOL));
    void *de1 = bytes_download(cu, gde, backend_act_bytes(cu, PC)), *dp1 = bytes_download(cu, gdp, NK * 4);
    poison_act(cu, gde, PC), poison_f32(cu, gdp, NK);
    cu->ops->moe_combine_backward(cu, gde, gdp, gdout, geo, gprobs, gslot, N, K, P, C);
    CHECK(!act_bytes_equal("moe_combine_backward d_expert_out", cu, de1, gde, PC));
    void *dp2 = bytes_download(cu, gdp, NK * 4);
    CHECK(!same_bytes("moe_combine_backward dprobs", dp1, dp2, NK * 4));

    void *host[] = {rows, slot, tok, eo, base, dout, de1, dp1, dp2};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    void *cbufs[] = {crows, cslot, cprobs, ctok, cg, ceo, cout, cdout, cde, cdp};
    for (size_t i = 0; i < sizeof cbufs / sizeof *cbufs; i++) cpu->ops->free(cpu, cbufs[i]);
    void *gbufs[] = {grows, gslot, gprobs, gtok, gg, geo, gout, gdp, gdout, gde};
    for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++) cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int moe_case(Pair *p, TestRng *rng, const MoeShape *s) {
    fprintf(stderr, "  moe R=%d E=%d K=%d C=%d %s%s\n", s->R, s->E, s->K, s->C,
            s->sigmoid ? "sigmoid" : "softmax", s->pre_softmax ? " pre_softmax" : "");
    int32_t *ids = NULL;
    float *probs = NULL;
    CHECK(!router_case(p, rng, s, &ids, &probs));
    CHECK(!dispatch_case(p, rng, s, ids, probs));
    free(ids), free(probs);
    return 0;
}

static int test_moe(Pair *p, TestRng *rng) {
    /* C not a multiple of 32 (lane tails) and above one block's width;
     * more rows than one block of router threads. */
    const MoeShape shapes[] = {
        {300, 8, 2, 100, false, false},
        {300, 8, 2, 100, false, true},
        {257, 16, 1, 300, true, false},
        {200, 16, 4, 64, true, false},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) CHECK(!moe_case(p, rng, &shapes[i]));
    return 0;
}

/* ---- the experts' grouped GEMM ----
 * Groups as the MoE layer builds them: one per (source rank, local expert),
 * so weights repeat every `experts` groups, row counts uneven with empty
 * groups among them. More than 128 non-empty groups take several grouped
 * calls. */
typedef struct {
    int groups, experts, IC, OC;
    bool in_major;
} GroupedCase;

static int *grouped_rows(TestRng *rng, int groups, int *nonempty) {
    int *row_begin = xmalloc((size_t)(groups + 1) * sizeof(int));
    row_begin[0] = 0;
    *nonempty = 0;
    for (int g = 0; g < groups; g++) {
        /* Every fifth group empty, the others 1..40 rows (not multiples of 8). */
        const int rows = g % 5 == 3 ? 0 : 1 + test_rng_below(rng, 40);
        row_begin[g + 1] = row_begin[g] + rows;
        *nonempty += rows > 0;
    }
    return row_begin;
}

/* Device buffers of one grouped case, on both backends. */
typedef struct {
    float **c_w, **c_dw; /* per expert */
    void **g_w;
    float **g_dw;
    const void **c_wg, **g_wg; /* per group */
    float **c_dwg, **g_dwg;
    float **dw0;
} GroupedWeights;

static void grouped_weights(GroupedWeights *w, Pair *p, TestRng *rng, const GroupedCase *s) {
    const size_t wn = (size_t)s->IC * s->OC, E = (size_t)s->experts, G = (size_t)s->groups;
    w->c_w = xmalloc(E * sizeof(float *)), w->c_dw = xmalloc(E * sizeof(float *));
    w->g_w = xmalloc(E * sizeof(void *)), w->g_dw = xmalloc(E * sizeof(float *));
    w->dw0 = xmalloc(E * sizeof(float *));
    for (size_t e = 0; e < E; e++) {
        float *host = rand_bf16(rng, wn, -1, 1);
        w->c_w[e] = upload(p->cpu, host, wn * 4), w->g_w[e] = act_upload(p->cu, host, wn);
        free(host);
        w->dw0[e] = rand_floats(rng, wn, -1, 1); /* the gradients accumulate into this */
        w->c_dw[e] = upload(p->cpu, w->dw0[e], wn * 4), w->g_dw[e] = upload(p->cu, w->dw0[e], wn * 4);
    }
    w->c_wg = xmalloc(G * sizeof(void *)), w->g_wg = xmalloc(G * sizeof(void *));
    w->c_dwg = xmalloc(G * sizeof(float *)), w->g_dwg = xmalloc(G * sizeof(float *));
    for (size_t g = 0; g < G; g++) {
        const size_t e = g % E;
        w->c_wg[g] = w->c_w[e], w->g_wg[g] = w->g_w[e];
        w->c_dwg[g] = w->c_dw[e], w->g_dwg[g] = w->g_dw[e];
    }
}

static void grouped_weights_free(GroupedWeights *w, Pair *p, int experts) {
    for (int e = 0; e < experts; e++) {
        p->cpu->ops->free(p->cpu, w->c_w[e]), p->cpu->ops->free(p->cpu, w->c_dw[e]);
        p->cu->ops->free(p->cu, w->g_w[e]), p->cu->ops->free(p->cu, w->g_dw[e]);
        free(w->dw0[e]);
    }
    void *h[] = {w->c_w, w->c_dw, w->g_w, w->g_dw, w->dw0, w->c_wg, w->g_wg, w->c_dwg, w->g_dwg};
    for (size_t i = 0; i < sizeof h / sizeof *h; i++) free(h[i]);
}

static int grouped_dweights_equal(Pair *p, const GroupedWeights *w, const GroupedCase *s) {
    const size_t wn = (size_t)s->IC * s->OC;
    for (int e = 0; e < s->experts; e++)
        CHECK(!compare_f32_dev("grouped_matmul_backward dweight", p, w->g_dw[e], w->c_dw[e], wn,
                               F32_TOL));
    return 0;
}

static int grouped_case(Pair *p, TestRng *rng, const GroupedCase *s) {
    Backend *cpu = p->cpu, *cu = p->cu;
    int nonempty = 0;
    int *row_begin = grouped_rows(rng, s->groups, &nonempty);
    const int P = row_begin[s->groups];
    fprintf(stderr, "  grouped matmul %d groups (%d non-empty) over %d experts, %d rows, IC=%d "
                    "OC=%d %s\n", s->groups, nonempty, s->experts, P, s->IC, s->OC,
            s->in_major ? "in-major" : "out-major");
    const size_t xn = (size_t)P * s->IC, yn = (size_t)P * s->OC, wn = (size_t)s->IC * s->OC;
    GroupedWeights w;
    grouped_weights(&w, p, rng, s);
    float *x = rand_bf16(rng, xn, -1, 1), *dout = rand_bf16(rng, yn, -1, 1);
    float *cx = upload(cpu, x, xn * 4), *cdout = upload(cpu, dout, yn * 4);
    float *cy = cpu->ops->alloc(cpu, yn * 4 + 1), *cdx = cpu->ops->alloc(cpu, xn * 4 + 1);
    void *gx = act_upload(cu, x, xn), *gdout = act_upload(cu, dout, yn);
    void *gy = act_poisoned(cu, yn), *gdx = act_poisoned(cu, xn);

    cpu->ops->grouped_matmul_forward(cpu, cy, cx, w.c_wg, row_begin, s->groups, s->IC, s->OC,
                                     s->in_major);
    const uint64_t calls = cu->gemm_calls;
    cu->ops->grouped_matmul_forward(cu, gy, gx, w.g_wg, row_begin, s->groups, s->IC, s->OC,
                                    s->in_major);
    const uint64_t forward_calls = cu->gemm_calls - calls;
    CHECK(!compare_act("grouped_matmul_forward", p, gy, cy, yn, BF16_TOL));
    if (!strcmp(cu->name, "cuda")) {
        /* One cuBLAS call per 128 non-empty groups, not one product each:
         * the grouped path ran, not its one-by-one fallback. */
        const uint64_t grouped = (uint64_t)(nonempty + 127) / 128;
        fprintf(stderr, "    %llu GEMM calls for %d products\n", (unsigned long long)forward_calls,
                nonempty);
        CHECK(forward_calls == grouped);
    }
    void *y1 = bytes_download(cu, gy, backend_act_bytes(cu, yn));
    poison_act(cu, gy, yn);
    cu->ops->grouped_matmul_forward(cu, gy, gx, w.g_wg, row_begin, s->groups, s->IC, s->OC,
                                    s->in_major);
    CHECK(!act_bytes_equal("grouped_matmul_forward", cu, y1, gy, yn));

    cpu->ops->grouped_matmul_backward(cpu, cdx, w.c_dwg, cdout, cx, w.c_wg, row_begin, s->groups,
                                      s->IC, s->OC, s->in_major);
    cu->ops->grouped_matmul_backward(cu, gdx, w.g_dwg, gdout, gx, w.g_wg, row_begin, s->groups,
                                     s->IC, s->OC, s->in_major);
    CHECK(!compare_act("grouped_matmul_backward dinp", p, gdx, cdx, xn, BF16_TOL));
    CHECK(!grouped_dweights_equal(p, &w, s));
    void *dx1 = bytes_download(cu, gdx, backend_act_bytes(cu, xn));
    void *dw1 = bytes_download(cu, w.g_dw[0], wn * 4);

    /* Again from the same starting gradients: bitwise equal. */
    for (int e = 0; e < s->experts; e++) cu->ops->copy_to_device(cu, w.g_dw[e], w.dw0[e], wn * 4);
    poison_act(cu, gdx, xn);
    cu->ops->grouped_matmul_backward(cu, gdx, w.g_dwg, gdout, gx, w.g_wg, row_begin, s->groups,
                                     s->IC, s->OC, s->in_major);
    CHECK(!act_bytes_equal("grouped_matmul_backward dinp", cu, dx1, gdx, xn));
    void *dw2 = bytes_download(cu, w.g_dw[0], wn * 4);
    CHECK(!same_bytes("grouped_matmul_backward dweight", dw1, dw2, wn * 4));

    /* Weight gradients only (the first layer's input needs none). */
    cpu->ops->grouped_matmul_backward(cpu, NULL, w.c_dwg, cdout, cx, w.c_wg, row_begin, s->groups,
                                      s->IC, s->OC, s->in_major);
    cu->ops->grouped_matmul_backward(cu, NULL, w.g_dwg, gdout, gx, w.g_wg, row_begin, s->groups,
                                     s->IC, s->OC, s->in_major);
    CHECK(!grouped_dweights_equal(p, &w, s));

    void *h[] = {row_begin, x, dout, y1, dx1, dw1, dw2};
    for (size_t i = 0; i < sizeof h / sizeof *h; i++) free(h[i]);
    void *cb[] = {cx, cdout, cy, cdx};
    for (size_t i = 0; i < 4; i++) cpu->ops->free(cpu, cb[i]);
    void *gb[] = {gx, gdout, gy, gdx};
    for (size_t i = 0; i < 4; i++) cu->ops->free(cu, gb[i]);
    grouped_weights_free(&w, p, s->experts);
    return 0;
}

static int test_grouped_matmul(Pair *p, TestRng *rng) {
    const GroupedCase cases[] = {
        {12, 4, 64, 96, false}, /* 3 sources x 4 local experts */
        {12, 4, 64, 96, true},
        {200, 8, 32, 48, false}, /* two grouped calls */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) CHECK(!grouped_case(p, rng, &cases[i]));
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0x3e0e5eed};
    int failures = 0;
    RUN(failures, test_moe(&p, &rng));
    RUN(failures, test_grouped_matmul(&p, &rng));
    pair_destroy(&p);
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
