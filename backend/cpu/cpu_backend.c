/* backend/cpu/cpu_backend.c — the fp32 reference backend: memory, casts and
 * the op table. The compute ops live in cpu_nn.c, cpu_arch.c, cpu_attention.c
 * and cpu_loss_optim.c. */
#include "backend/cpu/cpu_backend.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "core/errors.h"
#include "core/host_memory.h"
#include "core/rng.h"
#include "core/timer.h"

/* Every buffer is preceded by one 64-byte block that records its size, so
 * free() can keep the accounting without a table, and the payload keeps the
 * 64-byte alignment that vector loads and OpenBLAS like. The magic catches a
 * pointer that did not come from this allocator and, usually, a double free. */
enum { CPU_ALIGN = 64 };
static const uint64_t CPU_BLOCK_MAGIC = 0x67707433645f6370ull; /* "gpt3d_cp" */
static const uint64_t CPU_FREED_MAGIC = 0x667265656466726dull;

typedef struct {
    uint64_t magic;
    size_t bytes;
} CpuBlockHeader;

static CpuBlockHeader *header_of(void *ptr) { return (CpuBlockHeader *)((char *)ptr - CPU_ALIGN); }

/* Buffers come from host_alloc_zeroed: the kernel zero-fills them lazily,
 * so a buffer costs nothing until first touched (a model's activations and
 * optimizer state used to be cleared by memset before the first iteration,
 * seconds for GPT-2 124M). */
static size_t cpu_block_bytes(size_t bytes) {
    return CPU_ALIGN + (bytes == 0 ? CPU_ALIGN : (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN);
}

static void *cpu_alloc(Backend *be, size_t bytes) {
    GPT3D_CHECK(bytes <= SIZE_MAX - 4 * CPU_ALIGN,
                "cpu backend: allocation of %zu bytes overflows size_t", bytes);
    char *base = host_alloc_zeroed(cpu_block_bytes(bytes));
    GPT3D_CHECK(base != NULL,
                "cpu backend: out of host memory allocating %zu bytes (%zu already in use); "
                "reduce --micro-batch-size or --seq-length",
                bytes, be->bytes_in_use);
    CpuBlockHeader *h = (CpuBlockHeader *)base;
    h->magic = CPU_BLOCK_MAGIC;
    h->bytes = bytes;
    be->bytes_in_use += bytes;
    if (be->bytes_in_use > be->peak_bytes_in_use) be->peak_bytes_in_use = be->bytes_in_use;
    be->num_allocations++;
    return base + CPU_ALIGN;
}

static void cpu_free(Backend *be, void *ptr) {
    if (!ptr) return;
    CpuBlockHeader *h = header_of(ptr);
    GPT3D_CHECK(h->magic == CPU_BLOCK_MAGIC,
                "cpu backend: free of a pointer that is not a live buffer of this backend "
                "(double free or foreign pointer)");
    GPT3D_CHECK(be->bytes_in_use >= h->bytes && be->num_allocations > 0,
                "cpu backend: allocation accounting underflow");
    be->bytes_in_use -= h->bytes;
    be->num_allocations--;
    h->magic = CPU_FREED_MAGIC;
    host_free(h, cpu_block_bytes(h->bytes));
}

static void cpu_memset_zero(Backend *be, void *ptr, size_t bytes) {
    (void)be;
    if (bytes) memset(ptr, 0, bytes);
}

static void cpu_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    /* memmove: callers may legitimately copy a buffer onto itself. */
    if (bytes && dst != src) memmove(dst, src, bytes);
}

static void cpu_copy_device(Backend *be, void *dst, const void *src, size_t bytes) {
    cpu_copy(be, dst, src, bytes);
}

static void cpu_synchronize(Backend *be) {
    (void)be; /* every CPU op has finished when it returns */
}

/* Activations are fp32 here, so both casts are copies. */
static void cpu_f32_to_act(Backend *be, void *dst, const float *src, size_t n) {
    cpu_copy(be, dst, src, n * sizeof(float));
}

static void cpu_act_to_f32(Backend *be, float *dst, const void *src, size_t n) {
    cpu_copy(be, dst, src, n * sizeof(float));
}

float *cpu_scratch(Backend *be, size_t floats) {
    CpuImpl *impl = be->impl;
    if (impl->scratch_floats < floats) {
        free(impl->scratch);
        impl->scratch = xmalloc(floats * sizeof(float));
        impl->scratch_floats = floats;
    }
    return impl->scratch;
}

void cpu_sgemm(Backend *be, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b, int M,
               int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
               float beta, float *C, int ldc) {
    double start = timer_now_s();
    cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    be->gemm_seconds += timer_now_s() - start;
    be->gemm_calls++;
}

static size_t cpu_memory_available(Backend *be) {
    (void)be;
    uint64_t bytes = 0;
    if (!host_memory_available(&bytes) || bytes > SIZE_MAX) return SIZE_MAX;
    return (size_t)bytes;
}

static void cpu_init_normal(Backend *be, float *dst, size_t n, uint64_t seed, uint64_t stream,
                            uint64_t index0, double std) {
    (void)be;
    rng_normal_fill(dst, n, seed, stream, index0, std, host_thread_count());
}

static void cpu_destroy(Backend *be) {
    CpuImpl *impl = be->impl;
    free(impl->scratch);
    free(impl);
    free(be);
}

static const BackendOps CPU_OPS = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset_zero = cpu_memset_zero,
    .copy_to_device = cpu_copy,
    .copy_to_host = cpu_copy,
    .copy_device = cpu_copy_device,
    .synchronize = cpu_synchronize,
    .f32_to_act = cpu_f32_to_act,
    .act_to_f32 = cpu_act_to_f32,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .position_embedding_add = cpu_position_embedding_add,
    .position_embedding_backward = cpu_position_embedding_backward,
    .position_embedding_add_ids = cpu_position_embedding_add_ids,
    .position_embedding_backward_ids = cpu_position_embedding_backward_ids,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .matmul_forward = cpu_matmul_forward,
    .add_bias = cpu_add_bias,
    .matmul_backward = cpu_matmul_backward,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .moe_router_forward = cpu_moe_router_forward,
    .moe_router_backward = cpu_moe_router_backward,
    .moe_gather_rows = cpu_moe_gather_rows,
    .moe_combine_forward = cpu_moe_combine_forward,
    .moe_combine_backward = cpu_moe_combine_backward,
    .grouped_matmul_forward = cpu_grouped_matmul_forward,
    .grouped_matmul_backward = cpu_grouped_matmul_backward,
    .squared_relu_forward = cpu_squared_relu_forward,
    .squared_relu_backward = cpu_squared_relu_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .add = cpu_add,
    .add_inplace = cpu_add_inplace,
    .scale_f32 = cpu_scale_f32,
    .attention_saved_bytes = cpu_attention_saved_bytes,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_block_forward = cpu_attention_block_forward,
    .attention_block_backward = cpu_attention_block_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .qk_norm_forward = cpu_qk_norm_forward,
    .qk_norm_backward = cpu_qk_norm_backward,
    .cross_entropy_max = cpu_cross_entropy_max,
    .cross_entropy_sums = cpu_cross_entropy_sums,
    .cross_entropy_loss = cpu_cross_entropy_loss,
    .cross_entropy_backward = cpu_cross_entropy_backward,
    .adamw_update = cpu_adamw_update,
    .sum_squares_f32 = cpu_sum_squares_f32,
    .has_nonfinite_f32 = cpu_has_nonfinite_f32,
    .count_zeros_f32 = cpu_count_zeros_f32,
    .memory_available = cpu_memory_available,
    .init_normal = cpu_init_normal,
    .destroy = cpu_destroy,
};

Backend *cpu_backend_create(void) {
    Backend *be = xcalloc(1, sizeof(Backend));
    be->ops = &CPU_OPS;
    be->name = "cpu";
    be->act_dtype = DTYPE_F32;
    be->host_visible = true;
    be->impl = xcalloc(1, sizeof(CpuImpl));
    return be;
}
