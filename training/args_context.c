/* Context parallelism's flags (args_internal.h), with Megatron's rules and
 * the ones this build adds: the sequence cut into 2 x CP chunks, the ring
 * of K/V blocks (--cp-comm-type p2p) as the one communication built. */
#include <stdio.h>
#include <string.h>

#include "training/args_internal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

bool args_resolve_context(TrainArgs *a, char *err, size_t err_size) {
    const int cp = a->context_parallel_size, T = a->model.seq_length;
    if (strcmp(a->cp_comm_type, "p2p")) {
        if (strcmp(a->cp_comm_type, "a2a") && strcmp(a->cp_comm_type, "allgather") &&
            strcmp(a->cp_comm_type, "a2a+p2p"))
            FAIL("--cp-comm-type %s: Megatron's choices are p2p, a2a, allgather, a2a+p2p",
                 a->cp_comm_type);
        FAIL("--cp-comm-type %s is not built; use p2p (ring attention, Megatron's default)",
             a->cp_comm_type);
    }
    if (cp == 1) return true;
    if (T % (2 * cp))
        FAIL("--seq-length %d is not divisible by 2 x --context-parallel-size %d = %d: each "
             "context-parallel rank holds two of the sequence's 2 x CP chunks (the first and the "
             "mirrored last, which balances causal attention); use a multiple of %d",
             T, cp, 2 * cp, 2 * cp);
    if (a->sequence_parallel && (T / cp) % a->tensor_model_parallel_size)
        FAIL("--sequence-parallel needs the %d tokens each context-parallel rank holds "
             "(--seq-length %d / --context-parallel-size %d) divisible by "
             "--tensor-model-parallel-size %d",
             T / cp, T, cp, a->tensor_model_parallel_size);
    return true;
}
