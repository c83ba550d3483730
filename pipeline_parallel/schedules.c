#include "pipeline_parallel/schedules.h"

#include "core/errors.h"
#include "core/timer.h"

/* Tags keep the activation and gradient streams between two stages apart. */
enum { TAG_ACTIVATION = 101, TAG_GRADIENT = 102 };

const char *pipeline_op_name(PipelineOpKind k) {
    switch (k) {
    case PIPE_RECV_FORWARD: return "RECV_FORWARD";
    case PIPE_FORWARD: return "FORWARD";
    case PIPE_SEND_FORWARD: return "SEND_FORWARD";
    case PIPE_RECV_BACKWARD: return "RECV_BACKWARD";
    case PIPE_BACKWARD: return "BACKWARD";
    case PIPE_SEND_BACKWARD: return "SEND_BACKWARD";
    case PIPE_SEND_FORWARD_RECV_BACKWARD: return "SEND_FORWARD_RECV_BACKWARD";
    case PIPE_SEND_BACKWARD_RECV_FORWARD: return "SEND_BACKWARD_RECV_FORWARD";
    }
    return "?";
}

typedef struct {
    PipelineOp *ops;
    int count;
    int first, last;
} Plan;

static void emit(Plan *p, PipelineOpKind kind, int mb, int recv_mb) {
    /* Drop the sides that have no neighbour. */
    if (p->first && (kind == PIPE_RECV_FORWARD || kind == PIPE_SEND_BACKWARD)) return;
    if (p->last && (kind == PIPE_SEND_FORWARD || kind == PIPE_RECV_BACKWARD)) return;
    if (kind == PIPE_SEND_FORWARD_RECV_BACKWARD && p->last) return;
    if (kind == PIPE_SEND_BACKWARD_RECV_FORWARD && p->first) return;
    p->ops[p->count++] = (PipelineOp){kind, mb, recv_mb};
}

int pipeline_1f1b_plan(int P, int stage, int M, PipelineOp *ops) {
    GPT3D_CHECK(P >= 1 && stage >= 0 && stage < P && M >= 1, "bad 1F1B plan P=%d stage=%d M=%d", P,
                stage, M);
    Plan p = {.ops = ops, .count = 0, .first = stage == 0, .last = stage == P - 1};
    const int warmup = P - stage - 1 < M ? P - stage - 1 : M;
    const int remaining = M - warmup;
    for (int i = 0; i < warmup; i++) {
        emit(&p, PIPE_RECV_FORWARD, i, i);
        emit(&p, PIPE_FORWARD, i, -1);
        emit(&p, PIPE_SEND_FORWARD, i, -1);
    }
    if (remaining > 0) emit(&p, PIPE_RECV_FORWARD, warmup, warmup);
    for (int i = 0; i < remaining; i++) {
        const int fwd = warmup + i;
        emit(&p, PIPE_FORWARD, fwd, -1);
        emit(&p, PIPE_SEND_FORWARD_RECV_BACKWARD, fwd, i);
        emit(&p, PIPE_BACKWARD, i, -1);
        if (i == remaining - 1)
            emit(&p, PIPE_SEND_BACKWARD, i, -1);
        else
            emit(&p, PIPE_SEND_BACKWARD_RECV_FORWARD, i, fwd + 1);
    }
    for (int i = 0; i < warmup; i++) {
        const int mb = remaining + i;
        emit(&p, PIPE_RECV_BACKWARD, mb, mb);
        emit(&p, PIPE_BACKWARD, mb, -1);
        emit(&p, PIPE_SEND_BACKWARD, mb, -1);
    }
    return p.count;
}

/* Sends still in flight, each with the buffer it reads. A stage posts its
 * sends and receives of one operation as one batch, waits for the receives
 * only (what it computes next needs them) and lets the send go on while it
 * computes. A send's buffer must not change before the send completes: the
 * executor waits for it before anything writes that buffer (the forward of
 * a micro-batch in the same output slot, the next backward writing the
 * shared input-gradient buffer, a receive into it), and at the end of the
 * run. Waiting later than the blocking exchange did never adds a wait on a
 * peer, so the plan's deadlock freedom carries over. */
enum { MAX_PENDING_SENDS = 8 };

typedef struct {
    CommHandle handle;
    const void *buf;
} PendingSend;

typedef struct {
    Comm *comm;
    PendingSend sends[MAX_PENDING_SENDS];
    int count;
} Pending;

static void retire(Pending *p, int i) {
    p->sends[i] = p->sends[--p->count];
}

/* Completes every pending send that reads buf (NULL: all of them). */
static void wait_sends_of(Pending *p, const void *buf) {
    for (int i = p->count - 1; i >= 0; i--) {
        if (buf && p->sends[i].buf != buf) continue;
        comm_wait(p->comm, &p->sends[i].handle);
        retire(p, i);
    }
}

/* Drives progress of the sends in flight and forgets the finished ones. */
static void test_sends(Pending *p) {
    for (int i = p->count - 1; i >= 0; i--)
        if (comm_test(p->comm, &p->sends[i].handle)) retire(p, i);
}

/* One operation's exchange: an optional send and an optional receive. */
static void exchange(Pending *p, const void *send_buf, int dest, int send_tag, void *recv_buf,
                     int source, int recv_tag, size_t n, DType t) {
    if (recv_buf) wait_sends_of(p, recv_buf);
    if (send_buf && p->count == MAX_PENDING_SENDS) {
        comm_wait(p->comm, &p->sends[0].handle);
        retire(p, 0);
    }
    CommP2POp ops[2];
    int count = 0;
    if (recv_buf)
        ops[count++] = (CommP2POp){.kind = COMM_P2P_RECV, .buf = recv_buf, .n = n, .peer = source,
                                   .tag = recv_tag, .dtype = t};
    if (send_buf)
        ops[count++] = (CommP2POp){.kind = COMM_P2P_SEND, .buf = (void *)send_buf, .n = n,
                                   .peer = dest, .tag = send_tag, .dtype = t};
    CommHandle h = {0};
    comm_p2p_start(p->comm, ops, count, &h);
    comm_wait_receives(p->comm, &h);
    if (send_buf && comm_handle_active(&h)) {
        p->sends[p->count++] = (PendingSend){.handle = h, .buf = send_buf};
    } else {
        comm_wait(p->comm, &h);
    }
}

static void run_op(Pending *pending, const PipelineOp *op, const PipelineStageFns *f,
                   int prev_rank, int next_rank, int *live, int *peak);


void pipeline_run(Comm *comm, const PipelineOp *ops, int count, const PipelineStageFns *f,
                  int prev_rank, int next_rank, FILE *trace, PipelineStats *stats) {
    int live = 0, peak = 0;
    Pending pending = {.comm = comm, .count = 0};
    const double origin = timer_now_s();
    for (int k = 0; k < count; k++) {
        const PipelineOp *op = &ops[k];
        const double start = timer_now_s();
        run_op(&pending, op, f, prev_rank, next_rank, &live, &peak);
        if (!trace) continue;
        /* Times in seconds since the schedule began: enough to measure the bubble. */
        const double end = timer_now_s();
        if (op->kind == PIPE_SEND_FORWARD_RECV_BACKWARD ||
            op->kind == PIPE_SEND_BACKWARD_RECV_FORWARD)
            fprintf(trace, "%s %d %d %.6f %.6f\n", pipeline_op_name(op->kind), op->mb, op->recv_mb,
                    start - origin, end - origin);
        else
            fprintf(trace, "%s %d %.6f %.6f\n", pipeline_op_name(op->kind), op->mb, start - origin,
                    end - origin);
    }
    wait_sends_of(&pending, NULL);
    GPT3D_CHECK(live == 0, "pipeline schedule ended with %d micro-batches without backward", live);
    if (stats) stats->peak_live_microbatches = peak;
}

static void run_op(Pending *p, const PipelineOp *op, const PipelineStageFns *f, int prev_rank,
                   int next_rank, int *live, int *peak) {
    void *ctx = f->ctx;
    switch (op->kind) {
    case PIPE_FORWARD:
        test_sends(p);
        wait_sends_of(p, f->output_buffer(ctx, op->mb));
        f->forward(ctx, op->mb);
        if (++*live > *peak) *peak = *live;
        break;
    case PIPE_BACKWARD:
        test_sends(p);
        wait_sends_of(p, f->input_grad_buffer(ctx, op->mb));
        f->backward(ctx, op->mb);
        --*live;
        break;
    case PIPE_RECV_FORWARD:
        exchange(p, NULL, -1, 0, f->input_buffer(ctx, op->mb), prev_rank, TAG_ACTIVATION,
                 f->numel, f->dtype);
        break;
    case PIPE_SEND_FORWARD:
        exchange(p, f->output_buffer(ctx, op->mb), next_rank, TAG_ACTIVATION, NULL, -1, 0,
                 f->numel, f->dtype);
        break;
    case PIPE_RECV_BACKWARD:
        exchange(p, NULL, -1, 0, f->output_grad_buffer(ctx, op->mb), next_rank, TAG_GRADIENT,
                 f->numel, f->dtype);
        break;
    case PIPE_SEND_BACKWARD:
        exchange(p, f->input_grad_buffer(ctx, op->mb), prev_rank, TAG_GRADIENT, NULL, -1, 0,
                 f->numel, f->dtype);
        break;
    case PIPE_SEND_FORWARD_RECV_BACKWARD:
        /* Different tags in the two directions; one exchange with the next stage. */
        exchange(p, f->output_buffer(ctx, op->mb), next_rank, TAG_ACTIVATION,
                 f->output_grad_buffer(ctx, op->recv_mb), next_rank, TAG_GRADIENT, f->numel,
                 f->dtype);
        break;
    case PIPE_SEND_BACKWARD_RECV_FORWARD:
        exchange(p, f->input_grad_buffer(ctx, op->mb), prev_rank, TAG_GRADIENT,
                 f->input_buffer(ctx, op->recv_mb), prev_rank, TAG_ACTIVATION, f->numel,
                 f->dtype);
        break;
    }
}

/* ---- the interleaved plan's executor ---- */

int pipeline_exchange_messages(const PipelineChunkOp *op, PipelineMessage *out) {
    const PipelineMessage all[4] = {{true, true, false, op->send_forward},
                                    {true, false, true, op->send_backward},
                                    {false, false, false, op->recv_forward},
                                    {false, true, true, op->recv_backward}};
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (all[i].ref.mb >= 0) out[n++] = all[i];
    return n;
}

static void chunk_exchange(Comm *comm, const PipelineChunkOp *op, const PipelineChunkFns *f,
                           int prev_rank, int next_rank) {
    PipelineMessage msgs[4];
    const int n = pipeline_exchange_messages(op, msgs);
    CommP2POp ops[4];
    for (int i = 0; i < n; i++) {
        const PipelineMessage *m = &msgs[i];
        void *(*buffer)(void *, int, int) =
            m->send ? (m->gradient ? f->input_grad_buffer : f->output_buffer)
                    : (m->gradient ? f->output_grad_buffer : f->input_buffer);
        ops[i] = (CommP2POp){m->send ? COMM_P2P_SEND : COMM_P2P_RECV,
                             buffer(f->ctx, m->ref.chunk, m->ref.mb),
                             f->numel,
                             m->to_next ? next_rank : prev_rank,
                             m->gradient ? TAG_GRADIENT : TAG_ACTIVATION,
                             f->dtype};
    }
    comm_p2p(comm, ops, n);
}

void pipeline_run_chunks(Comm *comm, const PipelineChunkOp *ops, int count,
                         const PipelineChunkFns *f, int prev_rank, int next_rank, FILE *trace) {
    const double origin = timer_now_s();
    for (int k = 0; k < count; k++) {
        const PipelineChunkOp *op = &ops[k];
        const double start = timer_now_s();
        if (op->kind == PIPE_CHUNK_FORWARD) f->forward(f->ctx, op->chunk, op->mb);
        if (op->kind == PIPE_CHUNK_BACKWARD) f->backward(f->ctx, op->chunk, op->mb);
        if (op->kind == PIPE_CHUNK_EXCHANGE) chunk_exchange(comm, op, f, prev_rank, next_rank);
        if (!trace) continue;
        const double end = timer_now_s();
        if (op->kind == PIPE_CHUNK_EXCHANGE)
            fprintf(trace, "EXCHANGE %.6f %.6f\n", start - origin, end - origin);
        else
            fprintf(trace, "%s %d chunk %d %.6f %.6f\n",
                    op->kind == PIPE_CHUNK_FORWARD ? "FORWARD" : "BACKWARD", op->mb, op->chunk,
                    start - origin, end - origin);
    }
}
