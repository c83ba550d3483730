// backend/cuda/cuda_layernorm.cu — layernorm forward and backward (eps 1e-5,
// biased variance, fp32 statistics).
//
// One warp per row: the row statistics are warp reductions in a fixed
// shuffle tree. The weight and bias gradients are column sums over all rows;
// they go through the two-phase column reduction of cuda_matmul.cu (per-chunk
// partial sums, then the chunks added in order), so they are deterministic.
#include "backend/cuda/cuda_internal.cuh"

static const float LAYERNORM_EPS = 1e-5f;
enum { ROWS_PER_BLOCK = THREADS / 32 };

static __global__ void layernorm_forward_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                                const bf16 *weight, const bf16 *bias, int N, int C) {
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
    const float rs = 1.0f / sqrtf(warp_sum(sq) / (float)C + LAYERNORM_EPS);
    bf16 *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        o[c] = to_bf16((to_f32(x[c]) - mu) * rs * to_f32(weight[c]) + to_f32(bias[c]));
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

void cuda_layernorm_forward(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                            const void *weight, const void *bias, int N, int C) {
    GPT3D_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    layernorm_forward_kernel<<<ceil_div_u((size_t)N, ROWS_PER_BLOCK), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)weight, (const bf16 *)bias, N, C);
    CUDA_CHECK_LAUNCH();
}

// dinp += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with
// dxhat = dout * weight; one warp per row.
static __global__ void layernorm_backward_input_kernel(bf16 *dinp, const bf16 *dout,
                                                       const bf16 *inp, const bf16 *weight,
                                                       const float *mean, const float *rstd, int N,
                                                       int C) {
    const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *g = dout + (size_t)row * C;
    const float mu = mean[row], rs = rstd[row];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * to_f32(weight[c]);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / (float)C;
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / (float)C;
    bf16 *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(x[c]) - mu) * rs;
        float dxhat = to_f32(g[c]) * to_f32(weight[c]);
        dx[c] = to_bf16(to_f32(dx[c]) + (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * rs);
    }
}

// grid (column blocks, chunks): thread (c, k) sums dout * xhat and dout over
// chunk k's rows, in row order, into partial_w[k, c] and partial_b[k, c].
static __global__ void layernorm_param_partials_kernel(float *partial_w, float *partial_b,
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
        float xhat = (to_f32(inp[(size_t)r * C + c]) - mean[r]) * rstd[r];
        sw += g * xhat;
        sb += g;
    }
    partial_w[(size_t)k * C + c] = sw;
    partial_b[(size_t)k * C + c] = sb;
}

void cuda_layernorm_backward(Backend *be, void *dinp, float *dweight, float *dbias,
                             const void *dout, const void *inp, const void *weight,
                             const float *mean, const float *rstd, int N, int C) {
    GPT3D_CHECK(N >= 0 && C > 0, "layernorm_backward: bad shape N=%d C=%d", N, C);
    if (N == 0) return;
    cudaStream_t stream = stream_of(be);
    const bf16 *g = (const bf16 *)dout, *x = (const bf16 *)inp;
    layernorm_backward_input_kernel<<<ceil_div_u((size_t)N, ROWS_PER_BLOCK), THREADS, 0, stream>>>(
        (bf16 *)dinp, g, x, (const bf16 *)weight, mean, rstd, N, C);
    CUDA_CHECK_LAUNCH();

    ColumnChunks ch = column_chunks(N);
    const size_t partial_bytes = align256((size_t)ch.chunks * C * sizeof(float));
    char *scratch = (char *)cuda_scratch(be, 2 * partial_bytes);
    float *partial_w = (float *)scratch, *partial_b = (float *)(scratch + partial_bytes);
    dim3 grid(ceil_div_u((size_t)C, THREADS), (unsigned)ch.chunks);
    layernorm_param_partials_kernel<<<grid, THREADS, 0, stream>>>(partial_w, partial_b, g, x, mean,
                                                                  rstd, N, C, ch.rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    cuda_add_chunk_partials(be, dweight, partial_w, ch, C);
    cuda_add_chunk_partials(be, dbias, partial_b, ch, C);
}
