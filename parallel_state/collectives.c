#include "parallel_state/collectives.h"

#include <limits.h>
#include <string.h>

#include "core/errors.h"

void comm_init(Comm *c, const ParallelState *ps, Backend *be) {
    memset(c, 0, sizeof *c);
    c->ps = ps;
    c->be = be;
}

void comm_reset_counters(Comm *c) { memset(&c->counters, 0, sizeof c->counters); }

static MPI_Comm group_comm(const Comm *c, GroupKind g) {
    switch (g) {
    case GROUP_WORLD: return c->ps->world;
    case GROUP_TENSOR: return c->ps->tp_comm;
    case GROUP_PIPELINE: return c->ps->pp_comm;
    case GROUP_DATA: return c->ps->dp_comm;
    case GROUP_MODEL_PARALLEL: return c->ps->model_parallel_comm;
    case GROUP_EMBEDDING: return c->ps->embedding_comm;
    case NUM_GROUPS: break;
    }
    GPT3D_FAIL("unknown group %d", (int)g);
}

int comm_group_size(const Comm *c, GroupKind g) {
    MPI_Comm m = group_comm(c, g);
    if (m == MPI_COMM_NULL) return 0;
    int n;
    MPI_Comm_size(m, &n);
    return n;
}

int comm_group_rank(const Comm *c, GroupKind g) {
    MPI_Comm m = group_comm(c, g);
    if (m == MPI_COMM_NULL) return -1;
    int r;
    MPI_Comm_rank(m, &r);
    return r;
}

const char *comm_group_name(GroupKind g) {
    static const char *names[NUM_GROUPS] = {"world",          "tensor",   "pipeline", "data",
                                            "model-parallel", "embedding"};
    return (int)g < NUM_GROUPS ? names[g] : "?";
}

const char *comm_collective_name(CollectiveKind k) {
    static const char *names[NUM_COLLECTIVES] = {"all-reduce", "all-gather", "reduce-scatter",
                                                 "broadcast",  "send",       "recv",
                                                 "barrier"};
    return (int)k < NUM_COLLECTIVES ? names[k] : "?";
}

/* The communicator of a group this rank belongs to. A rank outside the group
 * (a middle pipeline stage and the embedding group) calling a collective on
 * it is a bug in the caller, reported here rather than as an MPI error. */
static MPI_Comm member_comm(const Comm *c, GroupKind g) {
    MPI_Comm m = group_comm(c, g);
    GPT3D_CHECK(m != MPI_COMM_NULL, "world rank %d is not a member of the %s group",
                c->ps->rank, comm_group_name(g));
    return m;
}

/* MPI counts are int. */
static int mpi_count(size_t n) {
    GPT3D_CHECK(n <= (size_t)INT_MAX, "collective of %zu elements exceeds MPI's int count", n);
    return (int)n;
}

static MPI_Datatype mpi_type(DType t) {
    switch (t) {
    case DTYPE_F32: return MPI_FLOAT;
    case DTYPE_BF16:
    case DTYPE_F16: break;
    }
    GPT3D_FAIL("collectives over MPI support fp32 buffers only (got %s); the CUDA path stages "
               "through fp32 or uses NCCL",
               dtype_name(t));
}

static void count(Comm *c, GroupKind g, CollectiveKind k, size_t n, DType t) {
    c->counters.calls[g][k]++;
    c->counters.bytes[g][k] += n * dtype_size(t);
}

/* The CPU backend's device buffers are host memory; other backends stage or
 * use their own library (the CUDA backend's NCCL path). */
static void require_host_buffers(const Comm *c) {
    GPT3D_CHECK(!strcmp(c->be->name, "cpu"),
                "MPI collectives on %s buffers need host staging, which this build lacks",
                c->be->name);
}

#define MPI_OK(call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) GPT3D_FAIL("%s failed with MPI error %d", #call, rc_);             \
    } while (0)

/* Completes one collective's request under the watchdog. */
static void wait_collective(const Comm *c, MPI_Request *req, GroupKind g, CollectiveKind k,
                            size_t n, DType t) {
    const WatchedOp what = {.op = comm_collective_name(k),
                            .group = comm_group_name(g),
                            .group_comm = group_comm(c, g),
                            .world = c->ps->world,
                            .peer = -1,
                            .count = n,
                            .dtype = k == COLL_BARRIER ? NULL : dtype_name(t)};
    parallel_state_wait(req, &what, 1, c->ps->timeout_s);
}

void comm_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op) {
    require_host_buffers(c);
    MPI_Comm m = member_comm(c, g);
    count(c, g, COLL_ALL_REDUCE, n, t);
    if (comm_group_size(c, g) == 1 || n == 0) return;
    MPI_Request req;
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, buf, mpi_count(n), mpi_type(t),
                          op == REDUCE_SUM ? MPI_SUM : MPI_MAX, m, &req));
    wait_collective(c, &req, g, COLL_ALL_REDUCE, n, t);
}

void comm_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t) {
    require_host_buffers(c);
    MPI_Comm m = member_comm(c, g);
    count(c, g, COLL_ALL_GATHER, n, t);
    const size_t chunk_bytes = n * dtype_size(t);
    const char *own_chunk = (const char *)dst + (size_t)comm_group_rank(c, g) * chunk_bytes;
    const bool in_place = src == own_chunk;
    if (comm_group_size(c, g) == 1) {
        if (!in_place) c->be->ops->copy_device(c->be, dst, src, chunk_bytes);
        return;
    }
    MPI_Request req;
    MPI_OK(MPI_Iallgather(in_place ? MPI_IN_PLACE : src, mpi_count(n), mpi_type(t), dst,
                          mpi_count(n), mpi_type(t), m, &req));
    wait_collective(c, &req, g, COLL_ALL_GATHER, n, t);
}

void comm_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t) {
    require_host_buffers(c);
    MPI_Comm m = member_comm(c, g);
    const int size = comm_group_size(c, g);
    count(c, g, COLL_REDUCE_SCATTER, n * (size_t)size, t);
    if (size == 1) {
        if (dst != src) c->be->ops->copy_device(c->be, dst, src, n * dtype_size(t));
        return;
    }
    MPI_Request req;
    MPI_OK(MPI_Ireduce_scatter_block(src, dst, mpi_count(n), mpi_type(t), MPI_SUM, m, &req));
    wait_collective(c, &req, g, COLL_REDUCE_SCATTER, n * (size_t)size, t);
}

void comm_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root) {
    require_host_buffers(c);
    MPI_Comm m = member_comm(c, g);
    const int size = comm_group_size(c, g);
    GPT3D_CHECK(root >= 0 && root < size, "broadcast root %d outside the %s group of %d ranks",
                root, comm_group_name(g), size);
    count(c, g, COLL_BROADCAST, n, t);
    if (size == 1) return;
    MPI_Request req;
    MPI_OK(MPI_Ibcast(buf, mpi_count(n), mpi_type(t), root, m, &req));
    wait_collective(c, &req, g, COLL_BROADCAST, n, t);
}

/* Both directions are posted before either is waited for, so neighbouring
 * stages that send to each other never deadlock; the watchdog reports the
 * direction that did not complete. */
static void exchange(Comm *c, const void *send_buf, size_t send_n, int dest, int send_tag,
                     void *recv_buf, size_t recv_n, int source, int recv_tag, DType t) {
    require_host_buffers(c);
    GPT3D_CHECK(dest < c->ps->world_size && source < c->ps->world_size,
                "send/recv peer (dest %d, source %d) outside a world of %d ranks", dest, source,
                c->ps->world_size);
    MPI_Request req[2];
    WatchedOp what[2];
    int nreq = 0;
    const WatchedOp p2p = {.group = comm_group_name(GROUP_PIPELINE),
                           .group_comm = c->ps->pp_comm,
                           .world = c->ps->world,
                           .dtype = dtype_name(t)};
    if (source >= 0) {
        count(c, GROUP_PIPELINE, COLL_RECV, recv_n, t);
        what[nreq] = p2p;
        what[nreq].op = comm_collective_name(COLL_RECV);
        what[nreq].peer = source;
        what[nreq].count = recv_n;
        MPI_OK(MPI_Irecv(recv_buf, mpi_count(recv_n), mpi_type(t), source, recv_tag, c->ps->world,
                         &req[nreq++]));
    }
    if (dest >= 0) {
        count(c, GROUP_PIPELINE, COLL_SEND, send_n, t);
        what[nreq] = p2p;
        what[nreq].op = comm_collective_name(COLL_SEND);
        what[nreq].peer = dest;
        what[nreq].count = send_n;
        MPI_OK(MPI_Isend(send_buf, mpi_count(send_n), mpi_type(t), dest, send_tag, c->ps->world,
                         &req[nreq++]));
    }
    parallel_state_wait(req, what, nreq, c->ps->timeout_s);
}

void comm_send_recv(Comm *c, const void *send_buf, size_t send_n, int dest, void *recv_buf,
                    size_t recv_n, int source, DType t, int tag) {
    exchange(c, send_buf, send_n, dest, tag, recv_buf, recv_n, source, tag, t);
}

void comm_send_recv_tagged(Comm *c, const void *send_buf, int dest, int send_tag, void *recv_buf,
                           int source, int recv_tag, size_t n, DType t) {
    exchange(c, send_buf, n, dest, send_tag, recv_buf, n, source, recv_tag, t);
}

void comm_barrier(Comm *c, GroupKind g) {
    MPI_Comm m = member_comm(c, g);
    count(c, g, COLL_BARRIER, 0, DTYPE_F32);
    MPI_Request req;
    MPI_OK(MPI_Ibarrier(m, &req));
    wait_collective(c, &req, g, COLL_BARRIER, 0, DTYPE_F32);
}
