/* backend/cuda — the bf16/fp32 mixed-precision backend (cuBLASLt + kernels).
 * Private to backend/: other modules use backend_create("cuda", ...).
 * Plain C header so host code compiles without nvcc. */
#ifndef GPT3D_BACKEND_CUDA_H
#define GPT3D_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

Backend *cuda_backend_create(int local_rank, char *err, size_t err_size);
int cuda_backend_device_count(void);
bool cuda_backend_complete(void);

#ifdef __cplusplus
}
#endif

#endif
