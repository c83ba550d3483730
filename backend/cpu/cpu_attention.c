/* backend/cpu/cpu_attention.c — causal self-attention with query groups, of
 * the fp32 reference backend, in the blocked form of flash attention.
 *
 * Per (batch, query head) the sequence is cut into blocks of ATTN_BLOCK
 * query rows and ATTN_BLOCK keys. A query block meets only the key blocks
 * it can see (causal, and from its earliest document start with
 * key_start), one at a time: S = scale Q K^T for the block pair, then the
 * online softmax (running row maximum m and normaliser l, the output
 * rescaled when m grows) adds P V into the output. Nothing of size T x T is
 * ever held: `saved` is the log-sum-exp of each row, lse = m + log l,
 * [B, NH, T] fp32, and the backward recomputes each block's probabilities
 * P = exp(S - lse) from it, with D = rowsum(dout * out) standing for the
 * softmax Jacobian's row sums (it equals sum_j P dP over the kept
 * probabilities, dropout included). The products are sgemm calls reading q,
 * k and v in place inside the qkv rows (group g: its query heads, then its
 * key and value head; leading dimension the whole row), so nothing is
 * repacked. Every loop runs in a fixed order (key blocks ascending for a
 * query block, query blocks ascending for a key block, a group's heads in
 * head order), so the result depends on nothing but the inputs.
 *
 * Attention dropout drops probability (b, h, i, j) after the softmax by its
 * counter (backend.h); the normaliser l counts the undropped probabilities,
 * as the softmax is taken before dropout. The backward draws the same mask
 * again. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"
#include "core/rng.h"

enum { ATTN_BLOCK = 64 };

size_t cpu_attention_saved_bytes(Backend *be, int B, int T, int NH, int NG, int HS) {
    (void)be;
    (void)NG;
    (void)HS;
    return (size_t)B * NH * T * sizeof(float);
}

/* Where query head h of a [B, T, NG, NH/NG + 2, HS] qkv row finds its
 * query, key and value, and the row's length. */
typedef struct {
    size_t row;          /* elements per (b, t) row */
    size_t q, k, v;      /* offsets of the head's q, its group's k and v */
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

/* One (batch, head) of the attention: its operands in place, its document
 * starts and its dropout plane. */
typedef struct {
    int T, HS;
    int ld;             /* qkv row length */
    int C;              /* out row length, NH * HS */
    const int32_t *key_start; /* this sequence's T starts, or NULL */
    const AttentionDropout *dropout;
    uint64_t plane;     /* dropout counter of (b, h, 0, 0) */
    float scale;
} HeadAttention;

static HeadAttention head_attention(int b, int h, int T, int NH, int HS, size_t row,
                                    const int32_t *key_start, const AttentionDropout *d) {
    HeadAttention a = {.T = T,
                       .HS = HS,
                       .ld = (int)row,
                       .C = NH * HS,
                       .key_start = key_start ? key_start + (size_t)b * T : NULL,
                       .dropout = d,
                       .scale = 1.0f / sqrtf((float)HS)};
    if (d)
        a.plane = ((d->sample0 + (uint64_t)b) * d->heads_total + d->head0 + (uint64_t)h) *
                  (uint64_t)T * (uint64_t)T;
    return a;
}

/* First key row i sees: its document's start, or 0. */
static int first_key(const HeadAttention *a, int i) {
    const int j0 = a->key_start ? a->key_start[i] : 0;
    GPT3D_CHECK(j0 >= 0 && j0 <= i, "attention: key_start %d of row %d outside [0, %d]", j0, i, i);
    return j0;
}

/* The earliest key any row of [r0, r1) sees. */
static int block_first_key(const HeadAttention *a, int r0, int r1) {
    int lo = r0;
    for (int i = r0; i < r1; i++) {
        const int j0 = first_key(a, i);
        if (j0 < lo) lo = j0;
    }
    return lo;
}

static int block_end(int start, int T) { return start + ATTN_BLOCK < T ? start + ATTN_BLOCK : T; }

/* Whether probability (i, j) survives dropout. */
static bool kept(const HeadAttention *a, int i, int j) {
    const AttentionDropout *d = a->dropout;
    const uint64_t counter = a->plane + (uint64_t)i * (uint64_t)a->T + (uint64_t)j;
    return rng_block(d->seed, d->stream, counter).v[0] >= d->threshold;
}

/* Pd = P with dropout applied (kept scaled, dropped zero) for the block
 * pair at (r0, c0); P itself when there is no dropout. */
static const float *dropped(const HeadAttention *a, const float *P, float *Pd, int r0, int nr,
                            int c0, int nc) {
    if (!a->dropout) return P;
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nc; j++) {
            const float p = P[i * ATTN_BLOCK + j];
            Pd[i * ATTN_BLOCK + j] =
                p != 0.0f && kept(a, r0 + i, c0 + j) ? p * a->dropout->scale : 0.0f;
        }
    return Pd;
}

/* Query rows [r0, r0 + nr): the online softmax over the key blocks they
 * see, into out rows o (stride C) and lse. S and Pd are block scratch. */
static void forward_query_block(Backend *be, const HeadAttention *a, const float *q,
                                const float *k, const float *v, float *o, float *lse, int r0,
                                int nr, float *S, float *Pd) {
    const int ld = a->ld, HS = a->HS, r1 = r0 + nr;
    float m[ATTN_BLOCK], l[ATTN_BLOCK];
    for (int i = 0; i < nr; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o + (size_t)(r0 + i) * a->C, 0, (size_t)HS * sizeof(float));
    }
    const int lo = block_first_key(a, r0, r1);
    for (int c0 = lo - lo % ATTN_BLOCK; c0 < r1; c0 += ATTN_BLOCK) {
        const int c1 = block_end(c0, r1), nc = c1 - c0;
        cpu_sgemm(be, CblasNoTrans, CblasTrans, nr, nc, HS, a->scale, q + (size_t)r0 * ld, ld,
                  k + (size_t)c0 * ld, ld, 0.0f, S, ATTN_BLOCK);
        for (int i = 0; i < nr; i++) {
            float *s = S + i * ATTN_BLOCK;
            const int row = r0 + i;
            const int j_lo = first_key(a, row) > c0 ? first_key(a, row) - c0 : 0;
            const int j_hi = row < c1 - 1 ? row - c0 : nc - 1; /* inclusive */
            if (j_lo > j_hi) { /* this row sees none of the block's keys */
                memset(s, 0, (size_t)nc * sizeof(float));
                continue;
            }
            const float m_new = fmaxf(m[i], cpu_max_f32(s + j_lo, j_hi - j_lo + 1));
            const float alpha = cpu_expf(m[i] - m_new); /* 0 for the first block a row sees */
            for (int j = j_lo; j <= j_hi; j++) s[j] = cpu_expf(s[j] - m_new);
            float sum = 0.0f;
            for (int j = j_lo; j <= j_hi; j++) sum += s[j];
            memset(s, 0, (size_t)j_lo * sizeof(float));
            memset(s + j_hi + 1, 0, (size_t)(nc - j_hi - 1) * sizeof(float));
            l[i] = l[i] * alpha + sum;
            m[i] = m_new;
            float *orow = o + (size_t)row * a->C;
            for (int e = 0; e < HS; e++) orow[e] *= alpha;
        }
        const float *PV = dropped(a, S, Pd, r0, nr, c0, nc);
        cpu_sgemm(be, CblasNoTrans, CblasNoTrans, nr, HS, nc, 1.0f, PV, ATTN_BLOCK,
                  v + (size_t)c0 * ld, ld, 1.0f, o + (size_t)r0 * a->C, a->C);
    }
    for (int i = 0; i < nr; i++) {
        float *orow = o + (size_t)(r0 + i) * a->C;
        const float inv = 1.0f / l[i];
        for (int e = 0; e < HS; e++) orow[e] *= inv;
        lse[r0 + i] = m[i] + logf(l[i]);
    }
}

void cpu_attention_forward(Backend *be, void *out_, void *saved, const void *qkv_, int B, int T,
                           int NH, int NG, int HS, const int32_t *key_start,
                           const AttentionDropout *dropout) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "attention_forward: bad shape B=%d T=%d NH=%d NG=%d HS=%d", B, T, NH, NG, HS);
    float *out = out_;
    const float *qkv = qkv_;
    float *S = cpu_scratch(be, 2 * (size_t)ATTN_BLOCK * ATTN_BLOCK), *Pd = S + ATTN_BLOCK * ATTN_BLOCK;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const HeadAttention a = head_attention(b, h, T, NH, HS, hv.row, key_start, dropout);
            const float *row0 = qkv + (size_t)b * T * hv.row;
            float *o = out + (size_t)b * T * a.C + (size_t)h * HS;
            float *lse = (float *)saved + ((size_t)b * NH + h) * T;
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK)
                forward_query_block(be, &a, row0 + hv.q, row0 + hv.k, row0 + hv.v, o, lse, r0,
                                    block_end(r0, T) - r0, S, Pd);
        }
}

/* Gradient pointers of one head inside dqkv, and the forward's rows. */
typedef struct {
    const float *q, *k, *v, *out, *dout, *lse, *D;
    float *dq, *dk, *dv;
} HeadGrads;

/* The block pair (query rows [r0, r0 + nr), keys [c0, c0 + nc)): P
 * recomputed from lse, then dV += Pd^T dout, dP = dout V^T through the
 * dropout mask, dS = P (dP - D), dQ += scale dS K, dK += scale dS^T Q. */
static void backward_block_pair(Backend *be, const HeadAttention *a, const HeadGrads *g, int r0,
                                int nr, int c0, int nc, float *P, float *Pd, float *dS) {
    const int ld = a->ld, HS = a->HS, C = a->C;
    cpu_sgemm(be, CblasNoTrans, CblasTrans, nr, nc, HS, a->scale, g->q + (size_t)r0 * ld, ld,
              g->k + (size_t)c0 * ld, ld, 0.0f, P, ATTN_BLOCK);
    for (int i = 0; i < nr; i++) {
        const int row = r0 + i, j0 = first_key(a, row);
        float *p = P + i * ATTN_BLOCK;
        for (int j = 0; j < nc; j++) {
            const int col = c0 + j;
            p[j] = col >= j0 && col <= row ? cpu_expf(p[j] - g->lse[row]) : 0.0f;
        }
    }
    const float *PV = dropped(a, P, Pd, r0, nr, c0, nc);
    cpu_sgemm(be, CblasTrans, CblasNoTrans, nc, HS, nr, 1.0f, PV, ATTN_BLOCK,
              g->dout + (size_t)r0 * C, C, 1.0f, g->dv + (size_t)c0 * ld, ld);
    cpu_sgemm(be, CblasNoTrans, CblasTrans, nr, nc, HS, 1.0f, g->dout + (size_t)r0 * C, C,
              g->v + (size_t)c0 * ld, ld, 0.0f, dS, ATTN_BLOCK);
    for (int i = 0; i < nr; i++) {
        const float *p = P + i * ATTN_BLOCK, *pd = PV + i * ATTN_BLOCK;
        float *d = dS + i * ATTN_BLOCK;
        const float Di = g->D[r0 + i];
        for (int j = 0; j < nc; j++) {
            /* Through the mask: kept where Pd is nonzero; where P is zero
             * the product below is zero whatever dP is. */
            float dp = d[j];
            if (a->dropout) dp = pd[j] != 0.0f ? dp * a->dropout->scale : 0.0f;
            d[j] = p[j] * (dp - Di);
        }
    }
    cpu_sgemm(be, CblasNoTrans, CblasNoTrans, nr, HS, nc, a->scale, dS, ATTN_BLOCK,
              g->k + (size_t)c0 * ld, ld, 1.0f, g->dq + (size_t)r0 * ld, ld);
    cpu_sgemm(be, CblasTrans, CblasNoTrans, nc, HS, nr, a->scale, dS, ATTN_BLOCK,
              g->q + (size_t)r0 * ld, ld, 1.0f, g->dk + (size_t)c0 * ld, ld);
}

/* Rows (i, e) of a [T, HS] block of row stride ld set to zero. */
static void zero_rows(float *x, int T, int HS, int ld) {
    for (int t = 0; t < T; t++) memset(x + (size_t)t * ld, 0, (size_t)HS * sizeof(float));
}

void cpu_attention_backward(Backend *be, void *dqkv_, const void *dout_, const void *qkv_,
                            const void *out_, const void *saved, int B, int T, int NH, int NG,
                            int HS, const int32_t *key_start, const AttentionDropout *dropout) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "attention_backward: bad shape B=%d T=%d NH=%d NG=%d HS=%d", B, T, NH, NG, HS);
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_, *out = out_;
    const size_t block = (size_t)ATTN_BLOCK * ATTN_BLOCK;
    float *P = cpu_scratch(be, 3 * block + (size_t)T), *Pd = P + block, *dS = Pd + block;
    float *D = dS + block;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const HeadAttention a = head_attention(b, h, T, NH, HS, hv.row, key_start, dropout);
            const size_t row0 = (size_t)b * T * hv.row, orow0 = (size_t)b * T * a.C + (size_t)h * HS;
            const HeadGrads g = {.q = qkv + row0 + hv.q,
                                 .k = qkv + row0 + hv.k,
                                 .v = qkv + row0 + hv.v,
                                 .out = out + orow0,
                                 .dout = dout + orow0,
                                 .lse = (const float *)saved + ((size_t)b * NH + h) * T,
                                 .D = D,
                                 .dq = dqkv + row0 + hv.q,
                                 .dk = dqkv + row0 + hv.k,
                                 .dv = dqkv + row0 + hv.v};
            for (int t = 0; t < T; t++) {
                const float *x = g.dout + (size_t)t * a.C, *y = g.out + (size_t)t * a.C;
                float s = 0.0f;
                for (int e = 0; e < HS; e++) s += x[e] * y[e];
                D[t] = s;
            }
            zero_rows(g.dq, T, HS, a.ld);
            /* The group's first head starts its key and value sums. */
            if (hv.first_in_group) zero_rows(g.dk, T, HS, a.ld), zero_rows(g.dv, T, HS, a.ld);
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                const int r1 = block_end(r0, T), lo = block_first_key(&a, r0, r1);
                for (int c0 = lo - lo % ATTN_BLOCK; c0 < r1; c0 += ATTN_BLOCK)
                    backward_block_pair(be, &a, &g, r0, r1 - r0, c0, block_end(c0, r1) - c0, P, Pd,
                                        dS);
            }
        }
}
