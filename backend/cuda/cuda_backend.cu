// placeholder
#include "backend/cuda/cuda_backend.h"
extern "C" Backend *cuda_backend_create(int, char *, size_t) { return nullptr; }
extern "C" int cuda_backend_device_count(void) { return 0; }
extern "C" bool cuda_backend_complete(void) { return false; }
