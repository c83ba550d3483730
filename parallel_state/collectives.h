/* parallel_state/collectives.h — collectives on backend buffers, per group.
 *
 * Contract. One interface for the collectives the parallel code needs, on
 * device buffers of the run's Backend, over one of the ParallelState's
 * groups. CPU buffers go straight through MPI. Element types are the
 * backend's DTypes (fp32 for gradients and loss pieces, the act type for
 * activations). Every call is counted per group and operation (calls and
 * payload bytes, i.e. the bytes of the buffer a rank contributes), so tests
 * can assert how many collectives a layer ran and benchmarks can report
 * traffic. Sizes are in elements; all-gather and reduce-scatter take the
 * per-rank chunk size, and the full buffer is group_size chunks in rank order.
 * Every operation exists blocking and as start + wait on a CommHandle;
 * the blocking call is its start followed by comm_wait. Results are
 * deterministic (the same inputs give bitwise the same result on every rank
 * of the group). A started operation's buffers belong to it until comm_test
 * returned true or comm_wait returned. Several handles may be in flight at
 * once, on one group or several, as long as every rank of a group starts
 * that group's operations in the same order (MPI's rule for nonblocking
 * collectives; NCCL's for its stream); they may be completed in any order.
 * Every wait is under the watchdog (parallel_state.h): an operation that
 * does not complete within ps->timeout_s aborts the job with a report
 * naming it. Calls and bytes are counted when an operation starts.
 *
 * Implementations (comm_impl.h), chosen once by comm_init_impl (--comm):
 * MPI on host buffers (the CPU backend); NCCL on CUDA device buffers, one
 * communicator per group, operations on a communication stream ordered
 * after the compute stream's work by events; staged, CUDA device buffers
 * copied through pinned host memory and MPI, for several ranks sharing one
 * GPU (which NCCL refuses). Host values (flags, loss sums, hashes) always go
 * through MPI with comm_host_* and are counted like the rest.
 *
 * Counted bytes per call: all-reduce and broadcast n elements (on every rank,
 * root or not); all-gather the n-element chunk a rank sends; reduce-scatter
 * the full group_size * n input; send and recv their own n, both under
 * GROUP_PIPELINE; barrier 0; all-to-all the group_size * n_per_rank elements
 * a rank sends; host values n * their size (all-gather: the n a rank sends). Size-1 groups and n = 0 still count a call.
 * A rank may call a collective only on a group it belongs to (the embedding
 * group exists on first and last stages only). */
#ifndef GPT3D_COLLECTIVES_H
#define GPT3D_COLLECTIVES_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "parallel_state/parallel_state.h"

typedef enum {
    GROUP_WORLD = 0,
    GROUP_TENSOR,
    GROUP_PIPELINE,
    GROUP_DATA,
    GROUP_MODEL_PARALLEL,
    GROUP_EMBEDDING,
    GROUP_CONTEXT,      /* the CP ranks sharing one sequence */
    GROUP_DATA_CONTEXT, /* DP x CP: gradient sums and optimizer shards */
    GROUP_EXPERT,       /* EP ranks exchanging tokens (all-to-all) */
    GROUP_EXPERT_DATA,  /* the ranks holding the same experts: expert gradients and shards */
    NUM_GROUPS
} GroupKind;

typedef enum {
    COLL_ALL_REDUCE = 0,
    COLL_ALL_GATHER,
    COLL_REDUCE_SCATTER,
    COLL_BROADCAST,
    COLL_SEND,
    COLL_RECV,
    COLL_BARRIER,
    COLL_ALL_TO_ALL,
    COLL_HOST_ALL_REDUCE, /* comm_host_all_reduce: flags, loss sums */
    COLL_HOST_ALL_GATHER, /* comm_host_all_gather: hashes */
    NUM_COLLECTIVES
} CollectiveKind;

typedef enum { REDUCE_SUM = 0, REDUCE_MAX = 1, REDUCE_MIN = 2 } ReduceOp;

/* Element types of host values (comm_host_*). */
typedef enum { HOST_I32 = 0, HOST_I64, HOST_U64, HOST_F64 } HostType;

/* Which implementation carries the device-buffer collectives (--comm). */
typedef enum {
    COMM_IMPL_MPI = 0, /* host buffers (the CPU backend) through MPI */
    COMM_IMPL_NCCL,    /* CUDA device buffers through NCCL, one rank per GPU */
    COMM_IMPL_STAGED   /* CUDA device buffers through pinned host memory and MPI */
} CommImplKind;

typedef struct {
    uint64_t calls[NUM_GROUPS][NUM_COLLECTIVES];
    uint64_t bytes[NUM_GROUPS][NUM_COLLECTIVES];
} CommCounters;

typedef struct CommImpl CommImpl; /* comm_impl.h: the implementation table */

typedef struct {
    const ParallelState *ps;
    Backend *be;
    CommCounters counters;
    CommImplKind kind;
    const CommImpl *impl;
    void *impl_state; /* owned by the implementation; freed by comm_destroy */
    /* A checker for callers of the nonblocking p2p (tests set it): comm_test
     * never reports a handle holding sends as complete, so it stays in flight
     * until comm_wait, and comm_wait fails when a send's buffer no longer
     * holds what it held at the start. A caller that writes a buffer before
     * its send completed is caught at once, whatever the timing of MPI's
     * transfer. Host buffers (COMM_IMPL_MPI) only. */
    bool guard_sends;
} Comm;

/* Requests one handle can hold: a batched p2p of up to this many operations. */
#define COMM_HANDLE_MAX_OPS 4

/* A host copy of a device buffer (the staged implementation): `host` holds
 * n elements of fp32 when widened, else of dtype; device is where the result
 * goes back (NULL for an input-only copy). */
typedef struct {
    void *host;
    size_t capacity; /* bytes of the host block */
    void *device;
    size_t n;
    DType dtype;
    bool widened;
} CommStaging;

/* Comm.guard_sends: each send's buffer and the digest of its bytes at the start. */
typedef struct {
    int count;
    const void *buf[COMM_HANDLE_MAX_OPS];
    size_t bytes[COMM_HANDLE_MAX_OPS];
    uint64_t digest[COMM_HANDLE_MAX_OPS];
} CommSendGuard;

/* One operation in flight, in storage the caller owns (a local, a struct
 * member, an array of them for buckets). Zeroed it is inactive; start makes
 * it active; comm_test returning true or comm_wait makes it inactive again,
 * so a handle can be reused. The fields belong to the implementation. */
typedef struct CommHandle {
    int count; /* MPI requests in reqs[0..count) */
    MPI_Request reqs[COMM_HANDLE_MAX_OPS];
    WatchedOp what[COMM_HANDLE_MAX_OPS];
    bool is_recv[COMM_HANDLE_MAX_OPS];
    /* Device implementations: the event that marks completion on the
     * communication stream (NCCL), and the host copies of device buffers
     * (staged), copied back to `device` when the operation completes. */
    void *event;
    CommStaging stage[2 * COMM_HANDLE_MAX_OPS];
    int stage_count;
    CommSendGuard guard;
    bool active;
} CommHandle;

/* A Comm over MPI (host buffers). be may be NULL for a Comm that carries
 * host values only (comm_host_*), e.g. before the backend exists. */
void comm_init(Comm *c, const ParallelState *ps, Backend *be);
/* A Comm over the implementation `kind` for be's buffers. Collective over
 * the world (NCCL creates one communicator per group here, once). On
 * failure returns false with a message naming --comm. */
bool comm_init_impl(Comm *c, const ParallelState *ps, Backend *be, CommImplKind kind, char *err,
                    size_t err_size);
/* Frees the implementation's state (communicators, streams, staging). */
void comm_destroy(Comm *c);
/* Parses a --comm value for `device` ("cpu" or "cuda"): auto is nccl on
 * cuda, mpi on cpu; mpi on cuda is the staged implementation. false with a
 * message naming --comm on a bad value or a device that cannot use it. */
bool comm_resolve_kind(const char *value, const char *device, CommImplKind *kind, char *err,
                       size_t err_size);
const char *comm_impl_name(CommImplKind k);
void comm_reset_counters(Comm *c);
int comm_group_size(const Comm *c, GroupKind g);
int comm_group_rank(const Comm *c, GroupKind g);
const char *comm_group_name(GroupKind g);
const char *comm_collective_name(CollectiveKind k);

/* In place over the group. */
void comm_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op);
/* dst[r * n + i] = src_of_rank_r[i]; dst holds group_size * n elements.
 * In place when src == dst + group_rank * n (e.g. a ZeRO parameter shard that
 * lives inside the full buffer); otherwise src and dst must not overlap. */
void comm_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t);
/* dst[i] = sum over ranks of src_of_rank[rank_in_group * n + i]; src holds
 * group_size * n elements and must not overlap dst. */
void comm_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t);
void comm_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root_in_group);
/* Point to point by world rank; send and receive together so neighbouring
 * pipeline stages never deadlock. Either side may be skipped (NULL / -1). */
void comm_send_recv(Comm *c, const void *send_buf, size_t send_n, int dest, void *recv_buf,
                    size_t recv_n, int source, DType t, int tag);
/* One exchange with its own tag per direction (pipeline stages keep
 * activations and gradients on separate tags). n elements each way. */
void comm_send_recv_tagged(Comm *c, const void *send_buf, int dest, int send_tag, void *recv_buf,
                           int source, int recv_tag, size_t n, DType t);
void comm_barrier(Comm *c, GroupKind g);

/* dst[r * n_per_rank + i] = src_of_rank_r[me * n_per_rank + i]: rank r's
 * me-th chunk arrives as my r-th chunk. src and dst hold group_size *
 * n_per_rank elements each and must not overlap. */
void comm_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n_per_rank, DType t);

/* The same with a count per peer (elements): my chunk for group rank r is
 * send_counts[r] elements at src + sum of the earlier send counts, and
 * r's chunk for me arrives at dst + sum of the earlier recv_counts (the
 * counts must agree pairwise: my recv_counts[r] is r's send_counts[me]).
 * Pairwise rounds of send/receive, the same on every implementation; the
 * own chunk is a device copy. Counted as the rounds' sends and receives
 * under g. */
void comm_all_to_all_v(Comm *c, GroupKind g, void *dst, const size_t *recv_counts,
                       const void *src, const size_t *send_counts, DType t);
/* World rank of rank `group_rank` of my group g. */
int comm_group_world_rank(const Comm *c, GroupKind g, int group_rank);

/* ---- nonblocking: start, then comm_test / comm_wait ----
 * Same semantics and rules as the blocking call of the same name; h must be
 * inactive. */
void comm_all_reduce_start(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                           CommHandle *h);
void comm_all_gather_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                           CommHandle *h);
void comm_reduce_scatter_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                               DType t, CommHandle *h);
void comm_broadcast_start(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root_in_group,
                          CommHandle *h);
void comm_all_to_all_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n_per_rank,
                           DType t, CommHandle *h);
/* Drives progress; true once the operation completed (the handle is then
 * inactive), and for an inactive handle. Never blocks. */
bool comm_test(Comm *c, CommHandle *h);
/* Completes the operation under the watchdog; no-op when inactive. */
void comm_wait(Comm *c, CommHandle *h);
static inline bool comm_handle_active(const CommHandle *h) { return h->active; }

/* ---- batched point to point ----
 * Sends and receives with world-rank peers, started together so that
 * neighbours sending to each other never deadlock (NCCL: one group call).
 * Counted as COLL_SEND / COLL_RECV under GROUP_PIPELINE (comm_p2p_start_in:
 * under its group). A peer of -1 skips
 * the operation (a stage without that neighbour). */
typedef enum { COMM_P2P_SEND = 0, COMM_P2P_RECV } CommP2PKind;
typedef struct {
    CommP2PKind kind;
    void *buf; /* const for a send */
    size_t n;
    int peer; /* world rank, or -1 */
    int tag;
    DType dtype;
} CommP2POp;
void comm_p2p_start(Comm *c, const CommP2POp *ops, int n, CommHandle *h);
void comm_p2p(Comm *c, const CommP2POp *ops, int n);
/* The same for the p2p of another group (context parallelism's ring):
 * counted and reported under `g`; peers are still world ranks. */
void comm_p2p_start_in(Comm *c, GroupKind g, const CommP2POp *ops, int n, CommHandle *h);
/* Completes the receives of a p2p handle and leaves its sends in flight
 * (for comm_test / comm_wait later), so a stage can compute on what it
 * received while its own message is still going out. Where the
 * implementation cannot separate them (NCCL's group), completes all of it. */
void comm_wait_receives(Comm *c, CommHandle *h);

/* ---- host values over MPI (flags, loss sums, hashes), counted ---- */
size_t comm_host_type_size(HostType t);
/* In place over the group. */
void comm_host_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, HostType t, ReduceOp op);
/* dst holds group_size * n values in group-rank order; src and dst must not
 * overlap. */
void comm_host_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                          HostType t);

#endif
