/* parallel_state/comm_impl.h — the seam between collectives.h and the
 * implementations that move the bytes. Private to parallel_state/.
 *
 * Contract. collectives.c validates every call, counts it, handles the
 * cases that move nothing (n = 0, a group of one rank: a local copy at
 * most) and hands the rest to the Comm's CommImpl, which starts the
 * operation on h and returns. The implementation sees groups this rank
 * belongs to and n > 0, and groups of one rank only when it sets
 * single_rank_groups (NCCL: a one-rank communicator runs the same calls,
 * which is how one GPU tests them). test/wait/wait_receives
 * are called on active handles only; when an operation completes the
 * implementation clears h->active. */
#ifndef GPT3D_COMM_IMPL_H
#define GPT3D_COMM_IMPL_H

#include "parallel_state/collectives.h"

struct CommImpl {
    const char *name;
    bool single_rank_groups;
    void (*all_reduce)(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                       CommHandle *h);
    /* in_place: src is dst's own chunk. */
    void (*all_gather)(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                       bool in_place, CommHandle *h);
    void (*reduce_scatter)(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                           CommHandle *h);
    void (*broadcast)(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                      CommHandle *h);
    void (*all_to_all)(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                       CommHandle *h);
    /* ops: receives first, every peer >= 0, every n > 0; 1 <= count <= COMM_HANDLE_MAX_OPS. */
    void (*p2p)(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h);
    bool (*test)(Comm *c, CommHandle *h);
    void (*wait)(Comm *c, CommHandle *h);
    void (*wait_receives)(Comm *c, CommHandle *h);
    void (*destroy)(Comm *c);
};

/* Adds one call of n elements of elem_size bytes to the counters. */
void comm_count(Comm *c, GroupKind g, CollectiveKind k, size_t n, size_t elem_size);

/* The MPI communicator of group g (MPI_COMM_NULL when not a member). */
MPI_Comm comm_group_mpi(const Comm *c, GroupKind g);

/* ---- MPI (comm_mpi.c) on host buffers ---- */
extern const CommImpl comm_mpi_impl;
/* The MPI implementation's pieces, on host pointers, for the staged one. */
void comm_mpi_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                         CommHandle *h);
void comm_mpi_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                         bool in_place, CommHandle *h);
void comm_mpi_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                             CommHandle *h);
void comm_mpi_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                        CommHandle *h);
void comm_mpi_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                         CommHandle *h);
void comm_mpi_p2p(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h);
/* True when every MPI request of h completed (never blocks). */
bool comm_mpi_test_requests(CommHandle *h);
void comm_mpi_wait_requests(Comm *c, CommHandle *h);
void comm_mpi_wait_receive_requests(Comm *c, CommHandle *h);

/* ---- staged (comm_staged.c): device buffers through host memory + MPI ---- */
extern const CommImpl comm_staged_impl;
bool comm_staged_init(Comm *c, char *err, size_t err_size);

/* ---- NCCL (comm_nccl.c, through the CUDA library's table) ---- */
extern const CommImpl comm_nccl_impl;
bool comm_nccl_init(Comm *c, char *err, size_t err_size);

#endif
