/* tests/test_grad_scaler.c — the loss scalers against Megatron's rules,
 * step by step: a dynamic scaler tolerates `hysteresis` overflows before
 * halving, halves at every overflow after that until it grows again,
 * never goes below its minimum, and doubles after `growth_interval` clean
 * steps in a row (an overflow restarts the count; a growth restores the
 * hysteresis). A constant scaler never changes. */
#include <stdbool.h>
#include <stdio.h>

#include "optimizer/optimizer.h"
#include "test_util.h"

/* Applies the steps ('x' an overflow, '.' a clean step) and checks the
 * scale after each against want[]. */
static void follow(GradScaler *s, const char *steps, const double *want, const char *what) {
    for (int i = 0; steps[i]; i++) {
        grad_scaler_update(s, steps[i] == 'x');
        CHECK_MSG(s->scale == want[i], "%s: after step %d ('%c') the scale is %g, want %g", what,
                  i + 1, steps[i], s->scale, want[i]);
    }
}

static void hysteresis_then_halving(void) {
    GradScaler s = grad_scaler_dynamic(1024.0, 1.0, 3, 2);
    /* First overflow tolerated, the second halves, the third halves again
     * (the hysteresis is spent); clean steps then grow it after three. */
    const double want[] = {1024, 512, 256, 256, 256, 512, 512, 512};
    follow(&s, "xxx...x.", want, "hysteresis 2");
    /* The growth restored the hysteresis: the overflow at step 7 was
     * tolerated, and the count of clean steps restarted after it. */
    CHECK(s.hysteresis_tracker == 1 && s.growth_tracker == 1);
}

static void growth_counts_clean_steps_in_a_row(void) {
    GradScaler s = grad_scaler_dynamic(8.0, 1.0, 4, 1);
    const double want[] = {8, 8, 8, 4, 4, 4, 4, 8, 8, 8, 8, 16};
    follow(&s, "...x........", want, "window 4");
}

static void never_below_the_minimum(void) {
    GradScaler s = grad_scaler_dynamic(16.0, 4.0, 1000, 1);
    const double want[] = {8, 4, 4, 4};
    follow(&s, "xxxx", want, "min 4");
    GradScaler odd = grad_scaler_dynamic(12.0, 5.0, 1000, 1);
    const double want_odd[] = {6, 5, 5};
    follow(&odd, "xxx", want_odd, "min 5 from 12");
}

static void megatron_defaults(void) {
    /* --initial-loss-scale 2^32, --min-loss-scale 1, --loss-scale-window
     * 1000, --hysteresis 2: 1000 clean steps double it, not 999. */
    GradScaler s = grad_scaler_dynamic(4294967296.0, 1.0, 1000, 2);
    for (int i = 0; i < 999; i++) grad_scaler_update(&s, false);
    CHECK(s.scale == 4294967296.0);
    grad_scaler_update(&s, false);
    CHECK(s.scale == 8589934592.0);
    grad_scaler_update(&s, true);
    CHECK(s.scale == 8589934592.0);
    grad_scaler_update(&s, true);
    CHECK(s.scale == 4294967296.0);
}

static void constant_never_changes(void) {
    GradScaler s = grad_scaler_constant(65536.0);
    const double want[] = {65536, 65536, 65536, 65536};
    follow(&s, "x.xx", want, "constant");
    CHECK(!s.dynamic);
}

int main(void) {
    hysteresis_then_halving();
    growth_counts_clean_steps_in_a_row();
    never_below_the_minimum();
    megatron_defaults();
    constant_never_changes();
    printf("test_grad_scaler: the dynamic and constant loss scalers follow Megatron's rules\n");
    return 0;
}
