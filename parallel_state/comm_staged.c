/* The staged implementation: device buffers copied into host memory, moved
 * by the MPI implementation, copied back when the operation completes. For
 * several ranks sharing one GPU (NCCL refuses two ranks on one device).
 * 16-bit buffers are widened to fp32 for reductions, so every rank gets the
 * same fp32 sum rounded once. The device-to-host copy happens at start
 * (it waits for the compute that produced the buffer), so the device
 * buffers of an input are free again as soon as start returns; outputs are
 * written at completion. Host copies come from a pool of page-locked
 * blocks (pinned memory from the CUDA library; plain memory for host-visible
 * backends), kept between operations because pinning is slow. */
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "parallel_state/comm_impl.h"
#include "parallel_state/nccl_ops.h"

/* Free blocks kept for reuse; more are freed at once. */
enum { POOL_BLOCKS = 16 };

typedef struct {
    void *ptr;
    size_t bytes;
} Block;

typedef struct {
    const PinnedHostOps *pinned; /* NULL: plain host memory */
    Block free_blocks[POOL_BLOCKS];
    int count;
} StagedState;

static StagedState *state_of(const Comm *c) { return c->impl_state; }

static void *plain_alloc(size_t bytes) { return xmalloc(bytes); }
static const PinnedHostOps PLAIN = {plain_alloc, free};

bool comm_staged_init(Comm *c, char *err, size_t err_size) {
    if (!c->be) {
        snprintf(err, err_size, "the staged communication needs a backend");
        return false;
    }
    StagedState *s = xcalloc(1, sizeof *s);
    s->pinned = &PLAIN;
    if (!c->be->host_visible) {
        const PinnedHostOps *(*table)(void) = (const PinnedHostOps *(*)(void))backend_cuda_symbol(
            "cuda_pinned_host_ops", err, err_size);
        if (!table) {
            free(s);
            return false;
        }
        s->pinned = table();
    }
    c->impl_state = s;
    return true;
}

/* The smallest free block of at least `bytes`, else a new one. */
static Block take_block(StagedState *s, size_t bytes) {
    int best = -1;
    for (int i = 0; i < s->count; i++)
        if (s->free_blocks[i].bytes >= bytes &&
            (best < 0 || s->free_blocks[i].bytes < s->free_blocks[best].bytes))
            best = i;
    if (best >= 0) {
        const Block b = s->free_blocks[best];
        s->free_blocks[best] = s->free_blocks[--s->count];
        return b;
    }
    /* Whole pages, so that near sizes share blocks. */
    const size_t rounded = (bytes + 4095) & ~(size_t)4095;
    void *ptr = s->pinned->alloc(rounded);
    GPT3D_CHECK(ptr, "cannot allocate %zu bytes of pinned host memory for staged communication",
                rounded);
    return (Block){ptr, rounded};
}

static void give_block(StagedState *s, Block b) {
    if (s->count == POOL_BLOCKS) {
        /* Keep the larger blocks: replace the smallest if this one is bigger. */
        int smallest = 0;
        for (int i = 1; i < s->count; i++)
            if (s->free_blocks[i].bytes < s->free_blocks[smallest].bytes) smallest = i;
        if (s->free_blocks[smallest].bytes >= b.bytes) {
            s->pinned->free(b.ptr);
            return;
        }
        s->pinned->free(s->free_blocks[smallest].ptr);
        s->free_blocks[smallest] = b;
        return;
    }
    s->free_blocks[s->count++] = b;
}

static void staged_destroy(Comm *c) {
    StagedState *s = state_of(c);
    if (!s) return;
    for (int i = 0; i < s->count; i++) s->pinned->free(s->free_blocks[i].ptr);
    free(s);
    c->impl_state = NULL;
}

/* bf16 is the upper half of an fp32; narrowing rounds to nearest even. */
static float bf16_to_f32(uint16_t b) {
    const uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
        return (uint16_t)((bits >> 16) | 0x40); /* NaN stays NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static void require_stageable(DType t) {
    GPT3D_CHECK(t == DTYPE_F32 || t == DTYPE_BF16,
                "the staged communication moves fp32 and bf16 buffers (got %s)", dtype_name(t));
}

/* A host copy of n elements at `device` (copied in when copy_in), widened
 * to fp32 when `widen`; recorded on h so completion copies it back to
 * `back` (NULL: freed only). */
static void *stage(Comm *c, CommHandle *h, const void *device, size_t n, DType t, bool widen,
                   bool copy_in, void *back) {
    require_stageable(t);
    GPT3D_CHECK(h->stage_count < 2 * COMM_HANDLE_MAX_OPS, "too many staged buffers on one handle");
    const bool widened = widen && t != DTYPE_F32;
    const Block block = take_block(state_of(c), (n ? n : 1) * (widened ? sizeof(float) : dtype_size(t)));
    void *host = block.ptr;
    if (copy_in) {
        if (widened) {
            uint16_t *raw = xmalloc(n * sizeof *raw);
            c->be->ops->copy_to_host(c->be, raw, device, n * sizeof *raw);
            for (size_t i = 0; i < n; i++) ((float *)host)[i] = bf16_to_f32(raw[i]);
            free(raw);
        } else {
            c->be->ops->copy_to_host(c->be, host, device, n * dtype_size(t));
        }
    }
    h->stage[h->stage_count++] = (CommStaging){.host = host,
                                               .capacity = block.bytes,
                                               .device = back,
                                               .n = n,
                                               .dtype = t,
                                               .widened = widened};
    return host;
}

static void unstage(Comm *c, CommStaging *s) {
    if (!s->host) return;
    if (s->device && s->widened) {
        uint16_t *raw = xmalloc(s->n * sizeof *raw);
        for (size_t i = 0; i < s->n; i++) raw[i] = f32_to_bf16(((const float *)s->host)[i]);
        c->be->ops->copy_to_device(c->be, s->device, raw, s->n * sizeof *raw);
        free(raw);
    } else if (s->device) {
        c->be->ops->copy_to_device(c->be, s->device, s->host, s->n * dtype_size(s->dtype));
    }
    give_block(state_of(c), (Block){s->host, s->capacity});
    s->host = NULL;
}

static void staged_all_reduce(Comm *c, GroupKind g, void *buf, size_t n, DType t, ReduceOp op,
                              CommHandle *h) {
    void *host = stage(c, h, buf, n, t, true, true, buf);
    comm_mpi_all_reduce(c, g, host, n, DTYPE_F32, op, h);
}

static void staged_all_gather(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                              bool in_place, CommHandle *h) {
    (void)in_place;
    const size_t size = (size_t)comm_group_size(c, g), me = (size_t)comm_group_rank(c, g);
    char *host = stage(c, h, dst, size * n, t, false, false, dst);
    c->be->ops->copy_to_host(c->be, host + me * n * dtype_size(t), src, n * dtype_size(t));
    comm_mpi_all_gather(c, g, host, host + me * n * dtype_size(t), n, t, true, h);
}

static void staged_reduce_scatter(Comm *c, GroupKind g, void *dst, const void *src, size_t n,
                                  DType t, CommHandle *h) {
    const size_t size = (size_t)comm_group_size(c, g);
    void *host_src = stage(c, h, src, size * n, t, true, true, NULL);
    void *host_dst = stage(c, h, dst, n, t, true, false, dst);
    comm_mpi_reduce_scatter(c, g, host_dst, host_src, n, DTYPE_F32, h);
}

static void staged_broadcast(Comm *c, GroupKind g, void *buf, size_t n, DType t, int root,
                             CommHandle *h) {
    const bool is_root = comm_group_rank(c, g) == root;
    void *host = stage(c, h, buf, n, t, false, is_root, is_root ? NULL : buf);
    comm_mpi_broadcast(c, g, host, n, t, root, h);
}

static void staged_all_to_all(Comm *c, GroupKind g, void *dst, const void *src, size_t n, DType t,
                              CommHandle *h) {
    const size_t size = (size_t)comm_group_size(c, g);
    void *host_src = stage(c, h, src, size * n, t, false, true, NULL);
    void *host_dst = stage(c, h, dst, size * n, t, false, false, dst);
    comm_mpi_all_to_all(c, g, host_dst, host_src, n, t, h);
}

/* One staged buffer per operation, in the order of the operations
 * (receives first), so stage[i] belongs to request i. */
static void staged_p2p(Comm *c, GroupKind g, const CommP2POp *ops, int count, CommHandle *h) {
    CommP2POp host_ops[COMM_HANDLE_MAX_OPS];
    for (int i = 0; i < count; i++) {
        const bool recv = ops[i].kind == COMM_P2P_RECV;
        host_ops[i] = ops[i];
        host_ops[i].buf =
            stage(c, h, ops[i].buf, ops[i].n, ops[i].dtype, false, !recv, recv ? ops[i].buf : NULL);
    }
    comm_mpi_p2p(c, g, host_ops, count, h);
}

static void finish(Comm *c, CommHandle *h) {
    for (int i = 0; i < h->stage_count; i++) unstage(c, &h->stage[i]);
    h->stage_count = 0;
    h->count = 0;
    h->active = false;
}

static bool staged_test(Comm *c, CommHandle *h) {
    if (!comm_mpi_test_requests(h)) return false;
    finish(c, h);
    return true;
}

static void staged_wait(Comm *c, CommHandle *h) {
    comm_mpi_wait_requests(c, h);
    finish(c, h);
}

static void staged_wait_receives(Comm *c, CommHandle *h) {
    comm_mpi_wait_receive_requests(c, h);
    for (int i = 0; i < h->count && h->is_recv[i]; i++) unstage(c, &h->stage[i]);
}

const CommImpl comm_staged_impl = {.name = "staged",
                                   .all_reduce = staged_all_reduce,
                                   .all_gather = staged_all_gather,
                                   .reduce_scatter = staged_reduce_scatter,
                                   .broadcast = staged_broadcast,
                                   .all_to_all = staged_all_to_all,
                                   .p2p = staged_p2p,
                                   .test = staged_test,
                                   .wait = staged_wait,
                                   .wait_receives = staged_wait_receives,
                                   .destroy = staged_destroy};
