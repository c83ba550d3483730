/* One training iteration of a rank: its micro-batches through the pipeline
 * schedule, then the gradient reductions every layout needs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "pipeline_parallel/schedules.h"
#include "training/trainer.h"

/* Fills tokens/targets with B consecutive samples starting at `first`. A
 * failed read must not stop this rank alone (its pipeline and data-parallel
 * peers would wait for it): the first failure's message goes to
 * t->data_error and the sample is zeros, so the schedule completes, and
 * trainer_run agrees on the failure once the step is over. */
static void load_micro_batch(Trainer *t, BlendedDataset *ds, int64_t first) {
    const int B = t->args->micro_batch_size, T = t->args->seq_length;
    char err[1024];
    for (int b = 0; b < B; b++) {
        if (!blended_dataset_get_sample(ds, first + b, t->sample, err, sizeof err)) {
            if (!t->data_error[0])
                snprintf(t->data_error, sizeof t->data_error, "reading %s data: %s",
                         ds == t->valid_ds ? "validation" : "training", err);
            memset(t->sample, 0, (size_t)(T + 1) * sizeof *t->sample);
        }
        memcpy(t->tokens + (size_t)b * T, t->sample, (size_t)T * sizeof(int32_t));
        memcpy(t->targets + (size_t)b * T, t->sample + 1, (size_t)T * sizeof(int32_t));
    }
}

/* First global sample of micro-batch m of this DP rank in a batch that
 * starts at `base` (Megatron's pretraining sampler). */
static int64_t micro_batch_first_sample(const Trainer *t, int64_t base, int m) {
    const int64_t B = t->args->micro_batch_size;
    return base + ((int64_t)m * t->ps->dp_size + t->ps->dp_rank) * B;
}

typedef struct {
    Trainer *t;
    BlendedDataset *ds;
    int64_t base;
    double loss_sum;
    float loss_scale;
} StageCtx;

static int slot_of(const Trainer *t, int mb) { return mb % gpt_model_num_slots(t->model); }

static void stage_forward(void *ctx, int mb) {
    StageCtx *c = ctx;
    Trainer *t = c->t;
    /* Only the stages that embed tokens or score targets read data. */
    if (t->part.has_embedding || t->part.has_head)
        load_micro_batch(t, c->ds, micro_batch_first_sample(t, c->base, mb));
    c->loss_sum += gpt_model_stage_forward(t->model, slot_of(t, mb), t->tokens, t->targets);
}

static void stage_backward(void *ctx, int mb) {
    StageCtx *c = ctx;
    gpt_model_stage_backward(c->t->model, slot_of(c->t, mb), c->loss_scale);
}

static void *input_buffer(void *ctx, int mb) {
    Trainer *t = ((StageCtx *)ctx)->t;
    return gpt_model_stage_input(t->model, slot_of(t, mb));
}
static void *output_buffer(void *ctx, int mb) {
    Trainer *t = ((StageCtx *)ctx)->t;
    return gpt_model_stage_output(t->model, slot_of(t, mb));
}
static void *output_grad_buffer(void *ctx, int mb) {
    (void)mb;
    return gpt_model_stage_output_grad(((StageCtx *)ctx)->t->model);
}
static void *input_grad_buffer(void *ctx, int mb) {
    (void)mb;
    return gpt_model_stage_input_grad(((StageCtx *)ctx)->t->model);
}

static PipelineStageFns stage_fns(StageCtx *c) {
    return (PipelineStageFns){.ctx = c,
                              .forward = stage_forward,
                              .backward = stage_backward,
                              .input_buffer = input_buffer,
                              .output_buffer = output_buffer,
                              .output_grad_buffer = output_grad_buffer,
                              .input_grad_buffer = input_grad_buffer,
                              .numel = gpt_model_stage_activation_numel(c->t->model),
                              .dtype = c->t->be->act_dtype};
}

static int prev_stage(const Trainer *t) {
    return parallel_state_is_first_stage(t->ps) ? -1 : parallel_state_prev_stage_rank(t->ps);
}
static int next_stage(const Trainer *t) {
    return parallel_state_is_last_stage(t->ps) ? -1 : parallel_state_next_stage_rank(t->ps);
}

/* The loss lives on the last stage: every rank gets the mean over the
 * global batch (summed over stages, where only the last is non-zero, and
 * over data-parallel replicas). */
static double global_mean_loss(Trainer *t, double local_sum, double tokens) {
    double sum = local_sum;
    parallel_state_all_reduce(t->ps, t->ps->pp_comm, &sum, 1, MPI_DOUBLE, MPI_SUM);
    parallel_state_all_reduce(t->ps, t->ps->dp_comm, &sum, 1, MPI_DOUBLE, MPI_SUM);
    return sum / tokens;
}

/* ZeRO-1: each DP rank ends with the sum over replicas of its own shard of
 * the gradient buffer (the loss is already scaled by the global token
 * count, so the sum is the global batch's gradient). */
static void reduce_scatter_grads(Trainer *t) {
    if (t->ps->dp_size == 1) return;
    float *grads = gpt_model_grad_buffer(t->model);
    const size_t begin = optimizer_shard_begin(t->opt);
    const size_t n = optimizer_shard_end(t->opt) - begin;
    comm_reduce_scatter(&t->comm, GROUP_DATA, t->grad_shard_scratch, grads, n, DTYPE_F32);
    t->be->ops->copy_device(t->be, grads + begin, t->grad_shard_scratch, n * sizeof(float));
}

void trainer_gather_params(Trainer *t) {
    if (t->ps->dp_size == 1) return;
    void *params = gpt_model_param_buffer(t->model);
    const size_t begin = optimizer_shard_begin(t->opt);
    const size_t n = optimizer_shard_end(t->opt) - begin;
    comm_all_gather(&t->comm, GROUP_DATA, params,
                    (char *)params + backend_act_bytes(t->be, begin), n, t->be->act_dtype);
}

void trainer_optimizer_step(Trainer *t, const StepResult *r) {
    optimizer_step(t->opt, gpt_model_param_buffer(t->model), gpt_model_grad_buffer(t->model), r->lr,
                   r->grad_norm);
    trainer_gather_params(t);
}

StepResult train_step(Trainer *t) {
    const TrainArgs *a = t->args;
    const int M = a->num_microbatches;
    const double tokens_per_batch = (double)a->global_batch_size * a->seq_length;
    StepResult r = {.lr = lr_schedule_lr(&t->sched, t->iteration)};
    gpt_model_zero_grad(t->model);

    StageCtx ctx = {.t = t,
                    .ds = t->train_ds,
                    .base = t->iteration * a->global_batch_size,
                    .loss_scale = (float)(1.0 / tokens_per_batch)};
    PipelineOp *ops = xmalloc((size_t)(6 * M + 2) * sizeof *ops);
    const int count = pipeline_1f1b_plan(t->ps->pp_size, t->ps->pp_rank, M, ops);
    PipelineStageFns fns = stage_fns(&ctx);
    PipelineStats stats;
    if (t->trace) fprintf(t->trace, "iteration %lld\n", (long long)(t->iteration + 1));
    pipeline_run(&t->comm, ops, count, &fns, prev_stage(t), next_stage(t), t->trace, &stats);
    if (t->trace) {
        fprintf(t->trace, "peak_live_microbatches %d\n", stats.peak_live_microbatches);
        fflush(t->trace);
    }
    free(ops);
    r.loss = global_mean_loss(t, ctx.loss_sum, tokens_per_batch);

    gpt_model_reduce_sequence_parallel_grads(t->model);
    /* The two copies of the tied word embedding (first and last stage) get
     * the sum of both gradients, so they stay identical. */
    size_t wte_numel = 0;
    float *dwte = gpt_model_word_embedding_grad(t->model, &wte_numel);
    if (t->ps->pp_size > 1 && dwte)
        comm_all_reduce(&t->comm, GROUP_EMBEDDING, dwte, wte_numel, DTYPE_F32, REDUCE_SUM);
    reduce_scatter_grads(t);
    double sum_squares = optimizer_grad_sum_squares(t->opt, gpt_model_grad_buffer(t->model));
    parallel_state_all_reduce(t->ps, t->ps->world, &sum_squares, 1, MPI_DOUBLE, MPI_SUM);
    r.grad_norm = sqrt(sum_squares);
    return r;
}

double evaluate(Trainer *t) {
    const TrainArgs *a = t->args;
    StageCtx ctx = {.t = t, .ds = t->valid_ds};
    PipelineStageFns fns = stage_fns(&ctx);
    /* Forward only: receive, forward, send, one micro-batch at a time. */
    for (int64_t it = 0; it < a->eval_iters; it++) {
        ctx.base = it * a->global_batch_size;
        for (int m = 0; m < a->num_microbatches; m++) {
            const PipelineOp ops[3] = {{PIPE_RECV_FORWARD, m, m}, {PIPE_FORWARD, m, -1},
                                       {PIPE_SEND_FORWARD, m, -1}};
            const int first = parallel_state_is_first_stage(t->ps);
            const int last = parallel_state_is_last_stage(t->ps);
            for (int k = first ? 1 : 0; k < (last ? 2 : 3); k++) {
                if (ops[k].kind == PIPE_FORWARD) {
                    stage_forward(&ctx, m);
                    continue;
                }
                PipelineStats unused;
                pipeline_run(&t->comm, &ops[k], 1, &fns, prev_stage(t), next_stage(t), NULL, &unused);
            }
        }
    }
    return global_mean_loss(t, ctx.loss_sum,
                            (double)a->eval_iters * a->global_batch_size * a->seq_length);
}
