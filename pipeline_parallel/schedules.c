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

static void run_op(Comm *comm, const PipelineOp *op, const PipelineStageFns *f, int prev_rank,
                   int next_rank, int *live, int *peak);

void pipeline_run(Comm *comm, const PipelineOp *ops, int count, const PipelineStageFns *f,
                  int prev_rank, int next_rank, FILE *trace, PipelineStats *stats) {
    int live = 0, peak = 0;
    const double origin = timer_now_s();
    for (int k = 0; k < count; k++) {
        const PipelineOp *op = &ops[k];
        const double start = timer_now_s();
        run_op(comm, op, f, prev_rank, next_rank, &live, &peak);
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
    GPT3D_CHECK(live == 0, "pipeline schedule ended with %d micro-batches without backward", live);
    if (stats) stats->peak_live_microbatches = peak;
}

static void run_op(Comm *comm, const PipelineOp *op, const PipelineStageFns *f, int prev_rank,
                   int next_rank, int *live, int *peak) {
    switch (op->kind) {
    case PIPE_FORWARD:
        f->forward(f->ctx, op->mb);
        if (++*live > *peak) *peak = *live;
        break;
    case PIPE_BACKWARD:
        f->backward(f->ctx, op->mb);
        --*live;
        break;
    case PIPE_RECV_FORWARD:
        comm_send_recv(comm, NULL, 0, -1, f->input_buffer(f->ctx, op->mb), f->numel, prev_rank,
                       f->dtype, TAG_ACTIVATION);
        break;
    case PIPE_SEND_FORWARD:
        comm_send_recv(comm, f->output_buffer(f->ctx, op->mb), f->numel, next_rank, NULL, 0, -1,
                       f->dtype, TAG_ACTIVATION);
        break;
    case PIPE_RECV_BACKWARD:
        comm_send_recv(comm, NULL, 0, -1, f->output_grad_buffer(f->ctx, op->mb), f->numel,
                       next_rank, f->dtype, TAG_GRADIENT);
        break;
    case PIPE_SEND_BACKWARD:
        comm_send_recv(comm, f->input_grad_buffer(f->ctx, op->mb), f->numel, prev_rank, NULL, 0, -1,
                       f->dtype, TAG_GRADIENT);
        break;
    case PIPE_SEND_FORWARD_RECV_BACKWARD:
        /* Different tags in the two directions; one exchange with the next stage. */
        comm_send_recv_tagged(comm, f->output_buffer(f->ctx, op->mb), next_rank, TAG_ACTIVATION,
                              f->output_grad_buffer(f->ctx, op->recv_mb), next_rank, TAG_GRADIENT,
                              f->numel, f->dtype);
        break;
    case PIPE_SEND_BACKWARD_RECV_FORWARD:
        comm_send_recv_tagged(comm, f->input_grad_buffer(f->ctx, op->mb), prev_rank, TAG_GRADIENT,
                              f->input_buffer(f->ctx, op->recv_mb), prev_rank, TAG_ACTIVATION,
                              f->numel, f->dtype);
        break;
    }
}
