/* training/args_internal.h — the parts of args_parse in their own files. */
#ifndef GPT3D_TRAINING_ARGS_INTERNAL_H
#define GPT3D_TRAINING_ARGS_INTERNAL_H

#include "training/args.h"

/* Training length, batch ramp, learning-rate and weight-decay schedules
 * (args_schedule.c): fills a->train_iters, a->batch, a->schedule. */
bool args_resolve_schedule(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size);

/* Megatron's recomputation flags into a->model's recompute fields, with
 * its rules (args_recompute.c). */
bool args_resolve_recompute(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size);

/* The layer split of the pipeline ranks and their virtual chunks
 * (args_pipeline.c): fills a->pipeline_split and checks it, after the
 * batch sizes (interleaving constrains the micro-batch count). */
bool args_resolve_pipeline(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size);

/* --context-parallel-size and --cp-comm-type against the sequence, the
 * tensor-parallel split and the device (args_context.c). */
bool args_resolve_context(TrainArgs *a, char *err, size_t err_size);

/* The mixture-of-experts flags into a->model's MoE fields, with Megatron's
 * rules and the ones of this build (args_moe.c); a dense model's MoE
 * fields are reset to their defaults. */
bool args_resolve_moe(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size);

#endif
