/* The learning-rate, weight-decay and batch-size schedules against values
 * from Megatron-LM's own code: get_lr / get_wd of OptimizerParamScheduler
 * (megatron/core/optimizer_param_scheduler.py at d98e8a64dd) and the
 * RampupBatchsizeNumMicroBatchesCalculator with update_train_iters (the last
 * version before their removal, 532ad926b4^), and the
 * StepBatchsizeNumMicroBatchesCalculator with update_train_iters (at
 * d98e8a64dd), run outside this tree on the parameters below; the printed
 * values are the literals here. */
#include <math.h>
#include <stdio.h>

#include "optimizer/optimizer.h"
#include "test_util.h"
#include "training/args.h"
#include "training/batch_schedule.h"

static int failures = 0;

static void expect(const char *what, int64_t at, double got, double want) {
    const bool ok = isfinite(got) && fabs(got - want) <= 1e-12 * fmax(1e-12, fabs(want));
    if (!ok) {
        fprintf(stderr, "%s at %lld samples: %.17g, Megatron gives %.17g\n", what, (long long)at, got,
                want);
        failures++;
    }
}

/* Megatron's test parameters: lr 1e-3 -> min 1e-5, decay over 1000 samples,
 * weight decay 0.1 constant unless set. */
static OptimizerSchedule base(LRDecayStyle style, double warmup) {
    return (OptimizerSchedule){.init_lr = 0.0, .max_lr = 1e-3, .min_lr = 1e-5,
                               .warmup_steps = warmup, .decay_steps = 1000, .style = style,
                               .start_wd = 0.1, .end_wd = 0.1, .wd_incr_steps = 1000,
                               .wd_style = WD_INCR_CONSTANT};
}

typedef struct {
    int64_t at;
    double lr;
} Point;

static void check_lr(const char *what, const OptimizerSchedule *s, const Point *p, int n) {
    for (int i = 0; i < n; i++) expect(what, p[i].at, optimizer_schedule_lr(s, p[i].at), p[i].lr);
}

#define CHECK_LR(what, s, ...)                                                                      \
    do {                                                                                           \
        const Point points[] = {__VA_ARGS__};                                                      \
        check_lr(what, &(s), points, (int)(sizeof points / sizeof points[0]));                     \
    } while (0)

static void learning_rates(void) {
    OptimizerSchedule s = base(LR_DECAY_LINEAR, 100);
    s.init_lr = 1e-4;
    CHECK_LR("linear, warmup from 1e-4", s, {0, 0.0001}, {50, 0.00055}, {100, 0.001},
             {101, 0.0009989}, {550, 0.000505}, {1000, 1e-05}, {1001, 1e-05});
    s = base(LR_DECAY_COSINE, 64);
    CHECK_LR("cosine", s, {0, 0.0}, {32, 0.0005}, {64, 0.001}, {65, 0.0009999972118069297},
             {500, 0.0005580632554147867}, {999, 1.000278819307026e-05}, {1000, 1e-05},
             {2000, 1e-05});
    s = base(LR_DECAY_INVERSE_SQUARE_ROOT, 100);
    CHECK_LR("inverse-square-root", s, {0, 0.0}, {1, 1e-05}, {100, 0.001},
             {101, 0.000995037190209989}, {400, 0.0005}, {1000, 0.00031622776601683794},
             {1001, 1e-05});
    s = base(LR_DECAY_INVERSE_SQUARE_ROOT, 0);
    s.min_lr = 2e-4;
    CHECK_LR("inverse-square-root without warmup", s, {0, 0.001}, {1, 0.001}, {4, 0.0005},
             {100, 0.0002});
    s = base(LR_DECAY_CONSTANT, 10);
    CHECK_LR("constant", s, {0, 0.0}, {5, 0.0005}, {10, 0.001}, {11, 0.001}, {5000, 0.001});
    s = base(LR_DECAY_WSD, 100);
    s.wsd_decay_steps = 200;
    s.wsd_style = WSD_DECAY_EXPONENTIAL;
    CHECK_LR("WSD exponential", s, {0, 0.0}, {100, 0.001}, {500, 0.001}, {800, 0.001},
             {801, 0.0009931497203991783}, {900, 0.0004200714267493642}, {1000, 1e-05},
             {1001, 1e-05});
    s.wsd_style = WSD_DECAY_LINEAR;
    CHECK_LR("WSD linear", s, {800, 0.001}, {850, 0.0007525}, {1000, 1e-05});
    s.wsd_style = WSD_DECAY_COSINE;
    CHECK_LR("WSD cosine", s, {800, 0.001}, {850, 0.000855017856687341},
             {999, 1.006106692157801e-05});
    s.wsd_style = WSD_DECAY_MINUS_SQRT;
    CHECK_LR("WSD minus_sqrt", s, {800, 0.001}, {850, 0.000505}, {1000, 1e-05});
    s = base(LR_DECAY_LINEAR, 0.05 * 1000); /* --lr-warmup-fraction 0.05 */
    CHECK_LR("linear, warmup fraction", s, {0, 0.0}, {25, 0.0005}, {50, 0.001},
             {51, 0.000998957894736842}, {700, 0.00032263157894736843});
}

static void weight_decays(void) {
    OptimizerSchedule s = base(LR_DECAY_LINEAR, 0);
    expect("constant weight decay", 500, optimizer_schedule_wd(&s, 500), 0.1);
    s.start_wd = 0.0;
    s.wd_style = WD_INCR_LINEAR;
    const Point linear[] = {{0, 0.0}, {250, 0.025}, {1000, 0.1}, {1001, 0.1}};
    for (int i = 0; i < 4; i++)
        expect("linear weight decay", linear[i].at, optimizer_schedule_wd(&s, linear[i].at), linear[i].lr);
    s.wd_style = WD_INCR_COSINE;
    const Point cosine[] = {{0, 0.0}, {250, 0.014644660940672627}, {500, 0.05}, {1000, 0.1}, {1001, 0.1}};
    for (int i = 0; i < 5; i++)
        expect("cosine weight decay", cosine[i].at, optimizer_schedule_wd(&s, cosine[i].at), cosine[i].lr);
}

/* --rampup-batch-size 4 4 100 --global-batch-size 16 (micro 2 x DP 2). */
static void batch_ramp(void) {
    const BatchSchedule b = {.global_batch_size = 16, .rampup_start = 4, .rampup_increment = 4,
                             .rampup_samples = 100};
    const int64_t at[] = {0, 32, 33, 34, 66, 67, 99, 100, 101, 1000};
    const int want[] = {4, 4, 4, 8, 8, 12, 12, 16, 16, 16};
    for (int i = 0; i < 10; i++)
        expect("ramped global batch", at[i], batch_schedule_global_batch(&b, at[i]), want[i]);
    const int64_t samples[] = {1, 50, 100, 150, 1000};
    const int64_t iters[] = {1, 11, 16, 18, 72};
    for (int i = 0; i < 5; i++)
        expect("iterations of --train-samples", samples[i],
               (double)batch_schedule_train_iters(&b, samples[i]), (double)iters[i]);
    const BatchSchedule constant = {.global_batch_size = 16};
    expect("constant global batch", 12345, batch_schedule_global_batch(&constant, 12345), 16);
    expect("iterations of --train-samples, constant batch", 1000,
           (double)batch_schedule_train_iters(&constant, 1000), 62);
}

/* --step-batch-size-schedule through the flag parser, as a recipe gives it
 * (spread over several words, a comma, lower-case and fractional suffixes,
 * steps out of order), seq 32, micro 1 x DP 2: thresholds in tokens. */
static void batch_steps(void) {
    char *argv[] = {"pretrain_gpt", "--num-layers", "1", "--hidden-size", "8",
                    "--num-attention-heads", "1", "--seq-length", "32", "--micro-batch-size", "1",
                    "--lr", "1e-3", "--tokenizer-type", "ByteTokenizer", "--mock-data",
                    "--train-samples", "100", "--step-batch-size-schedule", "0.32K:6,", "0:2 64:4",
                    "1.6k:8"};
    TrainArgs a;
    FlagParser parser;
    bool help = false;
    char err[2048];
    if (!args_parse(&a, &parser, (int)(sizeof argv / sizeof argv[0]), argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "step schedule refused: %s\n", err);
        failures++;
        return;
    }
    const int64_t at[] = {0, 1, 2, 3, 9, 10, 11, 49, 50, 51, 1000};
    const int want[] = {2, 2, 4, 4, 4, 6, 6, 6, 8, 8, 8};
    for (int i = 0; i < 11; i++)
        expect("stepped global batch", at[i], batch_schedule_global_batch(&a.batch, at[i]), want[i]);
    expect("largest stepped batch", 0, batch_schedule_max_global_batch(&a.batch), 8);
    expect("iterations of --train-samples 100, stepped", 100, (double)a.train_iters, 16);
    const int64_t samples[] = {1, 2, 3, 10, 11, 50};
    const int64_t iters[] = {1, 1, 2, 3, 4, 10};
    for (int i = 0; i < 6; i++)
        expect("iterations of --train-samples, stepped", samples[i],
               (double)batch_schedule_train_iters(&a.batch, samples[i]), (double)iters[i]);
    args_free(&a, &parser);
}

int main(void) {
    learning_rates();
    weight_decays();
    batch_ramp();
    batch_steps();
    if (failures) {
        fprintf(stderr, "test_schedules: %d value(s) differ from Megatron's\n", failures);
        return 1;
    }
    printf("test_schedules: every learning rate, weight decay and batch size equals Megatron's\n");
    return 0;
}
