// backend/cuda/cuda_ring_attention.cu — one block of ring attention
// (context parallelism, backend.h's attention_block_forward/backward).
//
// The plain form, written for being right before being fast: one warp per
// query row walks the keys it can see (a range, since the coordinates
// increase) with the online softmax in fp32 registers, and merges the
// block into the running bf16 output and fp32 log-sum-exp. The backward
// runs two passes so that no sum depends on thread timing: one warp per
// query row adds its dq over the keys in order, one warp per key row adds
// its dk and dv over the group's query heads and the rows that see it, in
// order. Probabilities are recomputed from the final lse, and D = rowsum(
// dout * out) comes first, as in the CPU backend (cpu_attention.c), whose
// rules (visibility, dropout counters in sequence coordinates, the
// normaliser counting undropped probabilities) these kernels follow.
// Head dimensions up to 256.
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

enum { RING_ROWS_PER_BLOCK = THREADS / 32, RING_MAX_PER_LANE = 8 };

typedef struct {
    int B, Tq, Tk, seq, NH, NG, HS, Q;
    int64_t R, C; // qkv row, out row (elements)
    float scale;
    const int32_t *qc, *kc, *key_start;
    AttentionDropout drop;
    bool dropping;
} RingBlock;

static RingBlock ring_block(int B, int NH, int NG, int HS, const AttentionBlock *blk,
                            const int32_t *key_start, const AttentionDropout *d) {
    GPT3D_CHECK(B > 0 && NH > 0 && NG > 0 && NH % NG == 0 && HS > 0 &&
                    HS <= 32 * RING_MAX_PER_LANE && blk->Tq > 0 && blk->Tk > 0 && blk->q_coord &&
                    blk->k_coord,
                "attention block: bad shape B=%d NH=%d NG=%d HS=%d Tq=%d Tk=%d (head dimension "
                "at most %d)",
                B, NH, NG, HS, blk->Tq, blk->Tk, 32 * RING_MAX_PER_LANE);
    RingBlock r = RingBlock();
    r.B = B, r.Tq = blk->Tq, r.Tk = blk->Tk, r.seq = blk->seq_length;
    r.NH = NH, r.NG = NG, r.HS = HS, r.Q = NH / NG;
    r.R = (int64_t)NG * (r.Q + 2) * HS;
    r.C = (int64_t)NH * HS;
    r.scale = 1.0f / sqrtf((float)HS);
    r.qc = blk->q_coord, r.kc = blk->k_coord, r.key_start = key_start;
    if (d) r.drop = *d, r.dropping = true;
    return r;
}

// First index of the increasing coordinates c[0, n) at or after pos.
static __device__ int at_or_after(const int32_t *c, int n, int pos) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (c[mid] < pos) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// Offsets of query head h's q and its group's k, v inside a qkv row.
static __device__ int64_t q_offset(const RingBlock &k, int h) {
    return (int64_t)(h / k.Q) * (k.Q + 2) * k.HS + (int64_t)(h % k.Q) * k.HS;
}
static __device__ int64_t k_offset(const RingBlock &k, int g) {
    return (int64_t)g * (k.Q + 2) * k.HS + (int64_t)k.Q * k.HS;
}

// Whether probability (b, h, query at qpos, key at kpos) survives dropout.
static __device__ bool ring_kept(const RingBlock &k, int b, int h, int qpos, int kpos) {
    const AttentionDropout &d = k.drop;
    const uint64_t plane = ((d.sample0 + (uint64_t)b) * d.heads_total + d.head0 + (uint64_t)h) *
                           (uint64_t)k.seq * (uint64_t)k.seq;
    return dropout_keeps(d.seed, d.stream, plane + (uint64_t)qpos * k.seq + (uint64_t)kpos,
                         d.threshold);
}

static __device__ float dot_row(const bf16 *a, const bf16 *b, int HS, int lane) {
    float s = 0.0f;
    for (int e = lane; e < HS; e += 32) s += __bfloat162float(a[e]) * __bfloat162float(b[e]);
    return warp_sum(s);
}

// Row r = (b * NH + h) * Tq + i: its keys [*lo, *hi) in the block.
static __device__ void row_keys(const RingBlock &k, int b, int i, int *lo, int *hi) {
    const int qpos = k.qc[i];
    const int start = k.key_start ? k.key_start[(size_t)b * k.Tq + i] : 0;
    *lo = at_or_after(k.kc, k.Tk, start);
    *hi = at_or_after(k.kc, k.Tk, qpos + 1);
}

static __global__ void block_forward_kernel(bf16 *out, float *lse, const bf16 *q_qkv,
                                            const bf16 *kv_qkv, RingBlock k, bool first) {
    const size_t rows = (size_t)k.B * k.NH * k.Tq;
    const size_t r = (size_t)blockIdx.x * RING_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int i = (int)(r % k.Tq), h = (int)((r / k.Tq) % k.NH), b = (int)(r / ((size_t)k.Tq * k.NH));
    const bf16 *q = q_qkv + ((size_t)b * k.Tq + i) * k.R + q_offset(k, h);
    const int64_t ko = k_offset(k, h / k.Q);
    int lo, hi;
    row_keys(k, b, i, &lo, &hi);
    float acc[RING_MAX_PER_LANE] = {0};
    float m = -INFINITY, l = 0.0f;
    for (int j = lo; j < hi; j++) {
        const bf16 *kr = kv_qkv + ((size_t)b * k.Tk + j) * k.R + ko, *vr = kr + k.HS;
        const float s = dot_row(q, kr, k.HS, lane) * k.scale;
        const float m_new = fmaxf(m, s);
        const float alpha = __expf(m - m_new), p = __expf(s - m_new);
        l = l * alpha + p;
        m = m_new;
        float pv = p;
        if (k.dropping) pv = ring_kept(k, b, h, k.qc[i], k.kc[j]) ? p * k.drop.scale : 0.0f;
        for (int e = lane, n = 0; e < k.HS; e += 32, n++)
            acc[n] = acc[n] * alpha + pv * __bfloat162float(vr[e]);
    }
    bf16 *o = out + ((size_t)b * k.Tq + i) * k.C + (size_t)h * k.HS;
    const float lb = l > 0.0f ? m + logf(l) : -INFINITY;
    const float l1 = first ? -INFINITY : lse[r];
    if (lb == -INFINITY && !first) return; // nothing seen in this block
    const float mx = fmaxf(l1, lb);
    const float w1 = l1 == -INFINITY ? 0.0f : __expf(l1 - mx);
    const float w2 = lb == -INFINITY ? 0.0f : __expf(lb - mx);
    const float sum = w1 + w2;
    for (int e = lane, n = 0; e < k.HS; e += 32, n++) {
        const float ob = l > 0.0f ? acc[n] / l : 0.0f;
        const float old = w1 > 0.0f ? __bfloat162float(o[e]) : 0.0f;
        o[e] = __float2bfloat16(sum > 0.0f ? (w1 * old + w2 * ob) / sum : 0.0f);
    }
    if (lane == 0) lse[r] = sum > 0.0f ? mx + logf(sum) : -INFINITY;
}

static __global__ void row_dot_kernel(float *D, const bf16 *dout, const bf16 *out, RingBlock k) {
    const size_t rows = (size_t)k.B * k.NH * k.Tq;
    const size_t r = (size_t)blockIdx.x * RING_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int i = (int)(r % k.Tq), h = (int)((r / k.Tq) % k.NH), b = (int)(r / ((size_t)k.Tq * k.NH));
    const size_t at = ((size_t)b * k.Tq + i) * k.C + (size_t)h * k.HS;
    const float s = dot_row(dout + at, out + at, k.HS, lane);
    if (lane == 0) D[r] = s;
}

// dS of (query row r, key j) from the recomputed probability.
static __device__ float score_grad(const RingBlock &k, int b, int h, int i, int j, const bf16 *q,
                                   const bf16 *kr, const bf16 *go, float lse_r, float D_r,
                                   int lane, float *pd) {
    const bf16 *vr = kr + k.HS;
    const float p = __expf(dot_row(q, kr, k.HS, lane) * k.scale - lse_r);
    float dp = dot_row(go, vr, k.HS, lane);
    *pd = p;
    if (k.dropping) {
        const bool keep = ring_kept(k, b, h, k.qc[i], k.kc[j]);
        *pd = keep ? p * k.drop.scale : 0.0f;
        dp = keep ? dp * k.drop.scale : 0.0f;
    }
    return p * (dp - D_r);
}

static __global__ void block_dq_kernel(bf16 *d_q_qkv, const bf16 *dout, const bf16 *q_qkv,
                                       const bf16 *kv_qkv, const float *lse, const float *D,
                                       RingBlock k) {
    const size_t rows = (size_t)k.B * k.NH * k.Tq;
    const size_t r = (size_t)blockIdx.x * RING_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int i = (int)(r % k.Tq), h = (int)((r / k.Tq) % k.NH), b = (int)(r / ((size_t)k.Tq * k.NH));
    const size_t qrow = ((size_t)b * k.Tq + i) * k.R + q_offset(k, h);
    const bf16 *q = q_qkv + qrow;
    const bf16 *go = dout + ((size_t)b * k.Tq + i) * k.C + (size_t)h * k.HS;
    const int64_t ko = k_offset(k, h / k.Q);
    int lo, hi;
    row_keys(k, b, i, &lo, &hi);
    float dq[RING_MAX_PER_LANE] = {0};
    for (int j = lo; j < hi; j++) {
        const bf16 *kr = kv_qkv + ((size_t)b * k.Tk + j) * k.R + ko;
        float pd;
        const float ds = score_grad(k, b, h, i, j, q, kr, go, lse[r], D[r], lane, &pd);
        for (int e = lane, n = 0; e < k.HS; e += 32, n++)
            dq[n] += k.scale * ds * __bfloat162float(kr[e]);
    }
    bf16 *dst = d_q_qkv + qrow;
    for (int e = lane, n = 0; e < k.HS; e += 32, n++)
        dst[e] = __float2bfloat16(__bfloat162float(dst[e]) + dq[n]);
}

// One warp per key row (b, g, j): dk and dv over the group's heads and the
// query rows that see the key, in order.
static __global__ void block_dkv_kernel(bf16 *d_kv_qkv, const bf16 *dout, const bf16 *q_qkv,
                                        const bf16 *kv_qkv, const float *lse, const float *D,
                                        RingBlock k) {
    const size_t rows = (size_t)k.B * k.NG * k.Tk;
    const size_t r = (size_t)blockIdx.x * RING_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int j = (int)(r % k.Tk), g = (int)((r / k.Tk) % k.NG), b = (int)(r / ((size_t)k.Tk * k.NG));
    const size_t krow = ((size_t)b * k.Tk + j) * k.R + k_offset(k, g);
    const bf16 *kr = kv_qkv + krow;
    const int kpos = k.kc[j];
    float dk[RING_MAX_PER_LANE] = {0}, dv[RING_MAX_PER_LANE] = {0};
    for (int hq = 0; hq < k.Q; hq++) {
        const int h = g * k.Q + hq;
        for (int i = at_or_after(k.qc, k.Tq, kpos); i < k.Tq; i++) {
            const int start = k.key_start ? k.key_start[(size_t)b * k.Tq + i] : 0;
            if (start > kpos) continue;
            const size_t qr = ((size_t)b * k.NH + h) * k.Tq + i;
            const bf16 *q = q_qkv + ((size_t)b * k.Tq + i) * k.R + q_offset(k, h);
            const bf16 *go = dout + ((size_t)b * k.Tq + i) * k.C + (size_t)h * k.HS;
            float pd;
            const float ds = score_grad(k, b, h, i, j, q, kr, go, lse[qr], D[qr], lane, &pd);
            for (int e = lane, n = 0; e < k.HS; e += 32, n++) {
                dv[n] += pd * __bfloat162float(go[e]);
                dk[n] += k.scale * ds * __bfloat162float(q[e]);
            }
        }
    }
    bf16 *dkr = d_kv_qkv + krow, *dvr = dkr + k.HS;
    for (int e = lane, n = 0; e < k.HS; e += 32, n++) {
        dkr[e] = __float2bfloat16(__bfloat162float(dkr[e]) + dk[n]);
        dvr[e] = __float2bfloat16(__bfloat162float(dvr[e]) + dv[n]);
    }
}

void cuda_attention_block_forward(Backend *be, void *out, float *lse, const void *q_qkv,
                                  const void *kv_qkv, int B, int NH, int NG, int HS,
                                  const AttentionBlock *blk, const int32_t *key_start,
                                  const AttentionDropout *dropout, bool first) {
    const RingBlock k = ring_block(B, NH, NG, HS, blk, key_start, dropout);
    const size_t rows = (size_t)B * NH * blk->Tq;
    block_forward_kernel<<<ceil_div_u(rows, RING_ROWS_PER_BLOCK), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, lse, (const bf16 *)q_qkv, (const bf16 *)kv_qkv, k, first);
    CUDA_CHECK_LAUNCH();
}

void cuda_attention_block_backward(Backend *be, void *d_q_qkv, void *d_kv_qkv, const void *dout,
                                   const void *q_qkv, const void *kv_qkv, const void *out,
                                   const float *lse, int B, int NH, int NG, int HS,
                                   const AttentionBlock *blk, const int32_t *key_start,
                                   const AttentionDropout *dropout) {
    const RingBlock k = ring_block(B, NH, NG, HS, blk, key_start, dropout);
    const size_t rows = (size_t)B * NH * blk->Tq, key_rows = (size_t)B * NG * blk->Tk;
    float *D = (float *)cuda_scratch(be, rows * sizeof(float));
    const cudaStream_t s = stream_of(be);
    row_dot_kernel<<<ceil_div_u(rows, RING_ROWS_PER_BLOCK), THREADS, 0, s>>>(
        D, (const bf16 *)dout, (const bf16 *)out, k);
    CUDA_CHECK_LAUNCH();
    // dq before dk/dv: when the two gradients are one buffer their heads
    // are disjoint, and the passes never write what the other reads.
    block_dq_kernel<<<ceil_div_u(rows, RING_ROWS_PER_BLOCK), THREADS, 0, s>>>(
        (bf16 *)d_q_qkv, (const bf16 *)dout, (const bf16 *)q_qkv, (const bf16 *)kv_qkv, lse, D, k);
    CUDA_CHECK_LAUNCH();
    block_dkv_kernel<<<ceil_div_u(key_rows, RING_ROWS_PER_BLOCK), THREADS, 0, s>>>(
        (bf16 *)d_kv_qkv, (const bf16 *)dout, (const bf16 *)q_qkv, (const bf16 *)kv_qkv, lse, D,
        k);
    CUDA_CHECK_LAUNCH();
}
