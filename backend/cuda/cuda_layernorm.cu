// backend/cuda/cuda_layernorm.cu — LayerNorm and RMSNorm, forward and
// backward (biased variance, fp32 statistics; eps and the 1p weight offset
// come from the caller).
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

// ---- LayerNorm ---------------------------------------------------------------

static __global__ void layernorm_forward_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                                const bf16 *weight, const bf16 *bias, int N, int C,
                                                float eps, float weight_offset) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; // whole warps leave together; only warp shuffles follow
    const bf16 *x = inp + (size_t)row * C;
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
    bf16 *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        o[c] = to_bf16((to_f32(x[c]) - mu) * rs * (to_f32(weight[c]) + weight_offset) +
                       to_f32(bias[c]));
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

void cuda_layernorm_forward(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                            const void *weight, const void *bias, int N, int C, float eps,
                            float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    layernorm_forward_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)weight, (const bf16 *)bias, N, C,
        eps, weight_offset);
    CUDA_CHECK_LAUNCH();
}

// dinp += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with
// dxhat = dout * (weight + weight_offset); one warp per row.
static __global__ void layernorm_backward_input_kernel(bf16 *dinp, const bf16 *dout,
                                                       const bf16 *inp, const bf16 *weight,
                                                       const float *mean, const float *rstd, int N,
                                                       int C, float weight_offset) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *g = dout + (size_t)row * C;
    const float mu = mean[row], rs = rstd[row];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / (float)C;
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / (float)C;
    bf16 *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        dx[c] = to_bf16(to_f32(dx[c]) + (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * rs);
    }
}

// grid (column blocks, chunks): thread (c, k) sums dout * xhat (and dout,
// when partial_b is not NULL) over chunk k's rows, in row order, into
// partial_w[k, c] (partial_b[k, c]). xhat = (x - mean) * rstd, or x * rstd
// for RMSNorm (mean NULL).
static __global__ void norm_param_partials_kernel(float *partial_w, float *partial_b,
                                                  const bf16 *dout, const bf16 *inp,
                                                  const float *mean, const float *rstd, int N,
                                                  int C, int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int k = blockIdx.y;
    if (c >= C) return;
    const int r0 = k * rows_per_chunk;
    const int r1 = min(N, r0 + rows_per_chunk);
    float sw = 0.0f, sb = 0.0f;
    for (int r = r0; r < r1; r++) {
        float g = to_f32(dout[(size_t)r * C + c]);
        float centred = to_f32(inp[(size_t)r * C + c]) - (mean ? mean[r] : 0.0f);
        sw += g * (centred * rstd[r]);
        sb += g;
    }
    partial_w[(size_t)k * C + c] = sw;
    if (partial_b) partial_b[(size_t)k * C + c] = sb;
}

// dweight (and dbias when not NULL) += the column sums of the norm's
// parameter gradients, through per-chunk partials.
static void norm_param_grads(Backend *be, float *dweight, float *dbias, const bf16 *dout,
                             const bf16 *inp, const float *mean, const float *rstd, int N, int C) {
    ColumnChunks ch = column_chunks(N);
    const size_t partial_bytes = align256((size_t)ch.chunks * C * sizeof(float));
    char *scratch = (char *)cuda_scratch(be, (dbias ? 2 : 1) * partial_bytes);
    float *partial_w = (float *)scratch;
    float *partial_b = dbias ? (float *)(scratch + partial_bytes) : NULL;
    dim3 grid(ceil_div_u((size_t)C, THREADS), (unsigned)ch.chunks);
    norm_param_partials_kernel<<<grid, THREADS, 0, stream_of(be)>>>(
        partial_w, partial_b, dout, inp, mean, rstd, N, C, ch.rows_per_chunk);
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
        (bf16 *)dinp, g, x, (const bf16 *)weight, mean, rstd, N, C, weight_offset);
    CUDA_CHECK_LAUNCH();
    norm_param_grads(be, dweight, dbias, g, x, mean, rstd, N, C);
}

// ---- RMSNorm -----------------------------------------------------------------

static __global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd, const bf16 *inp,
                                              const bf16 *weight, int N, int C, float eps,
                                              float weight_offset) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float v = to_f32(x[c]);
        sq += v * v;
    }
    const float rs = 1.0f / sqrtf(warp_sum(sq) / (float)C + eps);
    bf16 *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        o[c] = to_bf16(to_f32(x[c]) * rs * (to_f32(weight[c]) + weight_offset));
    if (lane == 0) rstd[row] = rs;
}

void cuda_rmsnorm_forward(Backend *be, void *out, float *rstd, const void *inp, const void *weight,
                          int N, int C, float eps, float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "rmsnorm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    rmsnorm_forward_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, rstd, (const bf16 *)inp, (const bf16 *)weight, N, C, eps, weight_offset);
    CUDA_CHECK_LAUNCH();
}

// dinp += rstd * (dxhat - xhat * mean(dxhat * xhat)), with xhat = x * rstd
// and dxhat = dout * (weight + weight_offset): LayerNorm's gradient without
// the mean terms, as nothing is subtracted. One warp per row.
static __global__ void rmsnorm_backward_input_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                                     const bf16 *weight, const float *rstd, int N,
                                                     int C, float weight_offset) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *g = dout + (size_t)row * C;
    const float rs = rstd[row];
    float sum_dxhat_xhat = 0.0f;
    for (int c = lane; c < C; c += 32)
        sum_dxhat_xhat += to_f32(g[c]) * (to_f32(weight[c]) + weight_offset) * (to_f32(x[c]) * rs);
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / (float)C;
    bf16 *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = to_f32(x[c]) * rs;
        float dxhat = to_f32(g[c]) * (to_f32(weight[c]) + weight_offset);
        dx[c] = to_bf16(to_f32(dx[c]) + (dxhat - xhat * mean_dxhat_xhat) * rs);
    }
}

void cuda_rmsnorm_backward(Backend *be, void *dinp, float *dweight, const void *dout,
                           const void *inp, const void *weight, const float *rstd, int N, int C,
                           float weight_offset) {
    GPT3D_CHECK(N >= 0 && C > 0, "rmsnorm_backward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)inp;
    rmsnorm_backward_input_kernel<<<row_blocks(N), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, g, x, (const bf16 *)weight, rstd, N, C, weight_offset);
    CUDA_CHECK_LAUNCH();
    norm_param_grads(be, dweight, NULL, g, x, NULL, rstd, N, C);
}
