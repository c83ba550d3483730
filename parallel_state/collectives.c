/* The front of the communication interface: checks, counting, the cases
 * that move nothing, then the Comm's implementation (comm_impl.h). */
#include "parallel_state/collectives.h"

#include <string.h>

#include "core/errors.h"
#include "parallel_state/comm_impl.h"

void comm_init(Comm *c, const ParallelState *ps, Backend *be) {
    memset(c, 0, sizeof *c);
    c->ps = ps;
    c->be = be;
    c->kind = COMM_IMPL_MPI;
    c->impl = &comm_mpi_impl;
}

bool comm_init_impl(Comm *c, const ParallelState *ps, Backend *be, CommImplKind kind, char *err,
                    size_t err_size) {
    comm_init(c, ps, be);
    c->kind = kind;
    switch (kind) {
    case COMM_IMPL_MPI:
        if (be && !be->host_visible) {
            snprintf(err, err_size,
                     "--comm mpi on %s buffers needs the staged implementation; this is a bug in "
                     "the caller (ask for COMM_IMPL_STAGED)",
                     be->name);
            return false;
        }
        return true;
    case COMM_IMPL_STAGED: c->impl = &comm_staged_impl; return comm_staged_init(c, err, err_size);
    case COMM_IMPL_NCCL: c->impl = &comm_nccl_impl; return comm_nccl_init(c, err, err_size);
    }
    snprintf(err, err_size, "unknown communication implementation %d", (int)kind);
    return false;
}

void comm_destroy(Comm *c) {
    if (c->impl && c->impl->destroy) c->impl->destroy(c);
    c->impl_state = NULL;
}

const char *comm_impl_name(CommImplKind k) {
    switch (k) {
    case COMM_IMPL_MPI: return "mpi";
    case COMM_IMPL_NCCL: return "nccl";
    case COMM_IMPL_STAGED: return "staged";
    }
    return "?";
}

bool comm_resolve_kind(const char *value, const char *device, CommImplKind *kind, char *err,
                       size_t err_size) {
    const bool cuda = !strcmp(device, "cuda");
    if (!strcmp(value, "auto")) {
        *kind = cuda ? COMM_IMPL_NCCL : COMM_IMPL_MPI;
        return true;
    }
    if (!strcmp(value, "mpi")) {
        /* Device buffers go through host memory: several ranks may share a GPU. */
        *kind = cuda ? COMM_IMPL_STAGED : COMM_IMPL_MPI;
        return true;
    }
    if (!strcmp(value, "nccl")) {
        if (!cuda) {
            snprintf(err, err_size,
                     "--comm nccl needs --device cuda (NCCL moves GPU buffers); with --device %s "
                     "use --comm mpi or --comm auto",
                     device);
            return false;
        }
        *kind = COMM_IMPL_NCCL;
        return true;
    }
    snprintf(err, err_size, "--comm %s: unknown communication; use auto, nccl or mpi", value);
    return false;
}

void comm_reset_counters(Comm *c) { memset(&c->counters, 0, sizeof c->counters); }

MPI_Comm comm_group_mpi(const Comm *c, GroupKind g) {
    switch (g) {
    case GROUP_WORLD: return c->ps->world;
    case GROUP_TENSOR: return c->ps->tp_comm;
    case GROUP_PIPELINE: return c->ps->pp_comm;
    case GROUP_DATA: return c->ps->dp_comm;
    case GROUP_MODEL_PARALLEL: return c->ps->model_parallel_comm;
    case GROUP_EMBEDDING: return c->ps->embedding_comm;
    case GROUP_CONTEXT: return c->ps->cp_comm;
    case GROUP_DATA_CONTEXT: return c->ps->dp_cp_comm;
    case GROUP_EXPERT: return c->ps->ep_comm;
    case GROUP_EXPERT_DATA: return c->ps->edp_comm;
    case NUM_GROUPS: break;
    }
    GPT3D_FAIL("unknown group %d", (int)g);
}

int comm_group_size(const Comm *c, GroupKind g) {
    MPI_Comm m = comm_group_mpi(c, g);
    if (m == MPI_COMM_NULL) return 0;
    int n;
    MPI_Comm_size(m, &n);
    return n;
}

int comm_group_rank(const Comm *c, GroupKind g) {
    MPI_Comm m = comm_group_mpi(c, g);
    if (m == MPI_COMM_NULL) return -1;
    int r;
    MPI_Comm_rank(m, &r);
    return r;
}

const char *comm_group_name(GroupKind g) {
    static const char *names[NUM_GROUPS] = {"world",       "tensor",    "pipeline",
                                            "data",        "model-parallel", "embedding",
                                            "context",     "data-context",   "expert",
                                            "expert-data"};
    return (int)g < NUM_GROUPS ? names[g] : "?";
}

const char *comm_collective_name(CollectiveKind k) {
    static const char *names[NUM_COLLECTIVES] = {
        "all-reduce", "all-gather", "reduce-scatter",    "broadcast",        "send",
        "recv",       "barrier",    "all-to-all", "host all-reduce", "host all-gather"};
    return (int)k < NUM_COLLECTIVES ? names[k] : "?";
}

/* A rank outside the group (a middle pipeline stage and the embedding
 * group) calling a collective on it is a bug in the caller, reported here
 * rather than as an MPI error. Returns the group's size. */
static int require_member(const Comm *c, GroupKind g) {
    GPT3D_CHECK(comm_group_mpi(c, g) != MPI_COMM_NULL,
                "world rank %d is not a member of the %s group", c->ps->rank, comm_group_name(g));
    return comm_group_size(c, g);
}

static void begin(const Comm *c, CommHandle *h) {
    GPT3D_CHECK(c->be, "collective on device buffers through a Comm without a backend");
    GPT3D_CHECK(!h->active, "communication handle started while still in flight");
    memset(h, 0, sizeof *h);
}

/* Whether the implementation runs an operation on a group of `size`. */
static bool moves(const Comm *c, int size) { return size > 1 || c->impl->single_rank_groups; }

void comm_count(Comm *c, GroupKind g, CollectiveKind k, size_t n, size_t elem_size) {
    c->counters.calls[g][k]++;
    c->counters.bytes[g][k] += n * elem_size;
}

void comm_all_reduce_start(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                           CommHandle *h) {
    begin(c, h);
    const int size = require_member(c, g);
    comm_count(c, g, COLL_ALL_REDUCE, n, dtype_size(t));
    if (moves(c, size) && n > 0) c->impl->all_reduce(c, g, buf, n, t, op, h);
}

void comm_all_gather_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                           CommHandle *h) {
    begin(c, h);
    const int size = require_member(c, g);
    comm_count(c, g, COLL_ALL_GATHER, n, dtype_size(t));
    const size_t chunk_bytes = n * dtype_size(t);
    const char *own_chunk = (const char *)dst + (size_t)comm_group_rank(c, g) * chunk_bytes;
    const bool in_place = src == own_chunk;
    if (!moves(c, size)) {
        if (!in_place && n) c->be->ops->copy_device(c->be, dst, src, chunk_bytes);
        return;
    }
    if (n > 0) c->impl->all_gather(c, g, dst, src, n, t, in_place, h);
}

void comm_reduce_scatter_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                               DType t, CommHandle *h) {
    begin(c, h);
    const int size = require_member(c, g);
    comm_count(c, g, COLL_REDUCE_SCATTER, n * (size_t)size, dtype_size(t));
    if (!moves(c, size)) {
        if (dst != src && n) c->be->ops->copy_device(c->be, dst, src, n * dtype_size(t));
        return;
    }
    if (n > 0) c->impl->reduce_scatter(c, g, dst, src, n, t, h);
}

void comm_broadcast_start(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                          CommHandle *h) {
    begin(c, h);
    const int size = require_member(c, g);
    GPT3D_CHECK(root >= 0 && root < size, "broadcast root %d outside the %s group of %d ranks",
                root, comm_group_name(g), size);
    comm_count(c, g, COLL_BROADCAST, n, dtype_size(t));
    if (moves(c, size) && n > 0) c->impl->broadcast(c, g, buf, n, t, root, h);
}

void comm_all_to_all_start(Comm *c, GroupKind g, void *dst, const void *src, size_t n_per_rank,
                           DType t, CommHandle *h) {
    begin(c, h);
    const int size = require_member(c, g);
    comm_count(c, g, COLL_ALL_TO_ALL, n_per_rank * (size_t)size, dtype_size(t));
    GPT3D_CHECK(dst != src || n_per_rank == 0, "all-to-all: src and dst must not overlap");
    if (!moves(c, size)) {
        if (n_per_rank) c->be->ops->copy_device(c->be, dst, src, n_per_rank * dtype_size(t));
        return;
    }
    if (n_per_rank > 0) c->impl->all_to_all(c, g, dst, src, n_per_rank, t, h);
}

/* FNV-1a over the bytes: a change anywhere changes it (with odds of 2^-64). */
static uint64_t bytes_digest(const void *buf, size_t bytes) {
    const unsigned char *b = buf;
    uint64_t d = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) d = (d ^ b[i]) * 1099511628211ull;
    return d;
}

static void guard_sends_start(CommSendGuard *g, const CommP2POp *posted, int count) {
    g->count = 0;
    for (int i = 0; i < count; i++) {
        if (posted[i].kind != COMM_P2P_SEND) continue;
        const size_t bytes = posted[i].n * dtype_size(posted[i].dtype);
        g->buf[g->count] = posted[i].buf;
        g->bytes[g->count] = bytes;
        g->digest[g->count] = bytes_digest(posted[i].buf, bytes);
        g->count++;
    }
}

static void guard_sends_check(const CommSendGuard *g) {
    for (int i = 0; i < g->count; i++)
        GPT3D_CHECK(bytes_digest(g->buf[i], g->bytes[i]) == g->digest[i],
                    "the buffer %p (%zu bytes) of a send changed while the send was in flight: "
                    "its owner wrote it before comm_wait completed the send",
                    g->buf[i], g->bytes[i]);
}

void comm_p2p_start(Comm *c, const CommP2POp *ops, int n, CommHandle *h) {
    comm_p2p_start_in(c, GROUP_PIPELINE, ops, n, h);
}

void comm_p2p_start_in(Comm *c, GroupKind g, const CommP2POp *ops, int n, CommHandle *h) {
    begin(c, h);
    GPT3D_CHECK(n >= 0 && n <= COMM_HANDLE_MAX_OPS, "batched p2p of %d operations (at most %d)", n,
                COMM_HANDLE_MAX_OPS);
    /* Receives first: each rank's receive is posted before its send. */
    CommP2POp posted[COMM_HANDLE_MAX_OPS];
    int count_posted = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const CommP2POp *op = &ops[i];
            if ((op->kind == COMM_P2P_RECV) != (pass == 0) || op->peer < 0) continue;
            GPT3D_CHECK(op->peer < c->ps->world_size, "%s peer %d outside a world of %d ranks",
                        op->kind == COMM_P2P_RECV ? "recv" : "send", op->peer, c->ps->world_size);
            comm_count(c, g, op->kind == COMM_P2P_RECV ? COLL_RECV : COLL_SEND, op->n,
                       dtype_size(op->dtype));
            if (op->n > 0) posted[count_posted++] = *op;
        }
    if (count_posted > 0) c->impl->p2p(c, g, posted, count_posted, h);
    if (c->guard_sends && c->kind == COMM_IMPL_MPI && h->active)
        guard_sends_start(&h->guard, posted, count_posted);
}

bool comm_test(Comm *c, CommHandle *h) {
    if (h->active && h->guard.count > 0) return false; /* guard_sends: in flight until comm_wait */
    return !h->active || c->impl->test(c, h);
}

void comm_wait(Comm *c, CommHandle *h) {
    if (!h->active) return;
    if (h->guard.count == 0) {
        c->impl->wait(c, h);
        return;
    }
    const CommSendGuard guard = h->guard; /* the implementation clears the handle */
    c->impl->wait(c, h);
    guard_sends_check(&guard);
}

void comm_wait_receives(Comm *c, CommHandle *h) {
    if (h->active) c->impl->wait_receives(c, h);
}

/* ---- blocking: start + wait ---- */

void comm_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op) {
    CommHandle h = {0};
    comm_all_reduce_start(c, g, buf, n, t, op, &h);
    comm_wait(c, &h);
}

void comm_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t) {
    CommHandle h = {0};
    comm_all_gather_start(c, g, dst, src, n, t, &h);
    comm_wait(c, &h);
}

void comm_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t) {
    CommHandle h = {0};
    comm_reduce_scatter_start(c, g, dst, src, n, t, &h);
    comm_wait(c, &h);
}

void comm_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root) {
    CommHandle h = {0};
    comm_broadcast_start(c, g, buf, n, t, root, &h);
    comm_wait(c, &h);
}

void comm_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n_per_rank,
                     DType t) {
    CommHandle h = {0};
    comm_all_to_all_start(c, g, dst, src, n_per_rank, t, &h);
    comm_wait(c, &h);
}

int comm_group_world_rank(const Comm *c, GroupKind g, int group_rank) {
    MPI_Comm m = comm_group_mpi(c, g);
    GPT3D_CHECK(m != MPI_COMM_NULL, "world rank %d is not a member of the %s group", c->ps->rank,
                comm_group_name(g));
    MPI_Group group, world;
    MPI_Comm_group(m, &group);
    MPI_Comm_group(c->ps->world, &world);
    int out = MPI_UNDEFINED;
    MPI_Group_translate_ranks(group, 1, &group_rank, world, &out);
    MPI_Group_free(&group);
    MPI_Group_free(&world);
    GPT3D_CHECK(out != MPI_UNDEFINED, "rank %d of the %s group does not exist", group_rank,
                comm_group_name(g));
    return out;
}

/* Round s: send to (me + s) mod n, receive from (me - s) mod n, so every
 * pair exchanges in the same round and no rank waits on two at once. */
void comm_all_to_all_v(Comm *c, GroupKind g, void *dst, const size_t *recv_counts,
                       const void *src, const size_t *send_counts, DType t) {
    const int n = require_member(c, g), me = comm_group_rank(c, g);
    const size_t elt = dtype_size(t);
    size_t send_at = 0, recv_at = 0;
    for (int r = 0; r < me; r++) send_at += send_counts[r], recv_at += recv_counts[r];
    GPT3D_CHECK(send_counts[me] == recv_counts[me], "all-to-all-v: %zu elements to myself, %zu from",
                send_counts[me], recv_counts[me]);
    if (send_counts[me])
        c->be->ops->copy_device(c->be, (char *)dst + recv_at * elt, (const char *)src + send_at * elt,
                                send_counts[me] * elt);
    for (int s = 1; s < n; s++) {
        const int to = (me + s) % n, from = (me - s + n) % n;
        size_t to_at = 0, from_at = 0;
        for (int r = 0; r < to; r++) to_at += send_counts[r];
        for (int r = 0; r < from; r++) from_at += recv_counts[r];
        const CommP2POp ops[2] = {
            {.kind = COMM_P2P_RECV, .buf = (char *)dst + from_at * elt, .n = recv_counts[from],
             .peer = comm_group_world_rank(c, g, from), .tag = 7000 + s, .dtype = t},
            {.kind = COMM_P2P_SEND, .buf = (char *)src + to_at * elt, .n = send_counts[to],
             .peer = comm_group_world_rank(c, g, to), .tag = 7000 + s, .dtype = t}};
        CommHandle h = {0};
        comm_p2p_start_in(c, g, ops, 2, &h);
        comm_wait(c, &h);
    }
}

void comm_p2p(Comm *c, const CommP2POp *ops, int n) {
    CommHandle h = {0};
    comm_p2p_start(c, ops, n, &h);
    comm_wait(c, &h);
}

/* Both directions in one batch, so neighbouring stages that send to each
 * other never deadlock; the watchdog reports the direction that did not
 * complete. */
static void exchange(Comm *c, const void *send_buf, size_t send_n, int dest, int send_tag,
                     void *recv_buf, size_t recv_n, int source, int recv_tag, DType t) {
    const CommP2POp ops[2] = {
        {.kind = COMM_P2P_RECV, .buf = recv_buf, .n = recv_n, .peer = source, .tag = recv_tag,
         .dtype = t},
        {.kind = COMM_P2P_SEND, .buf = (void *)send_buf, .n = send_n, .peer = dest,
         .tag = send_tag, .dtype = t}};
    comm_p2p(c, ops, 2);
}

void comm_send_recv(Comm *c, const void *send_buf, size_t send_n, int dest, void *recv_buf,
                    size_t recv_n, int source, DType t, int tag) {
    exchange(c, send_buf, send_n, dest, tag, recv_buf, recv_n, source, tag, t);
}

void comm_send_recv_tagged(Comm *c, const void *send_buf, int dest, int send_tag, void *recv_buf,
                           int source, int recv_tag, size_t n, DType t) {
    exchange(c, send_buf, n, dest, send_tag, recv_buf, n, source, recv_tag, t);
}
