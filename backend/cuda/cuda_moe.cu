// backend/cuda/cuda_moe.cu — the mixture-of-experts ops: the router (top-k
// selection, routing probabilities, load-balancing and z-loss statistics and
// their gradients) and the row gathers and weighted sums that move tokens
// into expert order and back.
//
// Router: one thread per row of [R, E] fp32 logits (E is small next to the
// hidden size). It follows the CPU backend (cpu_moe.c) expression for
// expression, in double, with the same top-k scan (a strict comparison,
// scanning up: a tie goes to the lower index) and the same summation order
// within a row, and rounds once at each fp32 store. The logits are fp32 on
// both backends, so every routing decision is the CPU's exactly; the
// probabilities differ from the CPU's at most by the last bit of a double
// exp. The load-balancing statistics are sums over rows: the row kernel
// writes each row's scores to scratch and a second kernel, one thread per
// column, sums them in row order, so the result depends on the shapes
// alone (and is the CPU's order).
//
// Gather and combine: bf16 rows, fp32 accumulation in the slot order k =
// 0..K-1, one rounding at the store. Combine backward writes each expert
// row from the one slot that names it (the buffer zeroed first, so rows
// named by no slot stay zero) and reduces dprobs per (n, k) with the fixed
// block tree of cuda_internal.cuh. No atomics anywhere.
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

// ---- router: per-row helpers (double, the CPU's order) ---------------------------

static __device__ __forceinline__ double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

// The K best experts of a row, best first, into ids (global memory, read
// back while scanning). The CPU's scan: a NaN in the first untaken place is
// kept only until a number compares greater, exactly as there.
static __device__ void row_top_k(int32_t *ids, const float *x, int E, int K) {
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < k; j++) taken |= ids[j] == e;
            if (taken) continue;
            if (best < 0 || x[e] > x[best]) best = e;
        }
        ids[k] = best;
    }
}

// The row's max (the CPU's comparison) and sum of exp(x - max), in index order.
static __device__ void row_softmax_sums(const float *x, int E, double *max_out, double *sum_out) {
    double m = x[0];
    for (int e = 1; e < E; e++)
        if (x[e] > m) m = x[e];
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += exp((double)x[e] - m);
    *max_out = m;
    *sum_out = sum;
}

static __device__ double row_sigmoid_sum(const float *x, int E) {
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += sigmoid_d(x[e]);
    return sum;
}

// Slot k of the row whose expert is e, or -1.
static __device__ __forceinline__ int slot_of(const int32_t *ids, int K, int e) {
    for (int k = 0; k < K; k++)
        if (ids[k] == e) return k;
    return -1;
}

// Routing probability q[k] of a row (the CPU's route_probs). For softmax
// without pre_softmax, `sel_sum` is the sum of exp(x[ids[j]] - x[ids[0]])
// over the K selected; for sigmoid, the sum of their sigmoids.
static __device__ __forceinline__ double route_prob(const float *x, const int32_t *ids, int k,
                                                    int K, bool sigmoid, bool pre_softmax,
                                                    double m, double sum, double sel_sum) {
    const double xe = x[ids[k]];
    if (sigmoid) {
        const double q = sigmoid_d(xe);
        return K > 1 ? q / (sel_sum + 1e-20) : q;
    }
    if (pre_softmax) return exp(xe - m) / sum;
    return exp(xe - (double)x[ids[0]]) / sel_sum;
}

static __device__ double selected_sum(const float *x, const int32_t *ids, int K, bool sigmoid) {
    double s = 0.0;
    if (sigmoid) {
        for (int k = 0; k < K; k++) s += sigmoid_d(x[ids[k]]);
    } else {
        const double m = x[ids[0]];
        for (int k = 0; k < K; k++) s += exp((double)x[ids[k]] - m);
    }
    return s;
}

// ---- router forward ---------------------------------------------------------------

// Row r: its experts and probabilities, and its scores into partial row r
// ([R, E + 1] double: the E load-balancing scores, then lse^2).
static __global__ void router_forward_kernel(int32_t *expert_ids, float *probs, double *partial,
                                             const float *logits, int R, int E, int K,
                                             bool sigmoid, bool pre_softmax) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R) return;
    const float *x = logits + (size_t)r * E;
    int32_t *ids = expert_ids + (size_t)r * K;
    double *part = partial + (size_t)r * (E + 1);
    row_top_k(ids, x, E, K);
    double m, sum;
    row_softmax_sums(x, E, &m, &sum);
    const double lse = m + log(sum);
    part[E] = lse * lse;
    if (sigmoid) {
        const double ssum = row_sigmoid_sum(x, E);
        for (int e = 0; e < E; e++) part[e] = sigmoid_d(x[e]) / (ssum + 1e-20);
    } else {
        for (int e = 0; e < E; e++) part[e] = exp((double)x[e] - m) / sum;
    }
    const double sel = (sigmoid || !pre_softmax) ? selected_sum(x, ids, K, sigmoid) : 0.0;
    for (int k = 0; k < K; k++)
        probs[(size_t)r * K + k] =
            (float)route_prob(x, ids, k, K, sigmoid, pre_softmax, m, sum, sel);
}

// stats[c] = sum over rows, in row order, of partial[r, c] (c <= E).
static __global__ void router_stats_kernel(float *stats, const double *partial, int R, int E) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c > E) return;
    double s = 0.0;
    for (int r = 0; r < R; r++) s += partial[(size_t)r * (E + 1) + c];
    stats[c] = (float)s;
}

void cuda_moe_router_forward(Backend *be, int32_t *expert_ids, float *probs, float *stats,
                             const float *logits, int R, int E, int K, bool sigmoid,
                             bool pre_softmax) {
    GPT3D_CHECK(R >= 0 && E > 0 && K > 0 && K <= E, "moe_router_forward: bad shape R=%d E=%d K=%d",
                R, E, K);
    cudaStream_t s = stream_of(be);
    if (R == 0) {
        CUDA_CHECK(cudaMemsetAsync(stats, 0, (size_t)(E + 1) * sizeof(float), s));
        return;
    }
    double *partial = (double *)cuda_scratch(be, (size_t)R * (E + 1) * sizeof(double));
    router_forward_kernel<<<ceil_div_u((size_t)R, THREADS), THREADS, 0, s>>>(
        expert_ids, probs, partial, logits, R, E, K, sigmoid, pre_softmax);
    CUDA_CHECK_LAUNCH();
    router_stats_kernel<<<ceil_div_u((size_t)E + 1, THREADS), THREADS, 0, s>>>(stats, partial, R,
                                                                               E);
    CUDA_CHECK_LAUNCH();
}

// ---- router backward ----------------------------------------------------------------
// Each dlogits element is the CPU's g[e], built from the same terms in the
// same order: the probabilities' term (assigned), then the load-balancing
// term, then the z-loss term (each added).

static __global__ void router_backward_kernel(float *dlogits, const float *dprobs,
                                              const float *logits, const int32_t *expert_ids,
                                              const float *aux_grad, float z_grad, int R, int E,
                                              int K, bool sigmoid, bool pre_softmax) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R) return;
    const float *x = logits + (size_t)r * E;
    const int32_t *ids = expert_ids + (size_t)r * K;
    const float *dp = dprobs + (size_t)r * K;
    float *g_out = dlogits + (size_t)r * E;
    double m, sum;
    row_softmax_sums(x, E, &m, &sum);
    const double lse = m + log(sum);

    // The probabilities' dot(dprobs, q) (sigmoid: over q / S when K > 1).
    double sel = 0.0, S = 1.0, dot = 0.0;
    if (sigmoid) {
        sel = selected_sum(x, ids, K, true);
        S = K > 1 ? sel + 1e-20 : 1.0;
        for (int k = 0; k < K; k++)
            dot += (double)dp[k] * (K > 1 ? sigmoid_d(x[ids[k]]) / S : 0.0);
    } else {
        if (!pre_softmax) sel = selected_sum(x, ids, K, false);
        for (int k = 0; k < K; k++)
            dot += (double)dp[k] * route_prob(x, ids, k, K, false, pre_softmax, m, sum, sel);
    }

    // The load-balancing scores' dot(aux_grad, a).
    double ssum = 0.0, adot = 0.0;
    if (aux_grad) {
        if (sigmoid) ssum = row_sigmoid_sum(x, E);
        for (int e = 0; e < E; e++) {
            const double a =
                sigmoid ? sigmoid_d(x[e]) / (ssum + 1e-20) : exp((double)x[e] - m) / sum;
            adot += (double)aux_grad[e] * a;
        }
    }

    for (int e = 0; e < E; e++) {
        const double p = exp((double)x[e] - m) / sum;
        const int k = slot_of(ids, K, e);
        double g = 0.0;
        if (sigmoid) {
            if (k >= 0) {
                const double q = sigmoid_d(x[e]);
                g = ((double)dp[k] - dot) / S * q * (1.0 - q);
            }
        } else if (pre_softmax) {
            g = -p * dot;
            if (k >= 0) g += p * (double)dp[k];
        } else if (k >= 0) {
            g = route_prob(x, ids, k, K, false, false, m, sum, sel) * ((double)dp[k] - dot);
        }
        if (aux_grad) {
            if (sigmoid) {
                const double s = sigmoid_d(x[e]);
                g += ((double)aux_grad[e] - adot) / (ssum + 1e-20) * s * (1.0 - s);
            } else {
                g += p * ((double)aux_grad[e] - adot);
            }
        }
        if (z_grad != 0.0f) g += (double)z_grad * 2.0 * lse * p;
        g_out[e] = (float)g;
    }
}

void cuda_moe_router_backward(Backend *be, float *dlogits, const float *dprobs,
                              const float *logits, const int32_t *expert_ids, const float *probs,
                              const float *aux_grad, float z_grad, int R, int E, int K,
                              bool sigmoid, bool pre_softmax) {
    (void)probs; // recomputed in double from the logits, as on the CPU
    GPT3D_CHECK(R >= 0 && E > 0 && K > 0 && K <= E,
                "moe_router_backward: bad shape R=%d E=%d K=%d", R, E, K);
    if (R == 0) return;
    router_backward_kernel<<<ceil_div_u((size_t)R, THREADS), THREADS, 0, stream_of(be)>>>(
        dlogits, dprobs, logits, expert_ids, aux_grad, z_grad, R, E, K, sigmoid, pre_softmax);
    CUDA_CHECK_LAUNCH();
}

// ---- gather ---------------------------------------------------------------------------

static __global__ void gather_rows_kernel(bf16 *out, const bf16 *inp, const int32_t *rows,
                                          size_t n, int C) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t p = i / (size_t)C, c = i % (size_t)C;
        const int32_t src = rows[p];
        out[i] = src < 0 ? to_bf16(0.0f) : inp[(size_t)src * C + c];
    }
}

void cuda_moe_gather_rows(Backend *be, void *out, const void *inp, const int32_t *rows, int P,
                          int C) {
    GPT3D_CHECK(P >= 0 && C > 0, "moe_gather_rows: bad shape P=%d C=%d", P, C);
    const size_t n = (size_t)P * (size_t)C;
    if (!n) return;
    gather_rows_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out, (const bf16 *)inp,
                                                                    rows, n, C);
    CUDA_CHECK_LAUNCH();
}

// ---- combine ----------------------------------------------------------------------------

// One block per token row n; each thread owns columns c, c + blockDim.x, ...
// and sums its slots in order k = 0..K-1 in fp32.
static __global__ void combine_forward_kernel(bf16 *out, const bf16 *expert_out,
                                              const float *probs, const int32_t *slot, int K,
                                              int C, bool accumulate) {
    const size_t n = blockIdx.x;
    bf16 *o = out + n * C;
    const int32_t *sl = slot + n * K;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = accumulate ? to_f32(o[c]) : 0.0f;
        for (int k = 0; k < K; k++) {
            const int32_t s = sl[k];
            if (s < 0) continue;
            const float w = probs ? probs[n * K + k] : 1.0f;
            acc += w * to_f32(expert_out[(size_t)s * C + c]);
        }
        o[c] = to_bf16(acc);
    }
}

void cuda_moe_combine_forward(Backend *be, void *out, const void *expert_out, const float *probs,
                              const int32_t *slot, int N, int K, int C, bool accumulate) {
    GPT3D_CHECK(N >= 0 && K > 0 && C > 0, "moe_combine_forward: bad shape N=%d K=%d C=%d", N, K,
                C);
    if (N == 0) return;
    combine_forward_kernel<<<(unsigned)N, THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, (const bf16 *)expert_out, probs, slot, K, C, accumulate);
    CUDA_CHECK_LAUNCH();
}

// One block per (n, k): expert row slot[n, k] = w * dout row n, and dprobs
// [n, k] = dot(dout row n, expert_out row slot[n, k]) through the block's
// fixed reduction tree. The slot test is uniform over the block, so the
// early exit skips the reduction for the whole block at once.
static __global__ void combine_backward_kernel(bf16 *d_expert_out, float *dprobs, const bf16 *dout,
                                               const bf16 *expert_out, const float *probs,
                                               const int32_t *slot, int K, int C) {
    __shared__ float shared[32];
    const size_t nk = blockIdx.x, n = nk / (size_t)K;
    const int32_t s = slot[nk];
    if (s < 0) {
        if (threadIdx.x == 0) dprobs[nk] = 0.0f;
        return;
    }
    const float w = probs ? probs[nk] : 1.0f;
    const bf16 *d = dout + n * C, *y = expert_out + (size_t)s * C;
    bf16 *dy = d_expert_out + (size_t)s * C;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float dc = to_f32(d[c]);
        dy[c] = to_bf16(w * dc);
        dot += dc * to_f32(y[c]);
    }
    dot = block_reduce(dot, shared, 0.0f, WarpSumF());
    if (threadIdx.x == 0) dprobs[nk] = dot;
}

void cuda_moe_combine_backward(Backend *be, void *d_expert_out, float *dprobs, const void *dout,
                               const void *expert_out, const float *probs, const int32_t *slot,
                               int N, int K, int P, int C) {
    GPT3D_CHECK(N >= 0 && K > 0 && P >= 0 && C > 0,
                "moe_combine_backward: bad shape N=%d K=%d P=%d C=%d", N, K, P, C);
    cudaStream_t st = stream_of(be);
    const size_t de_bytes = (size_t)P * (size_t)C * sizeof(bf16);
    if (de_bytes) CUDA_CHECK(cudaMemsetAsync(d_expert_out, 0, de_bytes, st));
    const size_t pairs = (size_t)N * (size_t)K;
    if (!pairs) return;
    GPT3D_CHECK(pairs <= 0x7fffffffu, "moe_combine_backward: %zu (n, k) pairs exceed a grid",
                pairs);
    combine_backward_kernel<<<(unsigned)pairs, THREADS, 0, st>>>(
        (bf16 *)d_expert_out, dprobs, (const bf16 *)dout, (const bf16 *)expert_out, probs, slot, K,
        C);
    CUDA_CHECK_LAUNCH();
}
