// backend/cuda/cuda_comm.cu — the NCCL primitives behind parallel_state's
// NCCL implementation (contract: parallel_state/nccl_ops.h). Kept here so
// that only programs that load the CUDA backend load NCCL.
#include <nccl.h>

#include <cstdio>
#include <cstring>

#include "backend/cuda/cuda_internal.cuh"
#include "parallel_state/nccl_ops.h"

static_assert(sizeof(ncclUniqueId) == NCCL_OPS_UNIQUE_ID_BYTES, "ncclUniqueId size");

namespace {

struct CommContext {
    Backend *be;
    cudaStream_t stream; // the communication stream
};

void nccl_check(ncclResult_t r, const char *call) {
    if (r != ncclSuccess) GPT3D_FAIL("%s failed: %s", call, ncclGetErrorString(r));
}
#define NCCL_CHECK(call) nccl_check((call), #call)

ncclDataType_t nccl_type(DType t) {
    switch (t) {
    case DTYPE_F32: return ncclFloat32;
    case DTYPE_BF16: return ncclBfloat16;
    case DTYPE_F16: return ncclFloat16;
    }
    GPT3D_FAIL("unknown dtype %d", (int)t);
}

ncclRedOp_t nccl_op(int op) {
    switch (op) {
    case 0: return ncclSum;
    case 1: return ncclMax;
    case 2: return ncclMin;
    }
    GPT3D_FAIL("unknown reduce op %d", op);
}

CommContext *ctx_of(void *ctx) { return static_cast<CommContext *>(ctx); }
ncclComm_t comm_of(void *comm) { return static_cast<ncclComm_t>(comm); }

// The communication stream waits for what the compute stream has queued.
cudaStream_t after_compute(void *ctx) {
    CommContext *c = ctx_of(ctx);
    cudaEvent_t ready;
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(ready, stream_of(c->be)));
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, ready, 0));
    CUDA_CHECK(cudaEventDestroy(ready)); // destroyed once the wait is queued: allowed
    return c->stream;
}

void *done_event(void *ctx) {
    cudaEvent_t done;
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(done, ctx_of(ctx)->stream));
    return done;
}

bool unique_id(void *id, char *err, size_t err_size) {
    ncclUniqueId u;
    const ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) {
        snprintf(err, err_size, "ncclGetUniqueId failed: %s", ncclGetErrorString(r));
        return false;
    }
    memcpy(id, &u, sizeof u);
    return true;
}

void *context_create(Backend *be, char *err, size_t err_size) {
    CudaImpl *impl = impl_of(be);
    if (cudaSetDevice(impl->device) != cudaSuccess) {
        snprintf(err, err_size, "cudaSetDevice(%d) failed for NCCL", impl->device);
        return nullptr;
    }
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
        snprintf(err, err_size, "cannot create the NCCL communication stream");
        return nullptr;
    }
    CommContext *c = static_cast<CommContext *>(xmalloc(sizeof *c));
    c->be = be;
    c->stream = s;
    return c;
}

void context_destroy(void *ctx) {
    if (!ctx) return;
    CUDA_CHECK(cudaStreamSynchronize(ctx_of(ctx)->stream));
    CUDA_CHECK(cudaStreamDestroy(ctx_of(ctx)->stream));
    free(ctx);
}

void *comm_create(void *ctx, int nranks, const void *id, int rank, char *err, size_t err_size) {
    CUDA_CHECK(cudaSetDevice(impl_of(ctx_of(ctx)->be)->device));
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t comm = nullptr;
    const ncclResult_t r = ncclCommInitRank(&comm, nranks, u, rank);
    if (r != ncclSuccess) {
        snprintf(err, err_size, "ncclCommInitRank(%d ranks, rank %d) failed: %s", nranks, rank,
                 ncclGetErrorString(r));
        return nullptr;
    }
    return comm;
}

void comm_destroy(void *comm) {
    if (comm) NCCL_CHECK(ncclCommDestroy(comm_of(comm)));
}

void *all_reduce(void *ctx, void *comm, void *buf, size_t n, DType t, int op) {
    cudaStream_t s = after_compute(ctx);
    NCCL_CHECK(ncclAllReduce(buf, buf, n, nccl_type(t), nccl_op(op), comm_of(comm), s));
    return done_event(ctx);
}

void *all_gather(void *ctx, void *comm, void *dst, const void *src, size_t n, DType t) {
    cudaStream_t s = after_compute(ctx);
    NCCL_CHECK(ncclAllGather(src, dst, n, nccl_type(t), comm_of(comm), s));
    return done_event(ctx);
}

void *reduce_scatter(void *ctx, void *comm, void *dst, const void *src, size_t n, DType t) {
    cudaStream_t s = after_compute(ctx);
    NCCL_CHECK(ncclReduceScatter(src, dst, n, nccl_type(t), ncclSum, comm_of(comm), s));
    return done_event(ctx);
}

void *broadcast(void *ctx, void *comm, void *buf, size_t n, DType t, int root) {
    cudaStream_t s = after_compute(ctx);
    NCCL_CHECK(ncclBroadcast(buf, buf, n, nccl_type(t), root, comm_of(comm), s));
    return done_event(ctx);
}

void *grouped(void *ctx, void *comm, const NcclPeerOp *ops, int count) {
    cudaStream_t s = after_compute(ctx);
    NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < count; i++) {
        const NcclPeerOp *op = &ops[i];
        if (op->recv)
            NCCL_CHECK(ncclRecv(op->buf, op->n, nccl_type(op->dtype), op->peer, comm_of(comm), s));
        else
            NCCL_CHECK(ncclSend(op->buf, op->n, nccl_type(op->dtype), op->peer, comm_of(comm), s));
    }
    NCCL_CHECK(ncclGroupEnd());
    return done_event(ctx);
}

bool event_done(void *event) {
    const cudaError_t r = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (r == cudaErrorNotReady) return false;
    CUDA_CHECK(r);
    return true;
}

void event_release(void *ctx, void *event) {
    cudaEvent_t e = static_cast<cudaEvent_t>(event);
    CUDA_CHECK(cudaStreamWaitEvent(stream_of(ctx_of(ctx)->be), e, 0));
    CUDA_CHECK(cudaEventDestroy(e));
}

const NcclOps OPS = {unique_id,  context_create, context_destroy, comm_create,
                     comm_destroy, all_reduce,   all_gather,      reduce_scatter,
                     broadcast,  grouped,        event_done,      event_release};

void *pinned_alloc(size_t bytes) {
    void *p = nullptr;
    return cudaMallocHost(&p, bytes) == cudaSuccess ? p : nullptr;
}

void pinned_free(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

const PinnedHostOps PINNED = {pinned_alloc, pinned_free};

} // namespace

extern "C" const NcclOps *cuda_nccl_ops(void) { return &OPS; }
extern "C" const PinnedHostOps *cuda_pinned_host_ops(void) { return &PINNED; }
