/* The interleaved 1F1B plan: each rank's compute order is the one Megatron's
 * interleaved schedule defines (written down below from its definition);
 * a rendezvous simulation of all ranks, where a chunk's output goes to the
 * next rank's same chunk and the last rank's chunk c to the first rank's
 * chunk c + 1, completes without deadlock, delivers every message to the
 * chunk and micro-batch that consume it, and never computes before its
 * input arrived; the same simulation runs the forward-only evaluation plan
 * and today's 1F1B plans (one chunk),
 * and it finds the deadlock of a plan broken on purpose (every exchange
 * split into its sends, then its receives). With unit costs (a chunk's
 * forward 1, its backward 2, messages free) the same simulation keeps each
 * rank's clock, and the bubble of every plan is Megatron's analytic one:
 * t_bubble / t_ideal = (P - 1) / (V M), V = 1 for 1F1B. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_parallel/schedules.h"
#include "test_util.h"

#define MAX_RANKS 8

typedef struct {
    char kind; /* 'F' or 'B' */
    int chunk, mb;
} Step;

/* Megatron's forward order: micro-batches in groups of P, each group run
 * through chunk 0, then chunk 1, ...; backward k is forward k's micro-batch
 * in the mirrored chunk. Warmup 2 (P - s - 1) + (V - 1) P forwards (at most
 * all), then one forward and one backward, then the remaining backwards. */
static int definition(int P, int V, int M, int s, Step *out) {
    const int total = V * M;
    Step *fwd = malloc((size_t)total * sizeof *fwd);
    int n = 0;
    for (int group = 0; group < M; group += P)
        for (int c = 0; c < V; c++)
            for (int mb = group; mb < group + P; mb++) fwd[n++] = (Step){'F', c, mb};
    int warmup = 2 * (P - s - 1) + (V - 1) * P;
    if (warmup > total) warmup = total;
    int k = 0, f = 0, b = 0;
    while (f < warmup) out[k++] = fwd[f++];
    while (f < total) {
        out[k++] = fwd[f++];
        out[k++] = (Step){'B', V - 1 - fwd[b].chunk, fwd[b].mb}, b++;
    }
    while (b < total) out[k++] = (Step){'B', V - 1 - fwd[b].chunk, fwd[b].mb}, b++;
    free(fwd);
    return k;
}

static void check_order(int P, int V, int M) {
    PipelineChunkOp *ops = malloc((size_t)pipeline_interleaved_plan_capacity(V, M) * sizeof *ops);
    Step *want = malloc((size_t)(2 * V * M) * sizeof *want);
    for (int s = 0; s < P; s++) {
        const int n = pipeline_interleaved_plan(P, V, M, s, ops);
        CHECK(n <= pipeline_interleaved_plan_capacity(V, M));
        const int w = definition(P, V, M, s, want);
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (ops[i].kind == PIPE_CHUNK_EXCHANGE) continue;
            const char kind = ops[i].kind == PIPE_CHUNK_FORWARD ? 'F' : 'B';
            CHECK_MSG(k < w, "P=%d V=%d M=%d stage %d: more compute steps than %d", P, V, M, s, w);
            CHECK_MSG(kind == want[k].kind && ops[i].chunk == want[k].chunk &&
                          ops[i].mb == want[k].mb,
                      "P=%d V=%d M=%d stage %d step %d: %c(chunk %d, mb %d), want %c(chunk %d, "
                      "mb %d)",
                      P, V, M, s, k, kind, ops[i].chunk, ops[i].mb, want[k].kind, want[k].chunk,
                      want[k].mb);
            k++;
        }
        CHECK_MSG(k == w, "P=%d V=%d M=%d stage %d: %d compute steps, want %d", P, V, M, s, k, w);
    }
    free(ops);
    free(want);
}

/* ---- the rendezvous simulation ---- */

typedef enum { SIM_OK, SIM_DEADLOCK, SIM_WRONG_MESSAGE, SIM_EARLY_COMPUTE } SimResult;

/* How a message moves the clocks. RENDEZVOUS: an exchange ends when every
 * peer of its messages has reached its own exchange (the executor's
 * blocking batched p2p, sends included). DATAFLOW: exchanges take no time
 * and a compute starts when its rank is free and its input has left the
 * neighbour (the timeline the analytic bubble assumes). */
typedef enum { CLOCK_RENDEZVOUS, CLOCK_DATAFLOW } SimClock;

enum { FORWARD_COST = 1, BACKWARD_COST = 2 };

typedef struct {
    int makespan;      /* the whole schedule's end; every rank starts at 0 */
    int last_rank_end; /* the end of the last rank's last compute */
} Timeline;

typedef struct {
    int P, V, M;
    bool forward_only; /* an evaluation plan: no backward expected */
    PipelineChunkOp *ops[MAX_RANKS];
    int n[MAX_RANKS], pc[MAX_RANKS];
    /* Parts of the head exchange already matched: send F, send B, recv F, recv B. */
    bool done[MAX_RANKS][4];
    /* Per rank, chunk and micro-batch: forward / backward computed, input /
     * output gradient arrived. */
    bool *forwarded, *backwarded, *have_input, *have_grad;
    SimClock clock;
    int now[MAX_RANKS];          /* when the rank is free */
    int exchange_end[MAX_RANKS]; /* RENDEZVOUS: when its head exchange may end */
    int compute_end[MAX_RANKS];
    int *input_sent, *grad_sent; /* when each received tensor left its sender */
} Sim;

static int max_int(int a, int b) { return a > b ? a : b; }

static int at(const Sim *s, int r, int c, int mb) { return (r * s->V + c) * s->M + mb; }

static PipelineChunkOp *head(Sim *s, int r) { return s->pc[r] < s->n[r] ? &s->ops[r][s->pc[r]] : NULL; }

/* Rank `from` sends to `to` at its clock: in a rendezvous both exchanges
 * last until the later of the two ranks has arrived. */
static int time_message(Sim *s, int from, int to) {
    if (s->clock == CLOCK_RENDEZVOUS) {
        const int meet = max_int(s->now[from], s->now[to]);
        s->exchange_end[from] = max_int(s->exchange_end[from], meet);
        s->exchange_end[to] = max_int(s->exchange_end[to], meet);
    }
    return s->now[from];
}

/* Rank r's pending send of `part` (0 forward, 1 backward) meets the peer's
 * pending receive on the same stream. Returns false when not now; sets
 * *result on a wrong delivery. */
static bool match(Sim *s, int r, int part, SimResult *result) {
    const PipelineChunkOp *op = head(s, r);
    const PipelineTensorRef sent = part == 0 ? op->send_forward : op->send_backward;
    if (sent.mb < 0 || s->done[r][part]) return false;
    const int peer = part == 0 ? (r + 1) % s->P : (r + s->P - 1) % s->P;
    PipelineChunkOp *other = head(s, peer);
    if (!other || other->kind != PIPE_CHUNK_EXCHANGE || s->done[peer][2 + part]) return false;
    const PipelineTensorRef got = part == 0 ? other->recv_forward : other->recv_backward;
    if (got.mb < 0) return false;
    /* Across the wrap the data moves to the next (forward) or previous
     * (backward) chunk. */
    int chunk = sent.chunk;
    if (part == 0 && r == s->P - 1) chunk++;
    if (part == 1 && r == 0) chunk--;
    if (got.chunk != chunk || got.mb != sent.mb) {
        fprintf(stderr, "rank %d sends %s (chunk %d, mb %d) to rank %d, which expects (chunk %d, "
                        "mb %d)\n",
                r, part == 0 ? "an activation" : "a gradient", sent.chunk, sent.mb, peer,
                got.chunk, got.mb);
        *result = SIM_WRONG_MESSAGE;
        return false;
    }
    s->done[r][part] = s->done[peer][2 + part] = true;
    const int i = at(s, peer, got.chunk, got.mb);
    (part == 0 ? s->have_input : s->have_grad)[i] = true;
    (part == 0 ? s->input_sent : s->grad_sent)[i] = time_message(s, r, peer);
    return true;
}

static bool exchange_complete(const Sim *s, int r, const PipelineChunkOp *op) {
    const PipelineTensorRef parts[4] = {op->send_forward, op->send_backward, op->recv_forward,
                                        op->recv_backward};
    for (int i = 0; i < 4; i++)
        if (parts[i].mb >= 0 && !s->done[r][i]) return false;
    return true;
}

/* `input_sent`: when the step's input left its sender (0 for none). */
static void time_compute(Sim *s, int r, int input_sent, int cost) {
    if (s->clock == CLOCK_DATAFLOW) s->now[r] = max_int(s->now[r], input_sent);
    s->now[r] += cost;
    s->compute_end[r] = s->now[r];
}

/* Computes rank r's head step if its inputs are there. */
static SimResult compute(Sim *s, int r, const PipelineChunkOp *op) {
    const int i = at(s, r, op->chunk, op->mb);
    if (op->kind == PIPE_CHUNK_FORWARD) {
        const bool embeds = r == 0 && op->chunk == 0;
        if (!embeds && !s->have_input[i]) return SIM_EARLY_COMPUTE;
        s->forwarded[i] = true;
        time_compute(s, r, embeds ? 0 : s->input_sent[i], FORWARD_COST);
    } else {
        const bool scores = r == s->P - 1 && op->chunk == s->V - 1;
        if (!s->forwarded[i] || (!scores && !s->have_grad[i])) return SIM_EARLY_COMPUTE;
        s->backwarded[i] = true;
        time_compute(s, r, scores ? 0 : s->grad_sent[i], BACKWARD_COST);
    }
    return SIM_OK;
}

/* A send reads a tensor its rank must already have computed. */
static bool sends_computed(const Sim *s, int r, const PipelineChunkOp *op) {
    if (op->send_forward.mb >= 0 && !s->forwarded[at(s, r, op->send_forward.chunk, op->send_forward.mb)])
        return false;
    if (op->send_backward.mb >= 0 &&
        !s->backwarded[at(s, r, op->send_backward.chunk, op->send_backward.mb)])
        return false;
    return true;
}

static SimResult advance(Sim *s, int r, bool *progressed) {
    PipelineChunkOp *op = head(s, r);
    if (op->kind != PIPE_CHUNK_EXCHANGE) {
        const SimResult c = compute(s, r, op);
        if (c != SIM_OK) return c;
        s->pc[r]++;
        *progressed = true;
        return SIM_OK;
    }
    if (!sends_computed(s, r, op)) return SIM_EARLY_COMPUTE;
    SimResult result = SIM_OK;
    for (int part = 0; part < 2; part++)
        if (match(s, r, part, &result)) *progressed = true;
    return result;
}

/* Retires every exchange whose parts have all been matched. */
static void retire(Sim *s, bool *progressed) {
    for (int r = 0; r < s->P; r++) {
        const PipelineChunkOp *op = head(s, r);
        if (!op || op->kind != PIPE_CHUNK_EXCHANGE || !exchange_complete(s, r, op)) continue;
        memset(s->done[r], 0, sizeof s->done[r]);
        s->now[r] = max_int(s->now[r], s->exchange_end[r]);
        s->exchange_end[r] = 0;
        s->pc[r]++;
        *progressed = true;
    }
}

static SimResult run_sim(Sim *s) {
    for (;;) {
        bool all_done = true, progressed = false;
        for (int r = 0; r < s->P; r++) {
            if (!head(s, r)) continue;
            all_done = false;
            /* A rank's data arrives only in its own earlier exchanges: a
             * compute (or send) without it is a broken plan, not a wait. */
            const SimResult res = advance(s, r, &progressed);
            if (res != SIM_OK) return res;
        }
        retire(s, &progressed);
        if (all_done) break;
        if (!progressed) return SIM_DEADLOCK;
    }
    for (int i = 0; i < s->P * s->V * s->M; i++)
        if (!s->forwarded[i] || (!s->forward_only && !s->backwarded[i])) return SIM_EARLY_COMPUTE;
    return SIM_OK;
}

static void sim_init(Sim *s, int P, int V, int M, SimClock clock) {
    memset(s, 0, sizeof *s);
    s->P = P, s->V = V, s->M = M, s->clock = clock;
    const size_t cells = (size_t)(P * V * M);
    s->forwarded = calloc(cells, 1), s->backwarded = calloc(cells, 1);
    s->have_input = calloc(cells, 1), s->have_grad = calloc(cells, 1);
    s->input_sent = calloc(cells, sizeof(int)), s->grad_sent = calloc(cells, sizeof(int));
    for (int r = 0; r < P; r++)
        s->ops[r] = malloc((size_t)(2 * pipeline_interleaved_plan_capacity(V, M)) * sizeof(PipelineChunkOp));
}

static Timeline sim_timeline(const Sim *s) {
    Timeline t = {.makespan = 0, .last_rank_end = s->compute_end[s->P - 1]};
    for (int r = 0; r < s->P; r++) t.makespan = max_int(t.makespan, s->now[r]);
    return t;
}

static void sim_free(Sim *s) {
    for (int r = 0; r < s->P; r++) free(s->ops[r]);
    free(s->forwarded), free(s->backwarded), free(s->have_input), free(s->have_grad);
    free(s->input_sent), free(s->grad_sent);
}

static SimResult simulate_interleaved(int P, int V, int M, bool split_exchanges, SimClock clock,
                                     Timeline *t) {
    Sim s;
    sim_init(&s, P, V, M, clock);
    for (int r = 0; r < P; r++) {
        s.n[r] = pipeline_interleaved_plan(P, V, M, r, s.ops[r]);
        if (!split_exchanges) continue;
        /* The broken plan: each exchange becomes its sends, then its receives. */
        PipelineChunkOp *split = malloc((size_t)(2 * s.n[r]) * sizeof *split);
        int n = 0;
        for (int i = 0; i < s.n[r]; i++) {
            PipelineChunkOp op = s.ops[r][i];
            if (op.kind != PIPE_CHUNK_EXCHANGE) {
                split[n++] = op;
                continue;
            }
            PipelineChunkOp sends = op, receives = op;
            sends.recv_forward.mb = sends.recv_backward.mb = -1;
            receives.send_forward.mb = receives.send_backward.mb = -1;
            if (sends.send_forward.mb >= 0 || sends.send_backward.mb >= 0) split[n++] = sends;
            if (receives.recv_forward.mb >= 0 || receives.recv_backward.mb >= 0) split[n++] = receives;
        }
        memcpy(s.ops[r], split, (size_t)n * sizeof *split);
        s.n[r] = n;
        free(split);
    }
    const SimResult res = run_sim(&s);
    if (t) *t = sim_timeline(&s);
    sim_free(&s);
    return res;
}

/* The evaluation plan: forward only, each micro-batch through every chunk. */
static SimResult simulate_forward_only(int P, int V, int M) {
    Sim s;
    sim_init(&s, P, V, M, CLOCK_RENDEZVOUS);
    s.forward_only = true;
    for (int r = 0; r < P; r++) {
        s.n[r] = pipeline_interleaved_forward_plan(P, V, M, r, s.ops[r]);
        CHECK(s.n[r] <= pipeline_interleaved_plan_capacity(V, M));
    }
    const SimResult res = run_sim(&s);
    sim_free(&s);
    return res;
}

/* Today's 1F1B plan in the same terms: one chunk. */
static int from_1f1b(const PipelineOp *in, int n, PipelineChunkOp *out) {
    const PipelineTensorRef none = {-1, -1};
    int k = 0;
    for (int i = 0; i < n; i++) {
        PipelineChunkOp op = {.kind = PIPE_CHUNK_EXCHANGE, .chunk = 0, .mb = in[i].mb,
                              .send_forward = none, .send_backward = none,
                              .recv_forward = none, .recv_backward = none};
        const PipelineTensorRef mine = {0, in[i].mb}, theirs = {0, in[i].recv_mb};
        switch (in[i].kind) {
        case PIPE_FORWARD: op.kind = PIPE_CHUNK_FORWARD; break;
        case PIPE_BACKWARD: op.kind = PIPE_CHUNK_BACKWARD; break;
        case PIPE_RECV_FORWARD: op.recv_forward = theirs; break;
        case PIPE_SEND_FORWARD: op.send_forward = mine; break;
        case PIPE_RECV_BACKWARD: op.recv_backward = theirs; break;
        case PIPE_SEND_BACKWARD: op.send_backward = mine; break;
        case PIPE_SEND_FORWARD_RECV_BACKWARD: op.send_forward = mine, op.recv_backward = theirs; break;
        case PIPE_SEND_BACKWARD_RECV_FORWARD: op.send_backward = mine, op.recv_forward = theirs; break;
        }
        out[k++] = op;
    }
    return k;
}

static SimResult simulate_1f1b(int P, int M, SimClock clock, Timeline *t) {
    Sim s;
    sim_init(&s, P, 1, M, clock);
    PipelineOp *ops = malloc((size_t)(6 * M + 2) * sizeof *ops);
    for (int r = 0; r < P; r++) s.n[r] = from_1f1b(ops, pipeline_1f1b_plan(P, r, M, ops), s.ops[r]);
    free(ops);
    const SimResult res = run_sim(&s);
    if (t) *t = sim_timeline(&s);
    sim_free(&s);
    return res;
}

/* Megatron's bubble fraction is t_bubble / t_ideal, t_ideal being a rank's
 * own compute, V M (forward + backward), and t_bubble the rest of the
 * schedule's span: (P - 1) / (V M) means t_bubble = (P - 1) (forward +
 * backward), whatever V. Compared cross-multiplied, so exactly. The last
 * rank waits only for its first input to cross the P - 1 ranks before it
 * (one forward each) and is busy from then to its last backward, so over
 * its own span (what the bench measures from its trace) it idles
 * P - 1 forwards; the rest of the bubble falls after its last backward,
 * while that gradient crosses back to the first rank. */
static void check_bubble(const char *plan, int P, int V, int M, SimClock clock, const Timeline *t) {
    const char *how = clock == CLOCK_RENDEZVOUS ? "rendezvous" : "dataflow";
    const int ideal = V * M * (FORWARD_COST + BACKWARD_COST), bubble = t->makespan - ideal;
    CHECK_MSG(bubble * V * M == (P - 1) * ideal,
              "%s P=%d V=%d M=%d (%s): t_bubble / t_ideal = %d / %d, want (P-1)/(VM) = %d / %d",
              plan, P, V, M, how, bubble, ideal, P - 1, V * M);
    CHECK_MSG(t->last_rank_end - ideal == (P - 1) * FORWARD_COST,
              "%s P=%d V=%d M=%d (%s): the last rank idles %d of its span %d, want %d", plan, P,
              V, M, how, t->last_rank_end - ideal, t->last_rank_end, (P - 1) * FORWARD_COST);
}

/* ---- the order of messages between two ranks ----
 * NCCL pairs a rank's sends to a peer with the peer's receives from it in
 * the order they are posted, tags ignored. So for every rank a and neighbour
 * b, the messages a sends b (pipeline_exchange_messages' order, exchange
 * after exchange) must be the messages b receives from a, one for one: the
 * same stream and micro-batch, and the chunk the routing rule sends it to
 * (activations of chunk c to the next rank's chunk c, or from the last rank
 * to the first rank's chunk c + 1; gradients back the same way). At P = 2
 * both streams run between the one pair of ranks in both directions. */
typedef struct {
    bool gradient;
    int chunk, mb; /* sender: the producing chunk; receiver: the consuming chunk */
} Wire;

enum { MAX_WIRE = 4 * 4 * 4 * MAX_RANKS * 4 };

static int peer_of(int rank, bool to_next, int P) { return (rank + (to_next ? 1 : P - 1)) % P; }

/* The messages between from -> to of a rank's plan, sent (as_sender) or received. */
static int wire_sequence(const PipelineChunkOp *ops, int n, int rank, int other, int P,
                         bool as_sender, Wire *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (ops[i].kind != PIPE_CHUNK_EXCHANGE) continue;
        PipelineMessage m[4];
        const int count = pipeline_exchange_messages(&ops[i], m);
        for (int j = 0; j < count; j++) {
            if (m[j].send != as_sender || peer_of(rank, m[j].to_next, P) != other) continue;
            CHECK(k < MAX_WIRE);
            out[k++] = (Wire){m[j].gradient, m[j].ref.chunk, m[j].ref.mb};
        }
    }
    return k;
}

/* Where a message sent by chunk c of rank `from` is consumed. */
static int consuming_chunk(const Wire *w, int from, int P) {
    if (!w->gradient) return from == P - 1 ? w->chunk + 1 : w->chunk;
    return from == 0 ? w->chunk - 1 : w->chunk;
}

static void check_message_pairing(int P, int V, int M, bool forward_only) {
    PipelineChunkOp *ops[MAX_RANKS];
    int n[MAX_RANKS];
    for (int r = 0; r < P; r++) {
        ops[r] = malloc((size_t)pipeline_interleaved_plan_capacity(V, M) * sizeof *ops[r]);
        CHECK(ops[r] != NULL);
        n[r] = forward_only ? pipeline_interleaved_forward_plan(P, V, M, r, ops[r])
                            : pipeline_interleaved_plan(P, V, M, r, ops[r]);
    }
    static Wire sent[MAX_WIRE], received[MAX_WIRE];
    for (int a = 0; a < P; a++)
        for (int side = 0; side < 2; side++) {
            const int b = peer_of(a, side == 0, P);
            if (side == 1 && b == peer_of(a, true, P)) continue; /* P = 2: one neighbour */
            const int ns = wire_sequence(ops[a], n[a], a, b, P, true, sent);
            const int nr = wire_sequence(ops[b], n[b], b, a, P, false, received);
            CHECK_MSG(ns == nr, "P=%d V=%d M=%d%s: rank %d sends %d messages to rank %d, which "
                      "receives %d", P, V, M, forward_only ? " forward only" : "", a, ns, b, nr);
            for (int i = 0; i < ns; i++)
                CHECK_MSG(sent[i].gradient == received[i].gradient && sent[i].mb == received[i].mb &&
                              consuming_chunk(&sent[i], a, P) == received[i].chunk,
                          "P=%d V=%d M=%d%s: message %d from rank %d to %d is %s mb %d of chunk %d, "
                          "received as %s mb %d for chunk %d",
                          P, V, M, forward_only ? " forward only" : "", i, a, b,
                          sent[i].gradient ? "gradient" : "activation", sent[i].mb, sent[i].chunk,
                          received[i].gradient ? "gradient" : "activation", received[i].mb,
                          received[i].chunk);
        }
    for (int r = 0; r < P; r++) free(ops[r]);
}

int main(void) {
    int cases = 0;
    for (int P = 2; P <= MAX_RANKS; P++)
        for (int V = 1; V <= 4; V++)
            for (int M = P; M <= 4 * P; M += P) {
                check_order(P, V, M);
                for (SimClock c = CLOCK_RENDEZVOUS; c <= CLOCK_DATAFLOW; c++) {
                    Timeline t;
                    const SimResult r = simulate_interleaved(P, V, M, false, c, &t);
                    CHECK_MSG(r == SIM_OK, "P=%d V=%d M=%d: simulation result %d", P, V, M, r);
                    check_bubble("interleaved", P, V, M, c, &t);
                }
                const SimResult e = simulate_forward_only(P, V, M);
                CHECK_MSG(e == SIM_OK, "P=%d V=%d M=%d forward only: simulation result %d", P, V, M, e);
                check_message_pairing(P, V, M, false);
                check_message_pairing(P, V, M, true);
                cases++;
            }
    /* Hand-worked: P = 2, V = 2, M = 4, rank 0 warms up 2 + 2 = 4 forwards:
     * F(c0 m0) F(c0 m1) F(c1 m0) F(c1 m1), then F(c0 m2) B(c1 m0) ... */
    Step order[32];
    CHECK(definition(2, 2, 4, 0, order) == 16);
    CHECK(order[3].kind == 'F' && order[3].chunk == 1 && order[3].mb == 1);
    CHECK(order[4].kind == 'F' && order[4].chunk == 0 && order[4].mb == 2);
    CHECK(order[5].kind == 'B' && order[5].chunk == 1 && order[5].mb == 0);
    /* The same simulation accepts the 1F1B plans, with their bubble (for
     * M < P too: warmup is then all of M)... */
    for (int P = 1; P <= MAX_RANKS; P++)
        for (int M = 1; M <= 3 * P + 1; M++)
            for (SimClock c = CLOCK_RENDEZVOUS; c <= CLOCK_DATAFLOW; c++) {
                Timeline t;
                CHECK_MSG(simulate_1f1b(P, M, c, &t) == SIM_OK, "1F1B P=%d M=%d deadlocks", P, M);
                check_bubble("1F1B", P, 1, M, c, &t);
            }
    /* ...and finds the deadlock of exchanges split into sends, then receives
     * (every rank blocks in its send while its peer does too). */
    const int broken[][3] = {{2, 2, 4}, {4, 2, 8}, {3, 3, 6}, {8, 2, 16}};
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++)
        CHECK_MSG(simulate_interleaved(broken[i][0], broken[i][1], broken[i][2], true,
                                       CLOCK_RENDEZVOUS, NULL) == SIM_DEADLOCK,
                  "the split plan P=%d V=%d M=%d was not found to deadlock", broken[i][0],
                  broken[i][1], broken[i][2]);
    printf("test_pipeline_interleaved: ok (%d plans)\n", cases);
    return 0;
}
