/* The MPI implementation: nonblocking MPI collectives on host buffers,
 * completed under the watchdog; also the host-value helpers and the
 * barrier, which every implementation shares. */
#include <limits.h>
#include <string.h>

#include "core/errors.h"
#include "parallel_state/comm_impl.h"

#define MPI_OK(call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) GPT3D_FAIL("%s failed with MPI error %d", #call, rc_);             \
    } while (0)

/* MPI counts are int. */
static int mpi_count(size_t n) {
    GPT3D_CHECK(n <= (size_t)INT_MAX, "collective of %zu elements exceeds MPI's int count", n);
    return (int)n;
}

/* Moving elements needs only their width; 16-bit floats travel as bits. */
static MPI_Datatype mpi_move_type(DType t) {
    switch (t) {
    case DTYPE_F32: return MPI_FLOAT;
    case DTYPE_BF16:
    case DTYPE_F16: return MPI_UINT16_T;
    }
    GPT3D_FAIL("unknown dtype %d", (int)t);
}

/* Reductions over MPI are in fp32; the staged implementation widens 16-bit
 * buffers to fp32 before it gets here. */
static MPI_Datatype mpi_reduce_type(DType t) {
    GPT3D_CHECK(t == DTYPE_F32,
                "reductions over MPI take fp32 buffers (got %s); the staged implementation widens "
                "16-bit buffers first",
                dtype_name(t));
    return MPI_FLOAT;
}

static MPI_Op mpi_op(ReduceOp op) {
    switch (op) {
    case REDUCE_SUM: return MPI_SUM;
    case REDUCE_MAX: return MPI_MAX;
    case REDUCE_MIN: return MPI_MIN;
    }
    GPT3D_FAIL("unknown reduce op %d", (int)op);
}

/* The next request slot of h, described for the watchdog. */
static MPI_Request *add_request(Comm *c, CommHandle *h, GroupKind g, CollectiveKind k, int peer,
                                size_t n, const char *dtype) {
    GPT3D_CHECK(h->count < COMM_HANDLE_MAX_OPS, "communication handle holds %d requests already",
                h->count);
    h->what[h->count] = (WatchedOp){.op = comm_collective_name(k),
                                    .group = comm_group_name(g),
                                    .group_comm = comm_group_mpi(c, g),
                                    .world = c->ps->world,
                                    .peer = peer,
                                    .count = n,
                                    .dtype = dtype};
    h->is_recv[h->count] = k == COLL_RECV;
    h->active = true;
    return &h->reqs[h->count++];
}

void comm_mpi_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                         CommHandle *h) {
    MPI_Request *req = add_request(c, h, g, COLL_ALL_REDUCE, -1, n, dtype_name(t));
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, buf, mpi_count(n), mpi_reduce_type(t), mpi_op(op),
                          comm_group_mpi(c, g), req));
}

void comm_mpi_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                         bool in_place, CommHandle *h) {
    MPI_Request *req = add_request(c, h, g, COLL_ALL_GATHER, -1, n, dtype_name(t));
    MPI_OK(MPI_Iallgather(in_place ? MPI_IN_PLACE : src, mpi_count(n), mpi_move_type(t), dst,
                          mpi_count(n), mpi_move_type(t), comm_group_mpi(c, g), req));
}

void comm_mpi_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                             CommHandle *h) {
    const size_t full = n * (size_t)comm_group_size(c, g);
    MPI_Request *req = add_request(c, h, g, COLL_REDUCE_SCATTER, -1, full, dtype_name(t));
    MPI_OK(MPI_Ireduce_scatter_block(src, dst, mpi_count(n), mpi_reduce_type(t), MPI_SUM,
                                     comm_group_mpi(c, g), req));
}

void comm_mpi_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                        CommHandle *h) {
    MPI_Request *req = add_request(c, h, g, COLL_BROADCAST, -1, n, dtype_name(t));
    MPI_OK(MPI_Ibcast(buf, mpi_count(n), mpi_move_type(t), root, comm_group_mpi(c, g), req));
}

void comm_mpi_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                         CommHandle *h) {
    const size_t full = n * (size_t)comm_group_size(c, g);
    MPI_Request *req = add_request(c, h, g, COLL_ALL_TO_ALL, -1, full, dtype_name(t));
    MPI_OK(MPI_Ialltoall(src, mpi_count(n), mpi_move_type(t), dst, mpi_count(n),
                         mpi_move_type(t), comm_group_mpi(c, g), req));
}

void comm_mpi_p2p(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h) {
    for (int i = 0; i < count; i++) {
        const CommP2POp *op = &ops[i];
        const bool recv = op->kind == COMM_P2P_RECV;
        MPI_Request *req = add_request(c, h, g, recv ? COLL_RECV : COLL_SEND,
                                       op->peer, op->n, dtype_name(op->dtype));
        if (recv)
            MPI_OK(MPI_Irecv(op->buf, mpi_count(op->n), mpi_move_type(op->dtype), op->peer,
                             op->tag, c->ps->world, req));
        else
            MPI_OK(MPI_Isend(op->buf, mpi_count(op->n), mpi_move_type(op->dtype), op->peer,
                             op->tag, c->ps->world, req));
    }
}

bool comm_mpi_test_requests(CommHandle *h) {
    int done = 0;
    MPI_OK(MPI_Testall(h->count, h->reqs, &done, MPI_STATUSES_IGNORE));
    return done != 0;
}

void comm_mpi_wait_requests(Comm *c, CommHandle *h) {
    parallel_state_wait(h->reqs, h->what, h->count, c->ps->timeout_s);
}

/* Receives come first in a p2p handle (comm_p2p_start posts them first). */
void comm_mpi_wait_receive_requests(Comm *c, CommHandle *h) {
    int receives = 0;
    while (receives < h->count && h->is_recv[receives]) receives++;
    parallel_state_wait(h->reqs, h->what, receives, c->ps->timeout_s);
}

/* ---- the implementation table: host buffers only ---- */

static void require_host_buffers(const Comm *c) {
    GPT3D_CHECK(c->be->host_visible,
                "the MPI implementation moves host buffers; %s buffers need --comm nccl or the "
                "staged implementation",
                c->be->name);
}

static void host_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                            CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_all_reduce(c, g, buf, n, t, op, h);
}

static void host_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                            bool in_place, CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_all_gather(c, g, dst, src, n, t, in_place, h);
}

static void host_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                                DType t, CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_reduce_scatter(c, g, dst, src, n, t, h);
}

static void host_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                           CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_broadcast(c, g, buf, n, t, root, h);
}

static void host_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                            CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_all_to_all(c, g, dst, src, n, t, h);
}

static void host_p2p(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h) {
    require_host_buffers(c);
    comm_mpi_p2p(c, g, ops, count, h);
}

static void finish(CommHandle *h) {
    h->count = 0;
    h->active = false;
}

static bool mpi_test(Comm *c, CommHandle *h) {
    (void)c;
    if (!comm_mpi_test_requests(h)) return false;
    finish(h);
    return true;
}

static void mpi_wait(Comm *c, CommHandle *h) {
    comm_mpi_wait_requests(c, h);
    finish(h);
}

const CommImpl comm_mpi_impl = {.name = "mpi",
                                .all_reduce = host_all_reduce,
                                .all_gather = host_all_gather,
                                .reduce_scatter = host_reduce_scatter,
                                .broadcast = host_broadcast,
                                .all_to_all = host_all_to_all,
                                .p2p = host_p2p,
                                .test = mpi_test,
                                .wait = mpi_wait,
                                .wait_receives = comm_mpi_wait_receive_requests,
                                .destroy = NULL};

/* ---- shared by every implementation ---- */

static void require_group(const Comm *c, GroupKind g) {
    GPT3D_CHECK(comm_group_mpi(c, g) != MPI_COMM_NULL,
                "world rank %d is not a member of the %s group", c->ps->rank, comm_group_name(g));
}

void comm_barrier(Comm *c, GroupKind g) {
    require_group(c, g);
    comm_count(c, g, COLL_BARRIER, 0, 1);
    CommHandle h = {0};
    MPI_Request *req = add_request(c, &h, g, COLL_BARRIER, -1, 0, NULL);
    MPI_OK(MPI_Ibarrier(comm_group_mpi(c, g), req));
    comm_mpi_wait_requests(c, &h);
}

size_t comm_host_type_size(HostType t) {
    switch (t) {
    case HOST_I32: return 4;
    case HOST_I64:
    case HOST_U64:
    case HOST_F64: return 8;
    }
    GPT3D_FAIL("unknown host type %d", (int)t);
}

static MPI_Datatype host_mpi_type(HostType t) {
    switch (t) {
    case HOST_I32: return MPI_INT32_T;
    case HOST_I64: return MPI_INT64_T;
    case HOST_U64: return MPI_UINT64_T;
    case HOST_F64: return MPI_DOUBLE;
    }
    GPT3D_FAIL("unknown host type %d", (int)t);
}

static const char *host_type_name(HostType t) {
    switch (t) {
    case HOST_I32: return "int32";
    case HOST_I64: return "int64";
    case HOST_U64: return "uint64";
    case HOST_F64: return "fp64";
    }
    return "?";
}

void comm_host_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, HostType t, ReduceOp op) {
    require_group(c, g);
    comm_count(c, g, COLL_HOST_ALL_REDUCE, n, comm_host_type_size(t));
    if (comm_group_size(c, g) == 1 || n == 0) return;
    CommHandle h = {0};
    MPI_Request *req = add_request(c, &h, g, COLL_HOST_ALL_REDUCE, -1, n, host_type_name(t));
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, buf, mpi_count(n), host_mpi_type(t), mpi_op(op),
                          comm_group_mpi(c, g), req));
    comm_mpi_wait_requests(c, &h);
}

void comm_host_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                          HostType t) {
    require_group(c, g);
    comm_count(c, g, COLL_HOST_ALL_GATHER, n, comm_host_type_size(t));
    if (comm_group_size(c, g) == 1) {
        memcpy(dst, src, n * comm_host_type_size(t));
        return;
    }
    if (n == 0) return;
    CommHandle h = {0};
    MPI_Request *req = add_request(c, &h, g, COLL_HOST_ALL_GATHER, -1, n, host_type_name(t));
    MPI_OK(MPI_Iallgather(src, mpi_count(n), host_mpi_type(t), dst, mpi_count(n),
                          host_mpi_type(t), comm_group_mpi(c, g), req));
    comm_mpi_wait_requests(c, &h);
}
