/* training/trainer.h — the pretraining loop of pretrain_gpt.
 *
 * Contract: trainer_setup() turns validated TrainArgs into a running state
 * (backend, data, model, optimizer, optionally a loaded checkpoint), with
 * every rank agreeing on success; trainer_run() trains to --train-iters (or
 * --exit-interval), logging, evaluating and saving as the flags ask, and
 * returns the process exit status. Iteration i consumes global samples
 * [i*GBS, (i+1)*GBS); micro-batch m of DP rank d takes samples
 * [i*GBS + (m*DP + d)*B, +B), Megatron's pretraining sampler rule. */
#ifndef GPT3D_TRAINING_TRAINER_H
#define GPT3D_TRAINING_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "model/gpt_model.h"
#include "optimizer/distrib_optimizer.h"
#include "optimizer/optimizer.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"
#include "tensor_parallel/tensor_parallel.h"
#include "training/args.h"

typedef struct {
    const TrainArgs *args;
    const ParallelState *ps;
    Backend *be;
    Comm comm;
    TensorParallel tp;
    TransformerConfig cfg;
    ModelPartition part;
    GPTModel *model; /* NULL with interleaving: chunks */
    /* This pipeline rank's model chunks (one without interleaving: `model`
     * itself), bound to consecutive ranges of the optimizer's buffers from
     * chunk_base[v]; with several, chunk_table lists all their parameters
     * at those offsets and chunk_grad_in holds the output gradients
     * received per (chunk, micro-batch) until their backward. */
    int num_chunks;
    GPTModel **chunks;
    ModelPartition *chunk_parts;
    size_t *chunk_base;
    struct ChunkHooks *chunk_hooks; /* each chunk's hook context (its index) */
    ParamTable chunk_table;
    void **chunk_grad_in;
    DistributedOptimizer *opt; /* owns the parameter and gradient buffers */
    BlendedDataset *train_ds, *valid_ds;
    BlendedDataset *test_ds; /* NULL: no test split (Megatron's do_test false) */
    char tokenizer_type[64];
    int64_t iteration;
    int64_t consumed_samples;
    /* The samples of the steps taken, which the learning-rate and
     * weight-decay schedules follow (Megatron's scheduler does not step on
     * a skipped iteration); consumed_samples without loss scaling. */
    int64_t scheduler_samples;
    /* Megatron's loss scaling, on with --fp16 (and --bf16 --loss-scale):
     * the scaler whose scale the next step uses. */
    bool loss_scaling;
    GradScaler scaler;
    FILE *metrics;
    struct TensorBoardWriter *tensorboard; /* rank 0 with --tensorboard-dir */
    char last_checkpoint[4096]; /* "" when none yet */
    /* Where last_checkpoint lies (--save or --load) and its iteration, so
     * the NaN guard can verify it (and search older ones) before naming it. */
    const char *last_checkpoint_root;
    int64_t last_checkpoint_iteration;
    int32_t *sample, *tokens, *targets;
    /* --eod-mask-loss, --reset-position-ids, --reset-attention-mask: the
     * rules and a micro-batch's position ids and key starts (B*T each). */
    DocumentMasking documents;
    int32_t *position_ids, *key_start;
    bool in_last_backward; /* the running backward is the iteration's last micro-batch */
    FILE *trace; /* --trace-schedule: this rank's pipeline operations */
    CheckpointLock *save_lock; /* rank 0 with --save: this run owns --save */
    int64_t resume_iteration;  /* the --load checkpoint to load; -1: none */
    bool resume_release;       /* it is --load's release checkpoint (weights only) */
    struct AsyncWriter *async; /* --async-save's background writer, NULL until the first save */
    double setup_start_s;      /* timer_now_s() when trainer_setup began */
    /* The first failed data read of this rank ("" when none), recorded by
     * train_step's micro-batch loader; trainer_run stops on it. */
    char data_error[1100]; /* the loader's message (1024) and a prefix */
    /* --moe-per-layer-logging: per layer, the load-balancing and z-loss
     * terms (summed over the steps since the last log line) and the tokens
     * routed to each expert; num_layers x (2 + E), this rank's layers. */
    double *moe_layer_window;
    int64_t moe_layer_iterations; /* the steps in it */
} Trainer;

bool trainer_setup(Trainer *t, const TrainArgs *a, const ParallelState *ps, char *err,
                   size_t err_size);
int trainer_run(Trainer *t);
void trainer_free(Trainer *t);

typedef struct {
    double loss;      /* mean token loss of the global batch */
    double grad_norm; /* before clipping, of the unscaled gradients */
    double loss_scale; /* the step's (1 without loss scaling) */
    bool skipped;      /* loss scaling found a gradient not finite: no optimizer step */
    double lr, weight_decay;
    double embedding_lr; /* with --decoupled-lr: the word embedding's and output layer's */
    int global_batch_size; /* this iteration's (a batch ramp changes it) */
    double params_norm;    /* with --log-params-norm, after the step */
    int64_t num_zeros;     /* with --log-num-zeros-in-grad */
    /* Mixture of experts: the load-balancing and z-loss terms of the
     * objective (summed over MoE layers, averaged over the global batch's
     * micro-batches) and the tokens dropped beyond capacity (all layers and
     * micro-batches). */
    double moe_aux_loss, moe_z_loss;
    int64_t moe_dropped_tokens;
} StepResult;

/* training/train_step.c: one iteration's forward and backward over all
 * micro-batches (through the pipeline schedule), gradient reductions and
 * the global norm; the optimizer step is the caller's. */
StepResult train_step(Trainer *t);
/* Mean token loss over the first --eval-iters global batches of ds, the
 * validation or test split (forward only, through the pipeline), on every
 * rank. */
double evaluate(Trainer *t, BlendedDataset *ds);

/* training/evaluation.c: Megatron's evaluate_and_print_results and the
 * test split. */
/* Opens the test split into t->test_ds when --eval-iters > 0 and there is
 * one: --test-data-path, or --split's third share of --data-path /
 * --mock-data. A share too small for one sample means no test split (a
 * note on rank 0), as Megatron's; a --test-data-path that is, an error. */
bool trainer_open_test_split(Trainer *t, GPTDataConfig *dc, char *err, size_t err_size);
/* Evaluates ds and, on rank 0, prints Megatron's block for it ("where":
 * "", " on validation set" or " on test set") and writes the loss to
 * TensorBoard. False when a rank's data read failed (rank 0 reported it). */
bool trainer_evaluate_and_print(Trainer *t, BlendedDataset *ds, const char *where, double *loss);
/* --skip-train: the validation and test blocks of the loaded (or initial)
 * model, as Megatron's pretrain() without training; the exit status. */
int trainer_evaluate_only(Trainer *t);
/* Megatron's perplexity of a loss: exp, its argument capped at 20. */
double trainer_perplexity(double loss);
/* Agrees over the world on this iteration's data reads (t->data_error):
 * false on every rank when one failed, rank 0 printing its message. */
bool trainer_data_reads_ok(const Trainer *t);

/* The hooks of chunk v (the model itself without interleaving) into the
 * distributed optimizer, and the optimizer's finalize callback (ctx: the
 * Trainer). Chunk ranges lie in the buffers last chunk first, so the
 * backward of the iteration's last micro-batch, which runs the chunks from
 * the last to the first, finalises the buffer as a growing prefix. */
struct ChunkHooks {
    Trainer *t;
    int chunk;
};
void trainer_set_buffer_hooks(Trainer *t);
void trainer_finalize_grads(void *ctx, size_t begin, size_t end);
/* AdamW step on this rank's shard, then the parameter all-gather. */
void trainer_optimizer_step(Trainer *t, const StepResult *r);

/* training/chunks.c: the model chunks of interleaved 1F1B and what every
 * layout asks of "the model" through them. */
/* The layers of each chunk of this pipeline rank (t->chunk_parts, t->part
 * for the first), from the split. */
void trainer_partition_chunks(Trainer *t);
/* With several chunks: creates them (activations for every micro-batch),
 * the optimizer over their joint table, and binds them to its buffers. */
void trainer_create_chunks(Trainer *t, const DistOptConfig *oc);
/* Every parameter of this rank at its offset in the optimizer's buffers. */
const ParamTable *trainer_param_table(const Trainer *t);
size_t trainer_activation_bytes(const Trainer *t);
/* Initial values of every chunk's parameters and of the master shard. */
void trainer_init_params(Trainer *t);
void trainer_free_models(Trainer *t);

/* training/memory_plan.c: false with the plan and the fix when this rank's
 * buffers (num_slots activation slots) would not fit in the memory its
 * backend reports free. Needs t->be, t->tp, t->cfg and t->chunk_parts. */
bool trainer_check_memory(const Trainer *t, int num_slots, char *err, size_t err_size);

/* training/checkpointing.c: glue between model/optimizer and checkpoint/. */
/* Both are collective over the world and agree before returning: false on
 * every rank when any rank failed, err holding that rank's own message
 * (parallel_state_agree). */
bool trainer_save_checkpoint(Trainer *t, char *err, size_t err_size);
/* Before any work, on every rank: rank 0 probes and locks --save, picks the
 * --load checkpoint to resume from (the newest complete one, with a note
 * when the tracker file was not usable) and refuses a --save that holds
 * checkpoints this run would overwrite; the outcome is agreed over the world
 * and resume_iteration broadcast. */
bool trainer_prepare_checkpoints(Trainer *t, char *err, size_t err_size);
/* Drops the --save lock (rank 0); trainer_free does it too. */
void trainer_release_save(Trainer *t);
/* With --async-save, at an iteration boundary: publishes the pending save
 * once every rank's background write has finished (wait: waits for it);
 * false with the message when a rank's write failed. A no-op otherwise. */
bool trainer_checkpoint_poll(Trainer *t, bool wait, char *err, size_t err_size);
/* Loads the checkpoint trainer_prepare_checkpoints picked, if any (*loaded
 * tells); rank 0 prints what was loaded once every rank has. */
bool trainer_load_checkpoint(Trainer *t, bool *loaded, char *err, size_t err_size);

/* training/tensorboard_log.c: Megatron's TensorBoard scalars on rank 0. */
bool trainer_open_tensorboard(Trainer *t, char *err, size_t err_size);
/* Every --tensorboard-log-interval iterations the step's scalars; with a
 * log line a flush and, under --log-timers-to-tensorboard, iteration-time
 * (not on the run's first line, which holds the set-up: first_line) and
 * with --log-throughput the throughput, as Megatron's training_log. */
void trainer_tensorboard_iteration(Trainer *t, const StepResult *r, bool log_line,
                                   bool first_line, double seconds_per_iteration,
                                   double tflops_per_gpu);
void trainer_tensorboard_validation(Trainer *t, const char *suffix, double loss);
void trainer_close_tensorboard(Trainer *t);

#endif
