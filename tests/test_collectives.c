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

/* How the checks call each collective: the blocking call, start + wait, or
 * start + polling comm_test until it reports completion. */
typedef enum { MODE_BLOCKING = 0, MODE_START_WAIT, MODE_START_TEST, NUM_MODES } Mode;

typedef struct {
    Comm comm;
    Mode mode;
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
        /* CP = 1 here: the context group is the rank alone, and the
         * data-context group has the data group's ranks. */
        case GROUP_CONTEXT: in = same_tp && same_dp && same_pp; break;
        case GROUP_DATA_CONTEXT: in = same_tp && same_pp; break;
        /* EP = 1 here: the expert group is the rank alone, the expert-data
         * group the data-context group. */
        case GROUP_EXPERT: in = same_tp && same_dp && same_pp; break;
        case GROUP_EXPERT_DATA: in = same_tp && same_pp; break;
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

/* Completes h as the mode says; a polled handle must stay inactive after. */
static void finish_handle(Ctx *x, CommHandle *h) {
    if (x->mode == MODE_START_WAIT) {
        comm_wait(&x->comm, h);
    } else {
        while (!comm_test(&x->comm, h)) {
        }
    }
    CHECK(!comm_handle_active(h) && comm_test(&x->comm, h));
}

static void do_all_reduce(Ctx *x, GroupKind g, void *buf, size_t n, ReduceOp op) {
    if (x->mode == MODE_BLOCKING) {
        comm_all_reduce(&x->comm, g, buf, n, DTYPE_F32, op);
        return;
    }
    CommHandle h = {0};
    comm_all_reduce_start(&x->comm, g, buf, n, DTYPE_F32, op, &h);
    finish_handle(x, &h);
}

static void do_all_gather(Ctx *x, GroupKind g, void *dst, const void *src, size_t n) {
    if (x->mode == MODE_BLOCKING) return do_all_gather(x, g, dst, src, n);
    CommHandle h = {0};
    comm_all_gather_start(&x->comm, g, dst, src, n, DTYPE_F32, &h);
    finish_handle(x, &h);
}

static void do_reduce_scatter(Ctx *x, GroupKind g, void *dst, const void *src, size_t n) {
    if (x->mode == MODE_BLOCKING) return do_reduce_scatter(x, g, dst, src, n);
    CommHandle h = {0};
    comm_reduce_scatter_start(&x->comm, g, dst, src, n, DTYPE_F32, &h);
    finish_handle(x, &h);
}

static void do_broadcast(Ctx *x, GroupKind g, void *buf, size_t n, int root) {
    if (x->mode == MODE_BLOCKING) return do_broadcast(x, g, buf, n, root);
    CommHandle h = {0};
    comm_broadcast_start(&x->comm, g, buf, n, DTYPE_F32, root, &h);
    finish_handle(x, &h);
}

static void do_all_to_all(Ctx *x, GroupKind g, void *dst, const void *src, size_t n) {
    if (x->mode == MODE_BLOCKING) {
        comm_all_to_all(&x->comm, g, dst, src, n, DTYPE_F32);
        return;
    }
    CommHandle h = {0};
    comm_all_to_all_start(&x->comm, g, dst, src, n, DTYPE_F32, &h);
    finish_handle(x, &h);
}

/* ---- one check per operation ---- */

static void check_all_reduce_sum(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
    float *buf = dev_alloc(x, n + 1);
    to_device(x, buf, host, n);
    do_all_reduce(x, g, buf, n, REDUCE_SUM);
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

static void check_all_reduce_extreme(Ctx *x, GroupKind g, size_t n, ReduceOp op) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = max_contribution(x->rank, i);
    float *buf = dev_alloc(x, n + 1);
    to_device(x, buf, host, n);
    do_all_reduce(x, g, buf, n, op);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    float *got = to_host(x, buf, n);
    for (size_t i = 0; i < n; i++) {
        float want = max_contribution(m[0], i);
        for (int j = 1; j < size; j++)
            want = op == REDUCE_MAX ? fmaxf(want, max_contribution(m[j], i))
                                    : fminf(want, max_contribution(m[j], i));
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
    do_all_gather(x, g, dst, src, n);
    expect_count(x, g, COLL_ALL_GATHER, n);
    check_gathered(x, g, dst, n);
    dev_free(x, dst);

    /* In place: my chunk already sits at my position of the full buffer. */
    dst = dev_fill(x, (size_t)size * n + 1, SENTINEL);
    float *own = dst + (size_t)comm_group_rank(&x->comm, g) * n;
    to_device(x, own, host, n);
    do_all_gather(x, g, dst, own, n);
    expect_count(x, g, COLL_ALL_GATHER, n);
    check_gathered(x, g, dst, n);
    dev_free(x, dst);
    dev_free(x, src);
    free(host);
}

/* A device buffer of n elements holding this rank's contribution; the host
 * copy stays in *host (freed by the caller). */
static float *dev_contribution(Ctx *x, size_t n, float **host) {
    *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) (*host)[i] = contribution(x->rank, i);
    float *dev = dev_alloc(x, n + 1);
    to_device(x, dev, *host, n);
    return dev;
}

static void check_reduce_scatter(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    const int me = comm_group_rank(&x->comm, g);
    const size_t full = (size_t)size * n;
    float *host;
    float *src = dev_contribution(x, full, &host);
    float *dst = dev_fill(x, n + 1, SENTINEL);
    do_reduce_scatter(x, g, dst, src, n);
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
        do_broadcast(x, g, buf, n, root);
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
    do_all_reduce(x, g, buf, 0, REDUCE_SUM);
    expect_count(x, g, COLL_ALL_REDUCE, 0);
    do_all_reduce(x, g, buf, 0, REDUCE_MAX);
    expect_count(x, g, COLL_ALL_REDUCE, 0);
    do_all_gather(x, g, buf, other, 0);
    expect_count(x, g, COLL_ALL_GATHER, 0);
    do_reduce_scatter(x, g, buf, other, 0);
    expect_count(x, g, COLL_REDUCE_SCATTER, 0);
    do_broadcast(x, g, buf, 0, 0);
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
    do_all_reduce(x, g, buf, n, REDUCE_SUM);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    float *all = dev_fill(x, (size_t)size * n + 1, SENTINEL);
    do_all_gather(x, g, all, buf, n);
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

/* Rank r's chunk j goes to group rank j, landing as its chunk r. */
static void check_all_to_all(Ctx *x, GroupKind g, size_t n) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    const size_t me = (size_t)comm_group_rank(&x->comm, g), full = (size_t)size * n;
    float *host;
    float *src = dev_contribution(x, full, &host);
    float *dst = dev_fill(x, full + 1, SENTINEL);
    do_all_to_all(x, g, dst, src, n);
    expect_count(x, g, COLL_ALL_TO_ALL, full);
    float *got = to_host(x, dst, full + 1);
    for (int r = 0; r < size; r++)
        for (size_t i = 0; i < n; i++)
            CHECK(got[(size_t)r * n + i] == contribution(m[r], me * n + i));
    CHECK(got[full] == SENTINEL);
    free(got);
    free(host);
    dev_free(x, dst);
    dev_free(x, src);
}

/* Five operations of different kinds in flight on one group at once, then
 * completed in reverse order (or, with `poll`, by testing them round-robin
 * until all report done, so they complete in whatever order they finish). */
enum { FLIGHT_AR, FLIGHT_AG, FLIGHT_RS, FLIGHT_BC, FLIGHT_A2A, NUM_FLIGHT };

static void check_in_flight(Ctx *x, GroupKind g, bool poll) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    const size_t me = (size_t)comm_group_rank(&x->comm, g), n = 23, full = (size_t)size * n;
    float *host = xmalloc((full + 1) * sizeof(float));
    for (size_t i = 0; i < full; i++) host[i] = contribution(x->rank, i);
    float *in[NUM_FLIGHT], *out[NUM_FLIGHT];
    for (int k = 0; k < NUM_FLIGHT; k++) {
        in[k] = dev_alloc(x, full + 1);
        to_device(x, in[k], host, full);
        out[k] = dev_fill(x, full + 1, SENTINEL);
    }
    const int root = size - 1;
    CommHandle h[NUM_FLIGHT];
    memset(h, 0, sizeof h);
    comm_all_reduce_start(&x->comm, g, in[FLIGHT_AR], n, DTYPE_F32, REDUCE_SUM, &h[FLIGHT_AR]);
    comm_all_gather_start(&x->comm, g, out[FLIGHT_AG], in[FLIGHT_AG], n, DTYPE_F32, &h[FLIGHT_AG]);
    comm_reduce_scatter_start(&x->comm, g, out[FLIGHT_RS], in[FLIGHT_RS], n, DTYPE_F32,
                              &h[FLIGHT_RS]);
    comm_broadcast_start(&x->comm, g, in[FLIGHT_BC], n, DTYPE_F32, root, &h[FLIGHT_BC]);
    comm_all_to_all_start(&x->comm, g, out[FLIGHT_A2A], in[FLIGHT_A2A], n, DTYPE_F32,
                          &h[FLIGHT_A2A]);
    expect_count(x, g, COLL_ALL_REDUCE, n);
    expect_count(x, g, COLL_ALL_GATHER, n);
    expect_count(x, g, COLL_REDUCE_SCATTER, full);
    expect_count(x, g, COLL_BROADCAST, n);
    expect_count(x, g, COLL_ALL_TO_ALL, full);
    if (poll) {
        for (int left = NUM_FLIGHT; left > 0;) {
            left = 0;
            for (int k = 0; k < NUM_FLIGHT; k++) left += !comm_test(&x->comm, &h[k]);
        }
    } else {
        for (int k = NUM_FLIGHT - 1; k >= 0; k--) comm_wait(&x->comm, &h[k]);
    }
    for (int k = 0; k < NUM_FLIGHT; k++) CHECK(!comm_handle_active(&h[k]));

    float *ar = to_host(x, in[FLIGHT_AR], n), *bc = to_host(x, in[FLIGHT_BC], n);
    float *ag = to_host(x, out[FLIGHT_AG], full), *rs = to_host(x, out[FLIGHT_RS], n + 1);
    float *a2a = to_host(x, out[FLIGHT_A2A], full);
    for (size_t i = 0; i < n; i++) {
        float sum = 0, scattered = 0;
        for (int j = 0; j < size; j++) {
            sum += contribution(m[j], i);
            scattered += contribution(m[j], me * n + i);
        }
        CHECK(ar[i] == sum && rs[i] == scattered && bc[i] == contribution(m[root], i));
        for (int r = 0; r < size; r++) {
            CHECK(ag[(size_t)r * n + i] == contribution(m[r], i));
            CHECK(a2a[(size_t)r * n + i] == contribution(m[r], me * n + i));
        }
    }
    CHECK(rs[n] == SENTINEL);
    free(ar), free(bc), free(ag), free(rs), free(a2a);
    for (int k = 0; k < NUM_FLIGHT; k++) dev_free(x, in[k]), dev_free(x, out[k]);
    free(host);
}

static void expect_host(Ctx *x, GroupKind g, CollectiveKind k, size_t n, size_t elem) {
    x->expect.calls[g][k]++;
    x->expect.bytes[g][k] += n * elem;
}

/* Flags, counts past 2^32, hashes and sums of doubles, as the trainer uses them. */
static void check_host_values(Ctx *x, GroupKind g) {
    int m[MAX_RANKS];
    const int size = members(x, g, m);
    int32_t flags[3] = {x->rank % 3, x->rank % 3, x->rank % 3}, want_max = 0, want_min = 99;
    int64_t big = ((int64_t)x->rank + 1) << 33, want_big = 0;
    double d = 0.5 * x->rank, want_d = 0;
    uint64_t hash = 0x9e3779b97f4a7c15ull * (uint64_t)(x->rank + 1), gathered[MAX_RANKS + 1];
    for (int j = 0; j < size; j++) {
        want_max = m[j] % 3 > want_max ? m[j] % 3 : want_max;
        want_min = m[j] % 3 < want_min ? m[j] % 3 : want_min;
        want_big += ((int64_t)m[j] + 1) << 33;
        want_d += 0.5 * m[j];
    }
    comm_host_all_reduce(&x->comm, g, &flags[0], 1, HOST_I32, REDUCE_MAX);
    comm_host_all_reduce(&x->comm, g, &flags[1], 2, HOST_I32, REDUCE_MIN);
    comm_host_all_reduce(&x->comm, g, &big, 1, HOST_I64, REDUCE_SUM);
    comm_host_all_reduce(&x->comm, g, &d, 1, HOST_F64, REDUCE_SUM);
    gathered[size] = 7;
    comm_host_all_gather(&x->comm, g, gathered, &hash, 1, HOST_U64);
    expect_host(x, g, COLL_HOST_ALL_REDUCE, 1, 4);
    expect_host(x, g, COLL_HOST_ALL_REDUCE, 2, 4);
    expect_host(x, g, COLL_HOST_ALL_REDUCE, 1, 8);
    expect_host(x, g, COLL_HOST_ALL_REDUCE, 1, 8);
    expect_host(x, g, COLL_HOST_ALL_GATHER, 1, 8);
    CHECK(flags[0] == want_max && flags[1] == want_min && flags[2] == want_min);
    CHECK(big == want_big && d == want_d && gathered[size] == 7);
    for (int j = 0; j < size; j++) CHECK(gathered[j] == 0x9e3779b97f4a7c15ull * (uint64_t)(m[j] + 1));
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
    check_all_reduce_extreme(x, g, 37, REDUCE_MAX);
    check_all_reduce_extreme(x, g, 37, REDUCE_MIN);
    check_all_to_all(x, g, 9);
    check_all_to_all(x, g, BIG_N / size);
    check_in_flight(x, g, false);
    check_in_flight(x, g, true);
    check_host_values(x, g);
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

/* Both neighbours in both directions in one batch of four: the receives
 * complete first (comm_wait_receives) while the sends may still be in
 * flight, then the rest. */
static void check_batched_p2p(Ctx *x, size_t n) {
    const int next = stage_rank(x, x->me.pp + 1), prev = stage_rank(x, x->me.pp - 1);
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = contribution(x->rank, i);
    float *send = dev_alloc(x, n + 1);
    to_device(x, send, host, n);
    float *from_prev = dev_fill(x, n + 1, SENTINEL), *from_next = dev_fill(x, n + 1, SENTINEL);
    const CommP2POp ops[4] = {
        {.kind = COMM_P2P_SEND, .buf = send, .n = n, .peer = next, .tag = 5, .dtype = DTYPE_F32},
        {.kind = COMM_P2P_SEND, .buf = send, .n = n, .peer = prev, .tag = 6, .dtype = DTYPE_F32},
        {.kind = COMM_P2P_RECV, .buf = from_prev, .n = n, .peer = prev, .tag = 5, .dtype = DTYPE_F32},
        {.kind = COMM_P2P_RECV, .buf = from_next, .n = n, .peer = next, .tag = 6, .dtype = DTYPE_F32}};
    CommHandle h = {0};
    comm_p2p_start(&x->comm, ops, 4, &h);
    for (int k = 0; k < 2; k++) {
        expect_count(x, GROUP_PIPELINE, COLL_SEND, n);
        expect_count(x, GROUP_PIPELINE, COLL_RECV, n);
    }
    comm_wait_receives(&x->comm, &h);
    float *got_prev = to_host(x, from_prev, n + 1), *got_next = to_host(x, from_next, n + 1);
    for (size_t i = 0; i < n; i++)
        CHECK(got_prev[i] == contribution(prev, i) && got_next[i] == contribution(next, i));
    CHECK(got_prev[n] == SENTINEL && got_next[n] == SENTINEL);
    if (x->mode == MODE_START_TEST)
        while (!comm_test(&x->comm, &h)) {
        }
    else
        comm_wait(&x->comm, &h);
    CHECK(!comm_handle_active(&h));
    free(got_prev), free(got_next), free(host);
    dev_free(x, from_prev), dev_free(x, from_next), dev_free(x, send);
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
    CHECK(strcmp(comm_collective_name(COLL_ALL_TO_ALL), "all-to-all") == 0);
    CHECK(strcmp(comm_collective_name(COLL_HOST_ALL_GATHER), "host all-gather") == 0);
    CHECK(strcmp(comm_collective_name(NUM_COLLECTIVES), "?") == 0);
    for (int k = 0; k < NUM_COLLECTIVES; k++)
        CHECK(strcmp(comm_collective_name((CollectiveKind)k), "?") != 0);
    CHECK(strcmp(comm_group_name(NUM_GROUPS), "?") == 0);
}

/* The whole suite through one implementation in one mode. */
static void check_suite(Ctx *x, const ParallelState *ps, CommImplKind impl, Mode mode) {
    char err[256];
    CHECK(comm_init_impl(&x->comm, ps, x->be, impl, err, sizeof err));
    x->mode = mode;
    memset(&x->expect, 0, sizeof x->expect);
    check_counters(x);

    static const GroupKind groups[] = {GROUP_WORLD, GROUP_TENSOR, GROUP_PIPELINE,
                                       GROUP_DATA,  GROUP_MODEL_PARALLEL, GROUP_EMBEDDING,
                                       GROUP_CONTEXT, GROUP_DATA_CONTEXT};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) check_group(x, groups[i]);
    check_ring(x, 7);
    check_ring(x, BIG_N);
    check_chain(x, BIG_N);
    check_batched_p2p(x, 7);
    check_batched_p2p(x, BIG_N);
    check_counters(x);

    comm_reset_counters(&x->comm);
    memset(&x->expect, 0, sizeof x->expect);
    check_counters(x);
    /* Counting starts again from zero after a reset. */
    comm_barrier(&x->comm, GROUP_TENSOR);
    expect_count(x, GROUP_TENSOR, COLL_BARRIER, 0);
    check_all_reduce_sum(x, GROUP_DATA, 5);
    check_counters(x);
    comm_destroy(&x->comm);
    CHECK(x->be->bytes_in_use == 0);
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
    /* The staged implementation copies through host memory whatever the
     * backend, so it runs on CPU buffers too. */
    for (int mode = 0; mode < NUM_MODES; mode++) check_suite(&x, &ps, COMM_IMPL_MPI, (Mode)mode);
    check_suite(&x, &ps, COMM_IMPL_STAGED, MODE_BLOCKING);
    check_suite(&x, &ps, COMM_IMPL_STAGED, MODE_START_TEST);
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
