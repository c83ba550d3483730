/* training/args.h — pretrain_gpt's options: the flag table and validation.
 *
 * Contract: args_parse() fills TrainArgs from argv using the table in
 * args.c (Megatron's flag names and defaults), resolves derived defaults
 * (ffn = 4h, or Megatron's 8h/3 rounded down to 64 with --swiglu; head
 * dimension = h / heads; max positions = seq length, global batch = micro
 * batch x DP, decay iters = train iters), the schedules (Megatron's rules
 * for iteration- or sample-based runs: args->train_iters always set,
 * args->batch and args->schedule in samples) and the architecture flags
 * into args->model, and checks everything that can be checked
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
#include "optimizer/optimizer.h"
#include "parallel_state/parallel_state.h"
#include "pipeline_parallel/layer_split.h"
#include "training/batch_schedule.h"

/* Megatron flags that choose among Megatron's own implementations or its
 * Python-side behaviour: accepted so recipes run unchanged, checked for
 * Megatron's values, without effect here (each --help line says why). */
typedef struct {
    bool use_mcore_models, use_flash_attn, manual_gc, no_mmap_bin_files;
    bool no_create_attention_mask_in_dataloader, no_persist_layer_norm;
    bool no_masked_softmax_fusion, no_bias_gelu_fusion, no_bias_swiglu_fusion;
    bool no_bias_dropout_fusion, no_rope_fusion, no_gradient_accumulation_fusion;
    bool no_gradient_reduce_div_fusion, cross_entropy_loss_fusion;
    bool profile, no_position_embedding;
    int64_t profile_step_start, profile_step_end;
    char *attention_backend, *transformer_impl, *distributed_backend;
    int num_workers, empty_unused_memory_level;
    int64_t manual_gc_interval;
} MegatronCompatArgs;

typedef struct {
    /* The model as the flags give it (the vocabulary sizes and the seed are
     * filled in by the trainer from the data and --seed). */
    TransformerConfig model;
    int make_vocab_size_divisible_by;
    /* Megatron's architecture flags that args_parse resolves into `model`. */
    char *position_embedding_type, *normalization;
    /* --recompute-activations (Megatron's selective recomputation),
     * --recompute-granularity, --recompute-method, --recompute-num-layers */
    bool recompute_activations;
    char *recompute_granularity, *recompute_method;
    int recompute_num_layers;
    bool swiglu, squared_relu, group_query_attention, disable_bias_linear;
    int num_query_groups;
    bool kv_channels_given, num_query_groups_given;
    /* Mixture of experts: Megatron's word flags, resolved into `model`
     * (args_moe.c); --moe-per-layer-logging; --expert-tensor-parallel-size
     * (0: not given, = TP). */
    char *moe_router_score_function, *moe_router_load_balancing_type;
    char *moe_token_dispatcher_type, *moe_token_drop_policy;
    bool moe_per_layer_logging, moe_grouped_gemm;
    int expert_tensor_parallel_size;
    /* parallelism */
    int tensor_model_parallel_size, pipeline_model_parallel_size;
    int context_parallel_size; /* CP ranks share one sequence (ring attention) */
    int expert_model_parallel_size; /* EP ranks split the experts, out of DP x CP */
    char *cp_comm_type;        /* --cp-comm-type: p2p, the ring */
    int decoder_first_pipeline_num_layers, decoder_last_pipeline_num_layers;
    bool account_for_embedding_in_pipeline_split, account_for_loss_in_pipeline_split;
    int num_layers_per_virtual_pipeline_stage, num_virtual_stages_per_pipeline_rank;
    bool sequence_parallel, use_distributed_optimizer;
    bool overlap_grad_reduce, overlap_param_gather, grad_reduce_in_bf16;
    int64_t ddp_bucket_size; /* 0: Megatron's default */
    bool ddp_bucket_size_given;
    double distributed_timeout_minutes;
    /* batch and schedule */
    int micro_batch_size, global_batch_size;
    int64_t train_iters, train_samples;
    StringList rampup_batch_size, step_batch_size_schedule;
    double lr, min_lr, lr_warmup_fraction, lr_warmup_init;
    double decoupled_lr, decoupled_min_lr;
    bool decoupled_lr_given;
    char *lr_decay_style, *lr_wsd_decay_style, *weight_decay_incr_style;
    int64_t lr_warmup_iters, lr_decay_iters, lr_warmup_samples, lr_decay_samples;
    int64_t lr_wsd_decay_iters, lr_wsd_decay_samples;
    double weight_decay, start_weight_decay, end_weight_decay;
    double adam_beta1, adam_beta2, adam_eps, clip_grad;
    int64_t seed;
    /* precision and device */
    bool bf16, fp16;
    /* Megatron's loss scaling: loss_scale > 0 a constant scale, else the
     * dynamic scaler of the other four (used with --fp16, and with --bf16
     * only when loss_scale is given). */
    double loss_scale, initial_loss_scale, min_loss_scale;
    int loss_scale_window, hysteresis;
    char *fp8_format, *fp8_amax_compute_algo; /* fp8_format NULL: no fp8 */
    int fp8_amax_history_len;
    bool fp8_param_gather;
    char *device;
    char *comm; /* --comm: auto, nccl or mpi */
    bool check_for_nan_in_loss_and_grad;
    /* data */
    StringList data_path, train_data_path, valid_data_path, test_data_path;
    bool mock_data;
    bool eod_mask_loss, reset_position_ids, reset_attention_mask; /* document masking */
    bool calculate_per_token_loss; /* gradients over the global batch's tokens in the loss */
    char *data_cache_path;
    char *split;
    TokenizerOptions tokenizer; /* must match the shards */
    /* checkpoints */
    char *save, *load;
    int64_t save_interval, exit_interval;
    bool no_load_optim, finetune, no_save_optim, no_load_rng;
    int64_t ckpt_step;
    bool ckpt_step_given;
    char *ckpt_format;
    bool exit_signal_handler;
    bool async_save;
    double exit_duration_in_mins;
    /* logging and evaluation */
    int64_t log_interval, eval_interval, eval_iters;
    bool skip_train; /* evaluate only (Megatron's --skip-train) */
    char *metrics_file;
    bool log_throughput, log_params_norm, log_num_zeros_in_grad;
    char *tensorboard_dir;
    int64_t tensorboard_log_interval;
    int tensorboard_queue_size;
    bool log_timers_to_tensorboard, log_validation_ppl_to_tensorboard;
    bool no_log_loss_scale_to_tensorboard, log_world_size_to_tensorboard;
    char *trace_schedule;

    MegatronCompatArgs compat;

    /* derived */
    int data_parallel_size;
    int num_microbatches; /* of the full global batch */
    PipelineLayerSplit pipeline_split; /* the layers of every pipeline rank and chunk */
    BatchSchedule batch;
    OptimizerSchedule schedule; /* in samples */
    OptimizerSchedule decoupled_schedule; /* with --decoupled-lr: schedule at its peak and floor */
} TrainArgs;

/* world_size is the number of MPI ranks (for DP and batch checks). Returns
 * false with a message in err; *wants_help is set for --help. */
bool args_parse(TrainArgs *a, FlagParser *parser, int argc, char **argv, int world_size,
                bool *wants_help, char *err, size_t err_size);
void args_print_help(FILE *out);
void args_free(TrainArgs *a, FlagParser *parser);

/* The model-parallel sizes the flags ask for (DP is what the world leaves). */
static inline ParallelSizes args_parallel_sizes(const TrainArgs *a) {
    return (ParallelSizes){.tp = a->tensor_model_parallel_size,
                           .cp = a->context_parallel_size,
                           .pp = a->pipeline_model_parallel_size,
                           .ep = a->expert_model_parallel_size,
                           .etp = a->expert_tensor_parallel_size};
}

#endif
