/* One training iteration of a rank: its micro-batches through the pipeline
 * schedule, then the gradient reductions every layout needs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "pipeline_parallel/schedules.h"
#include "training/trainer.h"

/* Fills tokens/targets with B consecutive samples starting at `first`, and
 * with document masking on the position ids and key starts; returns how
 * many targets are in the loss. A
 * failed read must not stop this rank alone (its pipeline and data-parallel
 * peers would wait for it): the first failure's message goes to
 * t->data_error and the sample is zeros, so the schedule completes, and
 * trainer_run agrees on the failure once the step is over. */
static int load_micro_batch(Trainer *t, BlendedDataset *ds, int64_t first) {
    const int B = t->args->micro_batch_size, T = t->args->model.seq_length;
    const bool masking = document_masking_on(&t->documents);
    int kept = 0;
    char err[1024];
    for (int b = 0; b < B; b++) {
        if (!blended_dataset_get_sample(ds, first + b, t->sample, err, sizeof err)) {
            if (!t->data_error[0])
                snprintf(t->data_error, sizeof t->data_error, "reading %s data: %s",
                         ds == t->valid_ds  ? "validation"
                         : ds == t->test_ds ? "test"
                                            : "training",
                         err);
            memset(t->sample, 0, (size_t)(T + 1) * sizeof *t->sample);
        }
        memcpy(t->tokens + (size_t)b * T, t->sample, (size_t)T * sizeof(int32_t));
        memcpy(t->targets + (size_t)b * T, t->sample + 1, (size_t)T * sizeof(int32_t));
        const size_t row = (size_t)b * T;
        kept += masking ? document_masks_apply(&t->documents, t->tokens + row, t->targets + row, T,
                                               t->position_ids + row, t->key_start + row)
                        : T;
    }
    return kept;
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
    double loss_tokens; /* targets in the loss so far (last stage) */
    /* d(loss)/d(token loss) of each micro-batch: 1 / (its tokens in the
     * loss x micro-batches x DP), Megatron's per-micro-batch mean; NULL in
     * evaluation (no backward). */
    float *loss_scale;
    /* --calculate-per-token-loss: 1 / (tokens in the loss of the global
     * batch), every micro-batch's scale; 0 for per-micro-batch means. */
    double global_token_scale;
    float grad_scale; /* the loss scale, multiplying every backward's seed */
} StageCtx;

static int slot_of(const Trainer *t, int mb) { return mb % gpt_model_num_slots(t->model); }

/* Micro-batch mb through model m (a stage, or one chunk of it) in `slot`. */
static void forward_micro_batch(StageCtx *c, GPTModel *m, const ModelPartition *part, int slot,
                                int mb) {
    Trainer *t = c->t;
    const int64_t first = micro_batch_first_sample(t, c->base, mb);
    const bool masking = document_masking_on(&t->documents);
    /* Only the stages that embed tokens or score targets read data, and
     * with document masking every stage (its attention needs the documents). */
    int kept = 0;
    if (part->has_embedding || part->has_head || masking) kept = load_micro_batch(t, c->ds, first);
    gpt_model_set_first_sample(m, slot, first); /* dropout keys */
    if (masking)
        gpt_model_set_documents(m, slot, t->documents.reset_position_ids ? t->position_ids : NULL,
                                t->documents.reset_attention_mask ? t->key_start : NULL);
    c->loss_sum += gpt_model_stage_forward(m, slot, t->tokens, t->targets);
    if (!part->has_head) return;
    c->loss_tokens += kept;
    if (c->loss_scale && c->global_token_scale > 0)
        c->loss_scale[mb] = (float)c->global_token_scale;
    else if (c->loss_scale) /* an all-masked micro-batch counts as one token (Megatron's clamp) */
        c->loss_scale[mb] = (float)(1.0 / ((double)(kept > 0 ? kept : 1) * c->num_microbatches *
                                           t->ps->dp_size));
}

/* d(loss)/d(token loss) of mb where the loss is computed (unused elsewhere). */
static float backward_scale(const StageCtx *c, const ModelPartition *part, int mb) {
    return part->has_head ? c->loss_scale[mb] * c->grad_scale : 0.0f;
}

static void stage_forward(void *ctx, int mb) {
    StageCtx *c = ctx;
    forward_micro_batch(c, c->t->model, &c->t->part, slot_of(c->t, mb), mb);
}

static void stage_backward(void *ctx, int mb) {
    StageCtx *c = ctx;
    /* 1F1B runs the backwards in micro-batch order: the last one makes the
     * gradients final, bucket by bucket. */
    c->t->in_last_backward = mb == c->num_microbatches - 1;
    gpt_model_stage_backward(c->t->model, slot_of(c->t, mb), backward_scale(c, &c->t->part, mb));
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
 * tokens in the loss of the global batch (sums and counts over stages,
 * where only the last is non-zero, and over data-parallel replicas). Each
 * context-parallel rank has the loss of its rows but counted the tokens
 * of whole sequences, so only the loss is summed over CP. */
static double global_mean_loss(Trainer *t, const StageCtx *c) {
    double sums[2] = {c->loss_sum, c->loss_tokens};
    comm_host_all_reduce(&t->comm, GROUP_CONTEXT, sums, 1, HOST_F64, REDUCE_SUM);
    comm_host_all_reduce(&t->comm, GROUP_PIPELINE, sums, 2, HOST_F64, REDUCE_SUM);
    comm_host_all_reduce(&t->comm, GROUP_DATA, sums, 2, HOST_F64, REDUCE_SUM);
    return sums[0] / (sums[1] > 0 ? sums[1] : 1.0);
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
    const struct ChunkHooks *h = ctx;
    const size_t base = h->t->chunk_base[h->chunk];
    distrib_optimizer_params_needed(h->t->opt, base + begin, base + end);
}

/* Where the first copy of the tied word-embedding gradient lies in the
 * joint buffer when the other end of the pipeline holds the other copy
 * (SIZE_MAX: no such copy on this rank). */
static size_t tied_grad_offset(const Trainer *t) {
    size_t at = SIZE_MAX;
    for (int v = 0; v < t->num_chunks; v++) {
        size_t numel = 0;
        const float *dwte = gpt_model_tied_embedding_grad(t->chunks[v], &numel);
        const size_t o = dwte ? (size_t)(dwte - distrib_optimizer_grad_buffer(t->opt)) : SIZE_MAX;
        if (o < at) at = o;
    }
    return at;
}

static void on_grads_ready(void *ctx, size_t ready_numel) {
    const struct ChunkHooks *h = ctx;
    Trainer *t = h->t;
    if (!t->in_last_backward) return;
    /* The later chunks lie before this one and are final already. */
    const size_t ready = t->chunk_base[h->chunk] + ready_numel;
    /* The tied-embedding sum is a collective with the other end of the
     * pipeline, which is still waiting for this stage's gradients: the
     * buckets from the embedding on wait for the end of the schedule. */
    const size_t at = tied_grad_offset(t);
    distrib_optimizer_grads_ready(t->opt, ready < at ? ready : at);
}

void trainer_set_buffer_hooks(Trainer *t) {
    t->chunk_hooks = xcalloc((size_t)t->num_chunks, sizeof *t->chunk_hooks);
    for (int v = 0; v < t->num_chunks; v++) {
        t->chunk_hooks[v] = (struct ChunkHooks){.t = t, .chunk = v};
        const GPTBufferHooks hooks = {.ctx = &t->chunk_hooks[v],
                                      .params_needed = on_params_needed,
                                      .grads_ready = on_grads_ready};
        gpt_model_set_buffer_hooks(t->chunks[v], &hooks);
    }
}

void trainer_optimizer_step(Trainer *t, const StepResult *r) {
    distrib_optimizer_set_weight_decay(t->opt, r->weight_decay);
    distrib_optimizer_set_embedding_lr(t->opt, r->embedding_lr);
    distrib_optimizer_step(t->opt, r->lr, r->grad_norm, r->loss_scale);
}

/* --calculate-per-token-loss: 1 / (tokens in the loss of the whole global
 * batch), which the last stage needs before its first backward; its ranks
 * count their micro-batches' kept targets (one extra read of their samples)
 * and sum over DP. Without a loss mask that is the batch's token count, and
 * 0 (per-micro-batch means, the same numbers) is returned. */
static double global_token_scale(Trainer *t, int64_t base, int M) {
    if (!t->args->calculate_per_token_loss || !t->documents.eod_mask_loss ||
        !parallel_state_is_last_stage(t->ps))
        return 0.0;
    double kept = 0.0;
    for (int m = 0; m < M; m++)
        kept += load_micro_batch(t, t->train_ds, micro_batch_first_sample(t, base, m));
    comm_host_all_reduce(&t->comm, GROUP_DATA, &kept, 1, HOST_F64, REDUCE_SUM);
    return 1.0 / (kept > 0 ? kept : 1.0);
}

/* ---- interleaved 1F1B: chunk c of micro-batch mb in activation slot mb ---- */

static void chunk_forward(void *ctx, int chunk, int mb) {
    StageCtx *c = ctx;
    forward_micro_batch(c, c->t->chunks[chunk], &c->t->chunk_parts[chunk], mb, mb);
}

static void *chunk_grad_in(const Trainer *t, int chunk, int mb) {
    return t->chunk_grad_in[chunk * t->args->num_microbatches + mb];
}

static void chunk_backward(void *ctx, int chunk, int mb) {
    StageCtx *c = ctx;
    Trainer *t = c->t;
    GPTModel *m = t->chunks[chunk];
    /* A chunk's last backward of the iteration makes its gradients final. */
    t->in_last_backward = mb == c->num_microbatches - 1;
    /* The model starts a non-last chunk's backward from its one d(output) buffer. */
    if (!t->chunk_parts[chunk].has_head)
        t->be->ops->copy_device(t->be, gpt_model_stage_output_grad(m), chunk_grad_in(t, chunk, mb),
                                backend_act_bytes(t->be, gpt_model_stage_activation_numel(m)));
    gpt_model_stage_backward(m, mb, backward_scale(c, &t->chunk_parts[chunk], mb));
    t->in_last_backward = false;
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

/* Each MoE loss term enters the objective once per micro-batch and layer,
 * weighted by one over the global batch's M x DP micro-batches (Megatron's
 * scaling: the mean over micro-batches). */
static void start_moe_step(Trainer *t, int M, double loss_scale) {
    double discard[3];
    for (int v = 0; v < t->num_chunks; v++) {
        gpt_model_set_moe_loss_scale(t->chunks[v], loss_scale / ((double)M * t->ps->dp_size));
        gpt_model_take_moe_stats(t->chunks[v], discard);
    }
}

/* The MoE terms of the whole model: summed over stages and replicas
 * (every TP and CP rank of a stage holds the same sums). */
static void finish_moe_step(Trainer *t, int M, StepResult *r) {
    if (t->cfg.num_experts == 0) return;
    double sums[3] = {0, 0, 0};
    for (int v = 0; v < t->num_chunks; v++) {
        double s[3];
        gpt_model_take_moe_stats(t->chunks[v], s);
        for (int i = 0; i < 3; i++) sums[i] += s[i];
    }
    comm_host_all_reduce(&t->comm, GROUP_PIPELINE, sums, 3, HOST_F64, REDUCE_SUM);
    comm_host_all_reduce(&t->comm, GROUP_DATA, sums, 3, HOST_F64, REDUCE_SUM);
    const double micro_batches = (double)M * t->ps->dp_size;
    if (t->moe_layer_window) { /* this rank's layers, reduced at the log line */
        const int width = 2 + t->cfg.num_experts;
        const size_t n = (size_t)t->cfg.num_layers * (size_t)width;
        double *step = xcalloc(n, sizeof *step);
        for (int v = 0; v < t->num_chunks; v++) gpt_model_take_moe_layer_stats(t->chunks[v], step);
        for (size_t i = 0; i < n; i++)
            t->moe_layer_window[i] += (int)(i % (size_t)width) < 2 ? step[i] / micro_batches : step[i];
        free(step);
        t->moe_layer_iterations++;
    }
    r->moe_aux_loss = sums[0] / micro_batches;
    r->moe_z_loss = sums[1] / micro_batches;
    r->moe_dropped_tokens = (int64_t)sums[2];
}

/* GPT3D_TEST_INF_GRAD_AT=N[,M...]: rank 0 plants an inf in its gradient
 * shard at those iterations (1-based), after the reduction: the overflow
 * that loss scaling must skip (tests only). */
static void plant_test_overflow(Trainer *t) {
    const char *spec = getenv("GPT3D_TEST_INF_GRAD_AT");
    if (!spec || t->ps->rank != 0) return;
    for (const char *p = spec; *p;) {
        char *end;
        const long long at = strtoll(p, &end, 10);
        if (end == p) return;
        if (at == t->iteration + 1) {
            distrib_optimizer_set_grad_element(t->opt, 0, INFINITY);
            return;
        }
        p = *end == ',' ? end + 1 : end;
    }
}

/* After the backward: the world's gradient norm, unscaled; with loss
 * scaling a norm that is not finite is an overflow (a NaN or inf
 * gradient on some rank: the norm's world sum has it on every rank). */
static void finish_gradients(Trainer *t, StepResult *r) {
    distrib_optimizer_reduce_grads(t->opt);
    plant_test_overflow(t);
    /* A power-of-two scale divides out of the norm exactly. */
    r->grad_norm = distrib_optimizer_grad_norm(t->opt) / r->loss_scale;
    r->skipped = t->loss_scaling && !isfinite(r->grad_norm);
}

/* The schedules are functions of the samples of the steps taken before
 * this one (Megatron's scheduler steps by the batch after each step that
 * was not skipped); the batch ramp follows every consumed sample. */
StepResult train_step(Trainer *t) {
    const TrainArgs *a = t->args;
    const int64_t consumed = t->consumed_samples, scheduled = t->scheduler_samples;
    StepResult r = {.global_batch_size = batch_schedule_global_batch(&a->batch, consumed),
                    .lr = optimizer_schedule_lr(&a->schedule, scheduled),
                    .embedding_lr = a->decoupled_lr_given
                                        ? optimizer_schedule_lr(&a->decoupled_schedule, scheduled)
                                        : -1,
                    .weight_decay = optimizer_schedule_wd(&a->schedule, scheduled),
                    .loss_scale = t->loss_scaling ? t->scaler.scale : 1.0};
    const int M = r.global_batch_size / (a->micro_batch_size * t->ps->dp_size);
    StageCtx ctx = {.t = t,
                    .ds = t->train_ds,
                    .base = consumed,
                    .num_microbatches = M,
                    .loss_scale = xmalloc((size_t)M * sizeof(float)),
                    .global_token_scale = global_token_scale(t, consumed, M),
                    .grad_scale = (float)r.loss_scale};
    start_moe_step(t, M, r.loss_scale);
    if (t->num_chunks > 1) {
        run_interleaved(&ctx);
        free(ctx.loss_scale);
        finish_gradients(t, &r);
        r.loss = global_mean_loss(t, &ctx);
        finish_moe_step(t, M, &r);
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
    free(ctx.loss_scale);
    finish_gradients(t, &r);
    r.loss = global_mean_loss(t, &ctx);
    finish_moe_step(t, M, &r);
    return r;
}

double evaluate(Trainer *t, BlendedDataset *ds) {
    const TrainArgs *a = t->args;
    StageCtx ctx = {.t = t, .ds = ds, .num_microbatches = a->num_microbatches};
    if (t->num_chunks > 1) {
        evaluate_interleaved(&ctx);
        return global_mean_loss(t, &ctx);
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
    return global_mean_loss(t, &ctx);
}
