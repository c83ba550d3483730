/* The device implementations of collectives.h on CUDA buffers: NCCL (one
 * communicator per group; with one rank, every group is a one-rank NCCL
 * communicator, which runs the same NCCL calls) and staged (through host
 * memory and MPI; with several ranks on one GPU, the real exchanges), for
 * every operation, fp32 and bf16, blocking, start + wait and start + test,
 * several in flight completed in reverse order, and the counters. Values
 * are small integers, exact in bf16 and in any order of addition, so every
 * expected result is computed locally and compared exactly. Exit 77 without
 * a GPU. Runs with any number of ranks (layout TP = PP = 1: the world and
 * data groups hold every rank, the others only this one). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"
#include "test_mpi_util.h"
#include "test_backend_cuda_util.h"


#define SENTINEL -99.0f
#define N_LARGE 5000

typedef enum { MODE_BLOCKING = 0, MODE_START_WAIT, MODE_START_TEST, NUM_MODES } Mode;

typedef struct {
    Backend *be;
    Comm comm;
    CommCounters expect;
    Mode mode;
    DType t;
    int rank, world;
} Ctx;

static float value(int rank, size_t i) { return (float)(rank + 1) + (float)(i % 7); }
static float signed_value(int rank, size_t i) {
    return (float)((rank * 5 + (int)(i % 11) * 3) % 11) - 5.0f;
}

/* Group members in group-rank order (TP = PP = 1). */
static int members(const Ctx *x, GroupKind g, int *out) {
    if (g == GROUP_WORLD || g == GROUP_DATA) {
        for (int r = 0; r < x->world; r++) out[r] = r;
        return x->world;
    }
    out[0] = x->rank;
    return 1;
}

static int my_index(const Ctx *x, GroupKind g) {
    return g == GROUP_WORLD || g == GROUP_DATA ? x->rank : 0;
}

/* ---- device buffers of the element type under test ---- */

static void *put(Ctx *x, const float *host, size_t n) {
    void *dev = x->be->ops->alloc(x->be, n * dtype_size(x->t) + 4);
    if (x->t == DTYPE_F32) {
        x->be->ops->copy_to_device(x->be, dev, host, n * sizeof(float));
    } else {
        float *f = x->be->ops->alloc(x->be, n * sizeof(float) + 4);
        x->be->ops->copy_to_device(x->be, f, host, n * sizeof(float));
        x->be->ops->f32_to_act(x->be, dev, f, n);
        x->be->ops->free(x->be, f);
    }
    return dev;
}

static void *put_fill(Ctx *x, size_t n, float v) {
    float *host = xmalloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = v;
    void *dev = put(x, host, n);
    free(host);
    return dev;
}

static float *get(Ctx *x, const void *dev, size_t n) {
    float *host = xmalloc((n + 1) * sizeof(float));
    if (x->t == DTYPE_F32) {
        x->be->ops->copy_to_host(x->be, host, dev, n * sizeof(float));
    } else {
        float *f = x->be->ops->alloc(x->be, n * sizeof(float) + 4);
        x->be->ops->act_to_f32(x->be, f, dev, n);
        x->be->ops->copy_to_host(x->be, host, f, n * sizeof(float));
        x->be->ops->free(x->be, f);
    }
    return host;
}

static void release(Ctx *x, void *dev) { x->be->ops->free(x->be, dev); }

static void expect(Ctx *x, GroupKind g, CollectiveKind k, size_t n) {
    x->expect.calls[g][k]++;
    x->expect.bytes[g][k] += n * dtype_size(x->t);
}

static void complete(Ctx *x, CommHandle *h) {
    if (x->mode == MODE_START_WAIT)
        comm_wait(&x->comm, h);
    else
        while (!comm_test(&x->comm, h)) {
        }
    MPI_TEST_CHECK(!comm_handle_active(h));
}

/* ---- one check per operation ---- */

static void check_all_reduce(Ctx *x, GroupKind g, size_t n, ReduceOp op) {
    int m[64];
    const int size = members(x, g, m);
    float *host = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        host[i] = op == REDUCE_SUM ? value(x->rank, i) : signed_value(x->rank, i);
    void *buf = put(x, host, n);
    CommHandle h = {0};
    if (x->mode == MODE_BLOCKING) {
        comm_all_reduce(&x->comm, g, buf, n, x->t, op);
    } else {
        comm_all_reduce_start(&x->comm, g, buf, n, x->t, op, &h);
        complete(x, &h);
    }
    expect(x, g, COLL_ALL_REDUCE, n);
    float *got = get(x, buf, n);
    for (size_t i = 0; i < n; i++) {
        float want = op == REDUCE_SUM ? 0.0f : signed_value(m[0], i);
        for (int j = 0; j < size; j++) {
            if (op == REDUCE_SUM) want += value(m[j], i);
            if (op == REDUCE_MAX) want = fmaxf(want, signed_value(m[j], i));
            if (op == REDUCE_MIN) want = fminf(want, signed_value(m[j], i));
        }
        MPI_TEST_CHECK(got[i] == want);
    }
    free(got), free(host);
    release(x, buf);
}

static void check_all_gather(Ctx *x, GroupKind g, size_t n, bool in_place) {
    int m[64];
    const int size = members(x, g, m), me = my_index(x, g);
    float *host = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = value(x->rank, i);
    void *dst = put_fill(x, (size_t)size * n + 1, SENTINEL);
    void *src = in_place ? (char *)dst + (size_t)me * n * dtype_size(x->t) : put(x, host, n);
    if (in_place) {
        void *mine = put(x, host, n);
        x->be->ops->copy_device(x->be, src, mine, n * dtype_size(x->t));
        release(x, mine);
    }
    CommHandle h = {0};
    if (x->mode == MODE_BLOCKING) {
        comm_all_gather(&x->comm, g, dst, src, n, x->t);
    } else {
        comm_all_gather_start(&x->comm, g, dst, src, n, x->t, &h);
        complete(x, &h);
    }
    expect(x, g, COLL_ALL_GATHER, n);
    float *got = get(x, dst, (size_t)size * n + 1);
    for (int r = 0; r < size; r++)
        for (size_t i = 0; i < n; i++) MPI_TEST_CHECK(got[(size_t)r * n + i] == value(m[r], i));
    MPI_TEST_CHECK(got[(size_t)size * n] == SENTINEL);
    free(got), free(host);
    if (!in_place) release(x, src);
    release(x, dst);
}

static void check_reduce_scatter(Ctx *x, GroupKind g, size_t n) {
    int m[64];
    const int size = members(x, g, m), me = my_index(x, g);
    const size_t full = (size_t)size * n;
    float *host = xmalloc(full * sizeof(float));
    for (size_t i = 0; i < full; i++) host[i] = value(x->rank, i);
    void *src = put(x, host, full), *dst = put_fill(x, n + 1, SENTINEL);
    CommHandle h = {0};
    if (x->mode == MODE_BLOCKING) {
        comm_reduce_scatter(&x->comm, g, dst, src, n, x->t);
    } else {
        comm_reduce_scatter_start(&x->comm, g, dst, src, n, x->t, &h);
        complete(x, &h);
    }
    expect(x, g, COLL_REDUCE_SCATTER, full);
    float *got = get(x, dst, n + 1);
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int j = 0; j < size; j++) want += value(m[j], (size_t)me * n + i);
        MPI_TEST_CHECK(got[i] == want);
    }
    MPI_TEST_CHECK(got[n] == SENTINEL);
    free(got), free(host);
    release(x, src), release(x, dst);
}

static void check_broadcast(Ctx *x, GroupKind g, size_t n) {
    int m[64];
    const int size = members(x, g, m), me = my_index(x, g);
    for (int root = size - 1; root >= 0; root--) {
        float *host = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) host[i] = me == root ? value(x->rank, i) : SENTINEL;
        void *buf = put(x, host, n);
        CommHandle h = {0};
        if (x->mode == MODE_BLOCKING) {
            comm_broadcast(&x->comm, g, buf, n, x->t, root);
        } else {
            comm_broadcast_start(&x->comm, g, buf, n, x->t, root, &h);
            complete(x, &h);
        }
        expect(x, g, COLL_BROADCAST, n);
        float *got = get(x, buf, n);
        for (size_t i = 0; i < n; i++) MPI_TEST_CHECK(got[i] == value(m[root], i));
        free(got), free(host);
        release(x, buf);
    }
}

static void check_all_to_all(Ctx *x, GroupKind g, size_t n) {
    int m[64];
    const int size = members(x, g, m), me = my_index(x, g);
    const size_t full = (size_t)size * n;
    float *host = xmalloc(full * sizeof(float));
    for (size_t i = 0; i < full; i++) host[i] = value(x->rank, i);
    void *src = put(x, host, full), *dst = put_fill(x, full + 1, SENTINEL);
    CommHandle h = {0};
    if (x->mode == MODE_BLOCKING) {
        comm_all_to_all(&x->comm, g, dst, src, n, x->t);
    } else {
        comm_all_to_all_start(&x->comm, g, dst, src, n, x->t, &h);
        complete(x, &h);
    }
    expect(x, g, COLL_ALL_TO_ALL, full);
    float *got = get(x, dst, full + 1);
    for (int r = 0; r < size; r++)
        for (size_t i = 0; i < n; i++)
            MPI_TEST_CHECK(got[(size_t)r * n + i] == value(m[r], (size_t)me * n + i));
    MPI_TEST_CHECK(got[full] == SENTINEL);
    free(got), free(host);
    release(x, src), release(x, dst);
}

/* A ring over the world in one batch: send to the next rank, receive from
 * the previous (with one rank, to and from itself). */
static void check_p2p(Ctx *x, size_t n) {
    const int next = (x->rank + 1) % x->world, prev = (x->rank + x->world - 1) % x->world;
    float *host = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = value(x->rank, i);
    void *send = put(x, host, n), *recv = put_fill(x, n + 1, SENTINEL);
    const CommP2POp ops[2] = {
        {.kind = COMM_P2P_SEND, .buf = send, .n = n, .peer = next, .tag = 3, .dtype = x->t},
        {.kind = COMM_P2P_RECV, .buf = recv, .n = n, .peer = prev, .tag = 3, .dtype = x->t}};
    CommHandle h = {0};
    comm_p2p_start(&x->comm, ops, 2, &h);
    comm_wait_receives(&x->comm, &h);
    float *got = get(x, recv, n + 1);
    for (size_t i = 0; i < n; i++) MPI_TEST_CHECK(got[i] == value(prev, i));
    MPI_TEST_CHECK(got[n] == SENTINEL);
    complete(x, &h);
    expect(x, GROUP_PIPELINE, COLL_SEND, n);
    expect(x, GROUP_PIPELINE, COLL_RECV, n);
    free(got), free(host);
    release(x, send), release(x, recv);
}

/* Three operations in flight on the data group, completed in reverse. */
static void check_in_flight(Ctx *x) {
    int m[64];
    const int size = members(x, GROUP_DATA, m);
    const size_t n = 33;
    float *host = xmalloc((size_t)size * n * sizeof(float));
    for (size_t i = 0; i < (size_t)size * n; i++) host[i] = value(x->rank, i);
    void *ar = put(x, host, n), *ag_src = put(x, host, n);
    void *ag = put_fill(x, (size_t)size * n, SENTINEL), *bc = put(x, host, n);
    CommHandle h[3] = {{0}};
    comm_all_reduce_start(&x->comm, GROUP_DATA, ar, n, x->t, REDUCE_SUM, &h[0]);
    comm_all_gather_start(&x->comm, GROUP_DATA, ag, ag_src, n, x->t, &h[1]);
    comm_broadcast_start(&x->comm, GROUP_DATA, bc, n, x->t, 0, &h[2]);
    for (int k = 2; k >= 0; k--) comm_wait(&x->comm, &h[k]);
    expect(x, GROUP_DATA, COLL_ALL_REDUCE, n);
    expect(x, GROUP_DATA, COLL_ALL_GATHER, n);
    expect(x, GROUP_DATA, COLL_BROADCAST, n);
    float *got_ar = get(x, ar, n), *got_ag = get(x, ag, (size_t)size * n), *got_bc = get(x, bc, n);
    for (size_t i = 0; i < n; i++) {
        float sum = 0;
        for (int j = 0; j < size; j++) {
            sum += value(m[j], i);
            MPI_TEST_CHECK(got_ag[(size_t)j * n + i] == value(m[j], i));
        }
        MPI_TEST_CHECK(got_ar[i] == sum && got_bc[i] == value(m[0], i));
    }
    free(got_ar), free(got_ag), free(got_bc), free(host);
    release(x, ar), release(x, ag_src), release(x, ag), release(x, bc);
}

static void check_counters(const Ctx *x) {
    for (int g = 0; g < NUM_GROUPS; g++)
        for (int k = 0; k < NUM_COLLECTIVES; k++)
            MPI_TEST_CHECK(x->comm.counters.calls[g][k] == x->expect.calls[g][k] &&
                  x->comm.counters.bytes[g][k] == x->expect.bytes[g][k]);
}

/* types: fp32, then bf16 when the backend's activations are bf16. */
static void check_impl(Ctx *x, const ParallelState *ps, CommImplKind impl) {
    char err[512];
    if (!comm_init_impl(&x->comm, ps, x->be, impl, err, sizeof err)) {
        fprintf(stderr, "rank %d: %s\n", x->rank, err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    static const GroupKind groups[] = {GROUP_WORLD, GROUP_TENSOR, GROUP_DATA};
    static const DType types[] = {DTYPE_F32, DTYPE_BF16};
    const int num_types = x->be->act_dtype == DTYPE_BF16 ? 2 : 1;
    for (int mode = 0; mode < NUM_MODES; mode++)
        for (int ti = 0; ti < num_types; ti++) {
            x->mode = (Mode)mode;
            x->t = types[ti];
            for (int gi = 0; gi < 3; gi++) {
                const GroupKind g = groups[gi];
                check_all_reduce(x, g, 37, REDUCE_SUM);
                check_all_reduce(x, g, N_LARGE, REDUCE_SUM);
                check_all_reduce(x, g, 37, REDUCE_MAX);
                check_all_reduce(x, g, 37, REDUCE_MIN);
                check_all_gather(x, g, 13, false);
                check_all_gather(x, g, N_LARGE, true);
                check_reduce_scatter(x, g, 11);
                check_broadcast(x, g, 29);
                check_all_to_all(x, g, 9);
            }
            check_p2p(x, 7);
            check_p2p(x, N_LARGE);
            check_in_flight(x);
        }
    check_counters(x);
    comm_destroy(&x->comm);
    memset(&x->expect, 0, sizeof x->expect);
    if (x->rank == 0) printf("test_comm_cuda: %s on %d rank(s) ok\n", comm_impl_name(impl), x->world);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    gpt3d_set_exit_hook(mpi_test_abort_job);
    Ctx x;
    memset(&x, 0, sizeof x);
    MPI_Comm_rank(MPI_COMM_WORLD, &x.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &x.world);
    MPI_TEST_CHECK(x.world <= 64);
    /* --cpu-standin: the CPU backend takes the GPU's place and only the
     * staged implementation runs (fp32), checking the test program itself. */
    const bool standin = cpu_standin(argc, argv);
    const int gpus = standin ? 0 : backend_cuda_device_count();
    if (!standin && gpus == 0) {
        if (x.rank == 0)
            print_skip_reason(backend_cuda_compiled() ? "no GPU for the CUDA communication tests"
                                                      : "this build has no CUDA backend");
        MPI_Finalize();
        return TEST_SKIPPED;
    }
    ParallelState ps;
    char err[512];
    MPI_TEST_CHECK(parallel_state_init(&ps, MPI_COMM_WORLD, 1, 1, err, sizeof err));
    x.be = backend_create(standin ? "cpu" : "cuda", ps.local_rank, err, sizeof err);
    MPI_TEST_CHECK(x.be != NULL);
    check_impl(&x, &ps, COMM_IMPL_STAGED);
    /* NCCL refuses two ranks on one GPU. */
    if (!standin && ps.local_size <= gpus)
        check_impl(&x, &ps, COMM_IMPL_NCCL);
    else if (!standin && x.rank == 0)
        printf("test_comm_cuda: nccl not run: %d ranks on %d GPU(s)\n", ps.local_size, gpus);
    MPI_TEST_CHECK(x.be->bytes_in_use == 0);
    backend_destroy(x.be);
    parallel_state_destroy(&ps);
    MPI_Finalize();
    return 0;
}
