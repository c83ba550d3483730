#include "training/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "core/timer.h"
#include "training/async_save.h"
#include "training/exit_signal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool is_root(const Trainer *t) { return t->ps->rank == 0; }

/* ---------------------------------------------------------------- setup */

static bool resolve_device(const TrainArgs *a, const char **device, char *err, size_t err_size) {
    if (strcmp(a->device, "auto")) {
        *device = a->device;
        return true;
    }
    /* Counting devices first: without a GPU driver it returns 0 without
     * loading the CUDA libraries at all. */
    *device = backend_cuda_device_count() > 0 && backend_cuda_complete() ? "cuda" : "cpu";
    (void)err;
    (void)err_size;
    return true;
}

/* NCCL takes one GPU per rank (two ranks on one device are refused); the
 * staged implementation (--comm mpi) lets ranks share. */
static bool check_gpus_per_node(const ParallelState *ps, const char *device, const char *comm,
                                CommImplKind kind, char *err, size_t err_size) {
    if (strcmp(device, "cuda") || kind != COMM_IMPL_NCCL || ps->local_size == 1) return true;
    const int gpus = backend_cuda_device_count();
    if (ps->local_size <= gpus) return true;
    const char *which = strcmp(comm, "auto") ? "" : " (nccl for --device cuda)";
    if (gpus == 0)
        FAIL("--comm %s%s: this node runs %d ranks but has no GPU, and NCCL needs one GPU per "
             "rank; run on nodes with a GPU per rank, pass --comm mpi so that ranks share GPUs "
             "through host memory, or use --device cpu",
             comm, which, ps->local_size);
    FAIL("--comm %s%s: this node runs %d ranks but has %d GPU%s, and NCCL needs one GPU per "
         "rank; launch at most %d rank%s per node, or pass --comm mpi so that ranks share GPUs "
         "through host memory",
         comm, which, ps->local_size, gpus, gpus == 1 ? "" : "s", gpus, gpus == 1 ? "" : "s");
}

/* The shards carry the vocabulary size. Megatron takes it from the tokenizer
 * instead, so when the run names the tokenizer's files (or NullTokenizer's
 * --vocab-size) the tokenizer is loaded and must agree with the data. */
static bool check_tokenizer(const TokenizerOptions *o, int64_t data_vocab_size, char *err,
                            size_t err_size) {
    bool null = strcmp(o->tokenizer_type, "NullTokenizer") == 0;
    if (!(o->tokenizer_model || o->vocab_file || (null && o->vocab_size > 0))) return true;
    Tokenizer *tok = tokenizer_open(o, err, err_size);
    if (!tok) return false;
    const int64_t vocab_size = tokenizer_vocab_size(tok);
    tokenizer_free(tok);
    if (vocab_size == data_vocab_size) return true;
    snprintf(err, err_size,
             "--tokenizer-type %s with its files has a vocabulary of %lld tokens but the "
             "--data-path shards were made with %lld; give the tokenizer the shards were made "
             "with, or re-make them with tools/preprocess_data",
             o->tokenizer_type, (long long)vocab_size, (long long)data_vocab_size);
    return false;
}

static bool open_datasets(Trainer *t, GPTDataConfig *dc, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    t->train_ds = blended_dataset_create(dc, SPLIT_TRAIN, err, err_size);
    if (!t->train_ds) return false;
    t->cfg.vocab_size = blended_dataset_vocab_size(t->train_ds);
    if (!check_tokenizer(&a->tokenizer, t->cfg.vocab_size, err, err_size)) return false;
    snprintf(t->tokenizer_type, sizeof t->tokenizer_type, "%s",
             blended_dataset_tokenizer_type(t->train_ds));
    if (a->eval_iters > 0) {
        dc->expected_vocab_size = t->cfg.vocab_size; /* validation shards must match training's */
        t->valid_ds = blended_dataset_create(dc, SPLIT_VALID, err, err_size);
        if (!t->valid_ds) {
            size_t n = strlen(err);
            snprintf(err + n, err_size - n,
                     " (validation split; pass --eval-iters 0 to train without evaluation)");
            return false;
        }
    }
    return trainer_open_test_split(t, dc, err, err_size);
}

static bool setup_data(Trainer *t, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    GPTDataConfig dc = {
        .data_path = (const char *const *)a->data_path.items,
        .data_path_count = a->data_path.count,
        .train_data_path = (const char *const *)a->train_data_path.items,
        .train_data_path_count = a->train_data_path.count,
        .valid_data_path = (const char *const *)a->valid_data_path.items,
        .valid_data_path_count = a->valid_data_path.count,
        .test_data_path = (const char *const *)a->test_data_path.items,
        .test_data_path_count = a->test_data_path.count,
        .split = a->split,
        .seq_length = a->model.seq_length,
        .seed = (uint64_t)a->seed,
        .expected_tokenizer_type = a->tokenizer.tokenizer_type,
        .cache_dir = a->data_cache_path,
        .scans = token_id_scans_new(), /* the splits share their shards' scans */
        .mock_data = a->mock_data,
    };
    /* For data that records no tokenizer (.bin/.idx, mock); left 0 when
     * unknown, which refuses such data with a message. */
    if (!tokenizer_builtin_vocabulary(a->tokenizer.tokenizer_type, &dc.tokenizer_vocab_size,
                                      &dc.tokenizer_eod_token) &&
        (a->tokenizer.tokenizer_model || a->tokenizer.vocab_file || a->tokenizer.vocab_size > 0)) {
        /* Or from the tokenizer's own files (HuggingFace, TikToken, Null). */
        Tokenizer *tok = tokenizer_open(&a->tokenizer, err, err_size);
        if (!tok) return false;
        dc.tokenizer_vocab_size = tokenizer_vocab_size(tok);
        dc.tokenizer_eod_token = tokenizer_eod(tok);
        tokenizer_free(tok);
    }
    const bool ok = open_datasets(t, &dc, err, err_size);
    token_id_scans_free(dc.scans);
    if (ok)
        t->documents = (DocumentMasking){.eod_mask_loss = a->eod_mask_loss,
                                         .reset_position_ids = a->reset_position_ids,
                                         .reset_attention_mask = a->reset_attention_mask,
                                         .eod_token = blended_dataset_eod_token(t->train_ds)};
    return ok;
}

static void setup_config(Trainer *t) {
    const TrainArgs *a = t->args;
    TransformerConfig *c = &t->cfg;
    const int64_t vocab_size = c->vocab_size; /* the data's tokenizer (setup_data) */
    *c = a->model;
    c->vocab_size = vocab_size;
    c->padded_vocab_size = gpt_padded_vocab_size(vocab_size, a->make_vocab_size_divisible_by);
    c->seed = (uint64_t)a->seed;

    trainer_partition_chunks(t);
}

/* The bucket layout of rank 0, as the tests and users check it against
 * --ddp-bucket-size. */
static void print_buckets(const Trainer *t) {
    const int K = distrib_optimizer_num_buckets(t->opt);
    char sizes[512];
    size_t n = 0;
    sizes[0] = 0;
    for (int k = 0; k < K && n < sizeof sizes - 32; k++) {
        const GradBucket *b = distrib_optimizer_bucket(t->opt, k);
        n += (size_t)snprintf(sizes + n, sizeof sizes - n, "%s%zu", k ? " " : "", b->end - b->begin);
    }
    printf("gradient buckets: %d over %s %d (elements: %s%s); overlap: grad reduce %s, param "
           "gather %s\n",
           K, t->ps->cp_size > 1 ? "DP x CP" : "DP", parallel_state_data_context_size(t->ps), sizes, n >= sizeof sizes - 32 ? " ..." : "",
           t->args->overlap_grad_reduce ? "on" : "off", t->args->overlap_param_gather ? "on" : "off");
    int experts = 0;
    for (int k = 0; k < K; k++) experts += distrib_optimizer_bucket(t->opt, k)->group == GROUP_EXPERT_DATA;
    if (t->cfg.num_experts > 0)
        printf("expert buckets: %d of them hold the routed experts, reduced and sharded over the "
               "%d ranks holding the same experts (the expert-data group)\n",
               experts, t->ps->edp_size);
}

/* " (base B, R of D features, rotate-half)" for RoPE, else empty. */
static void rope_text(const TransformerConfig *c, char *out, size_t size) {
    out[0] = 0;
    if (c->position_embedding_type == POSITION_ROPE)
        snprintf(out, size, " (base %g, %d of %d features, %s)", c->rotary_base,
                 transformer_rotary_dim(c), transformer_head_dim(c),
                 c->rotary_interleaved ? "interleaved" : "rotate-half");
}

/* "pipeline layers: stage 0 [0, 1), stage 1 [1, 5), ..." with several
 * stages; with interleaving each stage's chunks in order. */
static void print_layer_split(const PipelineLayerSplit *s) {
    if (s->pp_size == 1) return;
    printf("pipeline layers:");
    for (int r = 0; r < s->pp_size; r++) {
        printf("%s stage %d", r ? "," : "", r);
        for (int v = 0; v < s->vp_size; v++) {
            const PipelineLayerRange l = pipeline_split_chunk(s, r, v);
            printf(" [%d, %d)", l.first_layer, l.first_layer + l.num_layers);
        }
    }
    printf("%s\n", s->vp_size > 1 ? " (interleaved 1F1B: one range per model chunk)" : "");
}

static void print_summary(const Trainer *t, const char *device) {
    if (!is_root(t)) return;
    const TrainArgs *a = t->args;
    const TransformerConfig *c = &t->cfg;
    const size_t numel = distrib_optimizer_buffer_numel(t->opt);
    const size_t param_bytes = backend_act_bytes(t->be, numel);
    const size_t grad_bytes = numel * sizeof(float);
    const size_t opt_bytes = distrib_optimizer_state_bytes(t->opt);
    const double MiB = 1024.0 * 1024.0;
    const double plain_opt = (double)distrib_optimizer_state_bytes_per_element(t->opt) * (double)numel;
    char cp[32] = "";
    if (t->ps->cp_size > 1) snprintf(cp, sizeof cp, " x CP %d", t->ps->cp_size);
    printf("gpt3d pretrain_gpt: %d rank(s) = DP %d x PP %d%s x TP %d, device %s (%s)\n",
           t->ps->world_size, t->ps->dp_size, t->ps->pp_size, cp, t->ps->tp_size, device,
           dtype_name(t->be->act_dtype));
    if (t->ps->cp_size > 1)
        printf("context parallel: each sequence of %d tokens in %d chunks of %d, %d tokens per "
               "rank; attention as a ring of key/value blocks\n",
               c->seq_length, 2 * t->ps->cp_size, c->seq_length / (2 * t->ps->cp_size),
               c->seq_length / t->ps->cp_size);
    printf("model: %d layers, hidden %d, %d heads, ffn %d, seq %d, vocab %lld (padded %lld), "
           "%lld parameters\n",
           c->num_layers, c->hidden_size, c->num_attention_heads, c->ffn_hidden_size,
           c->seq_length, (long long)c->vocab_size, (long long)c->padded_vocab_size,
           (long long)gpt_canonical_param_count(c));
    char capacity[48] = ", dropless";
    if (c->moe_expert_capacity_factor > 0)
        snprintf(capacity, sizeof capacity, ", capacity factor %g", c->moe_expert_capacity_factor);
    if (c->num_experts > 0)
        printf("mixture of experts: %d of %d layers, %d experts of ffn %d, top-%d %s router%s%s, "
               "%lld parameters active per token; EP %d (%d experts per rank), expert-data "
               "parallel %d\n",
               transformer_moe_layer_count(c), c->num_layers, c->num_experts,
               c->moe_ffn_hidden_size, c->moe_router_topk,
               MOE_SCORE_FUNCTION_NAMES[c->moe_router_score_function],
               c->moe_shared_expert_intermediate_size ? ", a shared expert" : "",
               capacity,
               (long long)gpt_active_param_count(c), t->ps->ep_size,
               c->num_experts / t->ps->ep_size, t->ps->edp_size);
    char rope[96];
    rope_text(c, rope, sizeof rope);
    printf("architecture: %s positions%s, %s (eps %g%s), %s MLP, %d query groups of %d heads "
           "(head dim %d), %s output layer, %s; dropout hidden %g, attention %g\n",
           POSITION_EMBEDDING_NAMES[c->position_embedding_type],
           rope,
           NORMALIZATION_NAMES[c->normalization], c->norm_epsilon,
           c->apply_layernorm_1p ? ", 1p" : "", ACTIVATION_NAMES[c->activation],
           c->num_query_groups, transformer_heads_per_group(c), transformer_head_dim(c),
           transformer_tied_output(c) ? "tied" : "untied",
           c->add_bias_linear ? "linear biases" : c->add_qkv_bias ? "QKV bias only" : "no linear biases",
           c->hidden_dropout, c->attention_dropout);
    print_layer_split(&a->pipeline_split);
    if (a->batch.num_steps == 0)
        printf("batch: micro %d x %d micro-batches x DP %d = global %d samples (%d tokens) per "
               "iteration\n",
               a->micro_batch_size, a->num_microbatches, t->ps->dp_size, a->global_batch_size,
               a->global_batch_size * a->model.seq_length);
    if (a->batch.rampup_start > 0)
        printf("batch ramp: from %d samples by %d up to %d over %lld samples (%lld iterations in "
               "all)\n",
               a->batch.rampup_start, a->batch.rampup_increment, a->global_batch_size,
               (long long)a->batch.rampup_samples, (long long)a->train_iters);
    if (a->batch.num_steps > 0) {
        printf("batch: micro %d x DP %d; the global batch steps (%lld iterations in all):",
               a->micro_batch_size, t->ps->dp_size, (long long)a->train_iters);
        for (int k = 0; k < a->batch.num_steps; k++)
            printf("%s from sample %lld: %d samples", k ? "," : "",
                   (long long)a->batch.step_samples[k], a->batch.step_batch[k]);
        printf("\n");
    }
    printf("data: %s; tokenizer %s\n", blended_dataset_description(t->train_ds), t->tokenizer_type);
    if (t->valid_ds) printf("      %s\n", blended_dataset_description(t->valid_ds));
    if (t->test_ds) printf("      %s\n", blended_dataset_description(t->test_ds));
    printf("memory per rank: parameters %.3f MiB, gradients %.3f MiB, optimizer state %.3f MiB "
           "(plain data parallel: %.3f MiB; ZeRO-1 keeps 1/%d), activations %.3f MiB\n",
           param_bytes / MiB, grad_bytes / MiB, opt_bytes / MiB, plain_opt / MiB,
           parallel_state_data_context_size(t->ps),
           trainer_activation_bytes(t) / MiB);
    print_buckets(t);
    if (strcmp(device, "cpu") == 0 && (a->bf16 || a->fp16))
        printf("note: the CPU backend computes in fp32; --%s applies to --device cuda%s\n",
               a->bf16 ? "bf16" : "fp16",
               t->loss_scaling ? " (the loss scaling runs here too)" : "");
    if (a->sequence_parallel && t->ps->tp_size == 1)
        printf("note: --sequence-parallel has nothing to split at TP 1 and is off (as Megatron "
               "turns it off)\n");
    if (strcmp(device, "cpu") == 0 && a->fp8_format)
        printf("note: the CPU backend computes in fp32; --fp8-format is not built (and --device "
               "cuda refuses it)\n");
    if (strcmp(device, "cpu") == 0 && a->grad_reduce_in_bf16)
        printf("note: the CPU backend reduces gradients in fp32; --grad-reduce-in-bf16 applies to "
               "--device cuda\n");
    fflush(stdout);
}

/* The model computes on views of buffers the distributed optimizer owns and
 * tells it, through the hooks, when gradients are final and which
 * parameters a forward needs. */
static void setup_model(Trainer *t, int slots) {
    const TrainArgs *a = t->args;
    const ParallelState *ps = t->ps;
    const DistOptConfig oc = {.adamw = {.beta1 = a->adam_beta1,
                                        .beta2 = a->adam_beta2,
                                        .eps = a->adam_eps,
                                        .weight_decay = a->weight_decay,
                                        .clip_grad = a->clip_grad},
                              .bucket_numel = (size_t)a->ddp_bucket_size,
                              .overlap_grad_reduce = a->overlap_grad_reduce,
                              .overlap_param_gather = a->overlap_param_gather,
                              /* The CPU backend is fp32 throughout (noted at start-up). */
                              .grad_reduce_dtype = a->grad_reduce_in_bf16 ? t->be->act_dtype : DTYPE_F32,
                              .finalize = trainer_finalize_grads,
                              .finalize_ctx = t,
                              .trace = t->trace};
    if (a->moe_per_layer_logging && t->cfg.num_experts > 0)
        t->moe_layer_window = xcalloc((size_t)t->cfg.num_layers * (2 + (size_t)t->cfg.num_experts),
                                      sizeof *t->moe_layer_window);
    if (t->num_chunks > 1) {
        trainer_create_chunks(t, &oc);
        return;
    }
    t->model = gpt_model_create_unbound(t->be, &t->cfg, &t->part, a->micro_batch_size, &t->tp,
                                        &t->comm, ps->pp_size > 1 ? slots : 1);
    t->chunks = xcalloc(1, sizeof *t->chunks);
    t->chunks[0] = t->model;
    t->chunk_base = xcalloc(1, sizeof *t->chunk_base);
    t->opt = distrib_optimizer_create(t->be, &t->comm, gpt_model_params(t->model), &oc);
    gpt_model_bind_buffers(t->model, distrib_optimizer_param_buffer(t->opt),
                           distrib_optimizer_grad_buffer(t->opt));
    trainer_set_buffer_hooks(t);
}

static bool open_trace(Trainer *t, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    if (!a->trace_schedule) return true;
    char path[4200];
    snprintf(path, sizeof path, "%s.rank%d", a->trace_schedule, t->ps->rank);
    t->trace = fopen(path, "w");
    if (!t->trace) FAIL("--trace-schedule %s: cannot create %s", a->trace_schedule, path);
    return true;
}

/* Megatron's choice: --fp16 scales the loss (constant with --loss-scale,
 * else dynamic); --bf16 only with --loss-scale. The CPU backend computes
 * in fp32 but runs the same scaling, so a --fp16 recipe's scale and skips
 * can be followed there. */
static void start_loss_scaling(Trainer *t) {
    const TrainArgs *a = t->args;
    t->loss_scaling = a->fp16 || (a->bf16 && a->loss_scale > 0);
    t->scaler = !t->loss_scaling    ? grad_scaler_constant(1.0)
                : a->loss_scale > 0 ? grad_scaler_constant(a->loss_scale)
                                    : grad_scaler_dynamic(a->initial_loss_scale, a->min_loss_scale,
                                                          a->loss_scale_window, a->hysteresis);
}

bool trainer_setup(Trainer *t, const TrainArgs *a, const ParallelState *ps, char *err,
                   size_t err_size) {
    memset(t, 0, sizeof *t);
    t->setup_start_s = timer_now_s();
    t->args = a;
    t->ps = ps;
    t->resume_iteration = -1;
    start_loss_scaling(t);
    /* Host values only until the backend exists (the checkpoint agreement). */
    comm_init(&t->comm, ps, NULL);
    if (!trainer_prepare_checkpoints(t, err, err_size)) return false;
    const char *device = NULL;
    if (!resolve_device(a, &device, err, err_size)) return false;
    CommImplKind comm_kind;
    if (!comm_resolve_kind(a->comm, device, &comm_kind, err, err_size)) return false;
    /* One rank moves nothing between ranks: auto makes no NCCL communicators
     * (the staged implementation only copies within the device then). */
    if (ps->world_size == 1 && !strcmp(a->comm, "auto") && comm_kind == COMM_IMPL_NCCL)
        comm_kind = COMM_IMPL_STAGED;
    if (!check_gpus_per_node(ps, device, a->comm, comm_kind, err, err_size)) return false;
    if (!strcmp(device, "cuda") && a->fp16)
        FAIL("--fp16 on --device cuda is not built yet (its loss scaling is, and runs on --device "
             "cpu); use --bf16 on --device cuda");
    if (!strcmp(device, "cuda") && a->fp8_format)
        FAIL("--fp8-format %s: FP8 training is not implemented yet; drop the --fp8-* flags and "
             "use --bf16 on --device cuda",
             a->fp8_format);
    if (!setup_data(t, err, err_size)) return false;
    setup_config(t);
    if (t->cfg.padded_vocab_size % ps->tp_size)
        FAIL("the padded vocabulary %lld is not divisible by --tensor-model-parallel-size %d; "
             "set --make-vocab-size-divisible-by to a multiple of %d",
             (long long)t->cfg.padded_vocab_size, ps->tp_size, ps->tp_size);

    t->be = backend_create(device, ps->local_rank, err, err_size);
    /* Agreed: comm_init_impl below is collective over the world. */
    if (!parallel_state_agree(ps->world, t->be != NULL, ps->timeout_s, err, err_size)) return false;
    if (!comm_init_impl(&t->comm, ps, t->be, comm_kind, err, err_size)) return false;
    if (is_root(t) && ps->world_size > 1)
        printf("communication: %s\n", comm_impl_name(comm_kind));
    tensor_parallel_init(&t->tp, t->be, &t->comm, ps->tp_size, ps->tp_rank, a->sequence_parallel);
    /* 1F1B holds at most min(P - stage, M) micro-batches' activations, M
     * of the largest batch of the run. */
    const int max_microbatches =
        batch_schedule_max_global_batch(&a->batch) / (a->micro_batch_size * ps->dp_size);
    int slots = ps->pp_size - ps->pp_rank;
    if (slots > max_microbatches) slots = max_microbatches;
    const bool fits = trainer_check_memory(t, slots, err, err_size);
    if (!parallel_state_agree(ps->world, fits, ps->timeout_s, err, err_size)) return false;
    if (!open_trace(t, err, err_size)) return false;
    setup_model(t, slots);

    print_summary(t, device);
    bool loaded = false;
    /* The load agrees over the world, so no rank waits below for a failed one. */
    if (a->load && !trainer_load_checkpoint(t, &loaded, err, err_size)) return false;
    if (!loaded) {
        trainer_init_params(t);
    } else {
        distrib_optimizer_publish_params(t->opt); /* a load filled only this rank's shard */
    }

    const size_t N = (size_t)a->micro_batch_size * (size_t)a->model.seq_length;
    t->sample = xmalloc(((size_t)a->model.seq_length + 1) * sizeof(int32_t));
    t->tokens = xmalloc(N * sizeof(int32_t));
    t->targets = xmalloc(N * sizeof(int32_t));
    t->position_ids = xmalloc(N * sizeof(int32_t));
    t->key_start = xmalloc(N * sizeof(int32_t));

    if (is_root(t) && a->metrics_file) {
        t->metrics = fopen(a->metrics_file, "a");
        if (!t->metrics) FAIL("--metrics-file %s: cannot open for appending", a->metrics_file);
    }
    /* Megatron writes no TensorBoard events when it only evaluates. */
    return a->skip_train || trainer_open_tensorboard(t, err, err_size);
}

void trainer_free(Trainer *t) {
    async_writer_free(t->async); /* joins a write in flight before the lock goes */
    trainer_release_save(t);
    if (t->metrics) fclose(t->metrics);
    trainer_close_tensorboard(t);
    /* completes communication in flight first, tracing it */
    distrib_optimizer_free(t->opt);
    free(t->moe_layer_window);
    if (t->trace) fclose(t->trace);
    trainer_free_models(t);
    blended_dataset_free(t->train_ds);
    blended_dataset_free(t->valid_ds);
    blended_dataset_free(t->test_ds);
    comm_destroy(&t->comm);
    backend_destroy(t->be);
    free(t->sample);
    free(t->tokens);
    free(t->position_ids);
    free(t->key_start);
    free(t->targets);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- steps */

/* --------------------------------------------------------------- logging */

/* The iterations since the last log line (Megatron's total_loss_dict). */
typedef struct {
    double loss_sum, moe_aux_sum, moe_z_sum;
    int64_t iters, samples, nan_iters;
    int skipped; /* iterations loss scaling skipped: not in the loss sums */
    double seconds;
} LogWindow;

/* Megatron's training_log line, field for field: throughput only with
 * --log-throughput, the zeros and parameter norm with their flags. The
 * loss is the mean over the window's iterations that were not skipped, the
 * loss scale the one the next step uses (1.0 without loss scaling), the
 * grad norm left out when the logged iteration was skipped; an iteration
 * whose loss is not finite (run on with --no-check-for-nan-in-loss-and-grad)
 * counts as a nan iteration. */
static void print_log_line(const Trainer *t, const StepResult *r, const LogWindow *w) {
    const TrainArgs *a = t->args;
    char stamp[40], extra[256] = "";
    timer_wall_clock_string(stamp, sizeof stamp);
    const double seconds = w->seconds / (double)w->iters;
    const double tokens = (double)w->samples / (double)w->iters * a->model.seq_length;
    size_t n = 0;
    if (a->log_num_zeros_in_grad)
        n += (size_t)snprintf(extra + n, sizeof extra - n, " num zeros: %lld |", (long long)r->num_zeros);
    if (a->log_params_norm)
        n += (size_t)snprintf(extra + n, sizeof extra - n, " params norm: %.3f |", r->params_norm);
    if (t->cfg.num_experts > 0)
        snprintf(extra + n, sizeof extra - n, " load_balancing_loss: %.6E | z_loss: %.6E |",
                 w->moe_aux_sum / (double)w->iters, w->moe_z_sum / (double)w->iters);
    printf(" [%s] iteration %8lld/%8lld | consumed samples: %12lld | elapsed time per iteration "
           "(ms): %.1f |",
           stamp, (long long)t->iteration, (long long)a->train_iters, (long long)t->consumed_samples,
           1000.0 * seconds);
    if (a->log_throughput)
        printf(" throughput per GPU (TFLOP/s/GPU): %.1f |",
               gpt_flops_per_token(&t->cfg) * tokens / seconds / 1e12 / t->ps->world_size);
    const int64_t advanced = w->iters - w->skipped;
    printf(" learning rate: %.6E | global batch size: %5d | lm loss: %.6E | loss scale: %.1f |",
           r->lr, r->global_batch_size, w->loss_sum / (double)(advanced > 0 ? advanced : 1),
           t->scaler.scale);
    if (!r->skipped) printf(" grad norm: %.3f |", r->grad_norm);
    printf("%s number of skipped iterations: %3d | number of nan iterations: %3lld |\n", extra,
           w->skipped, (long long)w->nan_iters);
    fflush(stdout);
}

/* --moe-per-layer-logging, after a log line: each MoE layer's
 * load-balancing and z-loss terms (averaged over the iterations since the
 * last line) and the tokens routed to each expert (summed), gathered from
 * the stages and replicas; collective, printed on rank 0. */
static void log_moe_layers(Trainer *t) {
    if (!t->moe_layer_window) return;
    const double iterations = (double)(t->moe_layer_iterations > 0 ? t->moe_layer_iterations : 1);
    const int E = t->cfg.num_experts, width = 2 + E;
    const size_t n = (size_t)t->cfg.num_layers * (size_t)width;
    double *w = t->moe_layer_window;
    comm_host_all_reduce(&t->comm, GROUP_PIPELINE, w, n, HOST_F64, REDUCE_SUM);
    comm_host_all_reduce(&t->comm, GROUP_DATA, w, n, HOST_F64, REDUCE_SUM);
    for (int l = 0; is_root(t) && l < t->cfg.num_layers; l++) {
        if (!transformer_layer_is_moe(&t->cfg, l)) continue;
        const double *row = w + (size_t)l * (size_t)width;
        printf("  MoE layer %d | load_balancing_loss: %.6E | z_loss: %.6E | tokens per expert:", l,
               row[0] / iterations, row[1] / iterations);
        for (int e = 0; e < E; e++) printf(" %.0f", row[2 + e]);
        printf("\n");
    }
    if (is_root(t)) fflush(stdout);
    memset(w, 0, n * sizeof *w);
    t->moe_layer_iterations = 0;
}

/* The losses of the evaluations after an iteration. */
typedef struct {
    bool has_valid, has_test;
    double valid, test;
} EvalLosses;

static void write_metrics(const Trainer *t, const StepResult *r, double seconds,
                          const EvalLosses *e) {
    if (!t->metrics) return;
    const TrainArgs *a = t->args;
    const double tokens = (double)r->global_batch_size * a->model.seq_length;
    fprintf(t->metrics,
            "{\"iteration\": %lld, \"consumed_samples\": %lld, \"global_batch_size\": %d, "
            "\"lm_loss\": %.17g, \"lr\": %.17g, \"weight_decay\": %.17g, "
            "\"loss_scale\": %.17g, \"iteration_ms\": %.3f, \"tokens_per_s\": %.1f, "
            "\"tflops_per_gpu\": %.4f",
            (long long)t->iteration, (long long)t->consumed_samples, r->global_batch_size, r->loss,
            r->lr, r->weight_decay, t->scaler.scale,
            1000.0 * seconds, tokens / seconds,
            gpt_flops_per_token(&t->cfg) * tokens / seconds / 1e12 / t->ps->world_size);
    /* JSON has no inf: a skipped step says so instead of giving its norm. */
    if (r->skipped)
        fprintf(t->metrics, ", \"skipped\": true");
    else
        fprintf(t->metrics, ", \"grad_norm\": %.17g", r->grad_norm);
    if (a->log_num_zeros_in_grad) fprintf(t->metrics, ", \"num_zeros\": %lld", (long long)r->num_zeros);
    if (a->log_params_norm) fprintf(t->metrics, ", \"params_norm\": %.17g", r->params_norm);
    if (t->cfg.num_experts > 0)
        fprintf(t->metrics,
                ", \"moe_aux_loss\": %.17g, \"moe_z_loss\": %.17g, \"moe_dropped_tokens\": %lld",
                r->moe_aux_loss, r->moe_z_loss, (long long)r->moe_dropped_tokens);
    if (e->has_valid) fprintf(t->metrics, ", \"valid_loss\": %.17g", e->valid);
    if (e->has_test) fprintf(t->metrics, ", \"test_loss\": %.17g", e->test);
    fprintf(t->metrics, "}\n");
    fflush(t->metrics);
}

/* The first iteration's collectives of this rank, per group and operation:
 * the traffic every later iteration repeats. */
static void print_comm_summary(const Trainer *t) {
    const CommCounters *c = &t->comm.counters;
    char line[2048];
    size_t n = 0;
    for (int g = 0; g < NUM_GROUPS; g++)
        for (int k = 0; k < NUM_COLLECTIVES; k++) {
            if (!c->calls[g][k] || n >= sizeof line) continue;
            n += (size_t)snprintf(line + n, sizeof line - n, "%s%s %s %llu calls %.3f MiB",
                                  n ? "; " : "", comm_group_name((GroupKind)g),
                                  comm_collective_name((CollectiveKind)k),
                                  (unsigned long long)c->calls[g][k],
                                  (double)c->bytes[g][k] / (1024.0 * 1024.0));
        }
    printf("communication per iteration (rank 0): %s\n", n ? line : "none");
    fflush(stdout);
}

/* What the device allocator actually reached after one iteration, next to
 * the sum of the planned buffers: a difference means a buffer nobody
 * accounted for (a backend scratch, a library workspace). */
static void print_peak_memory(const Trainer *t) {
    const size_t numel = distrib_optimizer_buffer_numel(t->opt);
    const double expected = (double)backend_act_bytes(t->be, numel) + (double)numel * sizeof(float) +
                            (double)distrib_optimizer_state_bytes(t->opt) +
                            (double)trainer_activation_bytes(t);
    printf("peak %s memory of rank 0 after the first iteration: %.3f MiB allocated (planned "
           "buffers: %.3f MiB)\n",
           t->be->name, (double)t->be->peak_bytes_in_use / (1024.0 * 1024.0),
           expected / (1024.0 * 1024.0));
    fflush(stdout);
}

/* ------------------------------------------------------------------ loop */

/* Rank 0 prints an agreed failure (every rank holds the failing rank's own
 * message) and every rank returns it, so the run ends without MPI_Abort. */
static bool reported(const Trainer *t, bool ok, const char *err) {
    if (!ok && is_root(t)) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", err);
    }
    return ok;
}

static bool save_or_report(Trainer *t) {
    char err[PARALLEL_STATE_MAX_MESSAGE];
    return reported(t, trainer_save_checkpoint(t, err, sizeof err), err);
}

/* The NaN guard's advice names a checkpoint only after reading all of it
 * and checking every checksum: a damaged file would otherwise be called
 * "good" and the resumed run would fail, or diverge, again. */
static void name_last_good_checkpoint(const Trainer *t) {
    if (!t->last_checkpoint[0]) {
        fprintf(stderr, "No checkpoint was saved in this run; lower --lr or tighten "
                        "--clip-grad and start again.\n");
        return;
    }
    char why[4096];
    if (checkpoint_verify_full(t->last_checkpoint_root, t->last_checkpoint_iteration, why,
                               sizeof why)) {
        fprintf(stderr, "The last good checkpoint (verified: every dataset and checksum) is %s; "
                        "resume from it with --load and a lower --lr or tighter --clip-grad.\n",
                t->last_checkpoint);
        return;
    }
    fprintf(stderr, "The last checkpoint, %s, fails verification (%s). ", t->last_checkpoint, why);
    int64_t found = 0;
    if (!checkpoint_find_verified(t->last_checkpoint_root, t->last_checkpoint_iteration - 1,
                                  &found, NULL, 0)) {
        fprintf(stderr, "No older checkpoint in %s verifies; lower --lr or tighten --clip-grad "
                        "and start again.\n",
                t->last_checkpoint_root);
        return;
    }
    char dir[4096];
    checkpoint_iter_dir(dir, sizeof dir, t->last_checkpoint_root, found);
    fprintf(stderr, "The newest checkpoint that verifies is %s; resume from it (write %lld into "
                    "%s/latest_checkpointed_iteration.txt, then --load %s) with a lower --lr or "
                    "tighter --clip-grad.\n",
            dir, (long long)found, t->last_checkpoint_root, t->last_checkpoint_root);
}

/* A pending --async-save published at an iteration boundary; a failure is
 * agreed like a synchronous save's (save_or_report). */
static bool poll_or_report(Trainer *t, bool wait) {
    char err[PARALLEL_STATE_MAX_MESSAGE];
    return reported(t, trainer_checkpoint_poll(t, wait, err, sizeof err), err);
}

/* A data read that failed during a step (or an evaluation) on any rank
 * stops the run here, after the schedule completed on every rank: rank 0
 * prints the reading rank's own message and the run ends without saving. */
bool trainer_data_reads_ok(const Trainer *t) {
    char err[PARALLEL_STATE_MAX_MESSAGE];
    snprintf(err, sizeof err, "%s", t->data_error);
    return reported(t, parallel_state_agree(t->ps->world, !t->data_error[0], t->ps->timeout_s, err,
                                            sizeof err),
                    err);
}

static int stop_on_nonfinite(Trainer *t, const StepResult *r) {
    /* The last good checkpoint may still be in flight. */
    if (!poll_or_report(t, true)) return 2;
    if (is_root(t)) {
        fflush(stdout);
        fprintf(stderr,
                "error: iteration %lld: %s is %s (lm loss %g, grad norm %g); stopping without "
                "an optimizer step. ",
                (long long)(t->iteration + 1), isfinite(r->loss) ? "the gradient norm" : "the loss",
                isnan(isfinite(r->loss) ? r->grad_norm : r->loss) ? "NaN" : "infinite", r->loss,
                r->grad_norm);
        name_last_good_checkpoint(t);
    }
    return 3;
}

/* Why the run should save and stop after this iteration, or NULL. Every
 * rank reaches the same answer: a signal may reach only some of them, and
 * clocks differ, so the decision is agreed over the world. */
static const char *exit_reason(Trainer *t, double train_start) {
    const TrainArgs *a = t->args;
    if (a->exit_interval > 0 && t->iteration % a->exit_interval == 0) return "--exit-interval";
    if (!a->exit_signal_handler && a->exit_duration_in_mins <= 0) return NULL;
    int flags[2] = {a->exit_signal_handler && exit_signal_received(),
                    a->exit_duration_in_mins > 0 &&
                        timer_now_s() - train_start >= 60.0 * a->exit_duration_in_mins};
    comm_host_all_reduce(&t->comm, GROUP_WORLD, flags, 2, HOST_I32, REDUCE_MAX);
    if (flags[0]) return "SIGTERM with --exit-signal-handler";
    if (flags[1]) return "--exit-duration-in-mins";
    return NULL;
}

/* The two copies of the tied word embedding must end bitwise equal; a
 * difference would mean their gradients or optimizer states diverged. */
static bool check_tied_embeddings(Trainer *t) {
    if (t->ps->pp_size == 1 || !transformer_tied_output(&t->cfg) ||
        comm_group_size(&t->comm, GROUP_EMBEDDING) == 0)
        return true;
    const ParamTable *pt = trainer_param_table(t);
    const ParamInfo *p = &pt->params[param_table_find(pt, GPT_WORD_EMBEDDING)];
    const size_t bytes = backend_act_bytes(t->be, (size_t)p->local_numel);
    unsigned char *host = xmalloc(bytes);
    t->be->ops->copy_to_host(t->be, host, (char *)distrib_optimizer_param_buffer(t->opt) +
                                              backend_act_bytes(t->be, p->offset), bytes);
    uint64_t hash = 1469598103934665603ull, other = 0;
    for (size_t i = 0; i < bytes; i++) hash = (hash ^ host[i]) * 1099511628211ull;
    free(host);
    uint64_t pair[2];
    comm_host_all_gather(&t->comm, GROUP_EMBEDDING, pair, &hash, 1, HOST_U64);
    other = pair[0] == hash ? pair[1] : pair[0];
    if (is_root(t))
        printf("tied word-embedding copies on the first and last stage: %s\n",
               other == hash ? "bitwise identical" : "DIFFERENT");
    return other == hash;
}

int trainer_run(Trainer *t) {
    const TrainArgs *a = t->args;
    if (a->skip_train) return trainer_evaluate_only(t);
    LogWindow window = {0};
    int64_t last_saved = t->args->load ? t->iteration : -1;
    const int64_t first_iteration = t->iteration;
    const double train_start = timer_now_s();
    if (a->exit_signal_handler) exit_signal_install();
    if (is_root(t) && t->iteration < a->train_iters) {
        printf("time to first iteration: %.2f s (set-up of data, model, optimizer%s)\n",
               train_start - t->setup_start_s, t->args->load ? ", checkpoint load" : "");
        fflush(stdout);
    }
    while (t->iteration < a->train_iters) {
        const double start = timer_now_s();
        comm_reset_counters(&t->comm);
        StepResult r = train_step(t);
        if (!trainer_data_reads_ok(t)) return 2;
        /* Under loss scaling a gradient that is not finite is an overflow,
         * whose step is skipped; the loss must still be finite. */
        if (a->check_for_nan_in_loss_and_grad &&
            (!isfinite(r.loss) || (!t->loss_scaling && !isfinite(r.grad_norm))))
            return stop_on_nonfinite(t, &r);
        if (a->log_num_zeros_in_grad) r.num_zeros = distrib_optimizer_grad_zeros(t->opt);
        if (t->loss_scaling) grad_scaler_update(&t->scaler, r.skipped);
        if (!r.skipped) {
            trainer_optimizer_step(t, &r);
            t->scheduler_samples += r.global_batch_size;
        }
        if (a->log_params_norm) r.params_norm = distrib_optimizer_param_norm(t->opt);
        t->be->ops->synchronize(t->be);
        const double seconds = timer_now_s() - start;
        t->iteration++;
        t->consumed_samples += r.global_batch_size;

        if (is_root(t) && window.iters == 0 && t->iteration == first_iteration + 1) {
            print_comm_summary(t);
            print_peak_memory(t);
        }
        if (!r.skipped) {
            window.loss_sum += r.loss;
            window.moe_aux_sum += r.moe_aux_loss;
            window.moe_z_sum += r.moe_z_loss;
        }
        window.skipped += r.skipped;
        window.iters++;
        window.samples += r.global_batch_size;
        window.nan_iters += !isfinite(r.loss);
        window.seconds += seconds;
        /* As Megatron: also the run's first iteration, without resetting. */
        const bool first_line = t->iteration == first_iteration + 1;
        const bool log_line = t->iteration % a->log_interval == 0 || first_line;
        if (is_root(t) && log_line) print_log_line(t, &r, &window);
        if (log_line) log_moe_layers(t);
        if (is_root(t)) {
            const double per_iteration = window.seconds / (double)window.iters;
            const double tokens = (double)window.samples / (double)window.iters * a->model.seq_length;
            trainer_tensorboard_iteration(t, &r, log_line, first_line, per_iteration,
                                          gpt_flops_per_token(&t->cfg) * tokens / per_iteration /
                                              1e12 / t->ps->world_size);
        }
        if (t->iteration % a->log_interval == 0) window = (LogWindow){0};
        EvalLosses eval = {0};
        const bool last = t->iteration == a->train_iters;
        if (t->valid_ds && (t->iteration % a->eval_interval == 0 || last)) {
            /* After the last iteration Megatron names the split. */
            if (!trainer_evaluate_and_print(t, t->valid_ds, last ? " on validation set" : "",
                                            &eval.valid))
                return 2;
            eval.has_valid = true;
        }
        if (t->test_ds && last) {
            if (!trainer_evaluate_and_print(t, t->test_ds, " on test set", &eval.test)) return 2;
            eval.has_test = true;
        }
        if (is_root(t)) write_metrics(t, &r, seconds, &eval);

        if (!poll_or_report(t, false)) return 2;
        const char *reason = exit_reason(t, train_start);
        const bool exiting = reason != NULL;
        if (a->save && ((a->save_interval > 0 && t->iteration % a->save_interval == 0) || last ||
                        exiting)) {
            if (!save_or_report(t)) return 2;
            last_saved = t->iteration;
        }
        if (exiting && !last) {
            if (!poll_or_report(t, true)) return 2;
            if (is_root(t))
                printf("exiting at iteration %lld (%s)\n", (long long)t->iteration, reason);
            return 0;
        }
    }
    if (a->save && last_saved != t->iteration && !save_or_report(t)) return 2;
    if (!poll_or_report(t, true)) return 2;
    return parallel_state_all_ok(t->ps->world, check_tied_embeddings(t), t->ps->timeout_s) ? 0 : 1;
}
