/* backend/cpu/cpu_attention.c — causal self-attention with query groups, of
 * the fp32 reference backend.
 *
 * Per (batch, query head) the products QK^T, PV and their gradients are
 * sgemm calls that read q, k and v in place inside the qkv rows (group g:
 * its query heads, then its key and value head; leading dimension the whole
 * row), so nothing is repacked. The sequence is cut into blocks of
 * ATTN_BLOCK rows and each block only multiplies against the keys it can
 * see, which skips the masked upper triangle except inside the diagonal
 * blocks (about half the FLOPs of a full T x T product). The key and value
 * gradients of a group sum over its query heads in head order, so the
 * result does not depend on anything but the inputs.
 *
 * `saved` holds the softmax probabilities P [B, NH, T, T], zero above the
 * diagonal and before the row's document start (key_start), before dropout: with attention dropout the dropped matrix is
 * regenerated from its counters (backend.h) where it is needed. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"
#include "core/rng.h"

enum { ATTN_BLOCK = 64 };

/* End (exclusive) of the causal block that contains row t. */
static int block_end(int t, int T) {
    int end = (t / ATTN_BLOCK + 1) * ATTN_BLOCK;
    return end < T ? end : T;
}

size_t cpu_attention_saved_bytes(Backend *be, int B, int T, int NH, int NG, int HS) {
    (void)be;
    (void)NG;
    (void)HS;
    return (size_t)B * NH * T * T * sizeof(float);
}

/* Where query head h of a [B, T, NG, NH/NG + 2, HS] qkv row finds its
 * query, key and value, and the row's length. */
typedef struct {
    size_t row;      /* elements per (b, t) row */
    size_t q, k, v;  /* offsets of the head's q, its group's k and v */
    bool first_in_group; /* the head that starts its group's dk/dv sums */
} HeadView;

static HeadView head_view(int h, int NH, int NG, int HS) {
    const int per_group = NH / NG, g = h / per_group, j = h % per_group;
    const size_t group = (size_t)g * (per_group + 2) * HS;
    HeadView hv = {
        .row = (size_t)NG * (per_group + 2) * HS,
        .q = group + (size_t)j * HS,
        .k = group + (size_t)per_group * HS,
        .v = group + (size_t)(per_group + 1) * HS,
        .first_in_group = j == 0,
    };
    return hv;
}

/* Pd = P with attention dropout applied: (b, h)'s kept probabilities
 * scaled, the rest zero; only the causal part j <= i is drawn. */
static void dropped_probs(float *Pd, const float *P, int T, int b, int h,
                          const AttentionDropout *d) {
    const uint64_t plane = ((d->sample0 + (uint64_t)b) * d->heads_total + d->head0 + (uint64_t)h) *
                           (uint64_t)T * (uint64_t)T;
    for (int i = 0; i < T; i++) {
        const float *p = P + (size_t)i * T;
        float *o = Pd + (size_t)i * T;
        const uint64_t base = plane + (uint64_t)i * (uint64_t)T;
        for (int j = 0; j <= i; j++) {
            bool keep = rng_block(d->seed, d->stream, base + (uint64_t)j).v[0] >= d->threshold;
            o[j] = keep ? p[j] * d->scale : 0.0f;
        }
        memset(o + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
    }
}

/* First key row t of a sequence attends to: its document's start, or 0. */
static int first_key(const int32_t *key_start, int t) { return key_start ? key_start[t] : 0; }

/* Rows t of P hold scale * q_t . k_j for j < block_end(t); turns each into
 * the softmax over the keys it sees (j0 <= j <= t, j0 its document's start)
 * and zeroes the rest of the row, so the products with V and the backward
 * need no mask of their own. */
static void causal_softmax_rows(float *P, int T, const int32_t *key_start) {
    for (int t = 0; t < T; t++) {
        float *p = P + (size_t)t * T;
        const int j0 = first_key(key_start, t);
        GPT3D_CHECK(j0 >= 0 && j0 <= t, "attention: key_start %d of row %d outside [0, %d]", j0, t, t);
        float maxval = cpu_max_f32(p + j0, t + 1 - j0);
        /* Separate loops: the exp loop vectorises, the ordered sum cannot. */
        for (int j = j0; j <= t; j++) p[j] = cpu_expf(p[j] - maxval);
        float sum = 0.0f;
        for (int j = j0; j <= t; j++) sum += p[j];
        float inv = 1.0f / sum;
        for (int j = j0; j <= t; j++) p[j] *= inv;
        memset(p, 0, (size_t)j0 * sizeof(float));
        memset(p + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
    }
}

void cpu_attention_forward(Backend *be, void *out_, void *saved, const void *qkv_, int B, int T,
                           int NH, int NG, int HS, const int32_t *key_start,
                           const AttentionDropout *dropout) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "attention_forward: bad shape B=%d T=%d NH=%d NG=%d HS=%d", B, T, NH, NG, HS);
    float *out = out_;
    const float *qkv = qkv_;
    const int C = NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float *Pd = dropout ? cpu_scratch(be, (size_t)T * T) : NULL;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const int ld = (int)hv.row;
            const float *row0 = qkv + (size_t)b * T * hv.row;
            const float *q = row0 + hv.q, *k = row0 + hv.k, *v = row0 + hv.v;
            float *P = (float *)saved + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * C + (size_t)h * HS;
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasTrans, r1 - r0, r1, HS, scale, q + (size_t)r0 * ld,
                          ld, k, ld, 0.0f, P + (size_t)r0 * T, T);
            }
            causal_softmax_rows(P, T, key_start ? key_start + (size_t)b * T : NULL);
            const float *PV = P;
            if (dropout) {
                dropped_probs(Pd, P, T, b, h, dropout);
                PV = Pd;
            }
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasNoTrans, r1 - r0, HS, r1, 1.0f,
                          PV + (size_t)r0 * T, T, v, ld, 0.0f, o + (size_t)r0 * C, C);
            }
        }
    }
}

/* dP = dPd through the dropout mask, read back from Pd instead of drawn
 * again: where P is nonzero, Pd is nonzero exactly where kept; where P is
 * zero either choice gives the same result, since the softmax backward
 * multiplies by P. */
static void dropout_mask_rows(float *dP, const float *Pd, const float *P, int T, float scale) {
    for (int i = 0; i < T; i++) {
        float *d = dP + (size_t)i * T;
        const float *pd = Pd + (size_t)i * T, *p = P + (size_t)i * T;
        for (int j = 0; j <= i; j++) d[j] = (pd[j] != 0.0f || p[j] == 0.0f) ? d[j] * scale : 0.0f;
    }
}

/* dS = P * (dP - rowsum(P * dP)) on the keys each row sees; zero before
 * them and from the diagonal to the end of the row's block, which the block
 * products read. */
static void softmax_backward_rows(float *dS, const float *P, int T, const int32_t *key_start) {
    for (int t = 0; t < T; t++) {
        float *d = dS + (size_t)t * T;
        const float *p = P + (size_t)t * T;
        const int j0 = first_key(key_start, t);
        float dot = 0.0f;
        for (int j = j0; j <= t; j++) dot += p[j] * d[j];
        for (int j = j0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
        memset(d, 0, (size_t)j0 * sizeof(float));
        memset(d + t + 1, 0, (size_t)(block_end(t, T) - t - 1) * sizeof(float));
    }
}

void cpu_attention_backward(Backend *be, void *dqkv_, const void *dout_, const void *qkv_,
                            const void *out, const void *saved, int B, int T, int NH, int NG,
                            int HS, const int32_t *key_start, const AttentionDropout *dropout) {
    (void)out;
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "attention_backward: bad shape B=%d T=%d NH=%d NG=%d HS=%d", B, T, NH, NG, HS);
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_;
    const int C = NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float *dS = cpu_scratch(be, (dropout ? 2 : 1) * (size_t)T * T);
    float *Pd = dropout ? dS + (size_t)T * T : NULL;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const int ld = (int)hv.row;
            const size_t row0 = (size_t)b * T * hv.row;
            const float *q = qkv + row0 + hv.q, *k = qkv + row0 + hv.k, *v = qkv + row0 + hv.v;
            float *dq = dqkv + row0 + hv.q, *dk = dqkv + row0 + hv.k, *dv = dqkv + row0 + hv.v;
            /* The group's first head writes dk and dv, the others add. */
            const float beta_kv = hv.first_in_group ? 0.0f : 1.0f;
            const float *P = (const float *)saved + ((size_t)b * NH + h) * T * T;
            const float *PV = P;
            if (dropout) {
                dropped_probs(Pd, P, T, b, h, dropout);
                PV = Pd;
            }
            const float *g = dout + (size_t)b * T * C + (size_t)h * HS;
            /* dP = dout V^T (through the dropout mask), then dS from the
             * softmax Jacobian of the undropped P. */
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasTrans, r1 - r0, r1, HS, 1.0f, g + (size_t)r0 * C,
                          C, v, ld, 0.0f, dS + (size_t)r0 * T, T);
            }
            if (dropout) dropout_mask_rows(dS, Pd, P, T, dropout->scale);
            softmax_backward_rows(dS, P, T, key_start ? key_start + (size_t)b * T : NULL);
            /* dQ rows [r0, r1) see keys [0, r1): dQ = scale dS K. */
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int r1 = block_end(r0, T);
                cpu_sgemm(be, CblasNoTrans, CblasNoTrans, r1 - r0, HS, r1, scale,
                          dS + (size_t)r0 * T, T, k, ld, 0.0f, dq + (size_t)r0 * ld, ld);
            }
            /* Keys/values [c0, c1) are seen by queries [c0, T):
             * dK = scale dS^T Q, dV = Pd^T dout. */
            for (int c0 = 0; c0 < T; c0 += ATTN_BLOCK) {
                int c1 = block_end(c0, T);
                cpu_sgemm(be, CblasTrans, CblasNoTrans, c1 - c0, HS, T - c0, scale,
                          dS + (size_t)c0 * T + c0, T, q + (size_t)c0 * ld, ld, beta_kv,
                          dk + (size_t)c0 * ld, ld);
                cpu_sgemm(be, CblasTrans, CblasNoTrans, c1 - c0, HS, T - c0, 1.0f,
                          PV + (size_t)c0 * T + c0, T, g + (size_t)c0 * C, C, beta_kv,
                          dv + (size_t)c0 * ld, ld);
            }
        }
    }
}
