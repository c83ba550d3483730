/* optimizer/optimizer.h — learning-rate schedule and AdamW settings.
 *
 * Contract.
 * - lr_schedule_lr() is Megatron's OptimizerParamScheduler: linear warmup
 *   from 0 over warmup_iters, then constant / linear / cosine decay from lr
 *   to min_lr by decay_iters, min_lr after. The LR of iteration i (1-based)
 *   is evaluated at i-1 completed iterations, as Megatron does.
 * - AdamWConfig and the clip coefficient are shared by the distributed
 *   optimizer (distrib_optimizer.h), which owns the shard and the step. */
#ifndef GPT3D_OPTIMIZER_H
#define GPT3D_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


typedef enum { LR_DECAY_CONSTANT, LR_DECAY_LINEAR, LR_DECAY_COSINE } LRDecayStyle;

typedef struct {
    double max_lr, min_lr;
    int64_t warmup_iters, decay_iters;
    LRDecayStyle style;
} LRSchedule;

/* Parses "constant" | "linear" | "cosine"; false on anything else. */
bool lr_decay_style_parse(const char *s, LRDecayStyle *out);
double lr_schedule_lr(const LRSchedule *s, int64_t completed_iters);

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double clip_grad; /* 0 disables clipping */
} AdamWConfig;

/* Megatron's clip coefficient: min(1, clip / (norm + 1e-6)). */
double optimizer_clip_coefficient(double clip_grad, double grad_norm);

#endif
