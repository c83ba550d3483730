// backend/cuda/cuda_init.cu — initial weights generated on the device.
//
// The values must be bitwise those of the CPU backend (core/rng.c:
// (float)(std * rng_normal(seed, stream, index))), so every layout and device
// starts from the same model. Philox and the conversion to [0, 1) are
// integer and exact operations, the same here as there. Box-Muller is not:
// glibc's log and cos and CUDA's differ by an ulp or two of a double now and
// then. After the cast to float such a difference matters only for a double
// that lies within a few ulps of the midpoint between two floats, so the
// kernel lists every element whose double is within 2^-40 (relative) of a
// midpoint, about one in 2^16, far more margin than the libraries' error,
// and the host recomputes exactly those with core/rng.c and writes them
// over. The result is the CPU's bit for bit whatever the device libm does.
#include "backend/cuda/cuda_internal.cuh"

extern "C" {
#include "core/rng.h"
}

namespace {

// Uncertain elements one call can patch; past it the host generates the
// whole buffer (never expected: a call lists ~n / 2^16 of them).
constexpr unsigned long long PATCH_CAPACITY = 1 << 16;

__device__ double bits_to_unit(uint32_t hi, uint32_t lo) {
    uint64_t x = ((uint64_t)hi << 21) ^ (uint64_t)(lo >> 11);
    x &= (1ull << 53) - 1;
    return (double)x * (1.0 / 9007199254740992.0);
}

// True when d is so close to a rounding midpoint of float that another
// libm's last-ulp difference could round it the other way.
__device__ bool near_float_midpoint(double d, float f) {
    const float other = nextafterf(f, (double)f < d ? INFINITY : -INFINITY);
    const double mid = 0.5 * ((double)f + (double)other);
    return fabs(d - mid) <= fabs(d) * 0x1p-40;
}

__global__ void init_normal_kernel(float *dst, size_t n, uint64_t seed, uint64_t stream,
                                   uint64_t index0, double std, unsigned long long *patch) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint4 b = philox_block(seed, stream, index0 + i);
        const double u1 = 1.0 - bits_to_unit(b.x, b.y);
        const double u2 = bits_to_unit(b.z, b.w);
        // The same operations in the same order as core/rng.c, none fused.
        const double r = __dsqrt_rn(__dmul_rn(-2.0, log(u1)));
        const double z = __dmul_rn(r, cos(__dmul_rn(6.283185307179586476925286766559, u2)));
        const double d = __dmul_rn(std, z);
        const float f = (float)d;
        dst[i] = f;
        if (near_float_midpoint(d, f)) {
            const unsigned long long k = atomicAdd(&patch[0], 1ull);
            if (k < PATCH_CAPACITY) patch[1 + k] = (unsigned long long)i;
        }
    }
}

} // namespace

void cuda_init_normal(Backend *be, float *dst, size_t n, uint64_t seed, uint64_t stream,
                      uint64_t index0, double std) {
    if (!n) return;
    cudaStream_t s = stream_of(be);
    const size_t patch_bytes = (1 + PATCH_CAPACITY) * sizeof(unsigned long long);
    unsigned long long *patch = (unsigned long long *)cuda_scratch(be, patch_bytes);
    CUDA_CHECK(cudaMemsetAsync(patch, 0, sizeof *patch, s));
    size_t blocks = (n + THREADS - 1) / THREADS;
    if (blocks > 65535) blocks = 65535;
    init_normal_kernel<<<(unsigned)blocks, THREADS, 0, s>>>(dst, n, seed, stream, index0, std,
                                                             patch);
    CUDA_CHECK_LAUNCH();
    unsigned long long count = 0;
    CUDA_CHECK(cudaMemcpyAsync(&count, patch, sizeof count, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (count > PATCH_CAPACITY) { // never expected; correct anyway
        float *host = (float *)cuda_host_scratch(be, n * sizeof(float));
        for (size_t i = 0; i < n; i++) host[i] = (float)(std * rng_normal(seed, stream, index0 + i));
        CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        return;
    }
    if (!count) return;
    unsigned long long *idx =
        (unsigned long long *)cuda_host_scratch(be, (size_t)count * (sizeof *idx + sizeof(float)));
    float *value = (float *)(idx + count);
    CUDA_CHECK(cudaMemcpyAsync(idx, patch + 1, (size_t)count * sizeof *idx,
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (unsigned long long k = 0; k < count; k++) {
        value[k] = (float)(std * rng_normal(seed, stream, index0 + idx[k]));
        CUDA_CHECK(cudaMemcpyAsync(dst + idx[k], &value[k], sizeof(float),
                                   cudaMemcpyHostToDevice, s));
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
}
