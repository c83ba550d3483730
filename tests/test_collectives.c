/* Collectives over MPI on CPU backend buffers, for every (TP, PP) layout the
 * world admits. Each rank contributes values that are a formula of its world
 * rank, and group members are derived from DESIGN.md's rank formula, so every
 * expected result is computed locally without trusting the code under test.
 * The test also keeps its own tally of the calls and bytes collectives.h says
 * each operation counts and compares it with the Comm's counters. */
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"

/* A failed check aborts the job, so the other ranks do not wait for this one. */
#define TEST_FAIL_EXIT() MPI_Abort(MPI_COMM_WORLD, 1)
#include "test_util.h"

#define MAX_RANKS 64
#define SENTINEL -12345.0f
#define BIG_N 40000 /* above Open MPI's eager limits, so large-message paths run */

typedef struct {
    int tp, dp, pp;
} Coord;

typedef struct {
    Comm comm;
    CommCounters expect; /* what the counters must read, tallied by the test */
    Backend *be;
    const ParallelState *ps;
    int tp_size, pp_size, dp_size, world_size, rank;
    Coord me;
} Ctx;

static int formula_rank(const Ctx *x, Coord c) {
    return c.tp + x->tp_size * (c.dp + x->dp_size * c.pp);
}

static Coord coord_of(const Ctx *x, int rank) {
    Coord c = {rank % x->tp_size, (rank / x->tp_size) % x->dp_size,
               rank / (x->tp_size * x->dp_size)};
    CHECK(formula_rank(x, c) == rank);
    return c;
}

/* World ranks of my group `g`, in group-rank order; 0 when I am not in it. */
static int members(const Ctx *x, GroupKind g, int *out) {
    int n = 0;
    for (int r = 0; r < x->world_size; r++) {
        const Coord c = coord_of(x, r);
        const bool same_tp = c.tp == x->me.tp, same_dp = c.dp == x->me.dp,
                   same_pp = c.pp == x->me.pp;
        const bool end_stage = c.pp == 0 || c.pp == x->pp_size - 1;
        bool in = false;
        switch (g) {
        case GROUP_WORLD: in = true; break;
        case GROUP_TENSOR: in = same_dp && same_pp; break;
        case GROUP_PIPELINE: in = same_tp && same_dp; break;
        case GROUP_DATA: in = same_tp && same_pp; break;
        case GROUP_MODEL_PARALLEL: in = same_dp; break;
        case GROUP_EMBEDDING:
            in = same_tp && same_dp && end_stage &&
                 (x->me.pp == 0 || x->me.pp == x->pp_size - 1);
            break;
        case NUM_GROUPS: break;
        }
        if (in) out[n++] = r;
    }
    return n;
}

/* Exact in fp32: integers below 2^24 even when summed over 64 ranks. */
static float contribution(int world_rank, size_t i) {
    return (float)((world_rank + 1) * 1000 + (int)(i % 997));
}

/* Not monotonic in the rank, negative values included, so max is a real test. */
static float max_contribution(int world_rank, size_t i) {
    return (float)(((world_rank * 5 + (int)i * 3) % 11) - 5) + 0.25f;
}

/* Values whose fp32 sum depends on the order of additions. */
static float rounding_contribution(int world_rank, size_t i) {
    return (1.0f + (float)((world_rank * 7919 + (int)i * 104729) % 1000) * 1e-7f) *
           ldexpf(1.0f, (world_rank * 3 + (int)i) % 17 - 8);
}

/* ---- device buffers ---- */

static float *dev_alloc(Ctx *x, size_t n) { return x->be->ops->alloc(x->be, n * sizeof(float)); }

static float *dev_fill(Ctx *x, size_t n, float value) {
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = value;
    float *dev = dev_alloc(x, n);
    x->be->ops->copy_to_device(x->be, dev, host, n * sizeof(float));
    free(host);
    return dev;
}

static void to_device(Ctx *x, float *dev, const float *host, size_t n) {
    x->be->ops->copy_to_device(x->be, dev, host, n * sizeof(float));
}

static float *to_host(Ctx *x, const float *dev, size_t n) {
    float *host = xmalloc((n + 1) * sizeof(float));
    x->be->ops->copy_to_host(x->be, host, dev, n * sizeof(float));
    return host;
}

static void dev_free(Ctx *x, float *dev) { x->be->ops->free(x->be, dev); }

static void expect_count(Ctx *x, GroupKind g, CollectiveKind k, size_t elements) {
    x->expect.calls[g][k]++;
    x->expect.bytes[g][k] += elements * sizeof(float);
}

/* ---- one check per operation ---- */

static void check_all_reduce_sum(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
    float *buf = dev_alloc(x, n + 1);
    to_device(x, buf, host, n);
    comm_all_reduce(&x->comm, g, buf, n, DTYPE_F32, REDUCE_SUM);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    float *got = to_host(x, buf, n);
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int j = 0; j < size; j++) want += contribution(m[j], i);
        CHECK(got[i] == want);
    }
    free(got);
    free(host);
    dev_free(x, buf);
}

static void check_all_reduce_max(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = max_contribution(x->rank, i);
    float *buf = dev_alloc(x, n + 1);
    to_device(x, buf, host, n);
    comm_all_reduce(&x->comm, g, buf, n, DTYPE_F32, REDUCE_MAX);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    float *got = to_host(x, buf, n);
    for (size_t i = 0; i < n; i++) {
        float want = max_contribution(m[0], i);
        for (int j = 1; j < size; j++) want = fmaxf(want, max_contribution(m[j], i));
        CHECK(got[i] == want);
    }
    free(got);
    free(host);
    dev_free(x, buf);
}

/* dst has one sentinel element past the gathered buffer that must survive. */
static void check_gathered(Ctx *x, GroupKind g, const float *dst, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *got = to_host(x, dst, (size_t)size * n + 1);
    for (int r = 0; r < size; r++)
        for (size_t i = 0; i < n; i++) CHECK(got[(size_t)r * n + i] == contribution(m[r], i));
    CHECK(got[(size_t)size * n] == SENTINEL);
    free(got);
}

static void check_all_gather(Ctx *x, GroupKind g, size_t n) {
    const int size = comm_group_size(&x->comm, g);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
    float *src = dev_alloc(x, n + 1);
    to_device(x, src, host, n);
    float *dst = dev_fill(x, (size_t)size * n + 1, SENTINEL);
    comm_all_gather(&x->comm, g, dst, src, n, DTYPE_F32);
    expect_count(x, g, COLL_ALL_GATHER, n);
    check_gathered(x, g, dst, n);
    dev_free(x, dst);

    /* In place: my chunk already sits at my position of the full buffer. */
    dst = dev_fill(x, (size_t)size * n + 1, SENTINEL);
    float *own = dst + (size_t)comm_group_rank(&x->comm, g) * n;
    to_device(x, own, host, n);
    comm_all_gather(&x->comm, g, dst, own, n, DTYPE_F32);
    expect_count(x, g, COLL_ALL_GATHER, n);
    check_gathered(x, g, dst, n);
    dev_free(x, dst);
    dev_free(x, src);
    free(host);
}

static void check_reduce_scatter(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    const int me = comm_group_rank(&x->comm, g);
    const size_t full = (size_t)size * n;
    float *host = xmalloc((full + 1) * sizeof(float));
    for (size_t i = 0; i < full; i++) host[i] = contribution(x->rank, i);
    float *src = dev_alloc(x, full + 1);
    to_device(x, src, host, full);
    float *dst = dev_fill(x, n + 1, SENTINEL);
    comm_reduce_scatter(&x->comm, g, dst, src, n, DTYPE_F32);
    expect_count(x, g, COLL_REDUCE_SCATTER, full);
    float *got = to_host(x, dst, n + 1);
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int j = 0; j < size; j++) want += contribution(m[j], (size_t)me * n + i);
        CHECK(got[i] == want);
    }
    CHECK(got[n] == SENTINEL);
    /* The input is left as it was. */
    float *src_after = to_host(x, src, full);
    CHECK(memcmp(src_after, host, full * sizeof(float)) == 0);
    free(src_after);
    free(got);
    free(host);
    dev_free(x, dst);
    dev_free(x, src);
}

static void check_broadcast(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    const int me = comm_group_rank(&x->comm, g);
    /* Every root, the last one first so a non-zero root runs first. */
    for (int root = size - 1; root >= 0; root--) {
        float *host = xmalloc((n + 1) * sizeof(float));
        for (size_t i = 0; i < n; i++) host[i] = me == root ? contribution(x->rank, i) : SENTINEL;
        float *buf = dev_alloc(x, n + 1);
        to_device(x, buf, host, n);
        comm_broadcast(&x->comm, g, buf, n, DTYPE_F32, root);
        expect_count(x, g, COLL_BROADCAST, n);
        float *got = to_host(x, buf, n);
        for (size_t i = 0; i < n; i++) CHECK(got[i] == contribution(m[root], i));
        free(got);
        free(host);
        dev_free(x, buf);
    }
}

/* Zero elements: every operation returns, touches nothing, counts a call. */
static void check_empty(Ctx *x, GroupKind g) {
    float *buf = dev_fill(x, 4, SENTINEL), *other = dev_fill(x, 4, SENTINEL);
    comm_all_reduce(&x->comm, g, buf, 0, DTYPE_F32, REDUCE_SUM);
    expect_count(x, g, COLL_ALL_REDUCE, 0);
    comm_all_reduce(&x->comm, g, buf, 0, DTYPE_F32, REDUCE_MAX);
    expect_count(x, g, COLL_ALL_REDUCE, 0);
    comm_all_gather(&x->comm, g, buf, other, 0, DTYPE_F32);
    expect_count(x, g, COLL_ALL_GATHER, 0);
    comm_reduce_scatter(&x->comm, g, buf, other, 0, DTYPE_F32);
    expect_count(x, g, COLL_REDUCE_SCATTER, 0);
    comm_broadcast(&x->comm, g, buf, 0, DTYPE_F32, 0);
    expect_count(x, g, COLL_BROADCAST, 0);
    float *got = to_host(x, buf, 4);
    for (int i = 0; i < 4; i++) CHECK(got[i] == SENTINEL);
    free(got);
    dev_free(x, buf);
    dev_free(x, other);
}

/* The contract promises bitwise the same sum on every rank of the group even
 * where fp32 rounding depends on the order of additions. */
static void check_bitwise_agreement(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = rounding_contribution(x->rank, i);
    float *buf = dev_alloc(x, n + 1);
    to_device(x, buf, host, n);
    comm_all_reduce(&x->comm, g, buf, n, DTYPE_F32, REDUCE_SUM);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    float *all = dev_fill(x, (size_t)size * n + 1, SENTINEL);
    comm_all_gather(&x->comm, g, all, buf, n, DTYPE_F32);
    expect_count(x, g, COLL_ALL_GATHER, n);
    float *got = to_host(x, all, (size_t)size * n);
    for (int r = 1; r < size; r++)
        CHECK(memcmp(got, got + (size_t)r * n, n * sizeof(float)) == 0);
    for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (int j = 0; j < size; j++) want += rounding_contribution(m[j], i);
        CHECK(fabs(got[i] - want) <= 1e-6 * fabs(want));
    }
    free(got);
    free(host);
    dev_free(x, all);
    dev_free(x, buf);
}

static void check_group(Ctx *x, GroupKind g) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    if (size == 0) {
        /* Not my group (a middle stage and the embedding group). */
        CHECK(comm_group_size(&x->comm, g) == 0 && comm_group_rank(&x->comm, g) == -1);
        return;
    }
    CHECK(comm_group_size(&x->comm, g) == size);
    const int me = comm_group_rank(&x->comm, g);
    CHECK(me >= 0 && me < size && m[me] == x->rank);

    check_all_reduce_sum(x, g, 37);
    check_all_reduce_sum(x, g, BIG_N);
    check_all_reduce_max(x, g, 37);
    check_all_gather(x, g, 13);
    check_all_gather(x, g, BIG_N / size);
    check_reduce_scatter(x, g, 11);
    check_reduce_scatter(x, g, BIG_N / size);
    check_broadcast(x, g, 29);
    check_empty(x, g);
    check_bitwise_agreement(x, g, 4099);
    comm_barrier(&x->comm, g);
    expect_count(x, g, COLL_BARRIER, 0);
}

/* ---- point to point ---- */

static int stage_rank(const Ctx *x, int pp) {
    Coord c = x->me;
    c.pp = (pp + x->pp_size) % x->pp_size;
    return formula_rank(x, c);
}

/* Every stage sends to the next and receives from the previous at once; with
 * messages past the eager limit a blocking send-then-receive would deadlock. */
static void check_ring(Ctx *x, size_t n) {
    const int next = stage_rank(x, x->me.pp + 1), prev = stage_rank(x, x->me.pp - 1);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
    float *send = dev_alloc(x, n + 1);
    to_device(x, send, host, n);
    float *recv = dev_fill(x, n + 1, SENTINEL);
    comm_send_recv(&x->comm, send, n, next, recv, n, prev, DTYPE_F32, 1);
    expect_count(x, GROUP_PIPELINE, COLL_SEND, n);
    expect_count(x, GROUP_PIPELINE, COLL_RECV, n);
    float *got = to_host(x, recv, n + 1);
    for (size_t i = 0; i < n; i++) CHECK(got[i] == contribution(prev, i));
    CHECK(got[n] == SENTINEL);
    free(got);
    free(host);
    dev_free(x, recv);
    dev_free(x, send);
}

/* The forward pass of a pipeline: the first stage only sends, the last only
 * receives, the ones between receive and then send what they received, in
 * separate one-sided calls. */
static void check_chain(Ctx *x, size_t n) {
    const bool first = x->me.pp == 0, last = x->me.pp == x->pp_size - 1;
    float *buf = dev_fill(x, n, SENTINEL);
    if (first) {
        float *host = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
        to_device(x, buf, host, n);
        free(host);
    } else {
        comm_send_recv(&x->comm, NULL, 0, -1, buf, n, stage_rank(x, x->me.pp - 1), DTYPE_F32, 2);
        expect_count(x, GROUP_PIPELINE, COLL_RECV, n);
    }
    if (!last) {
        comm_send_recv(&x->comm, buf, n, stage_rank(x, x->me.pp + 1), NULL, 0, -1, DTYPE_F32, 2);
        expect_count(x, GROUP_PIPELINE, COLL_SEND, n);
    }
    float *got = to_host(x, buf, n);
    const int origin = stage_rank(x, 0);
    for (size_t i = 0; i < n; i++) CHECK(got[i] == contribution(origin, i));
    free(got);
    dev_free(x, buf);
}

/* ---- counters ---- */

static void check_counters(const Ctx *x) {
    for (int g = 0; g < NUM_GROUPS; g++)
        for (int k = 0; k < NUM_COLLECTIVES; k++) {
            const uint64_t calls = x->comm.counters.calls[g][k],
                           bytes = x->comm.counters.bytes[g][k];
            if (calls != x->expect.calls[g][k] || bytes != x->expect.bytes[g][k])
                fprintf(stderr,
                        "rank %d TP=%d PP=%d: %s %s counted %llu calls / %llu bytes, "
                        "expected %llu / %llu\n",
                        x->rank, x->tp_size, x->pp_size, comm_group_name((GroupKind)g),
                        comm_collective_name((CollectiveKind)k), (unsigned long long)calls,
                        (unsigned long long)bytes, (unsigned long long)x->expect.calls[g][k],
                        (unsigned long long)x->expect.bytes[g][k]);
            CHECK(calls == x->expect.calls[g][k] && bytes == x->expect.bytes[g][k]);
        }
}

static void check_names(void) {
    CHECK(strcmp(comm_group_name(GROUP_TENSOR), "tensor") == 0);
    CHECK(strcmp(comm_group_name(GROUP_EMBEDDING), "embedding") == 0);
    CHECK(strcmp(comm_collective_name(COLL_REDUCE_SCATTER), "reduce-scatter") == 0);
    CHECK(strcmp(comm_collective_name(COLL_BARRIER), "barrier") == 0);
    CHECK(strcmp(comm_group_name(NUM_GROUPS), "?") == 0);
}

static void check_layout(int tp, int pp) {
    ParallelState ps;
    char err[256];
    CHECK(parallel_state_init(&ps, MPI_COMM_WORLD, tp, pp, err, sizeof err));
    Ctx x;
    memset(&x, 0, sizeof x);
    x.be = backend_create("cpu", ps.local_rank, err, sizeof err);
    CHECK(x.be != NULL);
    x.ps = &ps;
    x.tp_size = tp;
    x.pp_size = pp;
    x.dp_size = ps.dp_size;
    x.world_size = ps.world_size;
    x.rank = ps.rank;
    x.me = coord_of(&x, ps.rank);
    comm_init(&x.comm, &ps, x.be);
    check_counters(&x);

    static const GroupKind groups[] = {GROUP_WORLD, GROUP_TENSOR, GROUP_PIPELINE,
                                       GROUP_DATA,  GROUP_MODEL_PARALLEL, GROUP_EMBEDDING};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) check_group(&x, groups[i]);
    check_ring(&x, 7);
    check_ring(&x, BIG_N);
    check_chain(&x, BIG_N);
    check_counters(&x);

    comm_reset_counters(&x.comm);
    memset(&x.expect, 0, sizeof x.expect);
    check_counters(&x);
    /* Counting starts again from zero after a reset. */
    comm_barrier(&x.comm, GROUP_TENSOR);
    expect_count(&x, GROUP_TENSOR, COLL_BARRIER, 0);
    check_all_reduce_sum(&x, GROUP_DATA, 5);
    check_counters(&x);

    CHECK(x.be->bytes_in_use == 0);
    backend_destroy(x.be);
    parallel_state_destroy(&ps);
}

static void abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

/* Arguments "TPxPP" pick layouts; without any, every layout the world admits. */
static bool parse_layout(const char *arg, int *tp, int *pp) {
    char tail;
    return sscanf(arg, "%dx%d%c", tp, pp, &tail) == 2 && *tp >= 1 && *pp >= 1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    gpt3d_set_exit_hook(abort_job);
    int world_size, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    CHECK(world_size <= MAX_RANKS);
    check_names();
    int layouts = 0;
    if (argc > 1) {
        for (int a = 1; a < argc; a++) {
            int tp, pp;
            if (!parse_layout(argv[a], &tp, &pp) || world_size % (tp * pp) != 0) {
                if (rank == 0) fprintf(stderr, "bad layout '%s' for %d ranks (want TPxPP)\n",
                                       argv[a], world_size);
                MPI_Abort(MPI_COMM_WORLD, 2);
            }
            check_layout(tp, pp);
            layouts++;
        }
    } else {
        for (int tp = 1; tp <= world_size; tp++)
            for (int pp = 1; tp * pp <= world_size; pp++)
                if (world_size % (tp * pp) == 0) {
                    check_layout(tp, pp);
                    layouts++;
                }
    }
    if (rank == 0) printf("test_collectives: %d ranks, %d layouts ok\n", world_size, layouts);
    MPI_Finalize();
    return 0;
}
