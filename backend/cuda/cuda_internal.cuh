// backend/cuda/cuda_internal.cuh — what the files of the CUDA backend share:
// the per-backend state, the error checks, scratch memory, the cuBLASLt GEMM
// helper, bf16 conversions and the block reductions the kernels use, and the
// op functions that cuda_backend.cu gathers into the BackendOps table.
//
// Precision: `act` buffers are bf16 (__nv_bfloat16); kernels load bf16, do
// their math in fp32 and round once when they store. fp32 buffers stay fp32.
//
// Determinism: no atomics on floating-point data anywhere. Every reduction
// runs in an order fixed by the shapes alone (warp shuffles in a fixed tree,
// per-chunk partial sums then a fixed-order sum of the chunks), never by the
// device's SM count or by timing.
#ifndef GPT3D_BACKEND_CUDA_INTERNAL_CUH
#define GPT3D_BACKEND_CUDA_INTERNAL_CUH

#include <cstddef>
#include <cstdint>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/backend.h"

extern "C" {
#include "core/errors.h"
}

typedef __nv_bfloat16 bf16;

// ---- error checks (cuda_backend.cu) ----------------------------------------
// Stop the run with the failing call, file:line and a hint for the user.

void cuda_check(cudaError_t e, const char *call, const char *file, int line);
void cublas_check(cublasStatus_t s, const char *call, const char *file, int line);
const char *cuda_error_hint(cudaError_t e);

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
// After every kernel launch: a bad launch configuration shows up here; a
// fault inside the kernel shows up at the next synchronising call.
#define CUDA_CHECK_LAUNCH() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// ---- state ------------------------------------------------------------------

typedef struct {
    void *ptr;
    size_t bytes;
} CudaAllocation;

// Backend.gemm_seconds on this backend is GPU time: a start/stop event pair
// is recorded around every cuBLASLt call and read when the stream is next
// synchronised anyway (synchronize, copies to or from the host), so timing
// adds no stall of its own; the time of GEMMs still in flight appears after
// the next synchronising call. gemm_calls counts every cuBLASLt call.
enum { GEMM_TIMER_CAPACITY = 1024 };

typedef struct {
    cudaEvent_t start[GEMM_TIMER_CAPACITY];
    cudaEvent_t stop[GEMM_TIMER_CAPACITY];
    int created; // events [0, created) exist
    int pending; // pairs [0, pending) recorded and not yet read
} GemmTimers;

// Workspace cuBLASLt may use (32 MiB is NVIDIA's recommendation for Hopper).
enum { CUBLASLT_WORKSPACE_BYTES = 32 << 20 };

typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    // cuBLAS proper, on the same stream, for what cuBLASLt lacks: the
    // grouped GEMM of the experts.
    cublasHandle_t blas;
    // Live allocations of alloc(), for free()'s accounting.
    CudaAllocation *allocations;
    size_t num_allocations;
    size_t allocations_capacity;
    // Device scratch for ops that need temporaries (partial sums, attention
    // score blocks, index lists), grown on demand and kept. Not counted in
    // Backend.bytes_in_use: it is the backend's own working memory.
    void *scratch;
    size_t scratch_bytes;
    // Host staging for the few ops that read device data back (embedding
    // backward's index lists, reduction partials).
    void *host_scratch;
    size_t host_scratch_bytes;
    GemmTimers timers;
} CudaImpl;

static inline CudaImpl *impl_of(Backend *be) { return (CudaImpl *)be->impl; }
static inline cudaStream_t stream_of(Backend *be) { return impl_of(be)->stream; }

// Device scratch of at least `bytes`, valid until the next call of
// cuda_scratch (ops run in stream order, so one op's temporaries are dead by
// the time the next op asks). An op that needs several temporaries carves
// them out of one request.
void *cuda_scratch(Backend *be, size_t bytes);
// Host scratch of at least `bytes`, same lifetime rule.
void *cuda_host_scratch(Backend *be, size_t bytes);

// Rounds a byte count up so the next carved region stays 256-byte aligned.
static inline size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

// Adds the GPU time of finished GEMMs to be->gemm_seconds; call only right
// after the stream was synchronised.
void cuda_read_gemm_timers(Backend *be);

// ---- launch geometry --------------------------------------------------------

enum { THREADS = 256 };

// Blocks for a grid-stride loop over n elements: enough to fill any GPU,
// capped so huge buffers loop instead of launching millions of blocks.
static inline unsigned grid_for(size_t n) {
    size_t blocks = (n + THREADS - 1) / THREADS;
    const size_t cap = 8192;
    if (blocks > cap) blocks = cap;
    return (unsigned)(blocks ? blocks : 1);
}

static inline unsigned ceil_div_u(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// ---- device helpers ---------------------------------------------------------

static __device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
static __device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16(x); }

static __device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Block-wide reductions (blockDim.x a multiple of 32, at most 1024; every
// thread of the block must call). The result is returned to every thread.
// `shared` is 32 elements of __shared__ memory; the leading barrier lets a
// block call these back to back with the same array.
template <typename T, typename WarpOp>
static __device__ __forceinline__ T block_reduce(T v, T *shared, T identity, WarpOp warp_op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int num_warps = blockDim.x >> 5;
    v = warp_op(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < num_warps ? shared[lane] : identity;
        v = warp_op(v);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    return shared[0];
}

// ---- counter-based random numbers --------------------------------------------
// Philox-4x32-10 on counter (index, stream) with key seed: the integer
// operations of core/rng.c's rng_block, word for word, so a device draw is
// bitwise the host's. Initial weights (cuda_init.cu) and every dropout mask
// (cuda_arch.cu, cuda_attention.cu) use it.
static __device__ __forceinline__ uint4 philox_block(uint64_t seed, uint64_t stream,
                                                     uint64_t index) {
    uint32_t c0 = (uint32_t)index, c1 = (uint32_t)(index >> 32), c2 = (uint32_t)stream,
             c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return make_uint4(c0, c1, c2, c3);
}

// The dropout rule of backend.h: an element survives when word 0 of its
// counter's block is >= threshold, an integer comparison that the CPU
// backend makes on the same words.
static __device__ __forceinline__ bool dropout_keeps(uint64_t seed, uint64_t stream,
                                                     uint64_t counter, uint32_t threshold) {
    return philox_block(seed, stream, counter).x >= threshold;
}

struct WarpSumF {
    __device__ float operator()(float v) const { return warp_sum(v); }
};
struct WarpMaxF {
    __device__ float operator()(float v) const { return warp_max(v); }
};
struct WarpSumD {
    __device__ double operator()(double v) const { return warp_sum_d(v); }
};

// ---- GEMM (cuda_matmul.cu) ---------------------------------------------------
// cuBLAS is column-major. One operand of D = alpha op(A) op(B) + beta D, as
// cuBLAS sees it: the stored (column-major) matrix, whether op transposes it,
// its leading dimension and, for batched products, the element stride from
// one matrix of the batch to the next.
typedef struct {
    const void *ptr;
    cudaDataType_t type;
    bool transpose;
    int64_t ld;
    int64_t batch_stride;
} GemmOperand;

// D [m, n] (column-major, leading dimension ldd, type dtype) =
// alpha op(A) [m, k] op(B) [k, n] + beta D, for `batch` products whose D
// matrices are d_batch_stride elements apart. fp32 compute (CUBLAS_COMPUTE_32F).
// With beta == 0, D is only written. Counted in be->gemm_calls and timed.
void cuda_gemm(Backend *be, int64_t m, int64_t n, int64_t k, float alpha, GemmOperand A,
               GemmOperand B, float beta, void *D, cudaDataType_t dtype, int64_t ldd,
               int64_t d_batch_stride, int batch);

// dst[c] += sum over rows r of src[r, c] for a row-major [rows, cols] bf16
// matrix, deterministically (used for bias gradients).
void cuda_column_sums_add(Backend *be, float *dst, const bf16 *src, int rows, int cols);

// The two-phase column reduction's layout: rows are cut into `chunks`
// consecutive chunks of `rows_per_chunk` (the last may be shorter); both
// depend only on `rows`, so the summation order is the same on every GPU.
typedef struct {
    int chunks;
    int rows_per_chunk;
} ColumnChunks;
ColumnChunks column_chunks(int rows);
// dst[c] += sum over chunks k, in order, of partial[k * cols + c].
void cuda_add_chunk_partials(Backend *be, float *dst, const float *partial, ColumnChunks ch,
                             int cols);

// ---- ops (one family per file) -------------------------------------------------

// cuda_pointwise.cu
void cuda_f32_to_act(Backend *be, void *dst, const float *src, size_t n);
void cuda_act_to_f32(Backend *be, float *dst, const void *src, size_t n);
void cuda_gelu_forward(Backend *be, void *out, const void *inp, size_t n);
void cuda_gelu_backward(Backend *be, void *dinp, const void *inp, const void *dout, size_t n);
void cuda_add(Backend *be, void *out, const void *a, const void *b, size_t n);
void cuda_add_inplace(Backend *be, void *dst, const void *src, size_t n);
void cuda_add_bias(Backend *be, void *out, const void *bias, int N, int OC);
void cuda_scale_f32(Backend *be, float *x, float s, size_t n);

// cuda_embedding.cu
void cuda_embedding_forward(Backend *be, void *out, const int32_t *tokens, const void *table, int N,
                            int C, int vocab_begin, int vocab_end);
void cuda_embedding_backward(Backend *be, float *dtable, const void *dout, const int32_t *tokens,
                             int N, int C, int vocab_begin, int vocab_end);
void cuda_position_embedding_add(Backend *be, void *out, const void *pos, int B, int T, int C);
void cuda_position_embedding_backward(Backend *be, float *dpos, const void *dout, int B, int T,
                                      int C);
void cuda_position_embedding_add_ids(Backend *be, void *out, const void *pos,
                                     const int32_t *position_ids, int N, int C);
void cuda_position_embedding_backward_ids(Backend *be, float *dpos, const void *dout,
                                          const int32_t *position_ids, int N, int C);

// cuda_layernorm.cu
void cuda_layernorm_forward(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                            const void *weight, const void *bias, int N, int C, float eps,
                            float weight_offset);
void cuda_layernorm_backward(Backend *be, void *dinp, float *dweight, float *dbias,
                             const void *dout, const void *inp, const void *weight,
                             const float *mean, const float *rstd, int N, int C,
                             float weight_offset);
void cuda_rmsnorm_forward(Backend *be, void *out, float *rstd, const void *inp, const void *weight,
                          int N, int C, float eps, float weight_offset);
void cuda_rmsnorm_backward(Backend *be, void *dinp, float *dweight, const void *dout,
                           const void *inp, const void *weight, const float *rstd, int N, int C,
                           float weight_offset);
void cuda_qk_norm_forward(Backend *be, void *out, float *mean, float *rstd, const void *qkv,
                          const void *q_weight, const void *q_bias, const void *k_weight,
                          const void *k_bias, const QKNormShape *shape);
void cuda_qk_norm_backward(Backend *be, void *dqkv, float *dq_weight, float *dq_bias,
                           float *dk_weight, float *dk_bias, const void *dout, const void *qkv,
                           const void *q_weight, const void *k_weight, const float *mean,
                           const float *rstd, const QKNormShape *shape);

// cuda_arch.cu
void cuda_swiglu_forward(Backend *be, void *out, const void *inp, int N, int F);
void cuda_swiglu_backward(Backend *be, void *dinp, const void *inp, const void *dout, int N, int F);
void cuda_squared_relu_forward(Backend *be, void *out, const void *inp, size_t n);
void cuda_squared_relu_backward(Backend *be, void *dinp, const void *inp, const void *dout,
                                size_t n);
void cuda_dropout_forward(Backend *be, void *out, const void *inp, int rows, int cols,
                          const DropoutKey *key);
void cuda_dropout_backward(Backend *be, void *dinp, const void *dout, int rows, int cols,
                           const DropoutKey *key);
void cuda_rope_forward(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids);
void cuda_rope_backward(Backend *be, void *dqkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                        float base, bool interleaved, const int32_t *position_ids);

// cuda_matmul.cu
void cuda_matmul_forward(Backend *be, void *out, const void *inp, const void *weight,
                         const void *bias, int N, int IC, int OC, bool weight_in_major);
void cuda_matmul_backward(Backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                          const void *inp, const void *weight, int N, int IC, int OC,
                          bool weight_in_major);

// cuda_attention.cu
size_t cuda_attention_saved_bytes(Backend *be, int B, int T, int NH, int NG, int HS);
void cuda_attention_forward(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                            int NH, int NG, int HS, const int32_t *key_start,
                            const AttentionDropout *dropout);
void cuda_attention_backward(Backend *be, void *dqkv, const void *dout, const void *qkv,
                             const void *out, const void *saved, int B, int T, int NH, int NG,
                             int HS, const int32_t *key_start, const AttentionDropout *dropout);

// cuda_ring_attention.cu
void cuda_attention_block_forward(Backend *be, void *out, float *lse, const void *q_qkv,
                                  const void *kv_qkv, int B, int NH, int NG, int HS,
                                  const AttentionBlock *blk, const int32_t *key_start,
                                  const AttentionDropout *dropout, bool first);
void cuda_attention_block_backward(Backend *be, void *d_q_qkv, void *d_kv_qkv, const void *dout,
                                   const void *q_qkv, const void *kv_qkv, const void *out,
                                   const float *lse, int B, int NH, int NG, int HS,
                                   const AttentionBlock *blk, const int32_t *key_start,
                                   const AttentionDropout *dropout);

void cuda_grouped_matmul_forward(Backend *be, void *out, const void *inp,
                                 const void *const *weights, const int *row_begin, int groups,
                                 int IC, int OC, bool weight_in_major);
void cuda_grouped_matmul_backward(Backend *be, void *dinp, float *const *dweights,
                                  const void *dout, const void *inp, const void *const *weights,
                                  const int *row_begin, int groups, int IC, int OC,
                                  bool weight_in_major);
// cuda_moe.cu
void cuda_moe_router_forward(Backend *be, int32_t *expert_ids, float *probs, float *stats,
                             const float *logits, int R, int E, int K, bool sigmoid,
                             bool pre_softmax);
void cuda_moe_router_backward(Backend *be, float *dlogits, const float *dprobs,
                              const float *logits, const int32_t *expert_ids, const float *probs,
                              const float *aux_grad, float z_grad, int R, int E, int K,
                              bool sigmoid, bool pre_softmax);
void cuda_moe_gather_rows(Backend *be, void *out, const void *inp, const int32_t *rows, int P,
                          int C);
void cuda_moe_combine_forward(Backend *be, void *out, const void *expert_out, const float *probs,
                              const int32_t *slot, int N, int K, int C, bool accumulate);
void cuda_moe_combine_backward(Backend *be, void *d_expert_out, float *dprobs, const void *dout,
                               const void *expert_out, const float *probs, const int32_t *slot,
                               int N, int K, int P, int C);

// cuda_loss_optim.cu
void cuda_cross_entropy_max(Backend *be, float *rowmax, const void *logits, int N, int V,
                            int vocab_begin, int vocab_size);
void cuda_cross_entropy_sums(Backend *be, float *sumexp, float *target_logit, const void *logits,
                             const float *rowmax, const int32_t *targets, int N, int V,
                             int vocab_begin, int vocab_size);
void cuda_cross_entropy_loss(Backend *be, float *losses, const float *rowmax, const float *sumexp,
                             const float *target_logit, int N);
void cuda_cross_entropy_backward(Backend *be, void *dlogits, const void *logits,
                                 const float *rowmax, const float *sumexp, const int32_t *targets,
                                 int N, int V, int vocab_begin, int vocab_size, float dloss);
void cuda_adamw_update(Backend *be, void *param, float *master, const float *grad, float *m,
                       float *v, size_t n, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, int step);
double cuda_sum_squares_f32(Backend *be, const float *x, size_t n);
bool cuda_has_nonfinite_f32(Backend *be, const float *x, size_t n);
uint64_t cuda_count_zeros_f32(Backend *be, const float *x, size_t n);
void cuda_init_normal(Backend *be, float *dst, size_t n, uint64_t seed, uint64_t stream,
                      uint64_t index0, double std);

#endif
