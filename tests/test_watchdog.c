/* The collective watchdog (parallel_state/watchdog.c), under mpirun -np 2.
 *
 *   test_watchdog unit straggler   the deadline decision, polling a request
 *                                  that never completes and one that does, the
 *                                  report's wording; then every collective and
 *                                  p2p exchange with rank 1 arriving late but
 *                                  within the limit: all complete, right values
 *   test_watchdog stuck-collective rank 1 enters the data-group all-reduce
 *   test_watchdog stuck-p2p        or sends to rank 0 only long after the
 *                                  limit; rank 0 must abort the job with the
 *                                  report (tests/test_watchdog.sh checks it)
 */
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "core/timer.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"

/* A failed check aborts the job, so the other ranks do not wait for this one. */
#define TEST_FAIL_EXIT() MPI_Abort(MPI_COMM_WORLD, 1)
#include "test_util.h"

/* A late rank arrives after LATE_S; the limit is several times that, so a
 * loaded machine does not turn the straggler case into a timeout. */
#define LATE_S 0.3
#define STRAGGLER_TIMEOUT_S 3.0
/* In the stuck cases the late rank would arrive after STUCK_S: a watchdog
 * that never fires lets the job finish with status 0, which the script
 * reports, instead of hanging the test. */
#define STUCK_TIMEOUT_S 0.5
#define STUCK_S 8.0

static void sleep_s(double s) {
    const struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

static void check_decision(void) {
    CHECK(!watchdog_expired(10.0, 10.5, 1.0));
    CHECK(watchdog_expired(10.0, 11.0, 1.0));
    CHECK(watchdog_expired(10.0, 12.5, 1.0));
    CHECK(!watchdog_expired(10.0, 10.0, 0.25));
    CHECK(!watchdog_expired(0.0, 1e9, INFINITY));
}

/* A receive nobody matches never completes: poll gives up after the limit
 * and leaves it active; a self send/receive pair completes at once. */
static void check_poll(void) {
    float got = 0.0f, sent = 42.0f;
    MPI_Request never;
    MPI_Irecv(&got, 1, MPI_FLOAT, 0, 7, MPI_COMM_SELF, &never);
    double waited = -1.0;
    const double t0 = timer_now_s();
    CHECK(!watchdog_poll(&never, 1, 0.2, &waited));
    const double elapsed = timer_now_s() - t0;
    CHECK(waited >= 0.2 && elapsed >= 0.2 && elapsed < 2.0);
    CHECK(never != MPI_REQUEST_NULL);
    MPI_Cancel(&never);
    MPI_Wait(&never, MPI_STATUS_IGNORE);

    MPI_Request pair[2];
    MPI_Irecv(&got, 1, MPI_FLOAT, 0, 8, MPI_COMM_SELF, &pair[0]);
    MPI_Isend(&sent, 1, MPI_FLOAT, 0, 8, MPI_COMM_SELF, &pair[1]);
    CHECK(watchdog_poll(pair, 2, 5.0, &waited));
    CHECK(pair[0] == MPI_REQUEST_NULL && pair[1] == MPI_REQUEST_NULL && got == 42.0f);
    CHECK(waited < 5.0);
}

static bool contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

static void check_report(const ParallelState *dp2, const ParallelState *pp2) {
    char line[1024];
    const WatchedOp coll = {.op = "all-reduce", .group = "data", .group_comm = dp2->dp_comm,
                            .world = dp2->world, .peer = -1, .count = 3, .dtype = "fp32"};
    watchdog_describe(&coll, 12.34, 30.0, line, sizeof line);
    char want[128];
    snprintf(want, sizeof want, "rank %d (pid ", dp2->rank);
    CHECK(contains(line, want));
    CHECK(contains(line, "all-reduce of 3 fp32 elements on the data group (world ranks 0,1)"));
    CHECK(contains(line, "within 12.3 s"));
    snprintf(want, sizeof want, "waiting for world rank %d,", 1 - dp2->rank);
    CHECK(contains(line, want));
    CHECK(contains(line, "raise --distributed-timeout-minutes (now 0.5;"));

    const WatchedOp p2p = {.op = "send", .group = "pipeline", .group_comm = pp2->pp_comm,
                           .world = pp2->world, .peer = 1, .count = 5, .dtype = "fp32"};
    watchdog_describe(&p2p, 1.0, 60.0, line, sizeof line);
    CHECK(contains(line, "send to rank 1 of 5 fp32 elements on the pipeline group (world ranks "
                         "0,1)"));
    CHECK(contains(line, "waiting for world rank 1,"));
    CHECK(contains(line, "(now 1;"));
}

static void late(const ParallelState *ps) {
    if (ps->rank == 1) sleep_s(LATE_S);
}

/* Each operation with rank 1 arriving LATE_S late, on a DP = 2 layout. */
static void check_straggler_collectives(Comm *c, const ParallelState *ps) {
    const int r = ps->rank;
    float v[3] = {1.0f + r, 10.0f * (r + 1), -0.5f * r};
    late(ps);
    comm_all_reduce(c, GROUP_DATA, v, 3, DTYPE_F32, REDUCE_SUM);
    CHECK(v[0] == 3.0f && v[1] == 30.0f && v[2] == -0.5f);

    float mine = 7.0f + r, all[2] = {0};
    late(ps);
    comm_all_gather(c, GROUP_DATA, all, &mine, 1, DTYPE_F32);
    CHECK(all[0] == 7.0f && all[1] == 8.0f);

    float full[4] = {1.0f + r, 2.0f + r, 3.0f + r, 4.0f + r}, part[2] = {0};
    late(ps);
    comm_reduce_scatter(c, GROUP_DATA, part, full, 2, DTYPE_F32);
    CHECK(part[0] == (r ? 7.0f : 3.0f) && part[1] == (r ? 9.0f : 5.0f));

    float b = r ? 0.0f : 99.0f;
    late(ps);
    comm_broadcast(c, GROUP_DATA, &b, 1, DTYPE_F32, 0);
    CHECK(b == 99.0f);

    late(ps);
    comm_barrier(c, GROUP_WORLD);

    double d = 0.25 * (r + 1);
    late(ps);
    parallel_state_all_reduce(ps, ps->dp_comm, &d, 1, MPI_DOUBLE, MPI_SUM);
    CHECK(d == 0.75);

    late(ps);
    CHECK(parallel_state_all_ok(ps->world, true, ps->timeout_s));
    late(ps);
    CHECK(!parallel_state_all_ok(ps->world, r == 0, ps->timeout_s));
}

/* Send and receive in both directions on a PP = 2 layout, the sender late. */
static void check_straggler_p2p(Comm *c, const ParallelState *ps) {
    const int r = ps->rank;
    float out[5], in[5] = {0};
    for (int i = 0; i < 5; i++) out[i] = (float)(100 * r + i);
    for (int sender = 0; sender < 2; sender++) {
        if (r == sender) {
            sleep_s(LATE_S);
            comm_send_recv(c, out, 5, 1 - r, NULL, 0, -1, DTYPE_F32, 3);
        } else {
            comm_send_recv(c, NULL, 0, -1, in, 5, 1 - r, DTYPE_F32, 3);
            for (int i = 0; i < 5; i++) CHECK(in[i] == (float)(100 * sender + i));
        }
    }
}

static void init_layout(ParallelState *ps, Comm *c, Backend *be, int pp, double timeout_s) {
    char err[256];
    CHECK(parallel_state_init(ps, MPI_COMM_WORLD, 1, pp, err, sizeof err));
    CHECK(ps->timeout_s == PARALLEL_STATE_DEFAULT_TIMEOUT_S);
    ps->timeout_s = timeout_s;
    comm_init(c, ps, be);
}

static void abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    gpt3d_set_exit_hook(abort_job);
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    CHECK(size == 2);
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be != NULL);
    ParallelState dp2, pp2;
    Comm dp2_comm, pp2_comm;
    for (int a = 1; a < argc; a++) {
        const bool stuck = !strncmp(argv[a], "stuck", 5);
        const double timeout_s = stuck ? STUCK_TIMEOUT_S : STRAGGLER_TIMEOUT_S;
        init_layout(&dp2, &dp2_comm, be, 1, timeout_s);
        init_layout(&pp2, &pp2_comm, be, 2, timeout_s);
        if (!strcmp(argv[a], "unit")) {
            check_decision();
            check_poll();
            check_report(&dp2, &pp2);
        } else if (!strcmp(argv[a], "straggler")) {
            check_straggler_collectives(&dp2_comm, &dp2);
            check_straggler_p2p(&pp2_comm, &pp2);
        } else if (!strcmp(argv[a], "stuck-collective")) {
            float v[3] = {1, 2, 3};
            if (dp2.rank == 1) sleep_s(STUCK_S);
            comm_all_reduce(&dp2_comm, GROUP_DATA, v, 3, DTYPE_F32, REDUCE_SUM);
        } else if (!strcmp(argv[a], "stuck-p2p")) {
            float v[5] = {0};
            if (pp2.rank == 1) sleep_s(STUCK_S);
            if (pp2.rank == 1) comm_send_recv(&pp2_comm, v, 5, 0, NULL, 0, -1, DTYPE_F32, 1);
            else comm_send_recv(&pp2_comm, NULL, 0, -1, v, 5, 1, DTYPE_F32, 1);
        } else {
            fprintf(stderr, "test_watchdog: unknown mode %s\n", argv[a]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        parallel_state_destroy(&dp2);
        parallel_state_destroy(&pp2);
        if (dp2.rank == 0) printf("test_watchdog %s: completed\n", argv[a]);
    }
    backend_destroy(be);
    MPI_Finalize();
    return 0;
}
