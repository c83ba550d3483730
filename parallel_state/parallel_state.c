#include "parallel_state/parallel_state.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

int parallel_state_rank_of(int tp, int cp, int dp, int pp, int tp_size, int cp_size, int dp_size) {
    return tp + tp_size * (cp + cp_size * (dp + dp_size * pp));
}

bool parallel_state_check_sizes(int world_size, ParallelSizes sizes, char *err, size_t err_size) {
    const struct {
        int value;
        const char *flag;
    } each[] = {{sizes.tp, "--tensor-model-parallel-size"},
                {sizes.cp, "--context-parallel-size"},
                {sizes.pp, "--pipeline-model-parallel-size"}};
    for (size_t i = 0; i < sizeof each / sizeof *each; i++)
        if (each[i].value < 1) {
            snprintf(err, err_size, "%s must be >= 1 (got %d)", each[i].flag, each[i].value);
            return false;
        }
    /* In long long so that absurd flag values cannot overflow int. */
    const long long model_ranks = (long long)sizes.tp * sizes.cp * sizes.pp;
    char product[192];
    if (sizes.cp > 1)
        snprintf(product, sizeof product,
                 "--tensor-model-parallel-size %d x --context-parallel-size %d x "
                 "--pipeline-model-parallel-size %d",
                 sizes.tp, sizes.cp, sizes.pp);
    else
        snprintf(product, sizeof product,
                 "--tensor-model-parallel-size %d x --pipeline-model-parallel-size %d", sizes.tp,
                 sizes.pp);
    if (model_ranks > world_size) {
        snprintf(err, err_size,
                 "%s needs %lld ranks, but the job has only %d; launch at least %lld ranks "
                 "(mpirun -np) or reduce the sizes",
                 product, model_ranks, world_size, model_ranks);
        return false;
    }
    if (world_size % model_ranks != 0) {
        snprintf(err, err_size,
                 "the job has %d ranks, which is not divisible by %s = %lld; launch a multiple of "
                 "%lld ranks (mpirun -np) or change the sizes",
                 world_size, product, model_ranks, model_ranks);
        return false;
    }
    const int ep = sizes.ep > 0 ? sizes.ep : 1, etp = sizes.etp > 0 ? sizes.etp : sizes.tp;
    if (sizes.etp < 0 || sizes.tp % etp) {
        snprintf(err, err_size,
                 "--expert-tensor-parallel-size %d must divide --tensor-model-parallel-size %d",
                 sizes.etp, sizes.tp);
        return false;
    }
    const long long stage_ranks = world_size / (long long)sizes.pp;
    if (sizes.ep < 0 || stage_ranks % ((long long)ep * etp)) {
        if (etp == sizes.tp)
            snprintf(err, err_size,
                     "--expert-model-parallel-size %d must divide the %lld data-parallel x "
                     "context-parallel ranks (%d ranks / (--tensor-model-parallel-size %d x "
                     "--pipeline-model-parallel-size %d)) among which the experts are spread; "
                     "change it or the number of ranks",
                     sizes.ep, stage_ranks / sizes.tp, world_size, sizes.tp, sizes.pp);
        else
            snprintf(err, err_size,
                     "--expert-model-parallel-size %d x --expert-tensor-parallel-size %d must "
                     "divide the %lld ranks of a pipeline stage (%d ranks / "
                     "--pipeline-model-parallel-size %d); change them or the number of ranks",
                     sizes.ep, etp, stage_ranks, world_size, sizes.pp);
        return false;
    }
    return true;
}

/* Every group is the set of ranks that agree on all coordinates but the
 * group's own; the color encodes the others, the key orders by the own. */
static void split_groups(ParallelState *ps) {
    const int tp = ps->tp_size, cp = ps->cp_size, dp = ps->dp_size;
    const int t = ps->tp_rank, c = ps->cp_rank, d = ps->dp_rank, p = ps->pp_rank;
    MPI_Comm w = ps->world;
    MPI_Comm_split(w, c + cp * (d + dp * p), t, &ps->tp_comm);
    MPI_Comm_split(w, t + tp * (d + dp * p), c, &ps->cp_comm);
    MPI_Comm_split(w, t + tp * (c + cp * p), d, &ps->dp_comm);
    MPI_Comm_split(w, t + tp * p, c + cp * d, &ps->dp_cp_comm);
    MPI_Comm_split(w, t + tp * (c + cp * d), p, &ps->pp_comm);
    MPI_Comm_split(w, c + cp * d, t + tp * p, &ps->model_parallel_comm);
    const bool in_embedding = parallel_state_is_first_stage(ps) || parallel_state_is_last_stage(ps);
    MPI_Comm_split(w, in_embedding ? t + tp * (c + cp * d) : MPI_UNDEFINED, p, &ps->embedding_comm);
    const int etp = ps->etp_size, ep = ps->ep_size, et = ps->etp_rank;
    MPI_Comm_split(w, et + etp * (ps->edp_rank + ps->edp_size * p), ps->ep_rank, &ps->ep_comm);
    MPI_Comm_split(w, et + etp * (ps->ep_rank + ep * p), ps->edp_rank, &ps->edp_comm);
}

bool parallel_state_init_sizes(ParallelState *ps, MPI_Comm world, ParallelSizes sizes, char *err,
                               size_t err_size) {
    memset(ps, 0, sizeof *ps);
    ps->timeout_s = PARALLEL_STATE_DEFAULT_TIMEOUT_S;
    /* Null handles first, so that destroy is safe after a failed init. */
    ps->world = ps->tp_comm = ps->pp_comm = ps->dp_comm = ps->cp_comm = MPI_COMM_NULL;
    ps->dp_cp_comm = ps->model_parallel_comm = ps->embedding_comm = MPI_COMM_NULL;
    ps->ep_comm = ps->edp_comm = MPI_COMM_NULL;
    MPI_Comm_size(world, &ps->world_size);
    MPI_Comm_rank(world, &ps->rank);
    if (!parallel_state_check_sizes(ps->world_size, sizes, err, err_size)) return false;
    ps->world = world;
    ps->tp_size = sizes.tp;
    ps->cp_size = sizes.cp;
    ps->pp_size = sizes.pp;
    ps->dp_size = ps->world_size / (sizes.tp * sizes.cp * sizes.pp);
    ps->tp_rank = ps->rank % sizes.tp;
    ps->cp_rank = (ps->rank / sizes.tp) % sizes.cp;
    ps->dp_rank = (ps->rank / (sizes.tp * sizes.cp)) % ps->dp_size;
    ps->pp_rank = ps->rank / (sizes.tp * sizes.cp * ps->dp_size);
    const int in_stage = ps->tp_rank + sizes.tp * (ps->cp_rank + sizes.cp * ps->dp_rank);
    ps->ep_size = sizes.ep > 0 ? sizes.ep : 1;
    ps->etp_size = sizes.etp > 0 ? sizes.etp : sizes.tp;
    ps->edp_size = sizes.tp * sizes.cp * ps->dp_size / (ps->ep_size * ps->etp_size);
    ps->etp_rank = in_stage % ps->etp_size;
    ps->ep_rank = in_stage / ps->etp_size % ps->ep_size;
    ps->edp_rank = in_stage / (ps->etp_size * ps->ep_size);
    split_groups(ps);

    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, ps->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &ps->local_rank);
    MPI_Comm_size(node, &ps->local_size);
    MPI_Comm_free(&node);
    return true;
}

bool parallel_state_init(ParallelState *ps, MPI_Comm world, int tp, int pp, char *err,
                         size_t err_size) {
    return parallel_state_init_sizes(ps, world, (ParallelSizes){.tp = tp, .cp = 1, .pp = pp}, err,
                                     err_size);
}

void parallel_state_destroy(ParallelState *ps) {
    MPI_Comm *comms[] = {&ps->tp_comm,       &ps->dp_comm, &ps->cp_comm,
                         &ps->dp_cp_comm,     &ps->pp_comm, &ps->model_parallel_comm,
                         &ps->embedding_comm, &ps->ep_comm, &ps->edp_comm};
    for (size_t i = 0; i < sizeof comms / sizeof *comms; i++)
        if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
}

static int stage_rank(const ParallelState *ps, int pp) {
    return parallel_state_rank_of(ps->tp_rank, ps->cp_rank, ps->dp_rank, pp, ps->tp_size,
                                  ps->cp_size, ps->dp_size);
}

int parallel_state_next_stage_rank(const ParallelState *ps) {
    return stage_rank(ps, (ps->pp_rank + 1) % ps->pp_size);
}

int parallel_state_prev_stage_rank(const ParallelState *ps) {
    return stage_rank(ps, (ps->pp_rank + ps->pp_size - 1) % ps->pp_size);
}

int parallel_state_context_rank(const ParallelState *ps, int cp) {
    return parallel_state_rank_of(ps->tp_rank, cp, ps->dp_rank, ps->pp_rank, ps->tp_size,
                                  ps->cp_size, ps->dp_size);
}

bool parallel_state_all_ok(MPI_Comm world, bool ok, double timeout_s) {
    int mine = ok ? 1 : 0, all = 0;
    const WatchedOp what = {.op = "all-reduce (agreement)", .group = "world", .group_comm = world,
                            .world = world, .peer = -1, .count = 1, .dtype = "int"};
    MPI_Request req;
    MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, world, &req);
    parallel_state_wait(&req, &what, 1, timeout_s);
    return all == 1;
}

bool parallel_state_agree(MPI_Comm world, bool ok, double timeout_s, char *err,
                          size_t err_size) {
    int rank = 0, first_bad = 0;
    MPI_Comm_rank(world, &rank);
    const int mine = ok ? INT_MAX : rank;
    const WatchedOp who = {.op = "all-reduce (agreement)", .group = "world", .group_comm = world,
                           .world = world, .peer = -1, .count = 1, .dtype = "int"};
    MPI_Request req;
    MPI_Iallreduce(&mine, &first_bad, 1, MPI_INT, MPI_MIN, world, &req);
    parallel_state_wait(&req, &who, 1, timeout_s);
    if (first_bad == INT_MAX) return true;
    char message[PARALLEL_STATE_MAX_MESSAGE] = "";
    if (rank == first_bad) snprintf(message, sizeof message, "%s", err_size ? err : "");
    const WatchedOp what = {.op = "broadcast (error message)", .group = "world",
                            .group_comm = world, .world = world, .peer = -1,
                            .count = sizeof message, .dtype = "char"};
    MPI_Ibcast(message, (int)sizeof message, MPI_CHAR, first_bad, world, &req);
    parallel_state_wait(&req, &what, 1, timeout_s);
    message[sizeof message - 1] = '\0';
    if (err_size == 0) return false;
    if (first_bad == 0)
        snprintf(err, err_size, "%s", message);
    else
        snprintf(err, err_size, "rank %d: %s", first_bad, message);
    return false;
}
