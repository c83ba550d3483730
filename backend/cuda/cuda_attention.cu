// backend/cuda/cuda_attention.cu — causal self-attention with query groups
// (GQA; NG == NH is multi-head attention) and optional attention dropout,
// the plain version: the T x T score matrix of every head is materialised.
//
// qkv rows are [NG, Q + 2, HS] with Q = NH/NG: group g's Q query heads, then
// its key and its value. Query head h = g*Q + j sits at column
// (g*(Q+2) + j)*HS, its key at (g*(Q+2) + Q)*HS and its value one head
// later. For a fixed j, "next group" is a uniform step of (Q+2)*HS columns
// for the query, the key and the value alike, so every product below is a
// cuBLASLt call batched over the NG groups, looped over j (and over the
// sequences b): q, k and v are read in place, and no operand needs a batch
// stride of 0 (a shared key broadcast to the Q heads of its group), which
// not every cuBLASLt algorithm accepts. With Q == 1 this is one call per
// sequence batched over all heads, as before groups existed.
//
// Per (b, j): S = scale Q K^T into fp32 P [B, NH, T, T]; a kernel turns each
// row into the causal softmax P (zero above the diagonal, and before the
// row's document start with --reset-attention-mask); out = Pd V, with
// Pd = P, or P with attention dropout applied. The full T x T products
// include the masked upper triangle (twice the needed FLOPs) and the score
// matrices cost B*NH*T*T memory: a fused flash-style kernel that never stores
// them is the planned next step.
//
// `saved` holds P fp32 [B, NH, T, T] (undropped; the softmax backward needs
// it) and a bf16 copy of Pd (cuBLASLt multiplies bf16 by bf16, and Pd V
// needs Pd in bf16 as flash attention rounds it too) for out = Pd V and
// dV = Pd^T dout. The dropout mask is never stored: backward draws it again
// from its counters (backend.h), which are pure functions of (b, h, i, j).
//
// Column-major views used below (cm): for a row-major [T, HS] block X of
// row stride ld, X_cm = X^T is [HS, T] with the same ld; P and S are stored
// row-major [t][j], i.e. column-major [j, t] with ld T.
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

enum { ROWS_PER_BLOCK = THREADS / 32 };

static size_t probs_count(int B, int T, int NH) { return (size_t)B * NH * (size_t)T * T; }

// Byte offset of the bf16 copy of Pd inside `saved`.
static size_t bf16_probs_offset(int B, int T, int NH) {
    return align256(probs_count(B, T, NH) * sizeof(float));
}

size_t cuda_attention_saved_bytes(Backend *be, int B, int T, int NH, int NG, int HS) {
    (void)be;
    (void)NG;
    (void)HS;
    return bf16_probs_offset(B, T, NH) + probs_count(B, T, NH) * sizeof(bf16);
}

static GemmOperand operand(const void *ptr, cudaDataType_t type, bool transpose, int64_t ld,
                           int64_t batch_stride) {
    GemmOperand o = {ptr, type, transpose, ld, batch_stride};
    return o;
}

// Strides of the layout, in elements.
typedef struct {
    int64_t Q;     // query heads per group
    int64_t R;     // qkv row: NG * (Q + 2) * HS
    int64_t C;     // out row: NH * HS
    int64_t group; // one group to the next inside a qkv row: (Q + 2) * HS
    int64_t TT;
} AttnDims;

static AttnDims attn_dims(int T, int NH, int NG, int HS) {
    AttnDims d;
    d.Q = NH / NG;
    d.group = (d.Q + 2) * HS;
    d.R = (int64_t)NG * d.group;
    d.C = (int64_t)NH * HS;
    d.TT = (int64_t)T * T;
    return d;
}

static void check_shape(const char *what, int B, int T, int NH, int NG, int HS) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "%s: bad shape B=%d T=%d NH=%d NG=%d HS=%d", what, B, T, NH, NG, HS);
}

// What a kernel needs to draw the attention dropout mask: the caller's
// AttentionDropout by value (it is host memory) and whether there is one.
typedef struct {
    AttentionDropout key;
    bool on;
} AttnDrop;

static AttnDrop attn_drop(const AttentionDropout *d) {
    AttnDrop a = AttnDrop();
    if (d) {
        a.key = *d;
        a.on = true;
    }
    return a;
}

// Counter of probability (b, h, i, 0) (backend.h): the row's first element.
static __device__ __forceinline__ uint64_t attn_row_counter(const AttentionDropout &k, int b,
                                                            int h, int i, int T) {
    const uint64_t plane = ((k.sample0 + (uint64_t)b) * k.heads_total + k.head0 + (uint64_t)h) *
                           (uint64_t)T * (uint64_t)T;
    return plane + (uint64_t)i * (uint64_t)T;
}

// The first key row t of sequence b sees: its document's start, or 0.
static __device__ __forceinline__ int first_key(const int32_t *key_start, int b, int t, int T) {
    return key_start ? key_start[(size_t)b * T + t] : 0;
}

// One warp per row r of the [B, NH, T, T] score matrices (b = r / (NH T),
// h = (r / T) mod NH, t = r mod T): the softmax over the keys j0 <= j <= t
// (j0 the document start), written as fp32 P and as bf16 Pd (P dropped and
// scaled when dropout is on), zero elsewhere.
static __global__ void causal_softmax_kernel(float *P, bf16 *Pd_bf16, size_t rows, int T, int NH,
                                             const int32_t *key_start, AttnDrop drop) {
    const size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int t = (int)(r % (size_t)T);
    const int h = (int)((r / (size_t)T) % (size_t)NH), b = (int)(r / ((size_t)T * NH));
    float *p = P + r * T;
    bf16 *pb = Pd_bf16 + r * T;
    const int j0 = first_key(key_start, b, t, T);
    float m = -INFINITY;
    for (int j = j0 + lane; j <= t; j += 32) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = j0 + lane; j <= t; j += 32) sum += expf(p[j] - m);
    const float inv = 1.0f / warp_sum(sum);
    const uint64_t base = drop.on ? attn_row_counter(drop.key, b, h, t, T) : 0;
    for (int j = lane; j < T; j += 32) {
        const bool seen = j >= j0 && j <= t;
        const float v = seen ? expf(p[j] - m) * inv : 0.0f;
        float vd = v;
        if (drop.on && seen)
            vd = dropout_keeps(drop.key.seed, drop.key.stream, base + (uint64_t)j,
                               drop.key.threshold)
                     ? v * drop.key.scale
                     : 0.0f;
        p[j] = v;
        pb[j] = to_bf16(vd);
    }
}

void cuda_attention_forward(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                            int NH, int NG, int HS, const int32_t *key_start,
                            const AttentionDropout *dropout) {
    check_shape("attention_forward", B, T, NH, NG, HS);
    const AttnDims d = attn_dims(T, NH, NG, HS);
    const float scale = 1.0f / sqrtf((float)HS);
    float *P = (float *)saved;
    bf16 *Pd_bf16 = (bf16 *)((char *)saved + bf16_probs_offset(B, T, NH));
    const bf16 *x = (const bf16 *)qkv;
    // Batch entry g of the (b, j) call: query head g*Q + j, whose P plane is
    // Q planes after group g-1's.
    const int64_t plane_step = d.Q * d.TT;
    for (int b = 0; b < B; b++) {
        const bf16 *row0 = x + (size_t)b * T * d.R;
        for (int64_t j = 0; j < d.Q; j++) {
            const bf16 *q = row0 + j * HS, *k = row0 + d.Q * HS;
            float *S = P + ((size_t)b * NH + j) * d.TT;
            // S^T [key, t] = scale K Q^T = scale (K_cm)^T . Q_cm
            cuda_gemm(be, T, T, HS, scale, operand(k, CUDA_R_16BF, true, d.R, d.group),
                      operand(q, CUDA_R_16BF, false, d.R, d.group), 0.0f, S, CUDA_R_32F, T,
                      plane_step, NG);
        }
    }
    const size_t rows = (size_t)B * NH * T;
    causal_softmax_kernel<<<ceil_div_u(rows, ROWS_PER_BLOCK), THREADS, 0, stream_of(be)>>>(
        P, Pd_bf16, rows, T, NH, key_start, attn_drop(dropout));
    CUDA_CHECK_LAUNCH();
    for (int b = 0; b < B; b++) {
        const bf16 *v = x + (size_t)b * T * d.R + (d.Q + 1) * HS;
        for (int64_t j = 0; j < d.Q; j++) {
            // out^T [HS, t] = V^T Pd^T = V_cm . Pd_cm; head h's output
            // columns sit at h*HS in the [T, NH*HS] rows of out.
            cuda_gemm(be, HS, T, T, 1.0f, operand(v, CUDA_R_16BF, false, d.R, d.group),
                      operand(Pd_bf16 + ((size_t)b * NH + j) * d.TT, CUDA_R_16BF, false, T,
                              plane_step),
                      0.0f, (bf16 *)out + (size_t)b * T * d.C + j * HS, CUDA_R_16BF, d.C,
                      d.Q * HS, NG);
        }
    }
}

// One warp per row r = h*T + t of one sequence's [NH, T, T] matrices:
// dP = dPd through the dropout mask (kept: dPd * scale, dropped: 0), then
// dS = P * (dP - sum_j P dP) on the keys j0 <= j <= t the row sees, zero
// elsewhere.
static __global__ void causal_softmax_backward_kernel(bf16 *dS, const float *dPd, const float *P,
                                                      size_t rows, int T, int b,
                                                      const int32_t *key_start, AttnDrop drop) {
    const size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int t = (int)(r % (size_t)T), h = (int)(r / (size_t)T);
    const float *p = P + r * T, *dpd = dPd + r * T;
    const uint64_t base = drop.on ? attn_row_counter(drop.key, b, h, t, T) : 0;
    const int j0 = first_key(key_start, b, t, T);
    // The mask is drawn again in the second pass instead of kept: one
    // Philox block per element costs less than a buffer of T x T flags.
    float dot = 0.0f;
    for (int j = j0 + lane; j <= t; j += 32) {
        float dp = dpd[j];
        if (drop.on)
            dp = dropout_keeps(drop.key.seed, drop.key.stream, base + (uint64_t)j,
                               drop.key.threshold)
                     ? dp * drop.key.scale
                     : 0.0f;
        dot += p[j] * dp;
    }
    dot = warp_sum(dot);
    bf16 *ds = dS + r * T;
    for (int j = lane; j < T; j += 32) {
        float v = 0.0f;
        if (j >= j0 && j <= t) {
            float dp = dpd[j];
            if (drop.on)
                dp = dropout_keeps(drop.key.seed, drop.key.stream, base + (uint64_t)j,
                                   drop.key.threshold)
                         ? dp * drop.key.scale
                         : 0.0f;
            v = p[j] * (dp - dot);
        }
        ds[j] = to_bf16(v);
    }
}

// The fp32 key and value gradients of one sequence, [NG, T, HS] each, into
// their bf16 columns of dqkv's rows (group g's key head at (g*(Q+2) + Q)*HS,
// its value head one HS later).
static __global__ void scatter_kv_grads_kernel(bf16 *dqkv_b, const float *dK, const float *dV,
                                               int T, int NG, int HS, AttnDims d) {
    const size_t n = (size_t)NG * T * HS;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t e = idx % (size_t)HS, t = (idx / HS) % (size_t)T, g = idx / ((size_t)HS * T);
        bf16 *dk = dqkv_b + t * d.R + g * d.group + d.Q * HS + e;
        dk[0] = to_bf16(dK[idx]);
        dk[HS] = to_bf16(dV[idx]);
    }
}

// Scratch of the backward, one sequence at a time: dPd fp32 and dS bf16
// [NH, T, T], and the group sums dK, dV fp32 [NG, T, HS].
typedef struct {
    float *dPd;
    bf16 *dS;
    float *dK, *dV;
} AttnScratch;

static AttnScratch attn_scratch(Backend *be, int T, int NH, int NG, int HS) {
    const size_t planes = (size_t)NH * T * T, kv = (size_t)NG * T * HS;
    const size_t dPd_bytes = align256(planes * sizeof(float));
    const size_t dS_bytes = align256(planes * sizeof(bf16));
    const size_t kv_bytes = align256(kv * sizeof(float));
    char *s = (char *)cuda_scratch(be, dPd_bytes + dS_bytes + 2 * kv_bytes);
    AttnScratch a;
    a.dPd = (float *)s;
    a.dS = (bf16 *)(s + dPd_bytes);
    a.dK = (float *)(s + dPd_bytes + dS_bytes);
    a.dV = (float *)(s + dPd_bytes + dS_bytes + kv_bytes);
    return a;
}

// Sequence b's backward. Per j the GEMMs are batched over the groups; the
// group sums dK, dV add the Q query heads in order j = 0, 1, ... (beta 0,
// then 1) in fp32, so they are deterministic and rounded to bf16 once.
static void attention_backward_sequence(Backend *be, bf16 *dqkv_b, const bf16 *g_b,
                                        const bf16 *x_b, const float *P_b, const bf16 *Pd_b,
                                        const AttnScratch &a, int b, int T, int NH, int NG, int HS,
                                        const AttnDims &d, const int32_t *key_start,
                                        const AttnDrop &drop) {
    const float scale = 1.0f / sqrtf((float)HS);
    const int64_t plane_step = d.Q * d.TT, kv_step = (int64_t)T * HS;
    const bf16 *k = x_b + d.Q * HS, *v = k + HS;
    for (int64_t j = 0; j < d.Q; j++) {
        // dPd = dout V^T:  dPd^T [key, t] = V dout^T = (V_cm)^T . dout_cm
        cuda_gemm(be, T, T, HS, 1.0f, operand(v, CUDA_R_16BF, true, d.R, d.group),
                  operand(g_b + j * HS, CUDA_R_16BF, false, d.C, d.Q * HS), 0.0f,
                  a.dPd + j * d.TT, CUDA_R_32F, T, plane_step, NG);
    }
    const size_t rows = (size_t)NH * T;
    causal_softmax_backward_kernel<<<ceil_div_u(rows, ROWS_PER_BLOCK), THREADS, 0,
                                     stream_of(be)>>>(a.dS, a.dPd, P_b, rows, T, b, key_start,
                                                      drop);
    CUDA_CHECK_LAUNCH();
    for (int64_t j = 0; j < d.Q; j++) {
        const bf16 *q = x_b + j * HS, *dS = a.dS + j * d.TT, *Pd = Pd_b + j * d.TT;
        const float beta = j == 0 ? 0.0f : 1.0f;
        // dQ = scale dS K:  dQ^T [HS, t] = scale K^T dS^T = scale K_cm . dS_cm
        cuda_gemm(be, HS, T, T, scale, operand(k, CUDA_R_16BF, false, d.R, d.group),
                  operand(dS, CUDA_R_16BF, false, T, plane_step), 0.0f, dqkv_b + j * HS,
                  CUDA_R_16BF, d.R, d.group, NG);
        // dK += scale dS^T Q:  dK^T [HS, key] += scale Q^T dS = scale Q_cm . (dS_cm)^T
        cuda_gemm(be, HS, T, T, scale, operand(q, CUDA_R_16BF, false, d.R, d.group),
                  operand(dS, CUDA_R_16BF, true, T, plane_step), beta, a.dK, CUDA_R_32F, HS,
                  kv_step, NG);
        // dV += Pd^T dout:  dV^T [HS, key] += dout^T Pd = dout_cm . (Pd_cm)^T
        cuda_gemm(be, HS, T, T, 1.0f, operand(g_b + j * HS, CUDA_R_16BF, false, d.C, d.Q * HS),
                  operand(Pd, CUDA_R_16BF, true, T, plane_step), beta, a.dV, CUDA_R_32F, HS,
                  kv_step, NG);
    }
    const size_t kv = (size_t)NG * T * HS;
    scatter_kv_grads_kernel<<<grid_for(kv), THREADS, 0, stream_of(be)>>>(dqkv_b, a.dK, a.dV, T,
                                                                         NG, HS, d);
    CUDA_CHECK_LAUNCH();
}

void cuda_attention_backward(Backend *be, void *dqkv, const void *dout, const void *qkv,
                             const void *out, const void *saved, int B, int T, int NH, int NG,
                             int HS, const int32_t *key_start, const AttentionDropout *dropout) {
    (void)out;
    check_shape("attention_backward", B, T, NH, NG, HS);
    const AttnDims d = attn_dims(T, NH, NG, HS);
    const float *P = (const float *)saved;
    const bf16 *Pd_bf16 = (const bf16 *)((const char *)saved + bf16_probs_offset(B, T, NH));
    const AttnScratch a = attn_scratch(be, T, NH, NG, HS);
    const AttnDrop drop = attn_drop(dropout);
    for (int b = 0; b < B; b++) {
        const size_t row0 = (size_t)b * T * d.R, plane0 = (size_t)b * NH * d.TT;
        attention_backward_sequence(be, (bf16 *)dqkv + row0, (const bf16 *)dout + (size_t)b * T * d.C,
                                    (const bf16 *)qkv + row0, P + plane0, Pd_bf16 + plane0, a, b, T,
                                    NH, NG, HS, d, key_start, drop);
    }
}
