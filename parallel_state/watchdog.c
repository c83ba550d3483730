/* The watchdog: every wait on other ranks polls a nonblocking MPI request
 * against a deadline, so a stopped or dead rank ends the job with a report
 * instead of hanging it (see parallel_state.h). */
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/timer.h"
#include "parallel_state/parallel_state.h"

bool watchdog_expired(double start_s, double now_s, double timeout_s) {
    return now_s - start_s >= timeout_s;
}

/* How a waiting rank spends the time between polls. Most waits are short (a
 * tensor-parallel all-reduce whose peers are already there): for the first
 * YIELD_S the rank only yields, as Open MPI's own blocking wait does when
 * oversubscribed, so short waits cost what the blocking call cost. A longer
 * wait (a peer still computing its micro-batch) sleeps an eighth of the time
 * waited so far (from 125 us), capped at MAX_SLEEP_S: with more ranks than
 * cores the waiting rank then gives its core to the rank it waits for, which a busy poll would
 * slow down, and noticing completion late adds at most about 1/8 to a wait. */
#define YIELD_S 1e-3
#define MAX_SLEEP_S 1e-3

static void back_off(double waited_s) {
    if (waited_s < YIELD_S) {
        sched_yield();
        return;
    }
    double pause_s = waited_s / 8.0;
    if (pause_s > MAX_SLEEP_S) pause_s = MAX_SLEEP_S;
    const struct timespec pause = {0, (long)(pause_s * 1e9)};
    nanosleep(&pause, NULL);
}

bool watchdog_poll_until(bool (*done)(void *arg), void *arg, double timeout_s,
                         double *waited_s) {
    const double start = timer_now_s();
    for (;;) {
        const bool finished = done(arg);
        const double now = timer_now_s();
        *waited_s = now - start;
        if (finished) return true;
        if (watchdog_expired(start, now, timeout_s)) return false;
        back_off(*waited_s);
    }
}

typedef struct {
    MPI_Request *reqs;
    int n;
} Requests;

static bool requests_done(void *arg) {
    const Requests *r = arg;
    bool done = true;
    for (int i = 0; i < r->n; i++) {
        if (r->reqs[i] == MPI_REQUEST_NULL) continue;
        int flag = 0;
        const int rc = MPI_Test(&r->reqs[i], &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) GPT3D_FAIL("MPI_Test failed with MPI error %d", rc);
        done = done && flag;
    }
    return done;
}

bool watchdog_poll(MPI_Request *reqs, int n, double timeout_s, double *waited_s) {
    Requests r = {reqs, n};
    return watchdog_poll_until(requests_done, &r, timeout_s, waited_s);
}

/* Ranks in `world` of the members of `group_comm`, skipping `skip` (a world
 * rank, or -1), as "0,1,2"; long lists end with how many were left out.
 * Returns how many members it counted. */
static int list_members(MPI_Comm group_comm, MPI_Comm world, int skip, char *buf, size_t size) {
    enum { MAX_LISTED = 16 };
    buf[0] = '\0';
    if (group_comm == MPI_COMM_NULL || size == 0) return 0;
    MPI_Group group, world_group;
    MPI_Comm_group(group_comm, &group);
    MPI_Comm_group(world, &world_group);
    int n = 0;
    MPI_Group_size(group, &n);
    size_t used = 0;
    int listed = 0, left_out = 0;
    for (int r = 0; r < n; r++) {
        int w = MPI_UNDEFINED;
        MPI_Group_translate_ranks(group, 1, &r, world_group, &w);
        if (w == skip) continue;
        if (listed == MAX_LISTED) {
            left_out++;
            continue;
        }
        used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s%d",
                                 listed ? "," : "", w);
        listed++;
    }
    if (left_out && used < size)
        snprintf(buf + used, size - used, ", ... (%d more)", left_out);
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    return listed + left_out;
}

void watchdog_describe(const WatchedOp *op, double waited_s, double timeout_s, char *buf,
                       size_t size) {
    int me = 0;
    MPI_Comm_rank(op->world, &me);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    char what[128] = "";
    if (op->dtype) snprintf(what, sizeof what, " of %zu %s elements", op->count, op->dtype);
    char members[256], waiting[256];
    list_members(op->group_comm, op->world, -1, members, sizeof members);
    int waiting_for = 1;
    if (op->peer >= 0)
        snprintf(waiting, sizeof waiting, "%d", op->peer);
    else
        waiting_for = list_members(op->group_comm, op->world, me, waiting, sizeof waiting);
    char route[64] = "";
    if (op->peer >= 0)
        snprintf(route, sizeof route, " %s rank %d", strcmp(op->op, "recv") ? "to" : "from",
                 op->peer);
    snprintf(buf, size,
             "rank %d (pid %d on %s): %s%s%s on the %s group (world ranks %s) did not complete "
             "within %.1f s; waiting for world rank%s %s, which may be stopped, dead or far behind; "
             "if one operation can legitimately take longer (e.g. a large checkpoint save on "
             "a slow disk), raise --distributed-timeout-minutes (now %g; the limit applies to "
             "each operation)",
             me, (int)getpid(), host, op->op, route, what, op->group, members, waited_s,
             waiting_for == 1 ? "" : "s", waiting, timeout_s / 60.0);
}

void parallel_state_timeout_abort(const WatchedOp *op, double waited_s, double timeout_s) {
    char line[1024];
    watchdog_describe(op, waited_s, timeout_s, line, sizeof line);
    fflush(stdout);
    fprintf(stderr, "error: %s\n", line);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, PARALLEL_STATE_TIMEOUT_EXIT);
}

void parallel_state_wait(MPI_Request *reqs, const WatchedOp *ops, int n, double timeout_s) {
    double waited = 0.0;
    if (watchdog_poll(reqs, n, timeout_s, &waited)) return;
    int stuck = 0;
    while (stuck < n - 1 && reqs[stuck] == MPI_REQUEST_NULL) stuck++;
    parallel_state_timeout_abort(&ops[stuck], waited, timeout_s);
}

/* ------------------------------------------------ host-value helpers */

static const char *group_name_of(const ParallelState *ps, MPI_Comm comm) {
    if (comm == ps->world) return "world";
    if (comm == ps->tp_comm) return "tensor";
    if (comm == ps->pp_comm) return "pipeline";
    if (comm == ps->dp_comm) return "data";
    if (comm == ps->cp_comm) return "context";
    if (comm == ps->dp_cp_comm) return "data-context";
    if (comm == ps->model_parallel_comm) return "model-parallel";
    if (comm == ps->embedding_comm) return "embedding";
    if (comm == ps->ep_comm) return "expert";
    if (comm == ps->edp_comm) return "expert-data";
    return "?";
}

static WatchedOp host_op(const ParallelState *ps, MPI_Comm comm, const char *op, int n,
                         MPI_Datatype type, char *type_name) {
    int len = 0;
    MPI_Type_get_name(type, type_name, &len);
    return (WatchedOp){.op = op,
                       .group = group_name_of(ps, comm),
                       .group_comm = comm,
                       .world = ps->world,
                       .peer = -1,
                       .count = (size_t)n,
                       .dtype = type_name};
}

void parallel_state_all_reduce(const ParallelState *ps, MPI_Comm comm, void *buf, int n,
                               MPI_Datatype type, MPI_Op op) {
    char type_name[MPI_MAX_OBJECT_NAME];
    const WatchedOp what = host_op(ps, comm, "all-reduce", n, type, type_name);
    MPI_Request req;
    const int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, n, type, op, comm, &req);
    if (rc != MPI_SUCCESS) GPT3D_FAIL("MPI_Iallreduce failed with MPI error %d", rc);
    parallel_state_wait(&req, &what, 1, ps->timeout_s);
}

void parallel_state_all_gather(const ParallelState *ps, MPI_Comm comm, const void *src,
                               void *dst, int n, MPI_Datatype type) {
    char type_name[MPI_MAX_OBJECT_NAME];
    const WatchedOp what = host_op(ps, comm, "all-gather", n, type, type_name);
    MPI_Request req;
    const int rc = MPI_Iallgather(src, n, type, dst, n, type, comm, &req);
    if (rc != MPI_SUCCESS) GPT3D_FAIL("MPI_Iallgather failed with MPI error %d", rc);
    parallel_state_wait(&req, &what, 1, ps->timeout_s);
}
