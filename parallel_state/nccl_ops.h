/* parallel_state/nccl_ops.h — the NCCL primitives the NCCL implementation
 * (comm_nccl.c) reaches through a table, and the pinned host memory of the
 * staged one (comm_staged.c), so that NCCL and CUDA live in the CUDA
 * backend's shared library (loaded only for --device cuda) and host code
 * compiles without NCCL or MPI headers.
 *
 * Contract. A context owns one communication stream on the backend's
 * device. Every operation first makes the communication stream wait for
 * the work the compute stream has queued so far (an event), enqueues the
 * NCCL call(s) on the communication stream and returns an event recorded
 * after them; nothing blocks the host. event_done asks whether the event
 * has passed (cudaEventQuery); event_release makes the compute stream wait
 * for it (so later compute sees the result) and frees it. Element counts
 * and the in-place rules are NCCL's: all-reduce in place when dst == src;
 * all-gather in place when src == dst + rank * n; reduce-scatter is called
 * out of place only. grouped() runs its sends and receives inside one
 * ncclGroupStart/ncclGroupEnd (peers are ranks of that communicator), which
 * is how p2p pairs and all-to-all avoid deadlock. NCCL has no tags: two
 * ranks' messages in one direction match in the order they were posted.
 * NCCL errors are fatal (GPT3D_FAIL naming the call). */
#ifndef GPT3D_NCCL_OPS_H
#define GPT3D_NCCL_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NCCL_OPS_UNIQUE_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct {
    bool recv;
    void *buf;
    size_t n;
    DType dtype;
    int peer;
} NcclPeerOp;

typedef struct {
    /* false with NCCL's reason (no GPU, library mismatch). */
    bool (*unique_id)(void *id, char *err, size_t err_size);
    void *(*context_create)(Backend *be, char *err, size_t err_size);
    void (*context_destroy)(void *ctx);
    /* Collective over nranks ranks that all pass the same id. */
    void *(*comm_create)(void *ctx, int nranks, const void *id, int rank, char *err,
                         size_t err_size);
    void (*comm_destroy)(void *comm);
    /* op: 0 sum, 1 max, 2 min (ReduceOp's values). */
    void *(*all_reduce)(void *ctx, void *comm, void *buf, size_t n, DType t, int op);
    void *(*all_gather)(void *ctx, void *comm, void *dst, const void *src, size_t n, DType t);
    void *(*reduce_scatter)(void *ctx, void *comm, void *dst, const void *src, size_t n, DType t);
    void *(*broadcast)(void *ctx, void *comm, void *buf, size_t n, DType t, int root);
    void *(*grouped)(void *ctx, void *comm, const NcclPeerOp *ops, int count);
    bool (*event_done)(void *event);
    void (*event_release)(void *ctx, void *event);
} NcclOps;

/* Page-locked host memory for the staged implementation's copies (faster
 * device transfers than pageable memory); NULL when it cannot be had. */
typedef struct {
    void *(*alloc)(size_t bytes);
    void (*free)(void *ptr);
} PinnedHostOps;

/* Exported by the CUDA backend library (backend/cuda/cuda_comm.cu). */
const NcclOps *cuda_nccl_ops(void);
const PinnedHostOps *cuda_pinned_host_ops(void);

#ifdef __cplusplus
}
#endif

#endif
