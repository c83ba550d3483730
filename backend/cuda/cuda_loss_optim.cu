// backend/cuda/cuda_loss_optim.cu — the vocab-parallel cross-entropy pieces,
// AdamW, and the reductions over fp32 buffers.
//
// Cross entropy reads bf16 logits and does all its math in fp32; one block
// per row reduces over the vocabulary slice with a fixed tree. AdamW is the
// header's formula in the CPU backend's operation order with every
// operation rounded as written (the _rn intrinsics keep nvcc from fusing a
// multiply and an add), so it matches the CPU bit for bit on equal inputs.
#include <cmath>

#include "backend/cuda/cuda_internal.cuh"

// Local columns [0, valid) of a slice starting at global id vocab_begin are
// real tokens; the rest are padding up to V_pad.
static int valid_columns(int V, int vocab_begin, int vocab_size) {
    int valid = vocab_size - vocab_begin;
    if (valid < 0) return 0;
    return valid < V ? valid : V;
}

// ---- cross entropy: one block per row -------------------------------------------

static __global__ void cross_entropy_max_kernel(float *rowmax, const bf16 *logits, int V,
                                                int valid) {
    __shared__ float shared[32];
    const bf16 *z = logits + (size_t)blockIdx.x * V;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) m = fmaxf(m, to_f32(z[j]));
    m = block_reduce(m, shared, -INFINITY, WarpMaxF());
    if (threadIdx.x == 0) rowmax[blockIdx.x] = m;
}

static __global__ void cross_entropy_sums_kernel(float *sumexp, float *target_logit,
                                                 const bf16 *logits, const float *rowmax,
                                                 const int32_t *targets, int V, int valid,
                                                 int vocab_begin) {
    __shared__ float shared[32];
    const int n = blockIdx.x;
    const bf16 *z = logits + (size_t)n * V;
    const float m = rowmax[n];
    float sum = 0.0f;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) sum += expf(to_f32(z[j]) - m);
    sum = block_reduce(sum, shared, 0.0f, WarpSumF());
    if (threadIdx.x == 0) {
        sumexp[n] = sum;
        int local = targets[n] - vocab_begin;
        target_logit[n] = (local >= 0 && local < valid) ? to_f32(z[local]) : 0.0f;
    }
}

static __global__ void cross_entropy_loss_kernel(float *losses, const float *rowmax,
                                                 const float *sumexp, const float *target_logit,
                                                 int N) {
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x)
        losses[n] = logf(sumexp[n]) + rowmax[n] - target_logit[n];
}

// One thread per logit; dlogits may alias logits (each element is read, then
// written, by the same thread).
static __global__ void cross_entropy_backward_kernel(bf16 *dlogits, const bf16 *logits,
                                                     const float *rowmax, const float *sumexp,
                                                     const int32_t *targets, int N, int V,
                                                     int valid, int vocab_begin, float dloss) {
    const size_t total = (size_t)N * V;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int n = (int)(i / (size_t)V), j = (int)(i % (size_t)V);
        float d = 0.0f; // padded columns, and rows not in the loss (negative target)
        if (j < valid && targets[n] >= 0) {
            d = expf(to_f32(logits[i]) - rowmax[n]) * (dloss / sumexp[n]);
            if (j == targets[n] - vocab_begin) d -= dloss;
        }
        dlogits[i] = to_bf16(d);
    }
}

void cuda_cross_entropy_max(Backend *be, float *rowmax, const void *logits, int N, int V,
                            int vocab_begin, int vocab_size) {
    GPT3D_CHECK(N >= 0 && V > 0, "cross_entropy_max: bad shape N=%d V=%d", N, V);
    if (N == 0) return;
    cross_entropy_max_kernel<<<(unsigned)N, THREADS, 0, stream_of(be)>>>(
        rowmax, (const bf16 *)logits, V, valid_columns(V, vocab_begin, vocab_size));
    CUDA_CHECK_LAUNCH();
}

void cuda_cross_entropy_sums(Backend *be, float *sumexp, float *target_logit, const void *logits,
                             const float *rowmax, const int32_t *targets, int N, int V,
                             int vocab_begin, int vocab_size) {
    GPT3D_CHECK(N >= 0 && V > 0, "cross_entropy_sums: bad shape N=%d V=%d", N, V);
    if (N == 0) return;
    cross_entropy_sums_kernel<<<(unsigned)N, THREADS, 0, stream_of(be)>>>(
        sumexp, target_logit, (const bf16 *)logits, rowmax, targets, V,
        valid_columns(V, vocab_begin, vocab_size), vocab_begin);
    CUDA_CHECK_LAUNCH();
}

void cuda_cross_entropy_loss(Backend *be, float *losses, const float *rowmax, const float *sumexp,
                             const float *target_logit, int N) {
    GPT3D_CHECK(N >= 0, "cross_entropy_loss: bad N=%d", N);
    if (N == 0) return;
    cross_entropy_loss_kernel<<<grid_for((size_t)N), THREADS, 0, stream_of(be)>>>(
        losses, rowmax, sumexp, target_logit, N);
    CUDA_CHECK_LAUNCH();
}

void cuda_cross_entropy_backward(Backend *be, void *dlogits, const void *logits,
                                 const float *rowmax, const float *sumexp, const int32_t *targets,
                                 int N, int V, int vocab_begin, int vocab_size, float dloss) {
    GPT3D_CHECK(N >= 0 && V > 0, "cross_entropy_backward: bad shape N=%d V=%d", N, V);
    size_t total = (size_t)N * V;
    if (!total) return;
    cross_entropy_backward_kernel<<<grid_for(total), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dlogits, (const bf16 *)logits, rowmax, sumexp, targets, N, V,
        valid_columns(V, vocab_begin, vocab_size), vocab_begin, dloss);
    CUDA_CHECK_LAUNCH();
}

// ---- AdamW ---------------------------------------------------------------------------

typedef struct {
    float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, grad_scale;
    float bias_correction1, bias_correction2;
} AdamWConstants;

static __global__ void adamw_kernel(bf16 *param, float *master, const float *grad, float *m,
                                    float *v, size_t n, AdamWConstants k) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        // The CPU's expressions, left to right, one rounding per operation.
        float g = __fmul_rn(grad[i], k.grad_scale);
        float mi = __fadd_rn(__fmul_rn(k.beta1, m[i]), __fmul_rn(k.one_minus_beta1, g));
        float vi = __fadd_rn(__fmul_rn(k.beta2, v[i]), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
        float mhat = __fdiv_rn(mi, k.bias_correction1);
        float vhat = __fdiv_rn(vi, k.bias_correction2);
        float w = master[i];
        float update = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), k.eps)),
                                 __fmul_rn(k.weight_decay, w));
        w = __fsub_rn(w, __fmul_rn(k.lr, update));
        m[i] = mi;
        v[i] = vi;
        master[i] = w;
        if (param) param[i] = to_bf16(w);
    }
}

void cuda_adamw_update(Backend *be, void *param, float *master, const float *grad, float *m,
                       float *v, size_t n, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, int step) {
    GPT3D_CHECK(step >= 1, "adamw_update: step must start at 1, got %d", step);
    if (!n) return;
    AdamWConstants k;
    k.lr = lr;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.one_minus_beta1 = 1.0f - beta1;
    k.one_minus_beta2 = 1.0f - beta2;
    k.eps = eps;
    k.weight_decay = weight_decay;
    k.grad_scale = grad_scale;
    // On the host with powf, as the CPU backend computes them.
    k.bias_correction1 = 1.0f - powf(beta1, (float)step);
    k.bias_correction2 = 1.0f - powf(beta2, (float)step);
    adamw_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)param, master, grad, m, v, n,
                                                             k);
    CUDA_CHECK_LAUNCH();
}

// ---- reductions over fp32 buffers ----------------------------------------------------
// A fixed grid (not derived from the device), so the split of the buffer
// into per-thread and per-block sums, and hence the result, depends on n only.
enum { REDUCE_BLOCKS = 512 };

static __global__ void sum_squares_kernel(double *partial, const float *x, size_t n) {
    __shared__ double shared[32];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        acc += (double)x[i] * (double)x[i];
    acc = block_reduce(acc, shared, 0.0, WarpSumD());
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// The REDUCE_BLOCKS per-block results of a reduction kernel, summed on the
// host in block order, so the result does not depend on scheduling.
static double sum_block_partials(Backend *be, const double *partial) {
    cudaStream_t stream = stream_of(be);
    double *host = (double *)cuda_host_scratch(be, REDUCE_BLOCKS * sizeof(double));
    CUDA_CHECK(cudaMemcpyAsync(host, partial, REDUCE_BLOCKS * sizeof(double),
                               cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    double sum = 0.0;
    for (int i = 0; i < REDUCE_BLOCKS; i++) sum += host[i];
    return sum;
}

double cuda_sum_squares_f32(Backend *be, const float *x, size_t n) {
    if (!n) return 0.0;
    double *partial = (double *)cuda_scratch(be, REDUCE_BLOCKS * sizeof(double));
    sum_squares_kernel<<<REDUCE_BLOCKS, THREADS, 0, stream_of(be)>>>(partial, x, n);
    CUDA_CHECK_LAUNCH();
    return sum_block_partials(be, partial);
}

// Per-block counts as doubles (exact below 2^53 elements), so the count
// shares the sum of squares' reduction and read-back.
static __global__ void count_zeros_kernel(double *partial, const float *x, size_t n) {
    __shared__ double shared[32];
    double count = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        count += x[i] == 0.0f ? 1.0 : 0.0;
    count = block_reduce(count, shared, 0.0, WarpSumD());
    if (threadIdx.x == 0) partial[blockIdx.x] = count;
}

uint64_t cuda_count_zeros_f32(Backend *be, const float *x, size_t n) {
    if (!n) return 0;
    double *partial = (double *)cuda_scratch(be, REDUCE_BLOCKS * sizeof(double));
    count_zeros_kernel<<<REDUCE_BLOCKS, THREADS, 0, stream_of(be)>>>(partial, x, n);
    CUDA_CHECK_LAUNCH();
    return (uint64_t)sum_block_partials(be, partial);
}

static __global__ void has_nonfinite_kernel(int *flag, const float *x, size_t n) {
    bool bad = false;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        bad |= !isfinite(x[i]);
    if (bad) *flag = 1; // every writer writes the same value
}

bool cuda_has_nonfinite_f32(Backend *be, const float *x, size_t n) {
    if (!n) return false;
    cudaStream_t stream = stream_of(be);
    int *flag = (int *)cuda_scratch(be, sizeof(int));
    CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), stream));
    has_nonfinite_kernel<<<REDUCE_BLOCKS, THREADS, 0, stream>>>(flag, x, n);
    CUDA_CHECK_LAUNCH();
    int host = 0;
    CUDA_CHECK(cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return host != 0;
}
