#include "context_parallel/context_parallel.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

/* Tags of the ring's two streams, apart from the pipeline's. */
enum { TAG_RING_KV = 9101, TAG_RING_DKV = 9102 };

int context_parallel_coordinate(int size, int rank, int seq_length, int i) {
    const int chunk = seq_length / (2 * size);
    return i < chunk ? rank * chunk + i : (2 * size - 1 - rank) * chunk + (i - chunk);
}

static size_t ring_block_numel(int size, int seq_length, int B, int qkv_width) {
    return (size_t)B * (size_t)(seq_length / size) * (size_t)qkv_width;
}

size_t context_parallel_ring_bytes(Backend *be, int size, int seq_length, int B, int qkv_width) {
    if (size <= 1) return 0;
    return 4 * backend_act_bytes(be, ring_block_numel(size, seq_length, B, qkv_width));
}

size_t context_parallel_coord_bytes(int size, int seq_length, int B) {
    if (size <= 1) return 0;
    const size_t local = (size_t)(seq_length / size);
    return ((size_t)size + (size_t)B) * local * sizeof(int32_t);
}

void context_parallel_init(ContextParallel *cp, Backend *be, Comm *comm, int size, int rank,
                           int seq_length, int B, int qkv_width) {
    memset(cp, 0, sizeof *cp);
    GPT3D_CHECK(size >= 1 && rank >= 0 && rank < size, "context parallel rank %d of %d", rank, size);
    GPT3D_CHECK(size == 1 || (comm && seq_length % (2 * size) == 0),
                "context parallelism over %d ranks needs a Comm and a sequence (%d) divisible by %d",
                size, seq_length, 2 * size);
    cp->be = be;
    cp->comm = size > 1 ? comm : NULL;
    cp->size = size;
    cp->rank = rank;
    cp->seq_length = seq_length;
    cp->local_rows = seq_length / size;
    cp->B = B;
    cp->qkv_width = qkv_width;
}

void context_parallel_bind(ContextParallel *cp, void *ring, int32_t *coords) {
    if (cp->size == 1) return;
    Backend *be = cp->be;
    const size_t block = backend_act_bytes(be, ring_block_numel(cp->size, cp->seq_length, cp->B,
                                                                cp->qkv_width));
    char *at = ring;
    cp->ring_kv[0] = at, cp->ring_kv[1] = at + block;
    cp->ring_dkv[0] = at + 2 * block, cp->ring_dkv[1] = at + 3 * block;
    const int L = cp->local_rows;
    cp->coords_dev = coords;
    cp->positions_dev = coords + (size_t)cp->size * L;
    int32_t *host = xmalloc(((size_t)cp->size + (size_t)cp->B) * L * sizeof *host);
    for (int r = 0; r < cp->size; r++)
        for (int i = 0; i < L; i++)
            host[(size_t)r * L + i] = context_parallel_coordinate(cp->size, r, cp->seq_length, i);
    for (int b = 0; b < cp->B; b++)
        memcpy(host + ((size_t)cp->size + b) * L, host + (size_t)cp->rank * L,
               (size_t)L * sizeof *host);
    be->ops->copy_to_device(be, coords, host, ((size_t)cp->size + cp->B) * L * sizeof *host);
    free(host);
}

void context_parallel_take_rows(const ContextParallel *cp, int32_t *dst, const int32_t *src) {
    const int L = cp->local_rows, half = L / 2, T = cp->seq_length;
    const int first = cp->rank * half, mirrored = (2 * cp->size - 1 - cp->rank) * half;
    for (int b = 0; b < cp->B; b++) {
        memcpy(dst + (size_t)b * L, src + (size_t)b * T + first, (size_t)half * sizeof *dst);
        memcpy(dst + (size_t)b * L + half, src + (size_t)b * T + mirrored,
               (size_t)half * sizeof *dst);
    }
}

static size_t block_numel(const ContextParallel *cp) {
    return ring_block_numel(cp->size, cp->seq_length, cp->B, cp->qkv_width);
}

/* This rank's queries against the keys of CP rank `source`. */
static AttentionBlock block_of(const ContextParallel *cp, int source) {
    const int L = cp->local_rows;
    return (AttentionBlock){.Tq = L,
                            .Tk = L,
                            .seq_length = cp->seq_length,
                            .q_coord = cp->coords_dev + (size_t)cp->rank * L,
                            .k_coord = cp->coords_dev + (size_t)source * L};
}

static int ring_source(const ContextParallel *cp, int step) {
    return (cp->rank - step % cp->size + cp->size) % cp->size;
}

/* Starts passing `send` on to the next rank of the ring and receiving the
 * previous rank's block into `recv`. */
static void ring_pass_start(ContextParallel *cp, const void *send, void *recv, int tag,
                            CommHandle *h) {
    const ParallelState *ps = cp->comm->ps;
    const int next = parallel_state_context_rank(ps, (cp->rank + 1) % cp->size);
    const int prev = parallel_state_context_rank(ps, (cp->rank + cp->size - 1) % cp->size);
    const DType t = cp->be->act_dtype;
    const CommP2POp ops[2] = {
        {.kind = COMM_P2P_SEND, .buf = (void *)send, .n = block_numel(cp), .peer = next, .tag = tag, .dtype = t},
        {.kind = COMM_P2P_RECV, .buf = recv, .n = block_numel(cp), .peer = prev, .tag = tag, .dtype = t}};
    comm_p2p_start_in(cp->comm, GROUP_CONTEXT, ops, 2, h);
}

void context_parallel_attention_forward(ContextParallel *cp, void *out, float *lse,
                                        const void *qkv, int NH, int NG, int HS,
                                        const int32_t *key_start,
                                        const AttentionDropout *dropout) {
    Backend *be = cp->be;
    GPT3D_CHECK(cp->size > 1 && cp->ring_kv[0], "ring attention without a bound CP context");
    const void *kv = qkv;
    for (int step = 0; step < cp->size; step++) {
        CommHandle h = {0};
        void *next_kv = cp->ring_kv[step % 2];
        if (step + 1 < cp->size) ring_pass_start(cp, kv, next_kv, TAG_RING_KV, &h);
        const AttentionBlock blk = block_of(cp, ring_source(cp, step));
        be->ops->attention_block_forward(be, out, lse, qkv, kv, cp->B, NH, NG, HS, &blk,
                                         key_start, dropout, step == 0);
        comm_wait(cp->comm, &h);
        kv = next_kv;
    }
}

void context_parallel_attention_backward(ContextParallel *cp, void *dqkv, const void *dout,
                                         const void *qkv, const void *out, const float *lse,
                                         int NH, int NG, int HS, const int32_t *key_start,
                                         const AttentionDropout *dropout) {
    Backend *be = cp->be;
    GPT3D_CHECK(cp->size > 1 && cp->ring_kv[0], "ring attention without a bound CP context");
    const size_t bytes = backend_act_bytes(be, block_numel(cp));
    be->ops->memset_zero(be, dqkv, bytes);
    be->ops->memset_zero(be, cp->ring_dkv[0], bytes);
    const void *kv = qkv;
    for (int step = 0; step < cp->size; step++) {
        /* The accumulator of the visiting block travels with it: it has
         * every earlier rank's part and gets this rank's, then moves on;
         * after the last step each block's comes home. */
        void *acc = cp->ring_dkv[step % 2], *next_acc = cp->ring_dkv[(step + 1) % 2];
        void *next_kv = cp->ring_kv[step % 2];
        CommHandle kv_pass = {0}, acc_pass = {0};
        if (step + 1 < cp->size) ring_pass_start(cp, kv, next_kv, TAG_RING_KV, &kv_pass);
        const AttentionBlock blk = block_of(cp, ring_source(cp, step));
        be->ops->attention_block_backward(be, dqkv, acc, dout, qkv, kv, out, lse, cp->B, NH, NG,
                                          HS, &blk, key_start, dropout);
        ring_pass_start(cp, acc, next_acc, TAG_RING_DKV, &acc_pass);
        comm_wait(cp->comm, &kv_pass);
        comm_wait(cp->comm, &acc_pass);
        kv = next_kv;
    }
    /* The query heads of the accumulator are zero, its key and value heads
     * those of dqkv: one add completes dqkv. */
    be->ops->add(be, dqkv, dqkv, cp->ring_dkv[cp->size % 2], block_numel(cp));
}
