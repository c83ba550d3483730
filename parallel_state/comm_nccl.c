/* The NCCL implementation (placeholder until the CUDA library's table). */
#include <stdio.h>

#include "parallel_state/comm_impl.h"

bool comm_nccl_init(Comm *c, char *err, size_t err_size) {
    (void)c;
    snprintf(err, err_size, "--comm nccl is not available in this build; use --comm mpi");
    return false;
}

const CommImpl comm_nccl_impl = {.name = "nccl"};
