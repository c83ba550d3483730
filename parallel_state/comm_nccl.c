/* The NCCL implementation: one NCCL communicator per group this rank
 * belongs to, made once at start-up from a unique id that the group's rank
 * 0 broadcasts over the group's MPI communicator; every operation enqueued
 * on the communication stream (parallel_state/nccl_ops.h) and completed by
 * polling its event under the watchdog. NCCL itself lives in the CUDA
 * backend library, reached through backend_cuda_symbol. */
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "parallel_state/comm_impl.h"
#include "parallel_state/nccl_ops.h"

typedef struct {
    const NcclOps *ops;
    void *ctx;
    void *comms[NUM_GROUPS]; /* NULL where this rank is not a member */
} NcclState;

static NcclState *state_of(const Comm *c) { return c->impl_state; }

/* Collective over group g's MPI communicator: every member gets rank 0's id. */
static bool group_unique_id(Comm *c, GroupKind g, unsigned char *id, char *err,
                            size_t err_size) {
    const NcclState *s = state_of(c);
    bool ok = true;
    if (comm_group_rank(c, g) == 0) ok = s->ops->unique_id(id, err, err_size);
    /* A failed rank 0 sends zeros, which the members see as "no id". */
    if (!ok) memset(id, 0, NCCL_OPS_UNIQUE_ID_BYTES);
    const WatchedOp what = {.op = "broadcast (NCCL unique id)", .group = comm_group_name(g),
                            .group_comm = comm_group_mpi(c, g), .world = c->ps->world,
                            .peer = -1, .count = NCCL_OPS_UNIQUE_ID_BYTES, .dtype = "byte"};
    MPI_Request req;
    MPI_Ibcast(id, NCCL_OPS_UNIQUE_ID_BYTES, MPI_BYTE, 0, comm_group_mpi(c, g), &req);
    parallel_state_wait(&req, &what, 1, c->ps->timeout_s);
    return ok;
}

static void nccl_destroy(Comm *c) {
    NcclState *s = state_of(c);
    if (!s) return;
    for (int g = 0; g < NUM_GROUPS; g++)
        if (s->comms[g]) s->ops->comm_destroy(s->comms[g]);
    if (s->ctx) s->ops->context_destroy(s->ctx);
    free(s);
    c->impl_state = NULL;
}

/* Groups are created in the same order on every rank, each collective over
 * its members, so creation cannot deadlock. One failure anywhere is
 * agreed over the world so that every rank returns the same answer. */
bool comm_nccl_init(Comm *c, char *err, size_t err_size) {
    NcclState *s = xcalloc(1, sizeof *s);
    c->impl_state = s;
    bool ok = c->be && !strcmp(c->be->name, "cuda");
    if (!ok) snprintf(err, err_size, "--comm nccl needs --device cuda");
    NcclOps *(*table)(void) = NULL;
    if (ok) {
        table = (NcclOps * (*)(void)) backend_cuda_symbol("cuda_nccl_ops", err, err_size);
        ok = table != NULL;
    }
    if (ok) {
        s->ops = table();
        s->ctx = s->ops->context_create(c->be, err, err_size);
        ok = s->ctx != NULL;
    }
    for (int g = 0; g < NUM_GROUPS; g++) {
        if (!parallel_state_agree(c->ps->world, ok, c->ps->timeout_s, err, err_size)) break;
        if (comm_group_mpi(c, (GroupKind)g) == MPI_COMM_NULL) continue;
        unsigned char id[NCCL_OPS_UNIQUE_ID_BYTES];
        ok = group_unique_id(c, (GroupKind)g, id, err, err_size);
        static const unsigned char none[NCCL_OPS_UNIQUE_ID_BYTES];
        if (ok && !memcmp(id, none, sizeof id)) {
            snprintf(err, err_size, "--comm nccl: rank 0 of the %s group could not make an NCCL id",
                     comm_group_name((GroupKind)g));
            ok = false;
        }
        if (ok) {
            s->comms[g] = s->ops->comm_create(s->ctx, comm_group_size(c, (GroupKind)g), id,
                                              comm_group_rank(c, (GroupKind)g), err, err_size);
            ok = s->comms[g] != NULL;
        }
    }
    if (parallel_state_agree(c->ps->world, ok, c->ps->timeout_s, err, err_size)) return true;
    nccl_destroy(c);
    return false;
}

static void started(Comm *c, CommHandle *h, GroupKind g, CollectiveKind k, int peer, size_t n,
                    DType t, void *event) {
    h->what[0] = (WatchedOp){.op = comm_collective_name(k),
                             .group = comm_group_name(g),
                             .group_comm = comm_group_mpi(c, g),
                             .world = c->ps->world,
                             .peer = peer,
                             .count = n,
                             .dtype = dtype_name(t)};
    h->event = event;
    h->active = true;
}

static void nccl_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                            CommHandle *h) {
    NcclState *s = state_of(c);
    started(c, h, g, COLL_ALL_REDUCE, -1, n, t,
            s->ops->all_reduce(s->ctx, s->comms[g], buf, n, t, (int)op));
}

static void nccl_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                            bool in_place, CommHandle *h) {
    (void)in_place; /* NCCL recognises src == dst + rank * n itself */
    NcclState *s = state_of(c);
    started(c, h, g, COLL_ALL_GATHER, -1, n, t,
            s->ops->all_gather(s->ctx, s->comms[g], dst, src, n, t));
}

static void nccl_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                                DType t, CommHandle *h) {
    NcclState *s = state_of(c);
    started(c, h, g, COLL_REDUCE_SCATTER, -1, n * (size_t)comm_group_size(c, g), t,
            s->ops->reduce_scatter(s->ctx, s->comms[g], dst, src, n, t));
}

static void nccl_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                           CommHandle *h) {
    NcclState *s = state_of(c);
    started(c, h, g, COLL_BROADCAST, -1, n, t,
            s->ops->broadcast(s->ctx, s->comms[g], buf, n, t, root));
}

/* NCCL has no all-to-all: a send and a receive per member in one group. */
static void nccl_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                            CommHandle *h) {
    NcclState *s = state_of(c);
    const int size = comm_group_size(c, g);
    const size_t chunk = n * dtype_size(t);
    NcclPeerOp *ops = xmalloc(2 * (size_t)size * sizeof *ops);
    for (int r = 0; r < size; r++) {
        ops[2 * r] = (NcclPeerOp){.recv = true, .buf = (char *)dst + (size_t)r * chunk, .n = n,
                                  .dtype = t, .peer = r};
        ops[2 * r + 1] = (NcclPeerOp){.recv = false, .buf = (char *)src + (size_t)r * chunk,
                                      .n = n, .dtype = t, .peer = r};
    }
    started(c, h, g, COLL_ALL_TO_ALL, -1, n * (size_t)size, t,
            s->ops->grouped(s->ctx, s->comms[g], ops, 2 * size));
    free(ops);
}

/* Peers are world ranks: the world communicator carries p2p. Tags do not
 * exist in NCCL; the pipeline sends one kind of message per direction. */
static void nccl_p2p(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h) {
    NcclState *s = state_of(c);
    NcclPeerOp peer_ops[COMM_HANDLE_MAX_OPS];
    for (int i = 0; i < count; i++)
        peer_ops[i] = (NcclPeerOp){.recv = ops[i].kind == COMM_P2P_RECV, .buf = ops[i].buf,
                                   .n = ops[i].n, .dtype = ops[i].dtype, .peer = ops[i].peer};
    started(c, h, g, ops[0].kind == COMM_P2P_RECV ? COLL_RECV : COLL_SEND,
            ops[0].peer, ops[0].n, ops[0].dtype,
            s->ops->grouped(s->ctx, s->comms[GROUP_WORLD], peer_ops, count));
}

static void finish(Comm *c, CommHandle *h) {
    NcclState *s = state_of(c);
    s->ops->event_release(s->ctx, h->event);
    h->event = NULL;
    h->active = false;
}

static bool nccl_test(Comm *c, CommHandle *h) {
    if (!state_of(c)->ops->event_done(h->event)) return false;
    finish(c, h);
    return true;
}

typedef struct {
    const NcclOps *ops;
    void *event;
} EventWait;

static bool event_passed(void *arg) {
    const EventWait *w = arg;
    return w->ops->event_done(w->event);
}

static void nccl_wait(Comm *c, CommHandle *h) {
    EventWait w = {state_of(c)->ops, h->event};
    double waited = 0;
    if (!watchdog_poll_until(event_passed, &w, c->ps->timeout_s, &waited))
        parallel_state_timeout_abort(&h->what[0], waited, c->ps->timeout_s);
    finish(c, h);
}

const CommImpl comm_nccl_impl = {.name = "nccl",
                                 .single_rank_groups = true,
                                 .all_reduce = nccl_all_reduce,
                                 .all_gather = nccl_all_gather,
                                 .reduce_scatter = nccl_reduce_scatter,
                                 .broadcast = nccl_broadcast,
                                 .all_to_all = nccl_all_to_all,
                                 .p2p = nccl_p2p,
                                 .test = nccl_test,
                                 .wait = nccl_wait,
                                 /* one NCCL group: the sends complete with the receives */
                                 .wait_receives = nccl_wait,
                                 .destroy = nccl_destroy};
