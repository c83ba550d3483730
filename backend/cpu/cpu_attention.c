/* backend/cpu/cpu_attention.c — causal self-attention of the fp32 reference
 * backend.
 *
 * Per (batch, head) the products QK^T, PV and their gradients are sgemm
 * calls that read q, k and v in place inside the [B, T, NH, 3, HS] qkv rows
 * (leading dimension 3*NH*HS), so nothing is repacked. The sequence is cut
 * into blocks of ATTN_BLOCK rows and each block only multiplies against the
 * keys it can see, which skips the masked upper triangle except inside the
 * diagonal blocks (about half the FLOPs of a full T x T product).
 *
 * `saved` holds the softmax probabilities P [B, NH, T, T], zero above the
 * diagonal. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"

enum { ATTN_BLOCK = 64 };

/* End (exclusive) of the causal block that contains row t. */
static int block_end(int t, int T) {
    int end = (t / ATTN_BLOCK + 1) * ATTN_BLOCK;
    return end < T ? end : T;
}

size_t cpu_attention_saved_bytes(Backend *be, int B, int T, int NH, int HS) {
    (void)be;
    (void)HS;
    return (size_t)B * NH * T * T * sizeof(float);
}

/* Rows t of P hold scale * q_t . k_j for j < block_end(t); turns each into
 * the causal softmax over j <= t and zeroes the rest of the row. */
static void causal_softmax_rows(float *P, int T) {
    for (int t = 0; t < T; t++) {
        float *p = P + (size_t)t * T;
        float maxval = cpu_max_f32(p, t + 1);
        /* Separate loops: the exp loop vectorises, the ordered sum cannot. */
        for (int j = 0; j <= t; j++) p[j] = cpu_expf(p[j] - maxval);
        float sum = 0.0f;
        for (int j = 0; j <= t; j++) sum += p[j];
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++) p[j] *= inv;
        memset(p + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
    }
}

void cpu_attention_forward(Backend *be, void *out_, void *saved, const void *qkv_, int B, int T,
                           int NH, int HS) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0,
                "attention_forward: bad shape B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    float *out = out_;
    const float *qkv = qkv_;
    const int C = NH * HS, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * 3 * HS;
            const float *k = q + HS, *v = q + 2 * HS;
            float *P = (float *)saved + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * C + (size_t)h * HS;
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasTrans, r1 - r0, r1, HS, scale, q + (size_t)r0 * C3,
                          C3, k, C3, 0.0f, P + (size_t)r0 * T, T);
            }
            causal_softmax_rows(P, T);
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasNoTrans, r1 - r0, HS, r1, 1.0f, P + (size_t)r0 * T,
                          T, v, C3, 0.0f, o + (size_t)r0 * C, C);
            }
        }
    }
}

/* dS = P * (dP - rowsum(P * dP)) on the causal part of each row; zero from
 * the diagonal to the end of the row's block, which the block products read. */
static void softmax_backward_rows(float *dS, const float *P, int T) {
    for (int t = 0; t < T; t++) {
        float *d = dS + (size_t)t * T;
        const float *p = P + (size_t)t * T;
        float dot = 0.0f;
        for (int j = 0; j <= t; j++) dot += p[j] * d[j];
        for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
        memset(d + t + 1, 0, (size_t)(block_end(t, T) - t - 1) * sizeof(float));
    }
}

void cpu_attention_backward(Backend *be, void *dqkv_, const void *dout_, const void *qkv_,
                            const void *out, const void *saved, int B, int T, int NH, int HS) {
    (void)out;
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0,
                "attention_backward: bad shape B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_;
    const int C = NH * HS, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    float *dS = cpu_scratch(be, (size_t)T * T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t qkv_offset = (size_t)b * T * C3 + (size_t)h * 3 * HS;
            const float *q = qkv + qkv_offset, *k = q + HS, *v = q + 2 * HS;
            float *dq = dqkv + qkv_offset, *dk = dq + HS, *dv = dq + 2 * HS;
            const float *P = (const float *)saved + ((size_t)b * NH + h) * T * T;
            const float *g = dout + (size_t)b * T * C + (size_t)h * HS;
            /* dP = dout V^T, then dS from the softmax Jacobian. */
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasTrans, r1 - r0, r1, HS, 1.0f, g + (size_t)r0 * C,
                          C, v, C3, 0.0f, dS + (size_t)r0 * T, T);
            }
            softmax_backward_rows(dS, P, T);
            /* dQ rows [r0, r1) see keys [0, r1): dQ = scale dS K. */
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasNoTrans, r1 - r0, HS, r1, scale,
                          dS + (size_t)r0 * T, T, k, C3, 0.0f, dq + (size_t)r0 * C3, C3);
            }
            /* Keys/values [c0, c1) are seen by queries [c0, T):
             * dK = scale dS^T Q, dV = P^T dout. */
            for (int c0 = 0; c0 < T; c0 += ATTN_BLOCK) {
                int c1 = block_end(c0, T);
                cpu_sgemm(be, CblasTrans, CblasNoTrans, c1 - c0, HS, T - c0, scale,
                          dS + (size_t)c0 * T + c0, T, q + (size_t)c0 * C3, C3, 0.0f,
                          dk + (size_t)c0 * C3, C3);
                cpu_sgemm(be, CblasTrans, CblasNoTrans, c1 - c0, HS, T - c0, 1.0f,
                          P + (size_t)c0 * T + c0, T, g + (size_t)c0 * C, C, 0.0f,
                          dv + (size_t)c0 * C3, C3);
            }
        }
    }
}
