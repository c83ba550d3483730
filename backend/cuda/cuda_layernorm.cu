// backend/cuda/cuda_layernorm.cu — LayerNorm and RMSNorm, forward and
// backward (biased variance, fp32 statistics; eps and the 1p weight offset
// come from the caller), over consecutive rows or, for QK-norm, over the
// query and key heads of a qkv buffer.
//
// Where a norm's rows lie is a row map (DenseRows: row r at r * C;
// HeadRows: the r-th query or key head, strided inside its qkv row), so
// both uses run the same kernels and compute alike.
//
// One warp per row: the row statistics are warp reductions in a fixed
// shuffle tree. The weight and bias gradients are column sums over all rows;
// they go through the two-phase column reduction of cuda_matmul.cu (per-chunk
// partial sums, then the chunks added in order), so they are deterministic.
//
// The effective weight is weight + weight_offset, added in fp32 after the
// bf16 load: with --apply-layernorm-1p the stored weight is small and the
// sum 1 + w keeps w's bits instead of rounding 1 + w to bf16.
#include "backend/cuda/cuda_internal.cuh"

enum { ROWS_PER_BLOCK = THREADS / 32 };

static unsigned row_blocks(int N) { return ceil_div_u((size_t)N, ROWS_PER_BLOCK); }

// Row r of a [N, C] matrix; its statistics at r.
struct DenseRows {
    int C;
    __device__ size_t offset(int r) const { return (size_t)r * C; }
    __device__ int stat(int r) const { return r; }
};

// The query heads (key false: heads 0..Q-1 of each group) or the key heads
// (key true: head Q) of a qkv buffer [N, NG, Q + 2, HS], in order; the
// statistics are [N, NG, Q + 1] (backend.h, qk_norm_forward).
struct HeadRows {
    int NG, Q, HS;
    bool key;
    __device__ int group_row(int r, int *g, int *h) const {
        const int per_row = key ? NG : NG * Q;
        const int n = r / per_row, rem = r % per_row;
        *g = key ? rem : rem / Q;
        *h = key ? Q : rem % Q;
        return n;
    }
    __device__ size_t offset(int r) const {
        int g, h;
        const int n = group_row(r, &g, &h);
        return (((size_t)n * NG + g) * (Q + 2) + h) * HS;
    }
    __device__ int stat(int r) const {
        int g, h;
        const int n = group_row(r, &g, &h);
        return (n * NG + g) * (Q + 1) + h;
    }
};

// ---- LayerNorm ---------------------------------------------------------------

template <typename Rows>
static __global__ void layernorm_forward_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                                const bf16 *weight, const bf16 *bias, int N, int C,
                                                float eps, float weight_offset, Rows rows) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; // whole warps leave together; only warp shuffles follow
    const bf16 *x = inp + rows.offset(row);
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32) sum += to_f32(x[c]);
    const float mu = warp_sum(sum) / (float)C;
    // Two passes (mean, then squared deviations), as on the CPU: no
    // cancellation on rows with a large mean.
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = to_f32(x[c]) - mu;
        sq += d * d;
    }
    const float rs = 1.0f / sqrtf(warp_sum(sq) / (float)C + eps);
    bf16 *o = out + rows.offset(row);
    for (int c = lane; c < C; c += 32)
        o[c] = to_bf16((to_f32(x[c]) - mu) * rs * (to_f32(weight[c]) + weight_offset) +
                       to_f32(bias[c]));
    if (lane == 0) {
        mean[rows.stat(row)] = mu;
        rstd[rows.stat(row)] = rs;
    }
}

void cuda_layernorm_forward(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                            const void *weight, const void *bias, int N, int C, float eps,
                            float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    layernorm_forward_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)weight, (const bf16 *)bias, N, C,
        eps, weight_offset, DenseRows{C});
    CUDA_CHECK_LAUNCH();
}

// dinp += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with
// dxhat = dout * (weight + weight_offset); one warp per row. With
// accumulate false dinp is overwritten instead; it may then alias dout
// (each lane reads its elements of dout before it writes them).
template <typename Rows>
static __global__ void layernorm_backward_input_kernel(bf16 *dinp, const bf16 *dout,
                                                       const bf16 *inp, const bf16 *weight,
                                                       const float *mean, const float *rstd, int N,
                                                       int C, float weight_offset, Rows rows,
                                                       bool accumulate) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + rows.offset(row), *g = dout + rows.offset(row);
    const float mu = mean[rows.stat(row)], rs = rstd[rows.stat(row)];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / (float)C;
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / (float)C;
    bf16 *dx = dinp + rows.offset(row);
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        float prior = accumulate ? to_f32(dx[c]) : 0.0f;
        dx[c] = to_bf16(prior + (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * rs);
    }
}

// grid (column blocks, chunks): thread (c, k) sums dout * xhat (and dout,
// when partial_b is not NULL) over chunk k's rows, in row order, into
// partial_w[k, c] (partial_b[k, c]). xhat = (x - mean) * rstd, or x * rstd
// for RMSNorm (mean NULL).
template <typename Rows>
static __global__ void norm_param_partials_kernel(float *partial_w, float *partial_b,
                                                  const bf16 *dout, const bf16 *inp,
                                                  const float *mean, const float *rstd, int N,
                                                  int C, int rows_per_chunk, Rows rows) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int k = blockIdx.y;
    if (c >= C) return;
    const int r0 = k * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float sw = 0.0f, sb = 0.0f;
    for (int r = r0; r < r1; r++) {
        const size_t at = rows.offset(r) + c;
        const int st = rows.stat(r);
        float g = to_f32(dout[at]);
        float centred = to_f32(inp[at]) - (mean ? mean[st] : 0.0f);
        sw += g * (centred * rstd[st]);
        sb += g;
    }
    partial_w[(size_t)k * C + c] = sw;
    if (partial_b) partial_b[(size_t)k * C + c] = sb;
}

// dweight (and dbias when not NULL) += the column sums of the norm's
// parameter gradients, through per-chunk partials.
template <typename Rows>
static void norm_param_grads(Backend *be, float *dweight, float *dbias, const bf16 *dout,
                             const bf16 *inp, const float *mean, const float *rstd, int N, int C,
                             Rows rows) {
    ColumnChunks ch = column_chunks(N);
    const size_t partial_bytes = align256((size_t)ch.chunks * C * sizeof(float));
    char *scratch = (char *)cuda_scratch(be, (dbias ? 2 : 1) * partial_bytes);
    float *partial_w = (float *)scratch;
    float *partial_b = dbias ? (float *)(scratch + partial_bytes) : NULL;
    dim3 grid(ceil_div_u((size_t)C, THREADS), (unsigned)ch.chunks);
    norm_param_partials_kernel<<<grid, THREADS, 0, stream_of(be)>>>(
        partial_w, partial_b, dout, inp, mean, rstd, N, C, ch.rows_per_chunk, rows);
    CUDA_CHECK_LAUNCH();
    cuda_add_chunk_partials(be, dweight, partial_w, ch, C);
    if (dbias) cuda_add_chunk_partials(be, dbias, partial_b, ch, C);
}

void cuda_layernorm_backward(Backend *be, void *dinp, float *dweight, float *dbias,
                             const void *dout, const void *inp, const void *weight,
                             const float *mean, const float *rstd, int N, int C,
                             float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "layernorm_backward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)inp;
    layernorm_backward_input_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, g, x, (const bf16 *)weight, mean, rstd, N, C, weight_offset, DenseRows{C},
        true);
    CUDA_CHECK_LAUNCH();
    norm_param_grads(be, dweight, dbias, g, x, mean, rstd, N, C, DenseRows{C});
}

// ---- RMSNorm -----------------------------------------------------------------

template <typename Rows>
static __global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd, const bf16 *inp,
                                              const bf16 *weight, int N, int C, float eps,
                                              float weight_offset, Rows rows) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + rows.offset(row);
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float v = to_f32(x[c]);
        sq += v * v;
    }
    const float rs = 1.0f / sqrtf(warp_sum(sq) / (float)C + eps);
    bf16 *o = out + rows.offset(row);
    for (int c = lane; c < C; c += 32)
        o[c] = to_bf16(to_f32(x[c]) * rs * (to_f32(weight[c]) + weight_offset));
    if (lane == 0) rstd[rows.stat(row)] = rs;
}

void cuda_rmsnorm_forward(Backend *be, void *out, float *rstd, const void *inp, const void *weight,
                          int N, int C, float eps, float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "rmsnorm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    rmsnorm_forward_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, rstd, (const bf16 *)inp, (const bf16 *)weight, N, C, eps, weight_offset,
        DenseRows{C});
    CUDA_CHECK_LAUNCH();
}

// dinp += rstd * (dxhat - xhat * mean(dxhat * xhat)), with xhat = x * rstd
// and dxhat = dout * (weight + weight_offset): LayerNorm's gradient without
// the mean terms, as nothing is subtracted. One warp per row; accumulate
// and aliasing as for LayerNorm.
template <typename Rows>
static __global__ void rmsnorm_backward_input_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                                     const bf16 *weight, const float *rstd, int N,
                                                     int C, float weight_offset, Rows rows,
                                                     bool accumulate) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + rows.offset(row), *g = dout + rows.offset(row);
    const float rs = rstd[rows.stat(row)];
    float sum_dxhat_xhat = 0.0f;
    for (int c = lane; c < C; c += 32)
        sum_dxhat_xhat += to_f32(g[c]) * (to_f32(weight[c]) + weight_offset) * (to_f32(x[c]) * rs);
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / (float)C;
    bf16 *dx = dinp + rows.offset(row);
    for (int c = lane; c < C; c += 32) {
        float xhat = to_f32(x[c]) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        float prior = accumulate ? to_f32(dx[c]) : 0.0f;
        dx[c] = to_bf16(prior + (dxhat - xhat * mean_dxhat_xhat) * rs);
    }
}

void cuda_rmsnorm_backward(Backend *be, void *dinp, float *dweight, const void *dout,
                           const void *inp, const void *weight, const float *rstd, int N, int C,
                           float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "rmsnorm_backward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)inp;
    rmsnorm_backward_input_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, g, x, (const bf16 *)weight, rstd, N, C, weight_offset, DenseRows{C}, true);
    CUDA_CHECK_LAUNCH();
    norm_param_grads(be, dweight, NULL, g, x, NULL, rstd, N, C, DenseRows{C});
}

// ---- QK-norm -------------------------------------------------------------------
// The query heads and then the key heads, each kind one launch of the row
// kernels above with its HeadRows map and its own weight; the value heads
// are copied by a grid-stride kernel.

static HeadRows head_rows(const QKNormShape *s, bool key) {
    return HeadRows{s->NG, s->NH / s->NG, s->HS, key};
}
static int head_count(const QKNormShape *s, bool key) {
    return s->N * s->NG * (key ? 1 : s->NH / s->NG);
}

static void check_qk_shape(const QKNormShape *s, const char *op) {
    GPT3D_CHECK(s->N >= 0 && s->NG > 0 && s->NH % s->NG == 0 && s->HS > 0,
                "%s: bad shape N=%d NH=%d NG=%d HS=%d", op, s->N, s->NH, s->NG, s->HS);
}

// dst's value heads = src's: element e of group g's value head of row n.
static __global__ void copy_value_heads_kernel(bf16 *dst, const bf16 *src, int NG, int Q, int HS,
                                               size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t head = i / HS, e = i % HS; // head = row * NG + group
        const size_t at = (head * (Q + 2) + Q + 1) * HS + e;
        dst[at] = src[at];
    }
}

static void copy_value_heads(Backend *be, void *dst, const void *src, const QKNormShape *s) {
    const size_t n = (size_t)s->N * s->NG * s->HS;
    if (dst == src || !n) return;
    copy_value_heads_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dst, (const bf16 *)src, s->NG, s->NH / s->NG, s->HS, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_qk_norm_forward(Backend *be, void *out, float *mean, float *rstd, const void *qkv,
                          const void *q_weight, const void *q_bias, const void *k_weight,
                          const void *k_bias, const QKNormShape *s) {
    check_qk_shape(s, "qk_norm_forward");
    if (s->N == 0) return;
    for (int key = 0; key < 2; key++) {
        const HeadRows rows = head_rows(s, key);
        const int R = head_count(s, key);
        const bf16 *w = (const bf16 *)(key ? k_weight : q_weight);
        const bf16 *b = (const bf16 *)(key ? k_bias : q_bias);
        if (s->rms)
            rmsnorm_forward_kernel<<<row_blocks(R), THREADS, 0, stream_of(be)>>>(
                (bf16 *)out, rstd, (const bf16 *)qkv, w, R, s->HS, s->eps, s->weight_offset, rows);
        else
            layernorm_forward_kernel<<<row_blocks(R), THREADS, 0, stream_of(be)>>>(
                (bf16 *)out, mean, rstd, (const bf16 *)qkv, w, b, R, s->HS, s->eps,
                s->weight_offset, rows);
        CUDA_CHECK_LAUNCH();
    }
    copy_value_heads(be, out, qkv, s);
}

// The weight gradients read dout, so they come first: dqkv may alias it.
void cuda_qk_norm_backward(Backend *be, void *dqkv, float *dq_weight, float *dq_bias,
                           float *dk_weight, float *dk_bias, const void *dout, const void *qkv,
                           const void *q_weight, const void *k_weight, const float *mean,
                           const float *rstd, const QKNormShape *s) {
    check_qk_shape(s, "qk_norm_backward");
    if (s->N == 0) return;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)qkv;
    for (int key = 0; key < 2; key++) {
        float *dw = key ? dk_weight : dq_weight, *db = s->rms ? NULL : key ? dk_bias : dq_bias;
        norm_param_grads(be, dw, db, g, x, s->rms ? NULL : mean, rstd, head_count(s, key), s->HS,
                         head_rows(s, key));
    }
    for (int key = 0; key < 2; key++) {
        const HeadRows rows = head_rows(s, key);
        const int R = head_count(s, key);
        const bf16 *w = (const bf16 *)(key ? k_weight : q_weight);
        if (s->rms)
            rmsnorm_backward_input_kernel<<<row_blocks(R), THREADS, 0, stream_of(be)>>>(
                (bf16 *)dqkv, g, x, w, rstd, R, s->HS, s->weight_offset, rows, false);
        else
            layernorm_backward_input_kernel<<<row_blocks(R), THREADS, 0, stream_of(be)>>>(
                (bf16 *)dqkv, g, x, w, mean, rstd, R, s->HS, s->weight_offset, rows, false);
        CUDA_CHECK_LAUNCH();
    }
    copy_value_heads(be, dqkv, dout, s);
}
