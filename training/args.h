/* training/args.h — pretrain_gpt's options: the flag table and validation.
 *
 * Contract: args_parse() fills TrainArgs from argv using the table in
 * args.c (Megatron's flag names and defaults), resolves derived defaults
 * (ffn = 4h, or Megatron's 8h/3 rounded down to 64 with --swiglu; head
 * dimension = h / heads; max positions = seq length, global batch = micro
 * batch x DP, decay iters = train iters) and the architecture flags into
 * args->model, and checks everything that can be checked
 * without opening files. It never exits: on bad input it returns false with
 * one message naming the flag and the fix; --help is printed from the same
 * table by args_print_help(). */
#ifndef GPT3D_TRAINING_ARGS_H
#define GPT3D_TRAINING_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/flags.h"
#include "data/data.h"
#include "model/transformer_config.h"

typedef struct {
    /* The model as the flags give it (the vocabulary sizes and the seed are
     * filled in by the trainer from the data and --seed). */
    TransformerConfig model;
    int make_vocab_size_divisible_by;
    /* Megatron's architecture flags that args_parse resolves into `model`. */
    char *position_embedding_type, *normalization;
    bool swiglu, squared_relu, group_query_attention, disable_bias_linear;
    int num_query_groups;
    bool kv_channels_given, num_query_groups_given;
    /* parallelism */
    int tensor_model_parallel_size, pipeline_model_parallel_size;
    bool sequence_parallel, use_distributed_optimizer;
    bool overlap_grad_reduce, overlap_param_gather, grad_reduce_in_bf16;
    int64_t ddp_bucket_size; /* 0: Megatron's default */
    bool ddp_bucket_size_given;
    double distributed_timeout_minutes;
    /* batch and schedule */
    int micro_batch_size, global_batch_size;
    int64_t train_iters;
    double lr, min_lr;
    char *lr_decay_style;
    int64_t lr_warmup_iters, lr_decay_iters;
    double weight_decay, adam_beta1, adam_beta2, adam_eps, clip_grad;
    int64_t seed;
    /* precision and device */
    bool bf16, fp16;
    char *device;
    char *comm; /* --comm: auto, nccl or mpi */
    bool check_for_nan_in_loss_and_grad;
    /* data */
    StringList data_path, train_data_path, valid_data_path;
    char *data_cache_path;
    char *split;
    TokenizerOptions tokenizer; /* must match the shards */
    /* checkpoints */
    char *save, *load;
    int64_t save_interval, exit_interval;
    bool no_load_optim, finetune;
    bool exit_signal_handler;
    bool async_save;
    double exit_duration_in_mins;
    /* logging and evaluation */
    int64_t log_interval, eval_interval, eval_iters;
    char *metrics_file;
    char *trace_schedule;

    /* derived */
    int data_parallel_size;
    int num_microbatches;
} TrainArgs;

/* world_size is the number of MPI ranks (for DP and batch checks). Returns
 * false with a message in err; *wants_help is set for --help. */
bool args_parse(TrainArgs *a, FlagParser *parser, int argc, char **argv, int world_size,
                bool *wants_help, char *err, size_t err_size);
void args_print_help(FILE *out);
void args_free(TrainArgs *a, FlagParser *parser);

#endif
