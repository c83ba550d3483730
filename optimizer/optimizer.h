/* optimizer/optimizer.h — learning-rate schedule and the (ZeRO-1) AdamW.
 *
 * Contract.
 * - lr_schedule_lr() is Megatron's OptimizerParamScheduler: linear warmup
 *   from 0 over warmup_iters, then constant / linear / cosine decay from lr
 *   to min_lr by decay_iters, min_lr after. The LR of iteration i (1-based)
 *   is evaluated at i-1 completed iterations, as Megatron does.
 * - The optimizer owns fp32 master weights and Adam moments for one
 *   contiguous range [shard_begin, shard_end) of the flat parameter buffer
 *   (the whole buffer when data-parallel size is 1; shard d of DP equal
 *   shards with ZeRO-1). The moments and master weights of a shard are one
 *   contiguous device allocation. A step: global gradient norm over the
 *   parameters (each counted once), clip coefficient, AdamW on the shard
 *   with decoupled weight decay where the parameter table allows it, then
 *   the act-dtype parameters are rewritten from the master weights. */
#ifndef GPT3D_OPTIMIZER_H
#define GPT3D_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/gpt_model.h"

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

typedef struct Optimizer Optimizer;

/* The optimizer shard is [shard_begin, shard_end) of the flat buffers.
 * params is the model's flat parameter buffer: on an fp32 backend the
 * shard's master weights are those parameters themselves (no extra copy). */
Optimizer *optimizer_create(Backend *be, const ParamTable *table, const AdamWConfig *cfg,
                            size_t shard_begin, size_t shard_end, void *params);
void optimizer_free(Optimizer *o);

/* Master weights of the shard (device, fp32), at flat offsets - shard_begin. */
float *optimizer_master(Optimizer *o);
float *optimizer_exp_avg(Optimizer *o);
float *optimizer_exp_avg_sq(Optimizer *o);
size_t optimizer_shard_begin(const Optimizer *o);
size_t optimizer_shard_end(const Optimizer *o);
int64_t optimizer_step_count(const Optimizer *o);
void optimizer_set_step_count(Optimizer *o, int64_t step);
/* Bytes of master weights (when separate from the params) + moments held by
 * this rank, and the same per element of the flat buffer. */
size_t optimizer_state_bytes(const Optimizer *o);
size_t optimizer_state_bytes_per_element(const Optimizer *o);
/* What optimizer_state_bytes_per_element will be on a backend before the
 * optimizer exists (for the start-up memory plan): fp32 parameters are their
 * own master copy. */
size_t optimizer_planned_bytes_per_element(const Backend *be);

/* Sum of squares of the gradients of the shard's parameters that this rank
 * counts (ParamInfo.counts_in_grad_norm; padding excluded), in double. The
 * caller sums it across ranks, so each unique parameter counts once. */
double optimizer_grad_sum_squares(Optimizer *o, const float *grads);

/* One AdamW step on the shard with learning rate `lr` and the clip
 * coefficient computed from `grad_norm`; writes the new params (act dtype)
 * for the shard's elements into `params`. */
void optimizer_step(Optimizer *o, void *params, const float *grads, double lr, double grad_norm);

/* Copies the act-dtype params of the shard from the master weights. */
void optimizer_write_params(Optimizer *o, void *params);

/* Megatron's clip coefficient: min(1, clip / (norm + 1e-6)). */
double optimizer_clip_coefficient(double clip_grad, double grad_norm);

#endif
