/* parallel_state/parallel_state.h — topology -> ranks -> process groups.
 *
 * Contract. World = DP x PP x TP with Megatron's default rank order, tensor
 * parallel fastest: rank = tp + TP * (dp + DP * pp). Every group a rank
 * belongs to is an MPI communicator made by MPI_Comm_split and lives in the
 * ParallelState that callers pass explicitly (no global groups). The
 * embedding group joins the first and last pipeline stage of a PP group (it
 * is the PP group itself when PP = 2, and a single rank when PP = 1).
 * The node-local rank (for GPU selection) comes from MPI_Comm_split_type. */
#ifndef GPT3D_PARALLEL_STATE_H
#define GPT3D_PARALLEL_STATE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int world_size, rank;
    int tp_size, pp_size, dp_size;
    int tp_rank, pp_rank, dp_rank;
    int local_rank, local_size; /* within this node */
    MPI_Comm world;
    MPI_Comm tp_comm, pp_comm, dp_comm;
    MPI_Comm model_parallel_comm; /* the TP x PP ranks of one DP replica */
    MPI_Comm embedding_comm;      /* first + last stage of this PP group; MPI_COMM_NULL elsewhere */
} ParallelState;

/* Rank of the coordinates (tp, dp, pp) under the rank order above. */
int parallel_state_rank_of(int tp, int dp, int pp, int tp_size, int dp_size);

/* Checks world_size against TP and PP. On bad sizes returns false with a
 * message naming --tensor-model-parallel-size / --pipeline-model-parallel-size. */
bool parallel_state_check_sizes(int world_size, int tp, int pp, char *err, size_t err_size);

/* Collective over `world`: every rank must call it with the same sizes. */
bool parallel_state_init(ParallelState *ps, MPI_Comm world, int tp, int pp, char *err,
                         size_t err_size);
void parallel_state_destroy(ParallelState *ps);

static inline bool parallel_state_is_first_stage(const ParallelState *ps) {
    return ps->pp_rank == 0;
}
static inline bool parallel_state_is_last_stage(const ParallelState *ps) {
    return ps->pp_rank == ps->pp_size - 1;
}
/* World ranks of the next / previous pipeline stage (same tp, dp). They wrap
 * around (the last stage's next is the first), as in Megatron. */
int parallel_state_next_stage_rank(const ParallelState *ps);
int parallel_state_prev_stage_rank(const ParallelState *ps);

/* Every rank agrees: returns true when `ok` is true on all ranks of world.
 * Used so that a bad input seen by one rank stops every rank together. */
bool parallel_state_all_ok(MPI_Comm world, bool ok);

/* Longest failure message parallel_state_agree carries between ranks. */
#define PARALLEL_STATE_MAX_MESSAGE 2048

/* parallel_state_all_ok that also carries the reason: when some rank of
 * world is not ok, every rank's err becomes the message of the lowest failing
 * rank R (prefixed "rank R: " when R is not 0), so rank 0 alone can print the
 * one real error while healthy ranks print nothing. The reporting rank's own
 * err is read, never its neighbours' boilerplate ("another rank failed"). */
bool parallel_state_agree(MPI_Comm world, bool ok, char *err, size_t err_size);

#endif
