/* backend/cpu — the fp32 reference backend (plain C + OpenBLAS sgemm).
 * Private to backend/: other modules use backend_create("cpu", ...). */
#ifndef GPT3D_BACKEND_CPU_H
#define GPT3D_BACKEND_CPU_H

#include "backend/backend.h"

Backend *cpu_backend_create(void);

#endif
