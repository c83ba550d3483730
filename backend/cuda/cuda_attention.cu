// backend/cuda/cuda_attention.cu — causal self-attention, the plain version:
// the T x T score matrix of every head is materialised.
//
// Per sequence b, batched over its NH heads, cuBLASLt computes the scores
// S = scale Q K^T into fp32 [NH, T, T]; a kernel turns each row into the
// causal softmax P (zero above the diagonal); out = P V. Q, K and V are read
// in place inside the [B, T, NH, 3, HS] qkv rows: head h's q starts at
// column h*3*HS with row stride 3*C, so "next head" is a batch stride of
// 3*HS elements. The full T x T products include the masked upper triangle
// (twice the needed FLOPs) and the score matrices cost B*NH*T*T memory: a
// fused flash-style kernel that never stores them is the planned next step.
//
// `saved` holds P twice: fp32 [B, NH, T, T] for the softmax backward, and a
// bf16 copy (cuBLASLt multiplies bf16 by bf16, and P V needs P in bf16 as
// flash attention rounds it too) for out = P V and dV = P^T dout.
//
// Column-major views used below (cm): for a row-major [T, HS] block X of
// row stride ld, X_cm = X^T is [HS, T] with the same ld; P and S are stored
// row-major [t][j], i.e. column-major [j, t] with ld T.
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

enum { ROWS_PER_BLOCK = THREADS / 32 };

static size_t probs_count(int B, int T, int NH) { return (size_t)B * NH * (size_t)T * T; }

// Byte offset of the bf16 copy of P inside `saved`.
static size_t bf16_probs_offset(int B, int T, int NH) {
    return align256(probs_count(B, T, NH) * sizeof(float));
}

size_t cuda_attention_saved_bytes(Backend *be, int B, int T, int NH, int HS) {
    (void)be;
    (void)HS;
    return bf16_probs_offset(B, T, NH) + probs_count(B, T, NH) * sizeof(bf16);
}

static GemmOperand operand(const void *ptr, cudaDataType_t type, bool transpose, int64_t ld,
                           int64_t batch_stride) {
    GemmOperand o = {ptr, type, transpose, ld, batch_stride};
    return o;
}

// One warp per row r of the [rows, T] score matrices (t = r mod T): the
// softmax over j <= t, written as fp32 and bf16, zero for j > t.
static __global__ void causal_softmax_kernel(float *P, bf16 *P_bf16, size_t rows, int T) {
    const size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int t = (int)(r % (size_t)T);
    float *p = P + r * T;
    bf16 *pb = P_bf16 + r * T;
    float m = -INFINITY;
    for (int j = lane; j <= t; j += 32) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j <= t; j += 32) sum += expf(p[j] - m);
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < T; j += 32) {
        float v = j <= t ? expf(p[j] - m) * inv : 0.0f;
        p[j] = v;
        pb[j] = to_bf16(v);
    }
}

void cuda_attention_forward(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                            int NH, int HS) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0,
                "attention_forward: bad shape B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    const int64_t C = (int64_t)NH * HS, C3 = 3 * C, TT = (int64_t)T * T;
    const float scale = 1.0f / sqrtf((float)HS);
    float *P = (float *)saved;
    bf16 *P_bf16 = (bf16 *)((char *)saved + bf16_probs_offset(B, T, NH));
    const bf16 *x = (const bf16 *)qkv;
    for (int b = 0; b < B; b++) {
        const bf16 *q = x + (size_t)b * T * C3, *k = q + HS;
        // S^T [j, t] = scale K Q^T = scale (K_cm)^T . Q_cm, per head.
        cuda_gemm(be, T, T, HS, scale, operand(k, CUDA_R_16BF, true, C3, 3 * HS),
                  operand(q, CUDA_R_16BF, false, C3, 3 * HS), 0.0f, P + (size_t)b * NH * TT,
                  CUDA_R_32F, T, TT, NH);
    }
    const size_t rows = (size_t)B * NH * T;
    causal_softmax_kernel<<<ceil_div_u(rows, ROWS_PER_BLOCK), THREADS, 0, stream_of(be)>>>(
        P, P_bf16, rows, T);
    CUDA_CHECK_LAUNCH();
    for (int b = 0; b < B; b++) {
        const bf16 *v = x + (size_t)b * T * C3 + 2 * HS;
        // out^T [HS, t] = V^T P^T = V_cm . P_cm; head h's output columns sit
        // HS apart in the [T, NH*HS] rows of out.
        cuda_gemm(be, HS, T, T, 1.0f, operand(v, CUDA_R_16BF, false, C3, 3 * HS),
                  operand(P_bf16 + (size_t)b * NH * TT, CUDA_R_16BF, false, T, TT), 0.0f,
                  (bf16 *)out + (size_t)b * T * C, CUDA_R_16BF, C, HS, NH);
    }
}

// One warp per row: dS = P * (dP - sum_j P dP) on j <= t, zero above.
static __global__ void causal_softmax_backward_kernel(bf16 *dS, const float *dP, const float *P,
                                                      size_t rows, int T) {
    const size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int t = (int)(r % (size_t)T);
    const float *p = P + r * T, *dp = dP + r * T;
    float dot = 0.0f;
    for (int j = lane; j <= t; j += 32) dot += p[j] * dp[j];
    dot = warp_sum(dot);
    bf16 *ds = dS + r * T;
    for (int j = lane; j < T; j += 32) ds[j] = to_bf16(j <= t ? p[j] * (dp[j] - dot) : 0.0f);
}

void cuda_attention_backward(Backend *be, void *dqkv, const void *dout, const void *qkv,
                             const void *out, const void *saved, int B, int T, int NH, int HS) {
    (void)out;
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0,
                "attention_backward: bad shape B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    const int64_t C = (int64_t)NH * HS, C3 = 3 * C, TT = (int64_t)T * T;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *P = (const float *)saved;
    const bf16 *P_bf16 = (const bf16 *)((const char *)saved + bf16_probs_offset(B, T, NH));
    // Scratch for one sequence: dP fp32 [NH, T, T], dS bf16 [NH, T, T].
    const size_t dP_bytes = align256((size_t)NH * TT * sizeof(float));
    char *scratch = (char *)cuda_scratch(be, dP_bytes + (size_t)NH * TT * sizeof(bf16));
    float *dP = (float *)scratch;
    bf16 *dS = (bf16 *)(scratch + dP_bytes);
    const size_t rows = (size_t)NH * T;
    for (int b = 0; b < B; b++) {
        const bf16 *q = (const bf16 *)qkv + (size_t)b * T * C3, *k = q + HS, *v = q + 2 * HS;
        const bf16 *g = (const bf16 *)dout + (size_t)b * T * C;
        bf16 *dq = (bf16 *)dqkv + (size_t)b * T * C3, *dk = dq + HS, *dv = dq + 2 * HS;
        const float *P_b = P + (size_t)b * NH * TT;
        const bf16 *Pb_b = P_bf16 + (size_t)b * NH * TT;
        // dP = dout V^T:  dP^T [j, t] = V dout^T = (V_cm)^T . dout_cm
        cuda_gemm(be, T, T, HS, 1.0f, operand(v, CUDA_R_16BF, true, C3, 3 * HS),
                  operand(g, CUDA_R_16BF, false, C, HS), 0.0f, dP, CUDA_R_32F, T, TT, NH);
        causal_softmax_backward_kernel<<<ceil_div_u(rows, ROWS_PER_BLOCK), THREADS, 0,
                                         stream_of(be)>>>(dS, dP, P_b, rows, T);
        CUDA_CHECK_LAUNCH();
        // dQ = scale dS K:  dQ^T [HS, t] = scale K^T dS^T = scale K_cm . dS_cm
        cuda_gemm(be, HS, T, T, scale, operand(k, CUDA_R_16BF, false, C3, 3 * HS),
                  operand(dS, CUDA_R_16BF, false, T, TT), 0.0f, dq, CUDA_R_16BF, C3, 3 * HS, NH);
        // dK = scale dS^T Q:  dK^T [HS, j] = scale Q^T dS = scale Q_cm . (dS_cm)^T
        cuda_gemm(be, HS, T, T, scale, operand(q, CUDA_R_16BF, false, C3, 3 * HS),
                  operand(dS, CUDA_R_16BF, true, T, TT), 0.0f, dk, CUDA_R_16BF, C3, 3 * HS, NH);
        // dV = P^T dout:  dV^T [HS, j] = dout^T P = dout_cm . (P_cm)^T
        cuda_gemm(be, HS, T, T, 1.0f, operand(g, CUDA_R_16BF, false, C, HS),
                  operand(Pb_b, CUDA_R_16BF, true, T, TT), 0.0f, dv, CUDA_R_16BF, C3, 3 * HS, NH);
    }
}
