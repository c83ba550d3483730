// backend/cuda/cuda_backend.cu — the CUDA backend (bf16 activations and
// parameters, fp32 gradients and optimizer state): device selection, the
// stream, the cuBLASLt handle and workspace, memory and its accounting,
// scratch, GEMM timing, and the op table. The compute ops live in
// cuda_pointwise.cu, cuda_embedding.cu, cuda_layernorm.cu, cuda_matmul.cu,
// cuda_attention.cu, cuda_arch.cu and cuda_loss_optim.cu.
//
// Every op is enqueued on the backend's one stream, so ops run in call order;
// only the calls that hand data to the host (copies, reductions returned to
// the host) wait for the GPU.
//
// Status: every op is implemented and has run on a GPU once (see
// cuda_backend_complete below); --device auto keeps choosing the CPU until
// every test in tests/test_backend_cuda*.c has passed there.
//
// Only the C runtime is used on the host side (no C++ standard library), so
// the static library links into C programs with the C linker.
#include "backend/cuda/cuda_backend.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_internal.cuh"

// ---- error checks ---------------------------------------------------------

const char *cuda_error_hint(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation:
        return "the GPU is out of memory: reduce --micro-batch-size or --seq-length, use more "
               "tensor/pipeline parallelism, or check that no other process holds the GPU";
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorInsufficientDriver:
        return "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use --device cpu";
    default:
        return "check the GPU with nvidia-smi; rerun with CUDA_LAUNCH_BLOCKING=1 to find the "
               "failing kernel";
    }
}

void cuda_check(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return;
    gpt3d_fail_internal(file, line, "%s failed: %s (%s); hint: %s", call, cudaGetErrorName(e),
                        cudaGetErrorString(e), cuda_error_hint(e));
}

void cublas_check(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    gpt3d_fail_internal(file, line, "%s failed: %s (%s); hint: %s", call, cublasLtGetStatusName(s),
                        cublasLtGetStatusString(s),
                        s == CUBLAS_STATUS_ALLOC_FAILED
                            ? "the GPU is out of memory: reduce --micro-batch-size"
                            : "check the GPU with nvidia-smi and the cuBLAS version against "
                              "the one gpt3d was built with");
}

// ---- synchronisation and GEMM timing ---------------------------------------

void cuda_read_gemm_timers(Backend *be) {
    GemmTimers *t = &impl_of(be)->timers;
    for (int i = 0; i < t->pending; i++) {
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, t->start[i], t->stop[i]));
        be->gemm_seconds += 1e-3 * ms;
    }
    t->pending = 0;
}

// Waits for every op enqueued so far; GEMM times become readable then.
static void sync_stream(Backend *be) {
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->stream));
    cuda_read_gemm_timers(be);
}

// ---- scratch ----------------------------------------------------------------

void *cuda_scratch(Backend *be, size_t bytes) {
    CudaImpl *impl = impl_of(be);
    if (impl->scratch_bytes >= bytes) return impl->scratch;
    // Earlier ops may still read the old scratch: let them finish first.
    sync_stream(be);
    if (impl->scratch) CUDA_CHECK(cudaFree(impl->scratch));
    impl->scratch = NULL;
    size_t grown = impl->scratch_bytes + impl->scratch_bytes / 2;
    size_t size = align256(bytes > grown ? bytes : grown);
    CUDA_CHECK(cudaMalloc(&impl->scratch, size));
    impl->scratch_bytes = size;
    return impl->scratch;
}

void *cuda_host_scratch(Backend *be, size_t bytes) {
    CudaImpl *impl = impl_of(be);
    if (impl->host_scratch_bytes >= bytes) return impl->host_scratch;
    free(impl->host_scratch);
    impl->host_scratch = xmalloc(bytes);
    impl->host_scratch_bytes = bytes;
    return impl->host_scratch;
}

// ---- memory ---------------------------------------------------------------

static void record_allocation(CudaImpl *impl, void *ptr, size_t bytes) {
    if (impl->num_allocations == impl->allocations_capacity) {
        size_t cap = impl->allocations_capacity ? 2 * impl->allocations_capacity : 64;
        impl->allocations =
            (CudaAllocation *)xrealloc(impl->allocations, cap * sizeof(CudaAllocation));
        impl->allocations_capacity = cap;
    }
    impl->allocations[impl->num_allocations].ptr = ptr;
    impl->allocations[impl->num_allocations].bytes = bytes;
    impl->num_allocations++;
}

// Removes ptr's record and returns its size.
static size_t forget_allocation(CudaImpl *impl, void *ptr) {
    for (size_t i = impl->num_allocations; i-- > 0;) {
        if (impl->allocations[i].ptr != ptr) continue;
        size_t bytes = impl->allocations[i].bytes;
        impl->allocations[i] = impl->allocations[impl->num_allocations - 1];
        impl->num_allocations--;
        return bytes;
    }
    GPT3D_FAIL("cuda backend: free of a pointer that is not a live buffer of this backend "
               "(double free or foreign pointer)");
}

static void *cuda_alloc(Backend *be, size_t bytes) {
    CudaImpl *impl = impl_of(be);
    void *ptr = NULL;
    CUDA_CHECK(cudaMalloc(&ptr, bytes ? bytes : 1)); // never NULL, even for 0 bytes
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes ? bytes : 1, impl->stream));
    // cudaMalloc'd memory may be used on other streams (NCCL): make the zeros
    // visible to everyone before the pointer escapes.
    CUDA_CHECK(cudaStreamSynchronize(impl->stream));
    record_allocation(impl, ptr, bytes);
    be->bytes_in_use += bytes;
    if (be->bytes_in_use > be->peak_bytes_in_use) be->peak_bytes_in_use = be->bytes_in_use;
    be->num_allocations++;
    return ptr;
}

static void cuda_free(Backend *be, void *ptr) {
    if (!ptr) return;
    size_t bytes = forget_allocation(impl_of(be), ptr);
    CUDA_CHECK(cudaFree(ptr));
    be->bytes_in_use -= bytes;
    be->num_allocations--;
}

static void cuda_memset_zero(Backend *be, void *ptr, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, impl_of(be)->stream));
}

// Host copies wait for the transfer, so the caller may reuse or read its
// host buffer as soon as the call returns.
static void cuda_copy_to_device(Backend *be, void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_of(be)));
    sync_stream(be);
}

static void cuda_copy_to_host(Backend *be, void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_of(be)));
    sync_stream(be);
}

static void cuda_copy_device(Backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_of(be)->stream));
}

static void cuda_synchronize(Backend *be) { sync_stream(be); }

// ---- lifetime -------------------------------------------------------------

static size_t cuda_memory_available(Backend *be) {
    CUDA_CHECK(cudaSetDevice(impl_of(be)->device));
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return free_bytes;
}

static void cuda_destroy(Backend *be) {
    CudaImpl *impl = impl_of(be);
    CUDA_CHECK(cudaSetDevice(impl->device));
    CUDA_CHECK(cudaStreamSynchronize(impl->stream));
    // Buffers still alive belong to nobody once the backend is gone.
    for (size_t i = 0; i < impl->num_allocations; i++)
        CUDA_CHECK(cudaFree(impl->allocations[i].ptr));
    for (int i = 0; i < impl->timers.created; i++) {
        CUDA_CHECK(cudaEventDestroy(impl->timers.start[i]));
        CUDA_CHECK(cudaEventDestroy(impl->timers.stop[i]));
    }
    if (impl->scratch) CUDA_CHECK(cudaFree(impl->scratch));
    CUDA_CHECK(cudaFree(impl->lt_workspace));
    CUBLAS_CHECK(cublasDestroy(impl->blas));
    CUBLAS_CHECK(cublasLtDestroy(impl->lt));
    CUDA_CHECK(cudaStreamDestroy(impl->stream));
    free(impl->host_scratch);
    free(impl->allocations);
    free(impl);
    free(be);
}

static const BackendOps CUDA_OPS = {
    cuda_alloc,
    cuda_free,
    cuda_memset_zero,
    cuda_copy_to_device,
    cuda_copy_to_host,
    cuda_copy_device,
    cuda_synchronize,
    cuda_f32_to_act,
    cuda_act_to_f32,
    cuda_embedding_forward,
    cuda_embedding_backward,
    cuda_position_embedding_add,
    cuda_position_embedding_backward,
    cuda_position_embedding_add_ids,
    cuda_position_embedding_backward_ids,
    cuda_layernorm_forward,
    cuda_layernorm_backward,
    cuda_rmsnorm_forward,
    cuda_rmsnorm_backward,
    cuda_matmul_forward,
    cuda_matmul_backward,
    cuda_gelu_forward,
    cuda_gelu_backward,
    cuda_swiglu_forward,
    cuda_swiglu_backward,
    cuda_squared_relu_forward,
    cuda_squared_relu_backward,
    cuda_dropout_forward,
    cuda_dropout_backward,
    cuda_add,
    cuda_add_inplace,
    cuda_add_bias,
    cuda_scale_f32,
    cuda_attention_saved_bytes,
    cuda_attention_forward,
    cuda_attention_backward,
    cuda_attention_block_forward,
    cuda_attention_block_backward,
    cuda_rope_forward,
    cuda_rope_backward,
    cuda_qk_norm_forward,
    cuda_qk_norm_backward,
    cuda_cross_entropy_max,
    cuda_cross_entropy_sums,
    cuda_cross_entropy_loss,
    cuda_cross_entropy_backward,
    cuda_moe_router_forward,
    cuda_moe_router_backward,
    cuda_moe_gather_rows,
    cuda_moe_combine_forward,
    cuda_moe_combine_backward,
    cuda_grouped_matmul_forward,
    cuda_grouped_matmul_backward,
    cuda_adamw_update,
    cuda_sum_squares_f32,
    cuda_has_nonfinite_f32,
    cuda_count_zeros_f32,
    cuda_memory_available,
    cuda_init_normal,
    cuda_destroy,
};

extern "C" int cuda_backend_device_count(void) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // clear it so a later CUDA call does not report it
        return 0;
    }
    return count;
}

// Flips to true once tests/test_backend_cuda*.c have passed on a real GPU.
// On the first GPU run (an H200, 2026-12-04) training matched the CPU and
// four of the six op tests passed; the other two and the model test failed
// on comparisons that were since corrected but not yet rerun there. Until
// they pass, --device auto picks the CPU and only an explicit --device cuda
// uses this backend.
extern "C" bool cuda_backend_complete(void) { return false; }

// Set-up failures are the user's environment (driver, device list, memory),
// so they come back through err instead of aborting.
static bool setup_failed(cudaError_t e, const char *what, int device, char *err, size_t err_size) {
    if (e == cudaSuccess) return false;
    (void)cudaGetLastError();
    snprintf(err, err_size, "--device cuda: %s on GPU %d failed: %s; %s", what, device,
             cudaGetErrorString(e), cuda_error_hint(e));
    return true;
}

extern "C" Backend *cuda_backend_create(int local_rank, char *err, size_t err_size) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        snprintf(err, err_size,
                 "--device cuda: no CUDA device is visible to this process (cudaGetDeviceCount: "
                 "%s); use --device cpu or check CUDA_VISIBLE_DEVICES",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return NULL;
    }
    int device = (local_rank < 0 ? -local_rank : local_rank) % count;
    cudaStream_t stream = NULL;
    if (setup_failed(cudaSetDevice(device), "cudaSetDevice", device, err, err_size)) return NULL;
    if (setup_failed(cudaStreamCreate(&stream), "cudaStreamCreate", device, err, err_size))
        return NULL;
    void *workspace = NULL;
    if (setup_failed(cudaMalloc(&workspace, CUBLASLT_WORKSPACE_BYTES),
                     "allocating the cuBLASLt workspace", device, err, err_size)) {
        (void)cudaStreamDestroy(stream);
        return NULL;
    }
    cublasLtHandle_t lt = NULL;
    cublasStatus_t s = cublasLtCreate(&lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, err_size, "--device cuda: cublasLtCreate on GPU %d failed: %s (%s)", device,
                 cublasLtGetStatusName(s), cublasLtGetStatusString(s));
        (void)cudaFree(workspace);
        (void)cudaStreamDestroy(stream);
        return NULL;
    }
    cublasHandle_t blas = NULL;
    s = cublasCreate(&blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(blas, stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, err_size, "--device cuda: creating the cuBLAS handle on GPU %d failed: %s (%s)",
                 device, cublasLtGetStatusName(s), cublasLtGetStatusString(s));
        if (blas) (void)cublasDestroy(blas);
        (void)cublasLtDestroy(lt);
        (void)cudaFree(workspace);
        (void)cudaStreamDestroy(stream);
        return NULL;
    }
    CudaImpl *impl = (CudaImpl *)xcalloc(1, sizeof(CudaImpl));
    impl->device = device;
    impl->stream = stream;
    impl->lt = lt;
    impl->blas = blas;
    impl->lt_workspace = workspace;
    Backend *be = (Backend *)xcalloc(1, sizeof(Backend));
    be->ops = &CUDA_OPS;
    be->name = "cuda";
    be->act_dtype = DTYPE_BF16;
    be->impl = impl;
    return be;
}
