#include "backend/backend.h"

#include <stdio.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
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

Backend *backend_create(const char *device, int local_rank, char *err, size_t err_size) {
    if (!strcmp(device, "cpu")) return cpu_backend_create();
    if (!strcmp(device, "cuda")) {
#ifdef GPT3D_HAVE_CUDA
        return cuda_backend_create(local_rank, err, err_size);
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
    return cuda_backend_complete();
#else
    return false;
#endif
}

int backend_cuda_device_count(void) {
#ifdef GPT3D_HAVE_CUDA
    return cuda_backend_device_count();
#else
    return 0;
#endif
}
