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
 * again.
 *
 * Ring attention (context parallelism) runs the same loops on one block of
 * a sequence: query rows and keys carry sequence coordinates (strictly
 * increasing, so the keys a row sees in a key block are still one range),
 * and the whole-sequence attention is the block whose coordinates are the
 * row indices. A block's output is merged into the running one through the
 * two log-sum-exps. */
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
    int T, Tk, HS;      /* query rows, keys */
    int seq;            /* the whole sequence's length (dropout counters) */
    const int32_t *qc, *kc; /* sequence coordinates of rows and keys; NULL: the index */
    int ld;             /* qkv row length */
    int C;              /* out row length, NH * HS */
    const int32_t *key_start; /* this sequence's T starts, or NULL */
    const AttentionDropout *dropout;
    uint64_t plane;     /* dropout counter of (b, h, 0, 0) */
    float scale;
} HeadAttention;

/* The whole sequence of T rows as one block. */
static AttentionBlock whole_sequence(int T) {
    return (AttentionBlock){.Tq = T, .Tk = T, .seq_length = T};
}

static HeadAttention head_attention(int b, int h, const AttentionBlock *blk, int NH, int HS,
                                    size_t row, const int32_t *key_start,
                                    const AttentionDropout *d) {
    const int T = blk->Tq;
    HeadAttention a = {.T = T,
                       .Tk = blk->Tk,
                       .HS = HS,
                       .seq = blk->seq_length,
                       .qc = blk->q_coord,
                       .kc = blk->k_coord,
                       .ld = (int)row,
                       .C = NH * HS,
                       .key_start = key_start ? key_start + (size_t)b * T : NULL,
                       .dropout = d,
                       .scale = 1.0f / sqrtf((float)HS)};
    if (d)
        a.plane = ((d->sample0 + (uint64_t)b) * d->heads_total + d->head0 + (uint64_t)h) *
                  (uint64_t)a.seq * (uint64_t)a.seq;
    return a;
}

static int query_pos(const HeadAttention *a, int i) { return a->qc ? a->qc[i] : i; }
static int key_pos(const HeadAttention *a, int j) { return a->kc ? a->kc[j] : j; }

/* First key coordinate row i sees: its document's start, or 0. */
static int first_key(const HeadAttention *a, int i) {
    const int j0 = a->key_start ? a->key_start[i] : 0, pos = query_pos(a, i);
    GPT3D_CHECK(j0 >= 0 && j0 <= pos, "attention: key_start %d of row %d outside [0, %d]", j0,
                pos, pos);
    return j0;
}

/* The earliest key coordinate any row of [r0, r1) sees. */
static int block_first_key(const HeadAttention *a, int r0, int r1) {
    int lo = query_pos(a, r0);
    for (int i = r0; i < r1; i++) {
        const int j0 = first_key(a, i);
        if (j0 < lo) lo = j0;
    }
    return lo;
}

/* Index of the first key at coordinate >= pos (Tk when none). */
static int key_at_or_after(const HeadAttention *a, int pos) {
    if (!a->kc) return pos < a->Tk ? pos : a->Tk;
    int lo = 0, hi = a->Tk;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (a->kc[mid] < pos) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The keys query rows [r0, r1) can see lie in [*first, *end), by index. */
static void block_keys(const HeadAttention *a, int r0, int r1, int *first, int *end) {
    *first = key_at_or_after(a, block_first_key(a, r0, r1));
    *end = key_at_or_after(a, query_pos(a, r1 - 1) + 1);
}

/* Row i's visible keys inside the key block [c0, c1): [*lo, *hi] relative
 * to c0 (lo > hi when none). */
static void visible_keys(const HeadAttention *a, int i, int c0, int c1, int *lo, int *hi) {
    const int first = key_at_or_after(a, first_key(a, i));
    const int last = key_at_or_after(a, query_pos(a, i) + 1) - 1;
    *lo = (first > c0 ? first : c0) - c0;
    *hi = (last < c1 - 1 ? last : c1 - 1) - c0;
}

static int block_end(int start, int T) { return start + ATTN_BLOCK < T ? start + ATTN_BLOCK : T; }

/* Whether probability (i, j) survives dropout. */
static bool kept(const HeadAttention *a, int i, int j) {
    const AttentionDropout *d = a->dropout;
    const uint64_t counter =
        a->plane + (uint64_t)query_pos(a, i) * (uint64_t)a->seq + (uint64_t)key_pos(a, j);
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
    int lo, end;
    block_keys(a, r0, r1, &lo, &end);
    for (int c0 = lo - lo % ATTN_BLOCK; c0 < end; c0 += ATTN_BLOCK) {
        const int c1 = block_end(c0, end), nc = c1 - c0;
        cpu_sgemm(be, CblasNoTrans, CblasTrans, nr, nc, HS, a->scale, q + (size_t)r0 * ld, ld,
                  k + (size_t)c0 * ld, ld, 0.0f, S, ATTN_BLOCK);
        for (int i = 0; i < nr; i++) {
            float *s = S + i * ATTN_BLOCK;
            const int row = r0 + i;
            int j_lo, j_hi; /* inclusive */
            visible_keys(a, row, c0, c1, &j_lo, &j_hi);
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
        if (l[i] == 0.0f) { /* no visible key in this block (ring attention) */
            lse[r0 + i] = -INFINITY;
            continue;
        }
        const float inv = 1.0f / l[i];
        for (int e = 0; e < HS; e++) orow[e] *= inv;
        lse[r0 + i] = m[i] + logf(l[i]);
    }
}

/* Every (batch, head) of a block into out and lse (overwritten). */
static void block_forward_heads(Backend *be, float *out, float *lse_all, const float *q_qkv,
                                const float *kv_qkv, int B, int NH, int NG, int HS,
                                const AttentionBlock *blk, const int32_t *key_start,
                                const AttentionDropout *dropout, float *S) {
    float *Pd = S + ATTN_BLOCK * ATTN_BLOCK;
    const int T = blk->Tq, Tk = blk->Tk;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const HeadAttention a = head_attention(b, h, blk, NH, HS, hv.row, key_start, dropout);
            const float *qrow0 = q_qkv + (size_t)b * T * hv.row;
            const float *kvrow0 = kv_qkv + (size_t)b * Tk * hv.row;
            float *o = out + (size_t)b * T * a.C + (size_t)h * HS;
            float *lse = lse_all + ((size_t)b * NH + h) * T;
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK)
                forward_query_block(be, &a, qrow0 + hv.q, kvrow0 + hv.k, kvrow0 + hv.v, o, lse, r0,
                                    block_end(r0, T) - r0, S, Pd);
        }
}

static void check_shape(const char *op, int B, int T, int NH, int NG, int HS) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && HS > 0 && NG > 0 && NH % NG == 0,
                "%s: bad shape B=%d T=%d NH=%d NG=%d HS=%d", op, B, T, NH, NG, HS);
}

void cpu_attention_forward(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                           int NH, int NG, int HS, const int32_t *key_start,
                           const AttentionDropout *dropout) {
    check_shape("attention_forward", B, T, NH, NG, HS);
    float *S = cpu_scratch(be, 2 * (size_t)ATTN_BLOCK * ATTN_BLOCK);
    const AttentionBlock whole = whole_sequence(T);
    block_forward_heads(be, out, saved, qkv, qkv, B, NH, NG, HS, &whole, key_start, dropout, S);
}

/* (out, lse) of the rows so far and (ob, lb) of one more block of keys:
 * the softmax over both, through the log-sum-exps. */
static void merge_rows(float *out, float *lse, const float *ob, const float *lb, int B, int T,
                       int NH, int HS) {
    const size_t C = (size_t)NH * HS;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const size_t at = ((size_t)b * NH + h) * T + i;
                const float l1 = lse[at], l2 = lb[at];
                if (l2 == -INFINITY) continue;
                float *o = out + ((size_t)b * T + i) * C + (size_t)h * HS;
                const float *o2 = ob + ((size_t)b * T + i) * C + (size_t)h * HS;
                const float mx = l1 > l2 ? l1 : l2;
                const float w1 = l1 == -INFINITY ? 0.0f : cpu_expf(l1 - mx);
                const float w2 = cpu_expf(l2 - mx), inv = 1.0f / (w1 + w2);
                for (int e = 0; e < HS; e++) o[e] = (w1 * o[e] + w2 * o2[e]) * inv;
                lse[at] = mx + logf(w1 + w2);
            }
}

void cpu_attention_block_forward(Backend *be, void *out, float *lse, const void *q_qkv,
                                 const void *kv_qkv, int B, int NH, int NG, int HS,
                                 const AttentionBlock *blk, const int32_t *key_start,
                                 const AttentionDropout *dropout, bool first) {
    check_shape("attention_block_forward", B, blk->Tq, NH, NG, HS);
    GPT3D_CHECK(blk->Tk > 0 && blk->seq_length >= blk->Tq && blk->q_coord && blk->k_coord,
                "attention_block_forward: bad block Tq=%d Tk=%d seq_length=%d", blk->Tq, blk->Tk,
                blk->seq_length);
    const size_t block = 2 * (size_t)ATTN_BLOCK * ATTN_BLOCK;
    const size_t rows = (size_t)B * blk->Tq, n_out = rows * NH * HS, n_lse = rows * NH;
    float *S = cpu_scratch(be, block + (first ? 0 : n_out + n_lse));
    if (first) {
        block_forward_heads(be, out, lse, q_qkv, kv_qkv, B, NH, NG, HS, blk, key_start, dropout, S);
        return;
    }
    float *ob = S + block, *lb = ob + n_out;
    block_forward_heads(be, ob, lb, q_qkv, kv_qkv, B, NH, NG, HS, blk, key_start, dropout, S);
    merge_rows(out, lse, ob, lb, B, blk->Tq, NH, HS);
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
        const int row = r0 + i;
        int j_lo, j_hi;
        visible_keys(a, row, c0, c0 + nc, &j_lo, &j_hi);
        float *p = P + i * ATTN_BLOCK;
        for (int j = 0; j < nc; j++)
            p[j] = j >= j_lo && j <= j_hi ? cpu_expf(p[j] - g->lse[row]) : 0.0f;
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

/* Every (batch, head) of a block's backward, added into dq (query heads
 * of dq_qkv) and dk, dv (key and value heads of dkv_qkv); `restart`: the
 * whole sequence's backward, which overwrites them (one buffer). */
static void block_backward_heads(Backend *be, float *dq_qkv, float *dkv_qkv, const float *dout,
                                 const float *q_qkv, const float *kv_qkv, const float *out,
                                 const float *lse, int B, int NH, int NG, int HS,
                                 const AttentionBlock *blk, const int32_t *key_start,
                                 const AttentionDropout *dropout, bool restart) {
    const int T = blk->Tq, Tk = blk->Tk;
    const size_t block = (size_t)ATTN_BLOCK * ATTN_BLOCK;
    float *P = cpu_scratch(be, 3 * block + (size_t)T), *Pd = P + block, *dS = Pd + block;
    float *D = dS + block;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const HeadView hv = head_view(h, NH, NG, HS);
            const HeadAttention a = head_attention(b, h, blk, NH, HS, hv.row, key_start, dropout);
            const size_t qrow0 = (size_t)b * T * hv.row, kvrow0 = (size_t)b * Tk * hv.row;
            const size_t orow0 = (size_t)b * T * a.C + (size_t)h * HS;
            const HeadGrads g = {.q = q_qkv + qrow0 + hv.q,
                                 .k = kv_qkv + kvrow0 + hv.k,
                                 .v = kv_qkv + kvrow0 + hv.v,
                                 .out = out + orow0,
                                 .dout = dout + orow0,
                                 .lse = lse + ((size_t)b * NH + h) * T,
                                 .D = D,
                                 .dq = dq_qkv + qrow0 + hv.q,
                                 .dk = dkv_qkv + kvrow0 + hv.k,
                                 .dv = dkv_qkv + kvrow0 + hv.v};
            for (int t = 0; t < T; t++) {
                const float *x = g.dout + (size_t)t * a.C, *y = g.out + (size_t)t * a.C;
                float s = 0.0f;
                for (int e = 0; e < HS; e++) s += x[e] * y[e];
                D[t] = s;
            }
            if (restart) {
                zero_rows(g.dq, T, HS, a.ld);
                /* The group's first head starts its key and value sums. */
                if (hv.first_in_group) zero_rows(g.dk, T, HS, a.ld), zero_rows(g.dv, T, HS, a.ld);
            }
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                const int r1 = block_end(r0, T);
                int lo, end;
                block_keys(&a, r0, r1, &lo, &end);
                for (int c0 = lo - lo % ATTN_BLOCK; c0 < end; c0 += ATTN_BLOCK)
                    backward_block_pair(be, &a, &g, r0, r1 - r0, c0, block_end(c0, end) - c0, P,
                                        Pd, dS);
            }
        }
}

void cpu_attention_backward(Backend *be, void *dqkv, const void *dout, const void *qkv,
                            const void *out, const void *saved, int B, int T, int NH, int NG,
                            int HS, const int32_t *key_start, const AttentionDropout *dropout) {
    check_shape("attention_backward", B, T, NH, NG, HS);
    const AttentionBlock whole = whole_sequence(T);
    block_backward_heads(be, dqkv, dqkv, dout, qkv, qkv, out, saved, B, NH, NG, HS, &whole,
                         key_start, dropout, true);
}

void cpu_attention_block_backward(Backend *be, void *d_q_qkv, void *d_kv_qkv, const void *dout,
                                  const void *q_qkv, const void *kv_qkv, const void *out,
                                  const float *lse, int B, int NH, int NG, int HS,
                                  const AttentionBlock *blk, const int32_t *key_start,
                                  const AttentionDropout *dropout) {
    check_shape("attention_block_backward", B, blk->Tq, NH, NG, HS);
    GPT3D_CHECK(blk->Tk > 0 && blk->q_coord && blk->k_coord,
                "attention_block_backward: bad block Tq=%d Tk=%d", blk->Tq, blk->Tk);
    block_backward_heads(be, d_q_qkv, d_kv_qkv, dout, q_qkv, kv_qkv, out, lse, B, NH, NG, HS, blk,
                         key_start, dropout, false);
}
