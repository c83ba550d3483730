/* parallel_state: rank mapping, group membership and size checks, run under
 * mpirun with 8 ranks. Expected groups are derived here from DESIGN.md's rank
 * formula, rank = tp + TP * (cp + CP * (dp + DP * pp)), and compared with the members
 * each communicator actually has (world ranks all-gathered within it). */
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "parallel_state/parallel_state.h"

/* A failed check aborts the job, so the other ranks do not wait for this one. */
#define TEST_FAIL_EXIT() MPI_Abort(MPI_COMM_WORLD, 1)
#include "test_util.h"

#define MAX_RANKS 64

typedef struct {
    int tp, dp, pp, cp;
} Coord;

typedef struct {
    int tp_size, pp_size, dp_size, cp_size;
} Layout;

static int formula_rank(const Layout *l, Coord c) {
    return c.tp + l->tp_size * (c.cp + l->cp_size * (c.dp + l->dp_size * c.pp));
}

/* Coordinates of `rank`, found by searching the formula rather than by
 * inverting it the way the code under test does. */
static Coord coord_of(const Layout *l, int rank) {
    for (int pp = 0; pp < l->pp_size; pp++)
        for (int dp = 0; dp < l->dp_size; dp++)
            for (int cp = 0; cp < l->cp_size; cp++)
                for (int tp = 0; tp < l->tp_size; tp++) {
                    Coord c = {tp, dp, pp, cp};
                    if (formula_rank(l, c) == rank) return c;
                }
    CHECK(!"rank not reachable by the formula");
    return (Coord){-1, -1, -1, -1};
}

typedef enum { VARY_TP, VARY_DP, VARY_PP, VARY_CP } Axis;

/* Members of my group along one axis, ordered by that coordinate. */
static int axis_members(const Layout *l, Coord me, Axis axis, int *out) {
    const int n = axis == VARY_TP   ? l->tp_size
                  : axis == VARY_DP ? l->dp_size
                  : axis == VARY_CP ? l->cp_size
                                    : l->pp_size;
    for (int i = 0; i < n; i++) {
        Coord c = me;
        if (axis == VARY_TP) c.tp = i;
        if (axis == VARY_DP) c.dp = i;
        if (axis == VARY_PP) c.pp = i;
        if (axis == VARY_CP) c.cp = i;
        out[i] = formula_rank(l, c);
    }
    return n;
}

/* The data-context group: every (cp, dp) of my (tp, pp), cp fastest. */
static int data_context_members(const Layout *l, Coord me, int *out) {
    int n = 0;
    for (int dp = 0; dp < l->dp_size; dp++)
        for (int cp = 0; cp < l->cp_size; cp++) {
            Coord c = me;
            c.dp = dp;
            c.cp = cp;
            out[n++] = formula_rank(l, c);
        }
    return n;
}

/* The model-parallel group is every rank of my data-parallel replica and
 * context-parallel rank, in world-rank order. */
static int model_parallel_members(const Layout *l, Coord me, int world, int *out) {
    int n = 0;
    for (int r = 0; r < world; r++)
        if (coord_of(l, r).dp == me.dp && coord_of(l, r).cp == me.cp) out[n++] = r;
    return n;
}

/* First and last stage of my pipeline; just me when PP = 1; none (0) on a
 * middle stage. */
static int embedding_members(const Layout *l, Coord me, int *out) {
    if (me.pp != 0 && me.pp != l->pp_size - 1) return 0;
    Coord first = me, last = me;
    first.pp = 0;
    last.pp = l->pp_size - 1;
    out[0] = formula_rank(l, first);
    if (l->pp_size == 1) return 1;
    out[1] = formula_rank(l, last);
    return 2;
}

/* Checks that `comm` holds exactly `expected[0..n)`, in that order, with this
 * rank at its position. n = 0 means this rank must have no communicator. */
static void check_members(MPI_Comm comm, MPI_Comm world, const int *expected, int n,
                          const char *what, const Layout *l) {
    int world_rank;
    MPI_Comm_rank(world, &world_rank);
    if (n == 0) {
        if (comm != MPI_COMM_NULL)
            fprintf(stderr, "rank %d: %s communicator should be null at TP=%d PP=%d\n",
                    world_rank, what, l->tp_size, l->pp_size);
        CHECK(comm == MPI_COMM_NULL);
        return;
    }
    CHECK(comm != MPI_COMM_NULL);
    int size, rank, got[MAX_RANKS];
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    CHECK(size == n);
    MPI_Allgather(&world_rank, 1, MPI_INT, got, 1, MPI_INT, comm);
    for (int i = 0; i < n; i++) {
        if (got[i] != expected[i])
            fprintf(stderr, "rank %d: %s group member %d is world rank %d, expected %d "
                            "(TP=%d PP=%d)\n",
                    world_rank, what, i, got[i], expected[i], l->tp_size, l->pp_size);
        CHECK(got[i] == expected[i]);
    }
    CHECK(expected[rank] == world_rank);
}

/* Node-local rank and size derived from processor names: ranks with my name,
 * and how many of them come before me. */
static void check_local_rank(const ParallelState *ps) {
    char names[MAX_RANKS][MPI_MAX_PROCESSOR_NAME];
    char mine[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_Get_processor_name(mine, &len);
    MPI_Allgather(mine, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names, MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                  ps->world);
    int local_size = 0, local_rank = 0;
    for (int r = 0; r < ps->world_size; r++) {
        if (strcmp(names[r], mine) != 0) continue;
        local_size++;
        if (r < ps->rank) local_rank++;
    }
    CHECK(ps->local_size == local_size);
    CHECK(ps->local_rank == local_rank);
}

static void check_layout(MPI_Comm world, int tp, int cp, int pp) {
    int world_size, rank;
    MPI_Comm_size(world, &world_size);
    MPI_Comm_rank(world, &rank);
    ParallelState ps;
    char err[256] = "";
    if (cp == 1)
        CHECK(parallel_state_init(&ps, world, tp, pp, err, sizeof err));
    else
        CHECK(parallel_state_init_sizes(&ps, world, (ParallelSizes){tp, cp, pp, 1, 0}, err, sizeof err));
    CHECK(err[0] == '\0');

    Layout l = {tp, pp, world_size / (tp * cp * pp), cp};
    CHECK(ps.world_size == world_size && ps.rank == rank);
    CHECK(ps.tp_size == tp && ps.pp_size == pp && ps.dp_size == l.dp_size && ps.cp_size == cp);
    const Coord me = coord_of(&l, rank);
    CHECK(ps.tp_rank == me.tp && ps.dp_rank == me.dp && ps.pp_rank == me.pp &&
          ps.cp_rank == me.cp);
    for (int r = 0; r < world_size; r++) {
        Coord c = coord_of(&l, r);
        CHECK(parallel_state_rank_of(c.tp, c.cp, c.dp, c.pp, tp, cp, l.dp_size) == r);
    }

    int expected[MAX_RANKS];
    int n = axis_members(&l, me, VARY_TP, expected);
    check_members(ps.tp_comm, world, expected, n, "tensor", &l);
    n = axis_members(&l, me, VARY_DP, expected);
    check_members(ps.dp_comm, world, expected, n, "data", &l);
    n = axis_members(&l, me, VARY_PP, expected);
    check_members(ps.pp_comm, world, expected, n, "pipeline", &l);
    n = axis_members(&l, me, VARY_CP, expected);
    check_members(ps.cp_comm, world, expected, n, "context", &l);
    n = data_context_members(&l, me, expected);
    check_members(ps.dp_cp_comm, world, expected, n, "data-context", &l);
    for (int c = 0; c < cp; c++) {
        Coord peer = me;
        peer.cp = c;
        CHECK(parallel_state_context_rank(&ps, c) == formula_rank(&l, peer));
    }
    n = model_parallel_members(&l, me, world_size, expected);
    CHECK(n == tp * pp);
    check_members(ps.model_parallel_comm, world, expected, n, "model-parallel", &l);
    n = embedding_members(&l, me, expected);
    check_members(ps.embedding_comm, world, expected, n, "embedding", &l);

    /* Stages wrap around, as Megatron's next/prev rank do. */
    Coord next = me, prev = me;
    next.pp = (me.pp + 1) % pp;
    prev.pp = (me.pp + pp - 1) % pp;
    CHECK(parallel_state_next_stage_rank(&ps) == formula_rank(&l, next));
    CHECK(parallel_state_prev_stage_rank(&ps) == formula_rank(&l, prev));
    CHECK(parallel_state_is_first_stage(&ps) == (me.pp == 0));
    CHECK(parallel_state_is_last_stage(&ps) == (me.pp == pp - 1));
    check_local_rank(&ps);

    parallel_state_destroy(&ps);
    CHECK(ps.tp_comm == MPI_COMM_NULL && ps.dp_comm == MPI_COMM_NULL);
    CHECK(ps.pp_comm == MPI_COMM_NULL && ps.model_parallel_comm == MPI_COMM_NULL);
    CHECK(ps.embedding_comm == MPI_COMM_NULL);
    CHECK(ps.cp_comm == MPI_COMM_NULL && ps.dp_cp_comm == MPI_COMM_NULL);
}

/* DESIGN.md's worked example, spelled out literally as a guard against a
 * formula shared by test and code being wrong in the same way. */
static void check_design_example(MPI_Comm world) {
    static const int tp_groups[8][2] = {{0, 1}, {0, 1}, {2, 3}, {2, 3},
                                        {4, 5}, {4, 5}, {6, 7}, {6, 7}};
    static const int dp_groups[8][2] = {{0, 2}, {1, 3}, {0, 2}, {1, 3},
                                        {4, 6}, {5, 7}, {4, 6}, {5, 7}};
    static const int pp_groups[8][2] = {{0, 4}, {1, 5}, {2, 6}, {3, 7},
                                        {0, 4}, {1, 5}, {2, 6}, {3, 7}};
    int rank;
    MPI_Comm_rank(world, &rank);
    ParallelState ps;
    char err[256];
    CHECK(parallel_state_init(&ps, world, 2, 2, err, sizeof err));
    Layout l = {2, 2, 2, 1};
    check_members(ps.tp_comm, world, tp_groups[rank], 2, "tensor", &l);
    check_members(ps.dp_comm, world, dp_groups[rank], 2, "data", &l);
    check_members(ps.pp_comm, world, pp_groups[rank], 2, "pipeline", &l);
    check_members(ps.embedding_comm, world, pp_groups[rank], 2, "embedding", &l);
    parallel_state_destroy(&ps);
}

/* The same with context parallelism, 8 ranks at TP = CP = DP = 2 (CP sits
 * between TP and DP in the rank order, as in Megatron). */
static void check_context_example(MPI_Comm world) {
    static const int cp_groups[8][2] = {{0, 2}, {1, 3}, {0, 2}, {1, 3},
                                        {4, 6}, {5, 7}, {4, 6}, {5, 7}};
    static const int dp_groups[8][2] = {{0, 4}, {1, 5}, {2, 6}, {3, 7},
                                        {0, 4}, {1, 5}, {2, 6}, {3, 7}};
    static const int dp_cp_groups[8][4] = {{0, 2, 4, 6}, {1, 3, 5, 7}, {0, 2, 4, 6}, {1, 3, 5, 7},
                                           {0, 2, 4, 6}, {1, 3, 5, 7}, {0, 2, 4, 6}, {1, 3, 5, 7}};
    int rank;
    MPI_Comm_rank(world, &rank);
    ParallelState ps;
    char err[256];
    CHECK(parallel_state_init_sizes(&ps, world, (ParallelSizes){.tp = 2, .cp = 2, .pp = 1, .ep = 1, .etp = 0}, err,
                                    sizeof err));
    Layout l = {2, 1, 2, 2};
    check_members(ps.cp_comm, world, cp_groups[rank], 2, "context", &l);
    check_members(ps.dp_comm, world, dp_groups[rank], 2, "data", &l);
    check_members(ps.dp_cp_comm, world, dp_cp_groups[rank], 4, "data-context", &l);
    parallel_state_destroy(&ps);
}

/* Expert groups by Megatron's expert rank order: j = tp + TP (cp + CP dp)
 * within a stage, etp = j % ETP, ep = j / ETP % EP, edp = j / (ETP EP);
 * my expert group is the ranks of my (etp, edp) by ep, my expert-data
 * group those of my (etp, ep) by edp. At ETP = TP and EP = 1 the expert
 * group is me alone and the expert-data group my data-context group. */
static void check_expert_layout(MPI_Comm world, int tp, int cp, int pp, int ep, int etp) {
    int world_size, rank;
    MPI_Comm_size(world, &world_size);
    MPI_Comm_rank(world, &rank);
    ParallelState ps;
    char err[256] = "";
    CHECK(parallel_state_init_sizes(&ps, world, (ParallelSizes){tp, cp, pp, ep, etp}, err, sizeof err));
    Layout l = {tp, pp, world_size / (tp * cp * pp), cp};
    const int stage_ranks = world_size / pp, edp = stage_ranks / (ep * etp);
    const Coord me = coord_of(&l, rank);
    int expert[MAX_RANKS], expert_data[MAX_RANKS];
#define IN_STAGE(c) ((c).tp + tp * ((c).cp + cp * (c).dp))
    const int j = IN_STAGE(me);
    for (int r = 0; r < world_size; r++) {
        const Coord c = coord_of(&l, r);
        const int k = IN_STAGE(c);
        if (c.pp != me.pp || k % etp != j % etp) continue;
        if (k / (etp * ep) == j / (etp * ep)) expert[k / etp % ep] = r;
        if (k / etp % ep == j / etp % ep) expert_data[k / (etp * ep)] = r;
    }
#undef IN_STAGE
    CHECK(ps.etp_size == etp && ps.etp_rank == j % etp && ps.ep_size == ep &&
          ps.ep_rank == j / etp % ep && ps.edp_size == edp && ps.edp_rank == j / (etp * ep));
    check_members(ps.ep_comm, world, expert, ep, "expert", &l);
    check_members(ps.edp_comm, world, expert_data, edp, "expert-data", &l);
    if (ep == 1 && etp == tp) {
        int members[MAX_RANKS];
        const int n = data_context_members(&l, me, members);
        check_members(ps.edp_comm, world, members, n, "expert-data = data-context", &l);
    }
    parallel_state_destroy(&ps);
}

static bool contains(const char *haystack, const char *needle) {
    return strstr(haystack, needle) != NULL;
}

static void check_size_errors(void) {
    char err[512];
    CHECK(parallel_state_check_sizes(8, (ParallelSizes){1, 1, 1, 1, 0}, err, sizeof err));
    CHECK(parallel_state_check_sizes(8, (ParallelSizes){2, 1, 4, 1, 0}, err, sizeof err));
    CHECK(parallel_state_check_sizes(8, (ParallelSizes){8, 1, 1, 1, 0}, err, sizeof err));
    CHECK(parallel_state_check_sizes(1, (ParallelSizes){1, 1, 1, 1, 0}, err, sizeof err));

    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){3, 1, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--tensor-model-parallel-size 3"));
    CHECK(contains(err, "--pipeline-model-parallel-size 1"));
    CHECK(contains(err, "not divisible") && contains(err, "8 ranks"));

    CHECK(!parallel_state_check_sizes(12, (ParallelSizes){2, 1, 4, 1, 0}, err, sizeof err));
    CHECK(contains(err, "not divisible") && contains(err, "multiple of 8"));

    /* More model-parallel ranks than the job has: say so, not "not divisible". */
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){4, 1, 4, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--tensor-model-parallel-size 4"));
    CHECK(contains(err, "--pipeline-model-parallel-size 4"));
    CHECK(contains(err, "16") && contains(err, "only 8"));
    CHECK(!contains(err, "divisible"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){16, 1, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "only 8"));
    /* Products beyond int must not wrap around into a "valid" size. */
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){65536, 1, 65536, 1, 0}, err, sizeof err));
    CHECK(contains(err, "only 8"));

    /* Experts spread over the DP x CP ranks of a (tp, pp). */
    CHECK(parallel_state_check_sizes(8, (ParallelSizes){2, 2, 1, 4, 0}, err, sizeof err));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){2, 1, 1, 3, 0}, err, sizeof err));
    CHECK(contains(err, "--expert-model-parallel-size 3") && contains(err, "4 data-parallel"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){2, 1, 2, 4, 0}, err, sizeof err));
    CHECK(contains(err, "--expert-model-parallel-size 4") && contains(err, "2 data-parallel"));
    /* Expert tensor parallelism below TP: the TP ranks hold experts too. */
    CHECK(parallel_state_check_sizes(8, (ParallelSizes){2, 1, 2, 4, 1}, err, sizeof err));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){2, 1, 2, 8, 1}, err, sizeof err));
    CHECK(contains(err, "--expert-model-parallel-size 8 x --expert-tensor-parallel-size 1") &&
          contains(err, "4 ranks of a pipeline stage"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){4, 1, 1, 1, 3}, err, sizeof err));
    CHECK(contains(err, "--expert-tensor-parallel-size 3 must divide --tensor-model-parallel-size 4"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){0, 1, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--tensor-model-parallel-size") && contains(err, "got 0"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){-2, 1, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--tensor-model-parallel-size") && contains(err, "got -2"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){1, 1, 0, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--pipeline-model-parallel-size") && contains(err, "got 0"));

    CHECK(parallel_state_check_sizes(8, (ParallelSizes){2, 2, 2, 1, 0}, err, sizeof err));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){1, 3, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--context-parallel-size 3") && contains(err, "not divisible"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){2, 4, 2, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--context-parallel-size 4") && contains(err, "only 8"));
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){1, 0, 1, 1, 0}, err, sizeof err));
    CHECK(contains(err, "--context-parallel-size") && contains(err, "got 0"));

    /* A short buffer truncates, never overflows. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CHECK(!parallel_state_check_sizes(8, (ParallelSizes){3, 1, 1, 1, 0}, tiny, 5));
    CHECK(strlen(tiny) == 4 && tiny[5] == 'x');
}

/* A bad size fails on every rank together and leaves nothing to free. */
static void check_failed_init(MPI_Comm world) {
    ParallelState ps;
    char err[256] = "";
    CHECK(!parallel_state_init(&ps, world, 3, 1, err, sizeof err));
    CHECK(contains(err, "--tensor-model-parallel-size 3"));
    CHECK(!parallel_state_init_sizes(&ps, world, (ParallelSizes){.tp = 1, .cp = 3, .pp = 1, 1, 0}, err,
                                     sizeof err));
    CHECK(contains(err, "--context-parallel-size 3"));
    CHECK(ps.tp_comm == MPI_COMM_NULL && ps.embedding_comm == MPI_COMM_NULL);
    parallel_state_destroy(&ps);
}

static void check_all_ok(MPI_Comm world) {
    int size, rank;
    MPI_Comm_size(world, &size);
    MPI_Comm_rank(world, &rank);
    CHECK(parallel_state_all_ok(world, true, PARALLEL_STATE_DEFAULT_TIMEOUT_S));
    for (int bad = 0; bad < size; bad++)
        CHECK(!parallel_state_all_ok(world, rank != bad, PARALLEL_STATE_DEFAULT_TIMEOUT_S));
    CHECK(!parallel_state_all_ok(world, false, PARALLEL_STATE_DEFAULT_TIMEOUT_S));
}

/* The failing rank's own message reaches every rank, with its rank named
 * unless it is rank 0; healthy ranks' text never wins. */
static void check_agree(MPI_Comm world) {
    const double limit = PARALLEL_STATE_DEFAULT_TIMEOUT_S;
    int size, rank;
    MPI_Comm_size(world, &size);
    MPI_Comm_rank(world, &rank);
    char err[128] = "untouched", want[128];
    CHECK(parallel_state_agree(world, true, limit, err, sizeof err));
    CHECK(!strcmp(err, "untouched"));
    for (int bad = 0; bad < size; bad++) {
        snprintf(err, sizeof err, rank == bad ? "shard %d is damaged" : "healthy rank %d", rank);
        CHECK(!parallel_state_agree(world, rank != bad, limit, err, sizeof err));
        if (bad == 0)
            snprintf(want, sizeof want, "shard 0 is damaged");
        else
            snprintf(want, sizeof want, "rank %d: shard %d is damaged", bad, bad);
        CHECK(!strcmp(err, want));
    }
    /* Two failing ranks: the lower one speaks. */
    snprintf(err, sizeof err, "failure on %d", rank);
    CHECK(!parallel_state_agree(world, rank < size - 2, limit, err, sizeof err));
    snprintf(want, sizeof want, "rank %d: failure on %d", size - 2, size - 2);
    CHECK(!strcmp(err, want));
    /* A short buffer truncates, never overflows. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    snprintf(tiny, 6, "boom");
    CHECK(!parallel_state_agree(world, rank != 1, limit, tiny, 6));
    CHECK(!strcmp(tiny, "rank ") && tiny[6] == 'x');
}

/* The state is built over the communicator it is given, not MPI_COMM_WORLD:
 * two halves of the job each get their own 2 x 2 layout. */
static void check_sub_world(MPI_Comm world) {
    int rank, size;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    MPI_Comm half;
    MPI_Comm_split(world, rank < size / 2, rank, &half);
    check_layout(half, 2, 1, 2);
    MPI_Comm_free(&half);
}

static void abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    gpt3d_set_exit_hook(abort_job);
    int world_size;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    CHECK(world_size <= MAX_RANKS);

    check_size_errors();
    check_agree(MPI_COMM_WORLD);
    check_all_ok(MPI_COMM_WORLD);
    check_failed_init(MPI_COMM_WORLD);
    if (world_size == 8) {
        static const int layouts[][3] = {{1, 1, 1}, {2, 1, 1}, {2, 1, 2}, {4, 1, 2}, {8, 1, 1},
                                         {1, 1, 8}, {1, 1, 4}, {2, 1, 4}, {1, 1, 2}, {4, 1, 1},
                                         {1, 2, 1}, {1, 4, 1}, {1, 8, 1}, {2, 2, 1}, {2, 2, 2},
                                         {1, 2, 2}, {1, 2, 4}, {4, 2, 1}};
        for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++)
            check_layout(MPI_COMM_WORLD, layouts[i][0], layouts[i][1], layouts[i][2]);
        /* tp, cp, pp, ep, etp */
        static const int experts[][5] = {{1, 1, 1, 1, 1}, {1, 1, 1, 2, 1}, {1, 1, 1, 4, 1},
                                         {1, 1, 1, 8, 1}, {2, 1, 1, 2, 2}, {2, 1, 2, 2, 2},
                                         {1, 2, 1, 2, 1}, {1, 2, 1, 4, 1}, {2, 2, 1, 2, 2},
                                         {1, 2, 2, 2, 1}, {2, 1, 1, 1, 2}, {2, 1, 1, 1, 1},
                                         {2, 1, 1, 2, 1}, {2, 1, 1, 8, 1}, {4, 1, 1, 4, 1},
                                         {2, 2, 1, 4, 1}, {2, 1, 2, 4, 1}, {4, 1, 1, 2, 2}};
        for (size_t i = 0; i < sizeof experts / sizeof *experts; i++)
            check_expert_layout(MPI_COMM_WORLD, experts[i][0], experts[i][1], experts[i][2],
                                experts[i][3], experts[i][4]);
        check_design_example(MPI_COMM_WORLD);
        check_context_example(MPI_COMM_WORLD);
        check_sub_world(MPI_COMM_WORLD);
    } else {
        /* Any other world: every layout it admits. */
        for (int tp = 1; tp <= world_size; tp++)
            for (int pp = 1; tp * pp <= world_size; pp++)
                if (world_size % (tp * pp) == 0) check_layout(MPI_COMM_WORLD, tp, 1, pp);
    }

    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) printf("test_parallel_state: %d ranks ok\n", world_size);
    MPI_Finalize();
    return 0;
}
