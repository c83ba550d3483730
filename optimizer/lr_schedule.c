#include <math.h>
#include <string.h>

#include "optimizer/optimizer.h"

bool lr_decay_style_parse(const char *s, LRDecayStyle *out) {
    if (!strcmp(s, "constant")) *out = LR_DECAY_CONSTANT;
    else if (!strcmp(s, "linear")) *out = LR_DECAY_LINEAR;
    else if (!strcmp(s, "cosine")) *out = LR_DECAY_COSINE;
    else return false;
    return true;
}

double lr_schedule_lr(const LRSchedule *s, int64_t completed) {
    if (s->warmup_iters > 0 && completed <= s->warmup_iters)
        return s->max_lr * (double)completed / (double)s->warmup_iters;
    if (s->style == LR_DECAY_CONSTANT) return s->max_lr;
    if (completed > s->decay_iters) return s->min_lr;
    const double ratio = (double)(completed - s->warmup_iters) /
                         (double)(s->decay_iters - s->warmup_iters);
    const double coeff = s->style == LR_DECAY_LINEAR ? 1.0 - ratio : 0.5 * (cos(M_PI * ratio) + 1.0);
    return s->min_lr + coeff * (s->max_lr - s->min_lr);
}
