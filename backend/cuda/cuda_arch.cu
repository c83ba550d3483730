// backend/cuda/cuda_arch.cu — the ops of the modern architectures: SwiGLU,
// squared ReLU, counter-keyed dropout and rotary position embeddings.
//
// One thread per element (per rotated pair for RoPE) in grid-stride loops;
// bf16 in and out, fp32 math in between, one rounding at the store. Every
// kernel reads an element before it writes that same element, and no
// thread touches another's elements, so in-place calls (dropout with out ==
// inp, RoPE on qkv) are safe; hence no __restrict__.
//
// Dropout masks: element (r, c) of a [rows, cols] block has the counter
// (row0 + r) * row_stride + col0 + c, and is kept when word 0 of its Philox
// block is >= threshold (philox_block in cuda_internal.cuh is core/rng.c's
// rng_block bit for bit), so this backend keeps exactly the elements the CPU
// backend keeps, in every layout.
#include "backend/cuda/cuda_internal.cuh"

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

// ---- SwiGLU --------------------------------------------------------------------
// expf, not __expf: the CPU reference uses a full-precision exp. For a very
// negative gate exp(-x) is inf and the sigmoid is exactly 0, never NaN.

static __device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// inp [n, 2]: element i's gate at 2i, its up value at 2i + 1.
static __global__ void swiglu_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    GRID_STRIDE(i, n) {
        const float gate = to_f32(inp[2 * i]), up = to_f32(inp[2 * i + 1]);
        out[i] = to_bf16(gate * sigmoid(gate) * up);
    }
}

// d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x).
static __global__ void swiglu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout,
                                              size_t n) {
    GRID_STRIDE(i, n) {
        const float gate = to_f32(inp[2 * i]), up = to_f32(inp[2 * i + 1]), g = to_f32(dout[i]);
        const float s = sigmoid(gate);
        dinp[2 * i] = to_bf16(g * up * s * (1.0f + gate * (1.0f - s)));
        dinp[2 * i + 1] = to_bf16(g * gate * s);
    }
}

void cuda_swiglu_forward(Backend *be, void *out, const void *inp, int N, int F) {
    GPT3D_CHECK(N >= 0 && F > 0, "swiglu_forward: bad shape N=%d F=%d", N, F);
    const size_t n = (size_t)N * (size_t)F;
    if (!n) return;
    swiglu_forward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out,
                                                                       (const bf16 *)inp, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_swiglu_backward(Backend *be, void *dinp, const void *inp, const void *dout, int N,
                          int F) {
    GPT3D_CHECK(N >= 0 && F > 0, "swiglu_backward: bad shape N=%d F=%d", N, F);
    const size_t n = (size_t)N * (size_t)F;
    if (!n) return;
    swiglu_backward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, (const bf16 *)inp, (const bf16 *)dout, n);
    CUDA_CHECK_LAUNCH();
}

// ---- squared ReLU ----------------------------------------------------------------
// x > 0 ? x : 0 rather than fmaxf(x, 0): fmaxf(-0, +0) may return -0, and
// the gradient's sign of zero would then differ from the CPU's.

static __device__ __forceinline__ float relu(float x) { return x > 0.0f ? x : 0.0f; }

static __global__ void squared_relu_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    GRID_STRIDE(i, n) {
        const float r = relu(to_f32(inp[i]));
        out[i] = to_bf16(r * r);
    }
}

static __global__ void squared_relu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout,
                                                    size_t n) {
    GRID_STRIDE(i, n) {
        const float r = relu(to_f32(inp[i]));
        dinp[i] = to_bf16(to_f32(dout[i]) * 2.0f * r);
    }
}

void cuda_squared_relu_forward(Backend *be, void *out, const void *inp, size_t n) {
    if (!n) return;
    squared_relu_forward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out,
                                                                             (const bf16 *)inp, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_squared_relu_backward(Backend *be, void *dinp, const void *inp, const void *dout,
                                size_t n) {
    if (!n) return;
    squared_relu_backward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)dinp, (const bf16 *)inp, (const bf16 *)dout, n);
    CUDA_CHECK_LAUNCH();
}

// ---- dropout -----------------------------------------------------------------------
// Forward and backward are one kernel: both scale the kept elements of src
// and zero the rest under the same mask. The key travels by value (the
// caller's DropoutKey is host memory).

static __global__ void dropout_kernel(bf16 *dst, const bf16 *src, size_t n, int cols,
                                      DropoutKey key) {
    GRID_STRIDE(i, n) {
        const uint64_t r = i / (size_t)cols, c = i % (size_t)cols;
        const uint64_t counter = (key.row0 + r) * key.row_stride + key.col0 + c;
        const bool keep = dropout_keeps(key.seed, key.stream, counter, key.threshold);
        dst[i] = to_bf16(keep ? to_f32(src[i]) * key.scale : 0.0f);
    }
}

static void dropout_apply(Backend *be, void *dst, const void *src, int rows, int cols,
                          const DropoutKey *key, const char *what) {
    GPT3D_CHECK(rows >= 0 && cols > 0 && key, "%s: bad shape rows=%d cols=%d", what, rows, cols);
    const size_t n = (size_t)rows * (size_t)cols;
    if (!n) return;
    dropout_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)dst, (const bf16 *)src, n,
                                                                cols, *key);
    CUDA_CHECK_LAUNCH();
}

void cuda_dropout_forward(Backend *be, void *out, const void *inp, int rows, int cols,
                          const DropoutKey *key) {
    dropout_apply(be, out, inp, rows, cols, key, "dropout_forward");
}

void cuda_dropout_backward(Backend *be, void *dinp, const void *dout, int rows, int cols,
                           const DropoutKey *key) {
    dropout_apply(be, dinp, dout, rows, cols, key, "dropout_backward");
}

// ---- rotary position embeddings ----------------------------------------------------
// A table of cos and sin [T, rot_dim/2] first, in fp32 as Hugging Face
// computes it (inv_freq = 1 / base^(2i / rot_dim), angle = t * inv_freq), so
// imported Llama weights see their rotation; then one thread per rotated
// pair of every query and key head.

// The rotation of pair i at position t, computed where it is used: a
// position id may be any place in the sequence (a context-parallel rank's
// rows), so no table sized by the rows would do. The same fp32 expressions
// as the CPU backend's table.
static __device__ __forceinline__ void rope_angle(int t, int i, int rot_dim, float base, float *c,
                                                  float *s) {
    const float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)rot_dim);
    const float angle = (float)t * inv_freq;
    *c = cosf(angle);
    *s = sinf(angle);
}

// Where the rotated pairs of a qkv row sit: per group `rotated` heads (its
// query heads, then its key) of HS features, groups `per_group` heads apart;
// pair i is features (i, i + half) in rotate-half order, (2i, 2i + 1)
// interleaved.
typedef struct {
    int T, NG, per_group, rotated, HS, half;
    int stride_x, offset_y;
} RopeLayout;

// direction +1 rotates by the angle (forward), -1 by minus the angle (the
// transpose, backward): (x, y) -> (x cos - y s, y cos + x s), s = dir * sin.
static __global__ void rope_apply_kernel(bf16 *qkv, const int32_t *position_ids, size_t pairs,
                                         RopeLayout L, int rot_dim, float base, float direction) {
    const size_t row_len = (size_t)L.NG * L.per_group * L.HS;
    const size_t heads_per_row = (size_t)L.NG * L.rotated;
    GRID_STRIDE(idx, pairs) {
        const int i = (int)(idx % (size_t)L.half);
        const size_t head_index = (idx / (size_t)L.half) % heads_per_row;
        const size_t row = idx / ((size_t)L.half * heads_per_row); // b * T + t
        const int t = position_ids ? position_ids[row] : (int)(row % (size_t)L.T);
        const int g = (int)(head_index / (size_t)L.rotated), h = (int)(head_index % (size_t)L.rotated);
        bf16 *head = qkv + row * row_len + ((size_t)g * L.per_group + h) * L.HS;
        bf16 *px = head + (size_t)i * L.stride_x, *py = px + L.offset_y;
        const float x = to_f32(*px), y = to_f32(*py);
        float c, s;
        rope_angle(t, i, rot_dim, base, &c, &s);
        s *= direction;
        *px = to_bf16(x * c - y * s);
        *py = to_bf16(y * c + x * s);
    }
}

static void rope_apply(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids,
                       float direction) {
    GPT3D_CHECK(B > 0 && T > 0 && NH > 0 && NG > 0 && NH % NG == 0 && rot_dim >= 2 &&
                    rot_dim % 2 == 0 && rot_dim <= HS,
                "rope: bad shape B=%d T=%d NH=%d NG=%d HS=%d rot_dim=%d", B, T, NH, NG, HS,
                rot_dim);
    RopeLayout L;
    L.T = T;
    L.NG = NG;
    L.per_group = NH / NG + 2;
    L.rotated = L.per_group - 1; // the group's query heads and its key; not its value
    L.HS = HS;
    L.half = rot_dim / 2;
    L.stride_x = interleaved ? 2 : 1;
    L.offset_y = interleaved ? 1 : L.half;
    cudaStream_t s = stream_of(be);
    const size_t pairs = (size_t)B * T * NG * L.rotated * L.half;
    rope_apply_kernel<<<grid_for(pairs), THREADS, 0, s>>>((bf16 *)qkv, position_ids, pairs, L,
                                                          rot_dim, base, direction);
    CUDA_CHECK_LAUNCH();
}

void cuda_rope_forward(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids) {
    rope_apply(be, qkv, B, T, NH, NG, HS, rot_dim, base, interleaved, position_ids, 1.0f);
}

void cuda_rope_backward(Backend *be, void *dqkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                        float base, bool interleaved, const int32_t *position_ids) {
    rope_apply(be, dqkv, B, T, NH, NG, HS, rot_dim, base, interleaved, position_ids, -1.0f);
}
