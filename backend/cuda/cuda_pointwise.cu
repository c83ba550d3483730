// backend/cuda/cuda_pointwise.cu — casts, residual adds, bias add, fp32
// scaling and GELU. One thread per element in grid-stride loops; bf16 in and
// out, fp32 math in between.
//
// No __restrict__ on the element pointers: add() lets out alias a or b, and
// every kernel here reads an element before it writes that same element.
#include "backend/cuda/cuda_internal.cuh"

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

// ---- casts --------------------------------------------------------------------

static __global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] = to_bf16(src[i]); // round to nearest even
}

static __global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] = to_f32(src[i]);
}

void cuda_f32_to_act(Backend *be, void *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)dst, src, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_act_to_f32(Backend *be, float *dst, const void *src, size_t n) {
    if (!n) return;
    bf16_to_f32_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(dst, (const bf16 *)src, n);
    CUDA_CHECK_LAUNCH();
}

// ---- adds and scaling -------------------------------------------------------------

static __global__ void add_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = to_bf16(to_f32(a[i]) + to_f32(b[i]));
}

static __global__ void add_bias_kernel(bf16 *out, const bf16 *bias, size_t n, int OC) {
    GRID_STRIDE(i, n) out[i] = to_bf16(to_f32(out[i]) + to_f32(bias[i % (size_t)OC]));
}

static __global__ void scale_f32_kernel(float *x, float s, size_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}

void cuda_add(Backend *be, void *out, const void *a, const void *b, size_t n) {
    if (!n) return;
    add_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out, (const bf16 *)a,
                                                            (const bf16 *)b, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_add_inplace(Backend *be, void *dst, const void *src, size_t n) {
    cuda_add(be, dst, dst, src, n);
}

void cuda_add_bias(Backend *be, void *out, const void *bias, int N, int OC) {
    GPT3D_CHECK(N >= 0 && OC > 0, "add_bias: bad shape N=%d OC=%d", N, OC);
    size_t n = (size_t)N * (size_t)OC;
    if (!n) return;
    add_bias_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out, (const bf16 *)bias, n,
                                                                 OC);
    CUDA_CHECK_LAUNCH();
}

void cuda_scale_f32(Backend *be, float *x, float s, size_t n) {
    if (!n) return;
    scale_f32_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(x, s, n);
    CUDA_CHECK_LAUNCH();
}

// ---- GELU -------------------------------------------------------------------------
// The same function and derivative as the CPU backend (GPT-2's "gelu_new"
// written as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)). The exp
// argument is capped at 88 as there: for x below about -9.4, exp(-2u) would
// overflow to inf and the derivative's s * s * e would be 0 * inf = NaN.

static __device__ __forceinline__ float gelu_u(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535588f, cubic = 0.044715f;
    return sqrt_2_over_pi * (x + cubic * x * x * x);
}

static __device__ __forceinline__ float gelu_exp(float x) {
    return expf(fminf(-2.0f * gelu_u(x), 88.0f));
}

static __global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    GRID_STRIDE(i, n) {
        float x = to_f32(inp[i]);
        out[i] = to_bf16(x / (1.0f + gelu_exp(x)));
    }
}

static __global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout,
                                            size_t n) {
    const float sqrt_2_over_pi = 0.79788456080286535588f, cubic = 0.044715f;
    GRID_STRIDE(i, n) {
        float x = to_f32(inp[i]);
        float du_dx = sqrt_2_over_pi * (1.0f + 3.0f * cubic * x * x);
        float e = gelu_exp(x);
        float s = 1.0f / (1.0f + e);
        float local = s + 2.0f * x * du_dx * (s * s * e);
        dinp[i] = to_bf16(local * to_f32(dout[i]));
    }
}

void cuda_gelu_forward(Backend *be, void *out, const void *inp, size_t n) {
    if (!n) return;
    gelu_forward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out, (const bf16 *)inp,
                                                                     n);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_backward(Backend *be, void *dinp, const void *inp, const void *dout, size_t n) {
    if (!n) return;
    gelu_backward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, (const bf16 *)inp, (const bf16 *)dout, n);
    CUDA_CHECK_LAUNCH();
}
