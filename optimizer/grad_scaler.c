/* optimizer/grad_scaler.c — loss scaling (contract in optimizer.h). */
#include "optimizer/optimizer.h"

GradScaler grad_scaler_constant(double scale) {
    return (GradScaler){.dynamic = false, .scale = scale, .min_scale = scale};
}

GradScaler grad_scaler_dynamic(double initial_scale, double min_scale, int growth_interval,
                               int hysteresis) {
    return (GradScaler){.dynamic = true,
                        .scale = initial_scale,
                        .min_scale = min_scale,
                        .growth_interval = growth_interval,
                        .hysteresis = hysteresis,
                        .growth_tracker = 0,
                        .hysteresis_tracker = hysteresis};
}

void grad_scaler_update(GradScaler *s, bool found_inf) {
    if (!s->dynamic) return;
    if (found_inf) {
        /* The hysteresis is restored only by a growth, as Megatron's: a run
         * that keeps overflowing halves at every overflow once it is spent. */
        s->growth_tracker = 0;
        if (--s->hysteresis_tracker <= 0) {
            s->hysteresis_tracker = 0;
            s->scale = s->scale * 0.5 > s->min_scale ? s->scale * 0.5 : s->min_scale;
        }
        return;
    }
    if (++s->growth_tracker == s->growth_interval) {
        s->growth_tracker = 0;
        s->hysteresis_tracker = s->hysteresis;
        s->scale *= 2.0;
    }
}
