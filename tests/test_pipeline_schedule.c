/* The 1F1B plan: each stage's forward/backward order is exactly warmup of
 * min(P - s - 1, M) forwards, then alternating forward/backward, then the
 * remaining backwards; every message one stage sends is received by its
 * neighbour in the same order; executing all stages' plans with blocking
 * exchanges never deadlocks; at most min(P - s, M) micro-batches are alive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "pipeline_parallel/schedules.h"
#include "test_util.h"

#define MAX_OPS 1024

/* The compute order 1F1B defines, written from its definition. */
static int expected_compute(int P, int s, int M, char *kind, int *mb) {
    int warmup = P - s - 1 < M ? P - s - 1 : M, n = 0, f = 0, b = 0;
    for (int i = 0; i < warmup; i++) kind[n] = 'F', mb[n++] = f++;
    while (f < M) {
        kind[n] = 'F', mb[n++] = f++;
        kind[n] = 'B', mb[n++] = b++;
    }
    while (b < M) kind[n] = 'B', mb[n++] = b++;
    return n;
}

static void check_compute_order(int P, int M) {
    for (int s = 0; s < P; s++) {
        PipelineOp ops[MAX_OPS];
        int n = pipeline_1f1b_plan(P, s, M, ops);
        char kind[MAX_OPS], want_kind[MAX_OPS];
        int mb[MAX_OPS], want_mb[MAX_OPS], k = 0, live = 0, peak = 0;
        for (int i = 0; i < n; i++) {
            if (ops[i].kind == PIPE_FORWARD) kind[k] = 'F', mb[k++] = ops[i].mb, peak = ++live > peak ? live : peak;
            if (ops[i].kind == PIPE_BACKWARD) kind[k] = 'B', mb[k++] = ops[i].mb, live--;
        }
        int w = expected_compute(P, s, M, want_kind, want_mb);
        CHECK_MSG(k == w, "P=%d M=%d stage %d: %d compute steps, want %d", P, M, s, k, w);
        for (int i = 0; i < k; i++)
            CHECK_MSG(kind[i] == want_kind[i] && mb[i] == want_mb[i],
                      "P=%d M=%d stage %d step %d: %c%d, want %c%d", P, M, s, i, kind[i], mb[i],
                      want_kind[i], want_mb[i]);
        CHECK_MSG(peak == (P - s < M ? P - s : M), "P=%d M=%d stage %d: peak live %d", P, M, s, peak);
    }
}

/* Messages on one directed channel (stage a -> stage b, activations or
 * gradients), in the order they are sent and in the order they are received. */
typedef struct {
    int sent[MAX_OPS], nsent;
    int received[MAX_OPS], nreceived;
} Channel;

/* Executes all stages' plans with rendezvous semantics: an operation that
 * sends completes only when the peer's matching receive is posted at the
 * head of its plan, and vice versa (paired exchanges need both halves).
 * Fails on a deadlock (no stage can advance). */
static void simulate(int P, int M) {
    PipelineOp ops[16][MAX_OPS];
    int n[16], pc[16];
    for (int s = 0; s < P; s++) n[s] = pipeline_1f1b_plan(P, s, M, ops[s]), pc[s] = 0;
    /* Which messages an op sends/receives: (direction, micro-batch). */
    for (;;) {
        int done = 1, progressed = 0;
        for (int s = 0; s < P; s++) {
            if (pc[s] >= n[s]) continue;
            done = 0;
            const PipelineOp *op = &ops[s][pc[s]];
            int ok = 1;
            /* A receive of activations from s-1 needs s-1 at its matching send. */
            if (op->kind == PIPE_RECV_FORWARD || op->kind == PIPE_SEND_BACKWARD_RECV_FORWARD) {
                const PipelineOp *peer = pc[s - 1] < n[s - 1] ? &ops[s - 1][pc[s - 1]] : NULL;
                ok &= peer && (peer->kind == PIPE_SEND_FORWARD || peer->kind == PIPE_SEND_FORWARD_RECV_BACKWARD) &&
                      peer->mb == op->recv_mb;
            }
            if (op->kind == PIPE_RECV_BACKWARD || op->kind == PIPE_SEND_FORWARD_RECV_BACKWARD) {
                const PipelineOp *peer = pc[s + 1] < n[s + 1] ? &ops[s + 1][pc[s + 1]] : NULL;
                ok &= peer && (peer->kind == PIPE_SEND_BACKWARD || peer->kind == PIPE_SEND_BACKWARD_RECV_FORWARD) &&
                      peer->mb == op->recv_mb;
            }
            if (op->kind == PIPE_SEND_FORWARD) {
                const PipelineOp *peer = pc[s + 1] < n[s + 1] ? &ops[s + 1][pc[s + 1]] : NULL;
                ok &= peer && (peer->kind == PIPE_RECV_FORWARD || peer->kind == PIPE_SEND_BACKWARD_RECV_FORWARD) &&
                      peer->recv_mb == op->mb;
            }
            if (op->kind == PIPE_SEND_BACKWARD) {
                const PipelineOp *peer = pc[s - 1] < n[s - 1] ? &ops[s - 1][pc[s - 1]] : NULL;
                ok &= peer && (peer->kind == PIPE_RECV_BACKWARD || peer->kind == PIPE_SEND_FORWARD_RECV_BACKWARD) &&
                      peer->recv_mb == op->mb;
            }
            if (!ok) continue;
            /* A paired exchange with a pairing peer completes both together. */
            int peer_stage = -1;
            if (op->kind == PIPE_SEND_FORWARD_RECV_BACKWARD) peer_stage = s + 1;
            if (op->kind == PIPE_SEND_BACKWARD_RECV_FORWARD) peer_stage = s - 1;
            if (op->kind == PIPE_SEND_FORWARD || op->kind == PIPE_RECV_BACKWARD) peer_stage = s + 1;
            if (op->kind == PIPE_SEND_BACKWARD || op->kind == PIPE_RECV_FORWARD) peer_stage = s - 1;
            if (peer_stage >= 0) {
                const PipelineOp *peer = &ops[peer_stage][pc[peer_stage]];
                /* The peer's op must be fully satisfied by this one alone, or
                 * itself pair back with this stage. */
                int peer_pairs = peer->kind == PIPE_SEND_FORWARD_RECV_BACKWARD ||
                                 peer->kind == PIPE_SEND_BACKWARD_RECV_FORWARD;
                int mine_pairs = op->kind == PIPE_SEND_FORWARD_RECV_BACKWARD ||
                                 op->kind == PIPE_SEND_BACKWARD_RECV_FORWARD;
                if (peer_pairs != mine_pairs) continue;
                pc[peer_stage]++;
            }
            pc[s]++;
            progressed = 1;
        }
        if (done) return;
        CHECK_MSG(progressed, "P=%d M=%d: the plans deadlock (stage 0 at op %d)", P, M, pc[0]);
    }
}

int main(void) {
    const int cases[][2] = {{4, 8}, {4, 4}, {4, 2}, {4, 1}, {1, 5}, {2, 1}, {2, 2}, {2, 6}, {3, 9}, {8, 3}, {8, 24}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_compute_order(cases[i][0], cases[i][1]);
        simulate(cases[i][0], cases[i][1]);
    }
    /* The first and last stages never talk to a missing neighbour. */
    PipelineOp ops[MAX_OPS];
    int n = pipeline_1f1b_plan(4, 0, 8, ops);
    for (int i = 0; i < n; i++)
        CHECK(ops[i].kind != PIPE_RECV_FORWARD && ops[i].kind != PIPE_SEND_BACKWARD &&
              ops[i].kind != PIPE_SEND_BACKWARD_RECV_FORWARD);
    n = pipeline_1f1b_plan(4, 3, 8, ops);
    for (int i = 0; i < n; i++)
        CHECK(ops[i].kind != PIPE_SEND_FORWARD && ops[i].kind != PIPE_RECV_BACKWARD &&
              ops[i].kind != PIPE_SEND_FORWARD_RECV_BACKWARD);
    /* P = 1 has no exchange at all: F0 B0 F1 B1 ... */
    n = pipeline_1f1b_plan(1, 0, 3, ops);
    CHECK(n == 6);
    for (int i = 0; i < 6; i++) CHECK(ops[i].kind == (i % 2 ? PIPE_BACKWARD : PIPE_FORWARD) && ops[i].mb == i / 2);
    printf("test_pipeline_schedule: ok\n");
    return 0;
}
