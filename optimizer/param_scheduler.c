/* Megatron's OptimizerParamScheduler, in samples (optimizer.h). */
#include <math.h>
#include <string.h>

#include "optimizer/optimizer.h"

const char *const LR_DECAY_STYLE_NAMES[] = {"constant", "linear", "cosine", "inverse-square-root",
                                            "WSD", NULL};
const char *const WSD_DECAY_STYLE_NAMES[] = {"exponential", "linear", "cosine", "minus_sqrt", NULL};
const char *const WD_INCR_STYLE_NAMES[] = {"constant", "linear", "cosine", NULL};

/* WSD's coefficient: 1 until the anneal, which takes the last
 * wsd_decay_steps of the decay. */
static double wsd_coefficient(const OptimizerSchedule *s, double steps) {
    const double anneal_start = (double)(s->decay_steps - s->wsd_decay_steps);
    if (steps <= anneal_start) return 1.0;
    const double ratio = (steps - anneal_start) / (double)s->wsd_decay_steps;
    switch (s->wsd_style) {
    case WSD_DECAY_LINEAR: return 1.0 - ratio;
    case WSD_DECAY_COSINE: return 0.5 * (cos(M_PI * ratio) + 1.0);
    case WSD_DECAY_MINUS_SQRT: return 1.0 - sqrt(ratio);
    case WSD_DECAY_EXPONENTIAL: break;
    }
    return 2.0 * pow(0.5, ratio) - 1.0;
}

double optimizer_schedule_lr(const OptimizerSchedule *s, int64_t consumed) {
    const double steps = (double)consumed;
    if (s->warmup_steps > 0 && steps <= s->warmup_steps)
        return s->init_lr + (s->max_lr - s->init_lr) * steps / s->warmup_steps;
    if (s->style == LR_DECAY_CONSTANT) return s->max_lr;
    if (consumed > s->decay_steps) return s->min_lr;
    if (s->style == LR_DECAY_INVERSE_SQUARE_ROOT) {
        const double warmup = s->warmup_steps > 1 ? s->warmup_steps : 1;
        const double lr = s->max_lr * sqrt(warmup) / sqrt(steps > 1 ? steps : 1);
        return lr > s->min_lr ? lr : s->min_lr;
    }
    const double ratio = (steps - s->warmup_steps) / ((double)s->decay_steps - s->warmup_steps);
    double coeff = 1.0 - ratio; /* linear */
    if (s->style == LR_DECAY_COSINE) coeff = 0.5 * (cos(M_PI * ratio) + 1.0);
    else if (s->style == LR_DECAY_WSD) coeff = wsd_coefficient(s, steps);
    return s->min_lr + coeff * (s->max_lr - s->min_lr);
}

double optimizer_schedule_wd(const OptimizerSchedule *s, int64_t consumed) {
    if (consumed > s->wd_incr_steps || s->wd_style == WD_INCR_CONSTANT) return s->end_wd;
    const double ratio = (double)consumed / (double)s->wd_incr_steps;
    const double coeff = s->wd_style == WD_INCR_LINEAR ? ratio : 0.5 * (cos(M_PI * (1.0 - ratio)) + 1.0);
    return s->start_wd + coeff * (s->end_wd - s->start_wd);
}
