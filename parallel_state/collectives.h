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
 * All calls are blocking and deterministic (the same inputs give bitwise the
 * same result on every rank of the group). Each is a nonblocking MPI
 * operation completed under the watchdog (parallel_state.h): one that does
 * not complete within ps->timeout_s aborts the job with a report naming it.
 *
 * Counted bytes per call: all-reduce and broadcast n elements (on every rank,
 * root or not); all-gather the n-element chunk a rank sends; reduce-scatter
 * the full group_size * n input; send and recv their own n, both under
 * GROUP_PIPELINE; barrier 0. Size-1 groups and n = 0 still count a call.
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
    NUM_COLLECTIVES
} CollectiveKind;

typedef enum { REDUCE_SUM = 0, REDUCE_MAX = 1 } ReduceOp;

typedef struct {
    uint64_t calls[NUM_GROUPS][NUM_COLLECTIVES];
    uint64_t bytes[NUM_GROUPS][NUM_COLLECTIVES];
} CommCounters;

typedef struct {
    const ParallelState *ps;
    Backend *be;
    CommCounters counters;
} Comm;

void comm_init(Comm *c, const ParallelState *ps, Backend *be);
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

#endif
