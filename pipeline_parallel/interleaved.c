/* The interleaved 1F1B plan (Megatron-core's
 * forward_backward_pipelining_with_interleaving, with its default of P
 * contiguous micro-batches per chunk and without p2p overlap: one batched
 * exchange after every compute step). */
#include <stdbool.h>
#include <stdlib.h>

#include "core/errors.h"
#include "pipeline_parallel/schedules.h"

static const PipelineTensorRef NONE = {-1, -1};

typedef struct {
    int P, V, M, total, warmup;
    bool first, last; /* pipeline rank */
    /* Tensors received so far per chunk: a chunk consumes them in
     * micro-batch order, so the next one received is for this micro-batch. */
    int *forward_received, *backward_received;
    PipelineChunkOp *ops;
    int count;
} Builder;

/* Virtual step k of the forward order: groups of P micro-batches, each run
 * through every chunk before the next group starts. */
static int step_chunk(const Builder *b, int k, bool forward) {
    const int chunk = k % (b->P * b->V) / b->P;
    return forward ? chunk : b->V - 1 - chunk;
}

static int step_mb(const Builder *b, int k) {
    return k / (b->P * b->V) * b->P + k % b->P;
}

static void compute(Builder *b, PipelineChunkOpKind kind, int k) {
    b->ops[b->count++] = (PipelineChunkOp){.kind = kind,
                                           .chunk = step_chunk(b, k, kind == PIPE_CHUNK_FORWARD),
                                           .mb = step_mb(b, k),
                                           .send_forward = NONE,
                                           .send_backward = NONE,
                                           .recv_forward = NONE,
                                           .recv_backward = NONE};
}

/* The output of forward k, unless it is the model's last chunk. */
static PipelineTensorRef forward_output(const Builder *b, int k) {
    const int chunk = step_chunk(b, k, true);
    if (b->last && chunk == b->V - 1) return NONE;
    return (PipelineTensorRef){chunk, step_mb(b, k)};
}

/* The input gradient of backward k, unless it is the model's first chunk. */
static PipelineTensorRef backward_input_grad(const Builder *b, int k) {
    const int chunk = step_chunk(b, k, false);
    if (b->first && chunk == 0) return NONE;
    return (PipelineTensorRef){chunk, step_mb(b, k)};
}

/* What arrives from upstream after step k (Megatron's
 * recv_tensor_from_previous_stage), as the chunk that consumes it, or -1.
 * A rank in the middle receives what its next step needs. The rank that
 * leads the direction (the first in forward, the last in backward) gets
 * what the ending rank produced P - 1 steps earlier, bound for the next
 * chunk; nothing before that, and nothing after the model's end chunk. */
static int upstream_chunk(const Builder *b, int k, bool forward) {
    const bool leading = forward ? b->first : b->last;
    if (!leading) return k + 1 < b->total ? step_chunk(b, k + 1, forward) : -1;
    if (k < b->P - 1) return -1;
    const int produced = step_chunk(b, k - (b->P - 1), forward);
    if (produced == (forward ? b->V - 1 : 0)) return -1;
    return forward ? produced + 1 : produced - 1;
}

static PipelineTensorRef receive(int chunk, int *received) {
    if (chunk < 0) return NONE;
    return (PipelineTensorRef){chunk, received[chunk]++};
}

static void exchange(Builder *b, PipelineTensorRef send_forward, PipelineTensorRef send_backward,
                     int recv_forward_chunk, int recv_backward_chunk) {
    if (send_forward.mb < 0 && send_backward.mb < 0 && recv_forward_chunk < 0 &&
        recv_backward_chunk < 0)
        return;
    b->ops[b->count++] = (PipelineChunkOp){
        .kind = PIPE_CHUNK_EXCHANGE,
        .chunk = -1,
        .mb = -1,
        .send_forward = send_forward,
        .send_backward = send_backward,
        .recv_forward = receive(recv_forward_chunk, b->forward_received),
        .recv_backward = receive(recv_backward_chunk, b->backward_received)};
}

static void warmup(Builder *b) {
    /* The first forward's input (the first rank's chunk 0 embeds instead). */
    if (!b->first) exchange(b, NONE, NONE, 0, -1);
    for (int k = 0; k < b->warmup; k++) {
        compute(b, PIPE_CHUNK_FORWARD, k);
        const int next = k == b->total - 1 ? -1 : upstream_chunk(b, k, true);
        /* The last warmup step also fetches the first backward's gradient. */
        const bool then_steady = k == b->warmup - 1 && b->warmup < b->total;
        exchange(b, forward_output(b, k), NONE, next, then_steady && !b->last ? b->V - 1 : -1);
    }
}

static void steady(Builder *b) {
    const int remaining = b->total - b->warmup;
    for (int k = 0; k < remaining; k++) {
        const int f = k + b->warmup;
        compute(b, PIPE_CHUNK_FORWARD, f);
        compute(b, PIPE_CHUNK_BACKWARD, k);
        const int next_forward = k == remaining - 1 ? -1 : upstream_chunk(b, f, true);
        exchange(b, forward_output(b, f), backward_input_grad(b, k), next_forward,
                 upstream_chunk(b, k, false));
    }
}

static void cooldown(Builder *b) {
    /* With every forward in the warmup, nothing fetched the first gradient yet. */
    if (b->warmup == b->total && !b->last) exchange(b, NONE, NONE, -1, b->V - 1);
    for (int k = b->total - b->warmup; k < b->total; k++) {
        compute(b, PIPE_CHUNK_BACKWARD, k);
        const int next = k == b->total - 1 ? -1 : upstream_chunk(b, k, false);
        exchange(b, NONE, backward_input_grad(b, k), -1, next);
    }
}

int pipeline_interleaved_plan_capacity(int V, int M) { return 4 * V * M + 2; }

int pipeline_interleaved_plan(int P, int V, int M, int stage, PipelineChunkOp *ops) {
    GPT3D_CHECK(P >= 2 && V >= 1 && M >= P && M % P == 0 && stage >= 0 && stage < P,
                "bad interleaved plan P=%d V=%d M=%d stage=%d", P, V, M, stage);
    Builder b = {.P = P, .V = V, .M = M, .total = V * M, .first = stage == 0,
                 .last = stage == P - 1, .ops = ops};
    const int warm = 2 * (P - stage - 1) + (V - 1) * P;
    b.warmup = warm < b.total ? warm : b.total;
    b.forward_received = xcalloc((size_t)V, sizeof(int));
    b.backward_received = xcalloc((size_t)V, sizeof(int));
    warmup(&b);
    steady(&b);
    cooldown(&b);
    free(b.forward_received);
    free(b.backward_received);
    return b.count;
}

int pipeline_interleaved_forward_plan(int P, int V, int M, int stage, PipelineChunkOp *ops) {
    GPT3D_CHECK(P >= 2 && V >= 1 && M >= 1 && stage >= 0 && stage < P,
                "bad forward plan P=%d V=%d M=%d stage=%d", P, V, M, stage);
    int n = 0;
    for (int mb = 0; mb < M; mb++)
        for (int c = 0; c < V; c++) {
            const PipelineChunkOp none = {.kind = PIPE_CHUNK_EXCHANGE, .chunk = -1, .mb = -1,
                                          .send_forward = NONE, .send_backward = NONE,
                                          .recv_forward = NONE, .recv_backward = NONE};
            if (!(stage == 0 && c == 0)) {
                ops[n] = none;
                ops[n++].recv_forward = (PipelineTensorRef){c, mb};
            }
            ops[n] = none;
            ops[n].kind = PIPE_CHUNK_FORWARD;
            ops[n].chunk = c;
            ops[n++].mb = mb;
            if (!(stage == P - 1 && c == V - 1)) {
                ops[n] = none;
                ops[n++].send_forward = (PipelineTensorRef){c, mb};
            }
        }
    return n;
}
