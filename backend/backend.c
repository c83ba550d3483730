#include "backend/backend.h"

#include <stdio.h>
#include <string.h>
#ifdef GPT3D_HAVE_CUDA
#include <dlfcn.h>
#include <unistd.h>
#endif

#include "backend/cpu/cpu_backend.h"
#include "core/errors.h"

size_t dtype_size(DType t) {
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_BF16: return 2;
    case DTYPE_F16: return 2;
    }
    GPT3D_FAIL("unknown dtype %d", (int)t);
}

const char *dtype_name(DType t) {
    switch (t) {
    case DTYPE_F32: return "fp32";
    case DTYPE_BF16: return "bf16";
    case DTYPE_F16: return "fp16";
    }
    return "?";
}

#ifdef GPT3D_HAVE_CUDA
/* The CUDA backend lives in its own shared library, loaded on first use:
 * loading cuBLAS, cuBLASLt and NCCL costs most of a second, which CPU runs
 * and tools should not pay. dlopen reference-counts, so asking again is cheap. */
static void *cuda_symbol(const char *name, char *err, size_t err_size) {
    void *lib = dlopen(GPT3D_CUDA_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        if (err)
            snprintf(err, err_size,
                     "--device cuda: cannot load the CUDA backend %s (%s); rebuild gpt3d, or use "
                     "--device cpu",
                     GPT3D_CUDA_LIBRARY, dlerror());
        return NULL;
    }
    void *fn = dlsym(lib, name);
    GPT3D_CHECK(fn, "the CUDA backend library %s lacks %s", GPT3D_CUDA_LIBRARY, name);
    return fn;
}
#endif

Backend *backend_create(const char *device, int local_rank, char *err, size_t err_size) {
    if (!strcmp(device, "cpu")) return cpu_backend_create();
    if (!strcmp(device, "cuda")) {
#ifdef GPT3D_HAVE_CUDA
        Backend *(*create)(int, char *, size_t) =
            (Backend * (*)(int, char *, size_t)) cuda_symbol("cuda_backend_create", err, err_size);
        return create ? create(local_rank, err, err_size) : NULL;
#else
        (void)local_rank;
        snprintf(err, err_size,
                 "--device cuda: this build of gpt3d has no CUDA backend (nvcc was not found when "
                 "it was configured); install the CUDA toolkit and rebuild, or use --device cpu");
        return NULL;
#endif
    }
    snprintf(err, err_size, "--device %s: unknown device; use cpu or cuda", device);
    return NULL;
}

void backend_destroy(Backend *be) {
    if (be) be->ops->destroy(be);
}

bool backend_cuda_compiled(void) {
#ifdef GPT3D_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

bool backend_cuda_complete(void) {
#ifdef GPT3D_HAVE_CUDA
    bool (*complete)(void) = (bool (*)(void))cuda_symbol("cuda_backend_complete", NULL, 0);
    return complete && complete();
#else
    return false;
#endif
}

int backend_cuda_device_count(void) {
#ifdef GPT3D_HAVE_CUDA
    /* Without an NVIDIA driver there is nothing to count: skip loading CUDA. */
    if (access("/proc/driver/nvidia/version", F_OK) != 0 && access("/dev/nvidia0", F_OK) != 0)
        return 0;
    int (*count)(void) = (int (*)(void))cuda_symbol("cuda_backend_device_count", NULL, 0);
    return count ? count() : 0;
#else
    return 0;
#endif
}
