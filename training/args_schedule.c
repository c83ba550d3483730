/* The training length and the schedules, with Megatron's rules: a run is
 * iteration-based (--train-iters, lengths in iterations) or sample-based
 * (--train-samples, lengths in samples, the only kind that may ramp its
 * batch); either way the schedules end up in samples (optimizer.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/transformer_config.h"
#include "training/args_internal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

/* The flags of the other kind of run must not be given. */
static bool check_one_kind(const FlagParser *p, bool samples, char *err, size_t err_size) {
    static const char *const ITERS[] = {"lr-decay-iters", "lr-warmup-iters", "lr-wsd-decay-iters"};
    static const char *const SAMPLES[] = {"lr-decay-samples", "lr-warmup-samples",
                                          "lr-wsd-decay-samples", "rampup-batch-size"};
    const char *const *other = samples ? ITERS : SAMPLES;
    const int n = samples ? 3 : 4;
    for (int i = 0; i < n; i++)
        if (flags_was_set(p, other[i]))
            FAIL("--%s belongs to %s-based run, but this one gives --%s; use the --*-%s "
                 "flags with --%s",
                 other[i], samples ? "an iteration" : "a sample", samples ? "train-samples" : "train-iters",
                 samples ? "samples" : "iters", samples ? "train-samples" : "train-iters");
    return true;
}

static bool parse_positive(const char *word, int64_t *out) {
    char *end = NULL;
    const long long v = strtoll(word, &end, 10);
    if (end == word || *end || v < 1) return false;
    *out = v;
    return true;
}

/* --rampup-batch-size START INCREMENT SAMPLES. */
static bool resolve_rampup(TrainArgs *a, char *err, size_t err_size) {
    BatchSchedule *b = &a->batch;
    *b = (BatchSchedule){.global_batch_size = a->global_batch_size};
    if (a->rampup_batch_size.count == 0) return true;
    int64_t v[3];
    if (a->rampup_batch_size.count != 3 || !parse_positive(a->rampup_batch_size.items[0], &v[0]) ||
        !parse_positive(a->rampup_batch_size.items[1], &v[1]) ||
        !parse_positive(a->rampup_batch_size.items[2], &v[2]))
        FAIL("--rampup-batch-size takes three positive integers: START INCREMENT SAMPLES (e.g. "
             "--rampup-batch-size 32 32 1000000)");
    const int per_step = a->micro_batch_size * a->data_parallel_size;
    if (v[0] > a->global_batch_size || (a->global_batch_size - v[0]) % v[1])
        FAIL("--rampup-batch-size %lld %lld ...: the ramp from %lld in steps of %lld must reach "
             "--global-batch-size %d exactly",
             (long long)v[0], (long long)v[1], (long long)v[0], (long long)v[1],
             a->global_batch_size);
    if (v[0] % per_step || v[1] % per_step)
        FAIL("--rampup-batch-size %lld %lld ...: START and INCREMENT must be multiples of "
             "--micro-batch-size %d x data-parallel size %d = %d",
             (long long)v[0], (long long)v[1], a->micro_batch_size, a->data_parallel_size, per_step);
    b->rampup_start = (int)v[0];
    b->rampup_increment = (int)v[1];
    b->rampup_samples = v[2];
    return true;
}

/* One number of --step-batch-size-schedule: Megatron reads a decimal with
 * an optional K/M/B/T suffix and truncates it to an integer. */
static bool parse_scaled(const char *begin, const char *end, int64_t *out) {
    char word[64];
    const size_t n = (size_t)(end - begin);
    if (n == 0 || n >= sizeof word) return false;
    memcpy(word, begin, n);
    word[n] = 0;
    double scale = 1;
    const char suffix = (char)(word[n - 1] & ~0x20); /* upper case */
    const char *const SUFFIXES = "KMBT";
    const char *hit = strchr(SUFFIXES, suffix);
    if (hit && suffix) {
        scale = pow(1000, (double)(hit - SUFFIXES + 1));
        word[n - 1] = 0;
    }
    char *stop = NULL;
    const double v = strtod(word, &stop) * scale;
    if (stop == word || *stop || !(v >= 0 && v < 9e18)) return false;
    *out = (int64_t)v;
    return true;
}

/* --step-batch-size-schedule T:B ...: thresholds in tokens (Megatron passes
 * the sequence length, so they are always tokens), kept in samples. */
static bool resolve_steps(TrainArgs *a, const FlagParser *p, char *err, size_t err_size) {
    BatchSchedule *b = &a->batch;
    const StringList *l = &a->step_batch_size_schedule;
    if (l->count == 0) return true;
    if (flags_was_set(p, "global-batch-size"))
        FAIL("--step-batch-size-schedule and --global-batch-size exclude each other (as in "
             "Megatron): the schedule's last step is the full batch; drop --global-batch-size");
    if (a->rampup_batch_size.count > 0)
        FAIL("--step-batch-size-schedule and --rampup-batch-size exclude each other; write the "
             "ramp as steps");
    const int per_step = a->micro_batch_size * a->data_parallel_size;
    for (int i = 0; i < l->count; i++)
        for (const char *w = l->items[i]; *w;) {
            const size_t len = strcspn(w, " ,\t");
            if (len == 0) {
                w++;
                continue;
            }
            const char *colon = memchr(w, ':', len);
            int64_t tokens, batch;
            if (!colon || !parse_scaled(w, colon, &tokens) ||
                !parse_scaled(colon + 1, w + len, &batch) || batch < 1 || batch > INT32_MAX)
                FAIL("--step-batch-size-schedule: '%.*s' is not THRESHOLD:BATCH (tokens, then a "
                     "positive batch size; e.g. \"0:16 2.4B:320\")",
                     (int)len, w);
            if (b->num_steps == BATCH_SCHEDULE_MAX_STEPS)
                FAIL("--step-batch-size-schedule has more than %d steps", BATCH_SCHEDULE_MAX_STEPS);
            if (batch % per_step)
                FAIL("--step-batch-size-schedule: batch %lld is not a multiple of "
                     "--micro-batch-size %d x data-parallel size %d = %d",
                     (long long)batch, a->micro_batch_size, a->data_parallel_size, per_step);
            /* Megatron sorts the steps by threshold: insert in order. */
            int k = b->num_steps++;
            const int64_t samples = tokens / a->model.seq_length;
            for (; k > 0 && b->step_samples[k - 1] > samples; k--) {
                b->step_samples[k] = b->step_samples[k - 1];
                b->step_batch[k] = b->step_batch[k - 1];
            }
            b->step_samples[k] = samples;
            b->step_batch[k] = (int)batch;
            w += len;
        }
    if (b->num_steps == 0) FAIL("--step-batch-size-schedule has no THRESHOLD:BATCH step");
    if (b->step_samples[0] != 0)
        FAIL("--step-batch-size-schedule: the first step must start at 0 (its earliest starts at "
             "%lld samples)",
             (long long)b->step_samples[0]);
    for (int k = 1; k < b->num_steps; k++)
        if (b->step_samples[k] == b->step_samples[k - 1])
            FAIL("--step-batch-size-schedule: two steps start at sample %lld (thresholds are "
                 "tokens, divided by --seq-length %d); give strictly increasing thresholds",
                 (long long)b->step_samples[k], a->model.seq_length);
    return true;
}

static bool parse_styles(const TrainArgs *a, OptimizerSchedule *s, char *err, size_t err_size) {
    const int lr = transformer_choice_index(LR_DECAY_STYLE_NAMES, a->lr_decay_style);
    const int wsd = transformer_choice_index(WSD_DECAY_STYLE_NAMES, a->lr_wsd_decay_style);
    const int wd = transformer_choice_index(WD_INCR_STYLE_NAMES, a->weight_decay_incr_style);
    if (lr < 0)
        FAIL("--lr-decay-style '%s' is not one of constant, linear, cosine, inverse-square-root, "
             "WSD",
             a->lr_decay_style);
    if (wsd < 0)
        FAIL("--lr-wsd-decay-style '%s' is not one of exponential, linear, cosine, minus_sqrt",
             a->lr_wsd_decay_style);
    if (wd < 0)
        FAIL("--weight-decay-incr-style '%s' is not one of constant, linear, cosine",
             a->weight_decay_incr_style);
    s->style = (LRDecayStyle)lr;
    s->wsd_style = (WSDDecayStyle)wsd;
    s->wd_style = (WDIncrStyle)wd;
    return true;
}

/* The lengths in samples, from iterations (x the global batch) or samples. */
static bool resolve_lengths(TrainArgs *a, const FlagParser *p, bool samples, char *err,
                            size_t err_size) {
    OptimizerSchedule *s = &a->schedule;
    const int64_t G = a->global_batch_size;
    const bool fraction = flags_was_set(p, "lr-warmup-fraction");
    if (fraction && flags_was_set(p, samples ? "lr-warmup-samples" : "lr-warmup-iters"))
        FAIL("--lr-warmup-fraction and --lr-warmup-%s exclude each other; give one",
             samples ? "samples" : "iters");
    if (fraction && !(a->lr_warmup_fraction >= 0 && a->lr_warmup_fraction < 1))
        FAIL("--lr-warmup-fraction must be in [0, 1) (got %g)", a->lr_warmup_fraction);
    const int64_t warmup = samples ? a->lr_warmup_samples : a->lr_warmup_iters;
    int64_t decay = samples ? a->lr_decay_samples : a->lr_decay_iters;
    const int64_t wsd = samples ? a->lr_wsd_decay_samples : a->lr_wsd_decay_iters;
    const char *unit = samples ? "samples" : "iters";
    if (!flags_was_set(p, samples ? "lr-decay-samples" : "lr-decay-iters"))
        decay = samples ? a->train_samples : a->train_iters;
    if (warmup < 0) FAIL("--lr-warmup-%s must be >= 0 (got %lld)", unit, (long long)warmup);
    if (decay < 1) FAIL("--lr-decay-%s must be >= 1 (got %lld)", unit, (long long)decay);
    const int64_t scale = samples ? 1 : G;
    s->decay_steps = decay * scale;
    s->warmup_steps = fraction ? a->lr_warmup_fraction * (double)s->decay_steps : (double)(warmup * scale);
    s->wd_incr_steps = samples ? a->train_samples : a->train_iters * G;
    if (s->style != LR_DECAY_CONSTANT && s->warmup_steps >= (double)s->decay_steps)
        FAIL("the warmup (%g samples) must end before the decay does (--lr-decay-%s %lld); "
             "shorten --lr-warmup-%s or lengthen the decay",
             s->warmup_steps, unit, (long long)decay, fraction ? "fraction" : unit);
    if (s->style == LR_DECAY_WSD) {
        if (!flags_was_set(p, samples ? "lr-wsd-decay-samples" : "lr-wsd-decay-iters") ||
            wsd < 1 || wsd > decay)
            FAIL("--lr-decay-style WSD needs --lr-wsd-decay-%s N, the length of its final "
                 "anneal, between 1 and the decay's %lld",
                 unit, (long long)decay);
        s->wsd_decay_steps = wsd * scale;
    }
    return true;
}

static bool resolve_weight_decay(const TrainArgs *a, const FlagParser *p, OptimizerSchedule *s,
                                 char *err, size_t err_size) {
    const bool start = flags_was_set(p, "start-weight-decay"), end = flags_was_set(p, "end-weight-decay");
    if (!(a->weight_decay >= 0)) FAIL("--weight-decay must be >= 0");
    if (s->wd_style == WD_INCR_CONSTANT) {
        if (start || end)
            FAIL("--start-weight-decay/--end-weight-decay need --weight-decay-incr-style linear "
                 "or cosine; with the constant style use --weight-decay");
        s->start_wd = s->end_wd = a->weight_decay;
        return true;
    }
    if (!start || !end)
        FAIL("--weight-decay-incr-style %s needs both --start-weight-decay and --end-weight-decay",
             a->weight_decay_incr_style);
    if (!(a->start_weight_decay >= 0) || !(a->end_weight_decay >= a->start_weight_decay))
        FAIL("--start-weight-decay %g and --end-weight-decay %g must satisfy 0 <= start <= end",
             a->start_weight_decay, a->end_weight_decay);
    s->start_wd = a->start_weight_decay;
    s->end_wd = a->end_weight_decay;
    return true;
}

/* --decoupled-lr: Megatron's second parameter group, the same schedule at
 * another peak (and floor, --decoupled-min-lr). */
static bool resolve_decoupled(TrainArgs *a, const FlagParser *p, char *err, size_t err_size) {
    a->decoupled_lr_given = flags_was_set(p, "decoupled-lr");
    const bool floor = flags_was_set(p, "decoupled-min-lr");
    if (floor && !a->decoupled_lr_given)
        FAIL("--decoupled-min-lr %g needs --decoupled-lr (the peak it decays from)",
             a->decoupled_min_lr);
    if (!a->decoupled_lr_given) return true;
    OptimizerSchedule *d = &a->decoupled_schedule;
    *d = a->schedule;
    d->max_lr = a->decoupled_lr;
    if (floor) d->min_lr = a->decoupled_min_lr;
    if (!(d->max_lr >= 0 && isfinite(d->max_lr)))
        FAIL("--decoupled-lr must be a finite number >= 0 (got %g)", d->max_lr);
    if (!(d->min_lr >= 0) || d->min_lr > d->max_lr)
        FAIL("the decoupled learning rate's floor %g (--decoupled-min-lr, else --min-lr) must be "
             "between 0 and --decoupled-lr %g",
             d->min_lr, d->max_lr);
    return true;
}

bool args_resolve_schedule(TrainArgs *a, const FlagParser *p, char *err, size_t err_size) {
    const bool iters = flags_was_set(p, "train-iters"), samples = flags_was_set(p, "train-samples");
    if (iters == samples)
        FAIL("give exactly one of --train-iters N and --train-samples N (the run's length)");
    if (iters && a->train_iters < 1)
        FAIL("--train-iters must be >= 1 (got %lld)", (long long)a->train_iters);
    if (samples && a->train_samples < 1)
        FAIL("--train-samples must be >= 1 (got %lld)", (long long)a->train_samples);
    if (!check_one_kind(p, samples, err, err_size) || !resolve_rampup(a, err, err_size) ||
        !resolve_steps(a, p, err, err_size))
        return false;
    if (samples) {
        a->train_iters = batch_schedule_train_iters(&a->batch, a->train_samples);
        if (a->train_iters < 1)
            FAIL("--train-samples %lld is less than one global batch (%d samples)",
                 (long long)a->train_samples, batch_schedule_global_batch(&a->batch, 0));
    }
    OptimizerSchedule *s = &a->schedule;
    memset(s, 0, sizeof *s);
    if (!(a->lr >= 0)) FAIL("--lr must be >= 0");
    if (!(a->min_lr >= 0) || a->min_lr > a->lr)
        FAIL("--min-lr %g must be between 0 and --lr %g", a->min_lr, a->lr);
    if (!(a->lr_warmup_init >= 0) || a->lr_warmup_init > a->lr)
        FAIL("--lr-warmup-init %g must be between 0 and --lr %g", a->lr_warmup_init, a->lr);
    s->init_lr = a->lr_warmup_init;
    s->max_lr = a->lr;
    s->min_lr = a->min_lr;
    if (!parse_styles(a, s, err, err_size) || !resolve_lengths(a, p, samples, err, err_size) ||
        !resolve_weight_decay(a, p, s, err, err_size))
        return false;
    return resolve_decoupled(a, p, err, err_size);
}
