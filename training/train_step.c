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
    const int B = t->args->micro_batch_size, T = t->args->model.seq_length;
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
    int num_microbatches;
    double loss_sum;
    float loss_scale;
} StageCtx;

static int slot_of(const Trainer *t, int mb) { return mb % gpt_model_num_slots(t->model); }

static void stage_forward(void *ctx, int mb) {
    StageCtx *c = ctx;
    Trainer *t = c->t;
    const int64_t first = micro_batch_first_sample(t, c->base, mb);
    /* Only the stages that embed tokens or score targets read data. */
    if (t->part.has_embedding || t->part.has_head) load_micro_batch(t, c->ds, first);
    gpt_model_set_first_sample(t->model, slot_of(t, mb), first); /* dropout keys */
    c->loss_sum += gpt_model_stage_forward(t->model, slot_of(t, mb), t->tokens, t->targets);
}

static void stage_backward(void *ctx, int mb) {
    StageCtx *c = ctx;
    /* 1F1B runs the backwards in micro-batch order: the last one makes the
     * gradients final, bucket by bucket. */
    c->t->in_last_backward = mb == c->num_microbatches - 1;
    gpt_model_stage_backward(c->t->model, slot_of(c->t, mb), c->loss_scale);
    c->t->in_last_backward = false;
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
    comm_host_all_reduce(&t->comm, GROUP_PIPELINE, &sum, 1, HOST_F64, REDUCE_SUM);
    comm_host_all_reduce(&t->comm, GROUP_DATA, &sum, 1, HOST_F64, REDUCE_SUM);
    return sum / tokens;
}

/* The stage's copy of the tied word embedding gradient, when the other end
 * of the pipeline holds the other copy (NULL otherwise). */
static float *tied_embedding_grad(Trainer *t, size_t *numel) {
    return gpt_model_tied_embedding_grad(t->model, numel);
}

/* Before the distributed optimizer reduces the bucket [begin, end) over DP,
 * its gradients are completed over the other groups: the partial sums over
 * TP (sequence parallelism's, the QK-norm weights'), and the two copies of
 * the tied word embedding
 * (first and last stage) summed so that they stay identical. */
void trainer_finalize_grads(void *ctx, size_t begin, size_t end) {
    Trainer *t = ctx;
    for (int v = 0; v < t->num_chunks; v++) {
        /* The bucket in chunk v's own buffer coordinates. */
        const size_t base = t->chunk_base[v];
        const size_t lo = begin > base ? begin - base : 0, hi = end > base ? end - base : 0;
        if (hi > lo) gpt_model_reduce_tensor_parallel_partial_grads_in(t->chunks[v], lo, hi);
        size_t numel = 0;
        float *dwte = gpt_model_tied_embedding_grad(t->chunks[v], &numel);
        const size_t at = dwte ? (size_t)(dwte - distrib_optimizer_grad_buffer(t->opt)) : 0;
        if (dwte && at >= begin && at < end)
            comm_all_reduce(&t->comm, GROUP_EMBEDDING, dwte, numel, DTYPE_F32, REDUCE_SUM);
    }
}

static void on_params_needed(void *ctx, size_t begin, size_t end) {
    distrib_optimizer_params_needed(((Trainer *)ctx)->opt, begin, end);
}

static void on_grads_ready(void *ctx, size_t ready_numel) {
    Trainer *t = ctx;
    if (!t->in_last_backward) return;
    /* The tied-embedding sum is a collective with the other end of the
     * pipeline, which is still waiting for this stage's gradients: the
     * buckets from the embedding on wait for the end of the schedule. */
    size_t numel = 0;
    float *dwte = tied_embedding_grad(t, &numel);
    const size_t at = dwte ? (size_t)(dwte - distrib_optimizer_grad_buffer(t->opt)) : ready_numel;
    distrib_optimizer_grads_ready(t->opt, ready_numel < at ? ready_numel : at);
}

GPTBufferHooks trainer_buffer_hooks(Trainer *t) {
    return (GPTBufferHooks){.ctx = t, .params_needed = on_params_needed, .grads_ready = on_grads_ready};
}

void trainer_optimizer_step(Trainer *t, const StepResult *r) {
    distrib_optimizer_set_weight_decay(t->opt, r->weight_decay);
    distrib_optimizer_step(t->opt, r->lr, r->grad_norm);
}

/* ---- interleaved 1F1B: chunk c of micro-batch mb in activation slot mb ---- */

static void chunk_forward(void *ctx, int chunk, int mb) {
    StageCtx *c = ctx;
    Trainer *t = c->t;
    const int64_t first = micro_batch_first_sample(t, c->base, mb);
    const ModelPartition *part = &t->chunk_parts[chunk];
    if (part->has_embedding || part->has_head) load_micro_batch(t, c->ds, first);
    gpt_model_set_first_sample(t->chunks[chunk], mb, first);
    c->loss_sum += gpt_model_stage_forward(t->chunks[chunk], mb, t->tokens, t->targets);
}

static void *chunk_grad_in(const Trainer *t, int chunk, int mb) {
    return t->chunk_grad_in[chunk * t->args->num_microbatches + mb];
}

static void chunk_backward(void *ctx, int chunk, int mb) {
    StageCtx *c = ctx;
    Trainer *t = c->t;
    GPTModel *m = t->chunks[chunk];
    /* The model starts a non-last chunk's backward from its one d(output) buffer. */
    if (!t->chunk_parts[chunk].has_head)
        t->be->ops->copy_device(t->be, gpt_model_stage_output_grad(m), chunk_grad_in(t, chunk, mb),
                                backend_act_bytes(t->be, gpt_model_stage_activation_numel(m)));
    gpt_model_stage_backward(m, mb, c->loss_scale);
}

static void *chunk_input(void *ctx, int chunk, int mb) {
    return gpt_model_stage_input(((StageCtx *)ctx)->t->chunks[chunk], mb);
}
static void *chunk_output(void *ctx, int chunk, int mb) {
    return gpt_model_stage_output(((StageCtx *)ctx)->t->chunks[chunk], mb);
}
static void *chunk_output_grad(void *ctx, int chunk, int mb) {
    return chunk_grad_in(((StageCtx *)ctx)->t, chunk, mb);
}
static void *chunk_input_grad(void *ctx, int chunk, int mb) {
    (void)mb;
    return gpt_model_stage_input_grad(((StageCtx *)ctx)->t->chunks[chunk]);
}

static PipelineChunkFns chunk_fns(StageCtx *c) {
    return (PipelineChunkFns){.ctx = c,
                              .forward = chunk_forward,
                              .backward = chunk_backward,
                              .input_buffer = chunk_input,
                              .output_buffer = chunk_output,
                              .output_grad_buffer = chunk_output_grad,
                              .input_grad_buffer = chunk_input_grad,
                              .numel = gpt_model_stage_activation_numel(c->t->chunks[0]),
                              .dtype = c->t->be->act_dtype};
}

/* The ring's neighbours: the first rank's chunk c + 1 follows the last rank's chunk c. */
static void run_chunk_plan(StageCtx *c, const PipelineChunkOp *ops, int count, FILE *trace) {
    Trainer *t = c->t;
    const PipelineChunkFns fns = chunk_fns(c);
    pipeline_run_chunks(&t->comm, ops, count, &fns, parallel_state_prev_stage_rank(t->ps),
                        parallel_state_next_stage_rank(t->ps), trace);
}

static void run_interleaved(StageCtx *c) {
    Trainer *t = c->t;
    for (int v = 0; v < t->num_chunks; v++) {
        gpt_model_zero_grad(t->chunks[v]);
        gpt_model_set_step(t->chunks[v], t->iteration, true);
    }
    const int V = t->num_chunks, M = c->num_microbatches;
    PipelineChunkOp *ops = xmalloc((size_t)pipeline_interleaved_plan_capacity(V, M) * sizeof *ops);
    const int count = pipeline_interleaved_plan(t->ps->pp_size, V, M, t->ps->pp_rank, ops);
    if (t->trace) fprintf(t->trace, "iteration %lld\n", (long long)(t->iteration + 1));
    run_chunk_plan(c, ops, count, t->trace);
    if (t->trace) fflush(t->trace);
    free(ops);
}

static void evaluate_interleaved(StageCtx *c) {
    Trainer *t = c->t;
    const TrainArgs *a = t->args;
    const int V = t->num_chunks, M = a->num_microbatches;
    for (int v = 0; v < V; v++) gpt_model_set_step(t->chunks[v], t->iteration, false);
    PipelineChunkOp *ops = xmalloc((size_t)pipeline_interleaved_plan_capacity(V, M) * sizeof *ops);
    const int count = pipeline_interleaved_forward_plan(t->ps->pp_size, V, M, t->ps->pp_rank, ops);
    for (int64_t it = 0; it < a->eval_iters; it++) {
        c->base = it * a->global_batch_size;
        run_chunk_plan(c, ops, count, NULL);
    }
    free(ops);
}

/* The schedules are functions of the samples consumed before the step
 * (Megatron's scheduler steps by the batch after each iteration). */
StepResult train_step(Trainer *t) {
    const TrainArgs *a = t->args;
    const int64_t consumed = t->consumed_samples;
    StepResult r = {.global_batch_size = batch_schedule_global_batch(&a->batch, consumed),
                    .lr = optimizer_schedule_lr(&a->schedule, consumed),
                    .weight_decay = optimizer_schedule_wd(&a->schedule, consumed)};
    const int M = r.global_batch_size / (a->micro_batch_size * t->ps->dp_size);
    const double tokens_per_batch = (double)r.global_batch_size * a->model.seq_length;
    StageCtx ctx = {.t = t,
                    .ds = t->train_ds,
                    .base = consumed,
                    .num_microbatches = M,
                    .loss_scale = (float)(1.0 / tokens_per_batch)};
    if (t->num_chunks > 1) {
        run_interleaved(&ctx);
        distrib_optimizer_reduce_grads(t->opt);
        r.loss = global_mean_loss(t, ctx.loss_sum, tokens_per_batch);
        r.grad_norm = distrib_optimizer_grad_norm(t->opt);
        return r;
    }
    gpt_model_zero_grad(t->model);
    gpt_model_set_step(t->model, t->iteration, true);
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
    distrib_optimizer_reduce_grads(t->opt);
    r.loss = global_mean_loss(t, ctx.loss_sum, tokens_per_batch);
    r.grad_norm = distrib_optimizer_grad_norm(t->opt);
    return r;
}

double evaluate(Trainer *t) {
    const TrainArgs *a = t->args;
    StageCtx ctx = {.t = t, .ds = t->valid_ds, .num_microbatches = a->num_microbatches};
    if (t->num_chunks > 1) {
        evaluate_interleaved(&ctx);
        return global_mean_loss(t, ctx.loss_sum,
                                (double)a->eval_iters * a->global_batch_size * a->model.seq_length);
    }
    PipelineStageFns fns = stage_fns(&ctx);
    gpt_model_set_step(t->model, t->iteration, false); /* no dropout */
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
                            (double)a->eval_iters * a->global_batch_size * a->model.seq_length);
}
