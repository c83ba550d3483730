/* parallel_state/parallel_state.h — topology -> ranks -> process groups.
 *
 * Contract. World = DP x PP x CP x TP with Megatron's default rank order,
 * tensor parallel fastest, then context parallel, then data parallel:
 * rank = tp + TP * (cp + CP * (dp + DP * pp)). Every group a rank
 * belongs to is an MPI communicator made by MPI_Comm_split and lives in the
 * ParallelState that callers pass explicitly (no global groups). The
 * embedding group joins the first and last pipeline stage of a PP group (it
 * is the PP group itself when PP = 2, and a single rank when PP = 1).
 * The context-parallel group holds the CP ranks that share one sequence
 * (same tp, dp, pp); the data-context group joins DP and CP (same tp, pp):
 * parameters are replicated over it, so gradients are summed and the
 * optimizer is sharded over it, as Megatron's data-parallel group "with
 * context parallel". With CP = 1 it has the data-parallel group's ranks.
 * The node-local rank (for GPU selection) comes from MPI_Comm_split_type.
 *
 * Watchdog (watchdog.c). Every wait on other ranks has a deadline: the
 * collectives (collectives.h) and the host-value helpers below start a
 * nonblocking MPI operation and complete it with parallel_state_wait(), which
 * polls it until it is done or `timeout_s` (ParallelState.timeout_s, from
 * --distributed-timeout-minutes) has passed. The limit applies to each
 * operation on its own, as torch.distributed's timeout does for NCCL in
 * Megatron: a rank may wait that long at any single collective, e.g. while
 * another rank writes its part of a checkpoint before the save's agreement,
 * so a save phase longer than the limit needs a larger limit. On a timeout
 * the rank prints one line (operation, group and its ranks, the peers it
 * waits for, element count, seconds waited, the flag) and aborts the job:
 * a stopped or dead peer cannot take part in a clean agreement. */
#ifndef GPT3D_PARALLEL_STATE_H
#define GPT3D_PARALLEL_STATE_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int world_size, rank;
    int tp_size, pp_size, dp_size, cp_size;
    int tp_rank, pp_rank, dp_rank, cp_rank;
    /* The expert layout of a stage (Megatron's expert rank order, expert
     * tensor parallelism fastest): with j = tp + TP * (cp + CP * dp),
     * etp_rank = j % ETP, ep_rank = (j / ETP) % EP, edp_rank = j / (ETP EP).
     * The expert group holds the EP ranks of one (etp, edp), the
     * expert-data group the ranks holding the same experts (one (etp, ep)).
     * ETP = TP (the default): the experts' TP split is the dense one and
     * EP is carved from DP x CP; ETP = 1: the TP ranks join the expert
     * and expert-data groups. EP = 1 and ETP = TP: the expert group is the
     * rank alone, the expert-data group DP x CP. */
    int etp_size, etp_rank, ep_size, ep_rank, edp_size, edp_rank;
    int local_rank, local_size; /* within this node */
    MPI_Comm world;
    MPI_Comm tp_comm, pp_comm, dp_comm, cp_comm;
    MPI_Comm dp_cp_comm;          /* DP x CP: the ranks that hold the same parameters */
    MPI_Comm model_parallel_comm; /* the TP x PP ranks of one DP replica and CP rank */
    MPI_Comm embedding_comm;      /* first + last stage of this PP group; MPI_COMM_NULL elsewhere */
    MPI_Comm ep_comm, edp_comm;   /* expert group (all-to-all), expert-data group (expert grads) */
    double timeout_s; /* watchdog limit per operation; init sets the default */
} ParallelState;

/* The model-parallel sizes a job is launched with; DP is what remains.
 * ep (--expert-model-parallel-size; 0 means 1) x etp
 * (--expert-tensor-parallel-size; 0 means tp) must divide TP x CP x DP,
 * and etp divide tp. */
typedef struct {
    int tp, cp, pp, ep, etp;
} ParallelSizes;

/* Rank of the coordinates (tp, cp, dp, pp) under the rank order above. */
int parallel_state_rank_of(int tp, int cp, int dp, int pp, int tp_size, int cp_size, int dp_size);

/* Checks world_size against TP, CP and PP, and EP against the DP x CP
 * ranks that remain. On bad sizes returns false with a message naming
 * --tensor-model-parallel-size / --context-parallel-size /
 * --pipeline-model-parallel-size / --expert-model-parallel-size. */
bool parallel_state_check_sizes(int world_size, ParallelSizes sizes, char *err, size_t err_size);

/* Collective over `world`: every rank must call it with the same sizes. */
bool parallel_state_init_sizes(ParallelState *ps, MPI_Comm world, ParallelSizes sizes, char *err,
                               size_t err_size);
/* The same without context parallelism (CP = 1). */
bool parallel_state_init(ParallelState *ps, MPI_Comm world, int tp, int pp, char *err,
                         size_t err_size);
void parallel_state_destroy(ParallelState *ps);

/* Ranks holding the same parameters (DP x CP): the optimizer's shards. */
static inline int parallel_state_data_context_size(const ParallelState *ps) {
    return ps->dp_size * ps->cp_size;
}
static inline bool parallel_state_is_first_stage(const ParallelState *ps) {
    return ps->pp_rank == 0;
}
static inline bool parallel_state_is_last_stage(const ParallelState *ps) {
    return ps->pp_rank == ps->pp_size - 1;
}
/* World ranks of the next / previous pipeline stage (same tp, cp, dp). They wrap
 * around (the last stage's next is the first), as in Megatron. */
int parallel_state_next_stage_rank(const ParallelState *ps);
int parallel_state_prev_stage_rank(const ParallelState *ps);
/* World rank of context-parallel rank `cp` of this rank's CP group (the
 * ring of context parallelism passes to cp_rank + 1 and takes from cp_rank - 1). */
int parallel_state_context_rank(const ParallelState *ps, int cp);

/* Every rank agrees: returns true when `ok` is true on all ranks of world.
 * Used so that a bad input seen by one rank stops every rank together.
 * Watched with `timeout_s` (it also runs before a ParallelState exists). */
bool parallel_state_all_ok(MPI_Comm world, bool ok, double timeout_s);

/* ---- watchdog (watchdog.c) ---- */

/* Megatron's default --distributed-timeout-minutes, 10. */
#define PARALLEL_STATE_DEFAULT_TIMEOUT_S 600.0
/* The job's exit status when an operation timed out (through MPI_Abort). */
#define PARALLEL_STATE_TIMEOUT_EXIT 4

/* What a request is, for the report when it does not complete. */
typedef struct {
    const char *op;      /* "all-reduce", "send", "recv", ... */
    const char *group;   /* "data", "pipeline", ... */
    MPI_Comm group_comm; /* the group's members are listed from it (MPI_COMM_NULL: none) */
    MPI_Comm world;      /* ranks are reported as ranks of this communicator */
    int peer;            /* p2p: the peer's rank in world; -1 for a collective */
    size_t count;        /* elements this rank sends or receives */
    const char *dtype;   /* element type name; NULL for a barrier */
} WatchedOp;

/* The deadline decision: has an operation started at start_s run out of
 * timeout_s at now_s? */
bool watchdog_expired(double start_s, double now_s, double timeout_s);
/* Polls reqs[0..n) until all completed (true) or timeout_s passed (false;
 * the incomplete requests are left active). *waited_s: seconds polled. */
bool watchdog_poll(MPI_Request *reqs, int n, double timeout_s, double *waited_s);
/* The same for any completion test: polls done(arg) with the same back-off
 * (the NCCL implementation polls a CUDA event with it). */
bool watchdog_poll_until(bool (*done)(void *arg), void *arg, double timeout_s,
                         double *waited_s);
/* Reports `op` as timed out on stderr and aborts the job with
 * PARALLEL_STATE_TIMEOUT_EXIT. */
void parallel_state_timeout_abort(const WatchedOp *op, double waited_s, double timeout_s);
/* The one-line report of `op` after waited_s seconds (without "error: "). */
void watchdog_describe(const WatchedOp *op, double waited_s, double timeout_s, char *buf,
                       size_t size);
/* Completes reqs[i], described by ops[i]; on a timeout reports the first
 * incomplete one on stderr and aborts the job with PARALLEL_STATE_TIMEOUT_EXIT. */
void parallel_state_wait(MPI_Request *reqs, const WatchedOp *ops, int n, double timeout_s);

/* Host values (flags, loss sums, hashes) over one of ps's communicators,
 * under the watchdog; for device buffers use collectives.h. In place. */
void parallel_state_all_reduce(const ParallelState *ps, MPI_Comm comm, void *buf, int n,
                               MPI_Datatype type, MPI_Op op);
/* dst holds group_size * n values, in group-rank order. */
void parallel_state_all_gather(const ParallelState *ps, MPI_Comm comm, const void *src,
                               void *dst, int n, MPI_Datatype type);

/* Longest failure message parallel_state_agree carries between ranks. */
#define PARALLEL_STATE_MAX_MESSAGE 2048

/* parallel_state_all_ok that also carries the reason: when some rank of
 * world is not ok, every rank's err becomes the message of the lowest failing
 * rank R (prefixed "rank R: " when R is not 0), so rank 0 alone can print the
 * one real error while healthy ranks print nothing. The reporting rank's own
 * err is read, never its neighbours' boilerplate ("another rank failed").
 * Watched with timeout_s, as parallel_state_all_ok. */
bool parallel_state_agree(MPI_Comm world, bool ok, double timeout_s, char *err,
                          size_t err_size);

/* False with the mpirun and srun command lines when the environment says
 * the job was launched as several processes (torchrun's WORLD_SIZE,
 * Slurm's SLURM_NTASKS) but MPI sees one, i.e. each launched copy would
 * train alone (launcher.c). */
bool parallel_state_check_launcher(int mpi_world_size, char *err, size_t err_size);

#endif
