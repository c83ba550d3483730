/* backend/cpu/cpu_moe.c — the mixture-of-experts ops: the router (top-k
 * selection, routing probabilities, load-balancing and z-loss statistics
 * and their gradients) and the row gathers and weighted sums that move
 * tokens into expert order and back.
 *
 * The router works on [R, E] fp32 rows, small next to the experts' matrix
 * products, so it computes in double and rounds once at each store: the
 * probabilities a token gets do not depend on how its row was summed. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"

/* The K best experts of one row of logits, best first; a tie goes to the
 * lower index (a strict comparison, scanning up). A NaN compares false,
 * so the choices stay K distinct experts even for a NaN row (which the
 * NaN guard then reports). */
static void top_k(int32_t *ids, const float *logits, int E, int K) {
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < k; j++) taken |= ids[j] == e;
            if (taken) continue;
            if (best < 0 || logits[e] > logits[best]) best = e;
        }
        ids[k] = best;
    }
}

static double row_max(const float *x, int E) {
    double m = x[0];
    for (int e = 1; e < E; e++)
        if (x[e] > m) m = x[e];
    return m;
}

/* softmax of the row into p (double), returning its log-sum-exp. */
static double row_softmax(double *p, const float *x, int E) {
    const double m = row_max(x, E);
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += p[e] = exp((double)x[e] - m);
    for (int e = 0; e < E; e++) p[e] /= sum;
    return m + log(sum);
}

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The load-balancing scores of a row (see backend.h) into a; p holds the
 * row's softmax. */
static void aux_scores(double *a, const double *p, const float *x, int E, bool sigmoid) {
    if (!sigmoid) {
        memcpy(a, p, (size_t)E * sizeof *a);
        return;
    }
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += a[e] = sigmoid_d(x[e]);
    for (int e = 0; e < E; e++) a[e] /= sum + 1e-20;
}

/* Routing probabilities of the K selected experts of a row. */
static void route_probs(double *q, const float *x, const double *p, const int32_t *ids, int K,
                        bool sigmoid, bool pre_softmax) {
    if (sigmoid) {
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += q[k] = sigmoid_d(x[ids[k]]);
        if (K > 1)
            for (int k = 0; k < K; k++) q[k] /= sum + 1e-20;
        return;
    }
    if (pre_softmax) {
        for (int k = 0; k < K; k++) q[k] = p[ids[k]];
        return;
    }
    const double m = x[ids[0]]; /* the best selected logit */
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += q[k] = exp((double)x[ids[k]] - m);
    for (int k = 0; k < K; k++) q[k] /= sum;
}

void cpu_moe_router_forward(Backend *be, int32_t *expert_ids, float *probs, float *stats,
                            const float *logits, int R, int E, int K, bool sigmoid,
                            bool pre_softmax) {
    double *p = (double *)cpu_scratch(be, (size_t)(3 * E + K) * 2);
    double *a = p + E, *sums = a + E, *q = sums + E;
    double zsum = 0.0;
    memset(sums, 0, (size_t)E * sizeof *sums);
    for (int r = 0; r < R; r++) {
        const float *x = logits + (size_t)r * E;
        int32_t *ids = expert_ids + (size_t)r * K;
        top_k(ids, x, E, K);
        const double lse = row_softmax(p, x, E);
        zsum += lse * lse;
        aux_scores(a, p, x, E, sigmoid);
        for (int e = 0; e < E; e++) sums[e] += a[e];
        route_probs(q, x, p, ids, K, sigmoid, pre_softmax);
        for (int k = 0; k < K; k++) probs[(size_t)r * K + k] = (float)q[k];
    }
    for (int e = 0; e < E; e++) stats[e] = (float)sums[e];
    stats[E] = (float)zsum;
}

/* d(loss)/d(logits) of one row through its routing probabilities, into
 * g (double, overwritten). */
static void probs_backward(double *g, double *q, const float *x, const double *p,
                           const int32_t *ids, const float *dprobs, int E, int K, bool sigmoid,
                           bool pre_softmax) {
    memset(g, 0, (size_t)E * sizeof *g);
    if (sigmoid) {
        double sum = 0.0, dot = 0.0;
        for (int k = 0; k < K; k++) sum += q[k] = sigmoid_d(x[ids[k]]);
        const double S = K > 1 ? sum + 1e-20 : 1.0;
        for (int k = 0; k < K; k++) dot += (double)dprobs[k] * (K > 1 ? q[k] / S : 0.0);
        for (int k = 0; k < K; k++) {
            const double dq = ((double)dprobs[k] - dot) / S;
            g[ids[k]] = dq * q[k] * (1.0 - q[k]);
        }
        return;
    }
    double dot = 0.0;
    route_probs(q, x, p, ids, K, false, pre_softmax);
    for (int k = 0; k < K; k++) dot += (double)dprobs[k] * q[k];
    if (pre_softmax) { /* through softmax over all E: s_e (ds_e - sum_i s_i ds_i) */
        for (int e = 0; e < E; e++) g[e] = -p[e] * dot;
        for (int k = 0; k < K; k++) g[ids[k]] += p[ids[k]] * (double)dprobs[k];
        return;
    }
    for (int k = 0; k < K; k++) g[ids[k]] = q[k] * ((double)dprobs[k] - dot);
}

/* Adds the gradient through the load-balancing scores (gradient aux_grad
 * on each) into g. */
static void aux_backward(double *g, const float *x, const double *p, const float *aux_grad, int E,
                         bool sigmoid, double *a) {
    aux_scores(a, p, x, E, sigmoid);
    double dot = 0.0;
    for (int e = 0; e < E; e++) dot += (double)aux_grad[e] * a[e];
    if (!sigmoid) {
        for (int e = 0; e < E; e++) g[e] += a[e] * ((double)aux_grad[e] - dot);
        return;
    }
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += sigmoid_d(x[e]);
    for (int e = 0; e < E; e++) {
        const double s = sigmoid_d(x[e]);
        g[e] += ((double)aux_grad[e] - dot) / (sum + 1e-20) * s * (1.0 - s);
    }
}

void cpu_moe_router_backward(Backend *be, float *dlogits, const float *dprobs, const float *logits,
                             const int32_t *expert_ids, const float *probs, const float *aux_grad,
                             float z_grad, int R, int E, int K, bool sigmoid, bool pre_softmax) {
    (void)probs; /* recomputed in double from the logits */
    double *p = (double *)cpu_scratch(be, (size_t)(3 * E + K) * 2);
    double *g = p + E, *a = g + E, *q = a + E;
    for (int r = 0; r < R; r++) {
        const float *x = logits + (size_t)r * E;
        const double lse = row_softmax(p, x, E);
        probs_backward(g, q, x, p, expert_ids + (size_t)r * K, dprobs + (size_t)r * K, E, K, sigmoid,
                       pre_softmax);
        if (aux_grad) aux_backward(g, x, p, aux_grad, E, sigmoid, a);
        /* d(lse^2)/dx_e = 2 lse softmax_e */
        if (z_grad != 0.0f)
            for (int e = 0; e < E; e++) g[e] += (double)z_grad * 2.0 * lse * p[e];
        for (int e = 0; e < E; e++) dlogits[(size_t)r * E + e] = (float)g[e];
    }
}

void cpu_moe_gather_rows(Backend *be, void *out_, const void *inp_, const int32_t *rows, int P,
                         int C) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
    for (int p = 0; p < P; p++) {
        float *o = out + (size_t)p * C;
        if (rows[p] < 0)
            memset(o, 0, (size_t)C * sizeof *o);
        else
            memcpy(o, inp + (size_t)rows[p] * C, (size_t)C * sizeof *o);
    }
}

void cpu_moe_combine_forward(Backend *be, void *out_, const void *expert_out_, const float *probs,
                             const int32_t *slot, int N, int K, int C, bool accumulate) {
    (void)be;
    float *out = out_;
    const float *eo = expert_out_;
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        if (!accumulate) memset(o, 0, (size_t)C * sizeof *o);
        for (int k = 0; k < K; k++) {
            const int32_t s = slot[(size_t)n * K + k];
            if (s < 0) continue;
            const float w = probs ? probs[(size_t)n * K + k] : 1.0f;
            const float *y = eo + (size_t)s * C;
            for (int c = 0; c < C; c++) o[c] += w * y[c];
        }
    }
}

void cpu_moe_combine_backward(Backend *be, void *d_expert_out_, float *dprobs, const void *dout_,
                              const void *expert_out_, const float *probs, const int32_t *slot,
                              int N, int K, int P, int C) {
    (void)be;
    float *de = d_expert_out_;
    const float *dout = dout_, *eo = expert_out_;
    memset(de, 0, (size_t)P * C * sizeof *de);
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C;
        for (int k = 0; k < K; k++) {
            const size_t nk = (size_t)n * K + k;
            const int32_t s = slot[nk];
            if (s < 0) {
                dprobs[nk] = 0.0f;
                continue;
            }
            const float w = probs[nk], *y = eo + (size_t)s * C;
            float *dy = de + (size_t)s * C;
            double dot = 0.0;
            for (int c = 0; c < C; c++) {
                dy[c] = w * d[c];
                dot += (double)d[c] * y[c];
            }
            dprobs[nk] = (float)dot;
        }
    }
}

/* The grouped GEMM is a loop of the plain products here: on a CPU one
 * product per group already keeps every core busy. */
void cpu_grouped_matmul_forward(Backend *be, void *out_, const void *inp_,
                                const void *const *weights, const int *row_begin, int groups,
                                int IC, int OC, bool weight_in_major) {
    float *out = out_;
    const float *inp = inp_;
    for (int g = 0; g < groups; g++) {
        const int first = row_begin[g], rows = row_begin[g + 1] - first;
        if (rows > 0)
            cpu_matmul_forward(be, out + (size_t)first * OC, inp + (size_t)first * IC, weights[g],
                               NULL, rows, IC, OC, weight_in_major);
    }
}

void cpu_grouped_matmul_backward(Backend *be, void *dinp_, float *const *dweights,
                                 const void *dout_, const void *inp_, const void *const *weights,
                                 const int *row_begin, int groups, int IC, int OC,
                                 bool weight_in_major) {
    float *dinp = dinp_;
    const float *dout = dout_, *inp = inp_;
    for (int g = 0; g < groups; g++) {
        const int first = row_begin[g], rows = row_begin[g + 1] - first;
        if (rows > 0)
            cpu_matmul_backward(be, dinp ? dinp + (size_t)first * IC : NULL,
                                dweights ? dweights[g] : NULL, NULL, dout + (size_t)first * OC,
                                inp + (size_t)first * IC, weights[g], rows, IC, OC,
                                weight_in_major);
    }
}
