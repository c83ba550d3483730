/* optimizer/optimizer.h — learning-rate and weight-decay schedules, AdamW
 * settings.
 *
 * Contract.
 * - OptimizerSchedule is Megatron's OptimizerParamScheduler: every length is
 *   in samples (an iteration-based run gives them as iterations x the global
 *   batch), and the values for an iteration are those at the samples
 *   consumed before it, so a batch-size ramp and a resume land on the same
 *   numbers. The learning rate warms up linearly from init_lr to max_lr over
 *   warmup_steps, then decays to min_lr by decay_steps (constant, linear,
 *   cosine, inverse-square-root, or WSD: constant until wsd_decay_steps
 *   before the end, then linear / cosine / exponential / 1 - sqrt), min_lr
 *   after. Weight decay goes from start_wd to end_wd over wd_incr_steps
 *   (constant, linear, cosine), end_wd after.
 * - AdamWConfig and the clip coefficient are shared by the distributed
 *   optimizer (distrib_optimizer.h), which owns the shard and the step.
 * - GradScaler is Megatron's loss scaling for fp16: the loss is multiplied
 *   by `scale` before the backward, the gradients divided by it before the
 *   norm and the step, and a step whose gradients are not all finite is
 *   skipped. A constant scaler keeps its scale; a dynamic one halves it
 *   (never below min_scale) once `hysteresis` overflows have been seen
 *   since it last grew, and doubles it after `growth_interval` clean steps
 *   in a row, which also restores the hysteresis. Scales are powers of two
 *   when the initial one is, so scaling changes no bit of a finite
 *   gradient that neither overflows nor underflows. */
#ifndef GPT3D_OPTIMIZER_H
#define GPT3D_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    LR_DECAY_CONSTANT,
    LR_DECAY_LINEAR,
    LR_DECAY_COSINE,
    LR_DECAY_INVERSE_SQUARE_ROOT,
    LR_DECAY_WSD,
} LRDecayStyle;
typedef enum { WSD_DECAY_EXPONENTIAL, WSD_DECAY_LINEAR, WSD_DECAY_COSINE, WSD_DECAY_MINUS_SQRT } WSDDecayStyle;
typedef enum { WD_INCR_CONSTANT, WD_INCR_LINEAR, WD_INCR_COSINE } WDIncrStyle;

/* Megatron's names of the styles, indexed by the enums, NULL-terminated. */
extern const char *const LR_DECAY_STYLE_NAMES[];
extern const char *const WSD_DECAY_STYLE_NAMES[];
extern const char *const WD_INCR_STYLE_NAMES[];
/* Parsed with transformer_choice_index (model/transformer_config.h). */

typedef struct {
    double init_lr, max_lr, min_lr;
    double warmup_steps; /* a fraction of decay_steps need not be whole */
    int64_t decay_steps;
    LRDecayStyle style;
    int64_t wsd_decay_steps;
    WSDDecayStyle wsd_style;
    double start_wd, end_wd;
    int64_t wd_incr_steps;
    WDIncrStyle wd_style;
} OptimizerSchedule;

double optimizer_schedule_lr(const OptimizerSchedule *s, int64_t consumed_samples);
double optimizer_schedule_wd(const OptimizerSchedule *s, int64_t consumed_samples);

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double clip_grad; /* 0 disables clipping */
} AdamWConfig;

/* Megatron's clip coefficient: min(1, clip / (norm + 1e-6)). */
double optimizer_clip_coefficient(double clip_grad, double grad_norm);

typedef struct {
    bool dynamic;
    double scale, min_scale;
    int growth_interval, hysteresis;
    int growth_tracker;     /* clean steps since the last overflow or growth */
    int hysteresis_tracker; /* overflows still tolerated before the next halving */
} GradScaler;

GradScaler grad_scaler_constant(double scale);
GradScaler grad_scaler_dynamic(double initial_scale, double min_scale, int growth_interval,
                               int hysteresis);
/* After a step's gradients are known: found_inf when any was not finite. */
void grad_scaler_update(GradScaler *s, bool found_inf);

#endif
