/* Helper of test_checkpoint_state.sh: asserts what a checkpoint's own state
 * says, so --no-load-optim and --finetune are checked on the saved state
 * rather than through loss curves.
 *
 *   test_checkpoint_state_expect SAVE_DIR ITERATION EXPECT_ITERATION
 *       EXPECT_CONSUMED EXPECT_STEP MOMENTS
 *
 * opens iteration ITERATION of SAVE_DIR and checks that its metadata records
 * iteration EXPECT_ITERATION, EXPECT_CONSUMED consumed samples (and as many
 * scheduler steps: the scheduler counts samples) and optimizer step
 * EXPECT_STEP; that every canonical element is stored exactly once; that
 * every weight is finite; and MOMENTS: "zero" (every exp_avg and exp_avg_sq
 * element is exactly +0, as a fresh optimizer has them) or "nonzero" (all
 * finite, exp_avg_sq >= 0, and some element of each non-zero).
 * Prints one line per failed check and exits 1, or prints "ok" and exits 0;
 * exit 2 on bad usage. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"

static bool parse_int(const char *text, int64_t *out) {
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end) return false;
    *out = v;
    return true;
}

static int failures;

static void expect_field(const char *what, int64_t got, int64_t want) {
    if (got == want) return;
    printf("FAIL: %s is %" PRId64 ", want %" PRId64 "\n", what, got, want);
    failures++;
}

typedef struct {
    int64_t nonzero, nonfinite, negative;
} Census;

/* Reads a tensor piece by piece, each piece inside one stored interval, and
 * counts what the checks need. */
static bool census(CheckpointReader *r, const char *name, int64_t numel, CheckpointTensor which,
                   Census *c) {
    enum { CHUNK = 1 << 16 };
    static float buf[CHUNK];
    char err[2048];
    for (int64_t pos = 0; pos < numel;) {
        int64_t end = checkpoint_stored_piece_end(r, name, pos);
        if (end < 0) {
            printf("FAIL: %s element %" PRId64 " is in no rank file\n", name, pos);
            return false;
        }
        if (end - pos > CHUNK) end = pos + CHUNK;
        if (!checkpoint_read(r, name, which, pos, end, buf, err, sizeof err)) {
            printf("FAIL: %s\n", err);
            return false;
        }
        for (int64_t i = 0; i < end - pos; i++) {
            uint32_t bits;
            memcpy(&bits, &buf[i], sizeof bits);
            if (bits != 0) c->nonzero++;
            if (!isfinite(buf[i])) c->nonfinite++;
            if (buf[i] < 0.0f) c->negative++;
        }
        pos = end;
    }
    return true;
}

int main(int argc, char **argv) {
    int64_t iteration, want_iteration, want_consumed, want_step;
    if (argc != 7 || !parse_int(argv[2], &iteration) || !parse_int(argv[3], &want_iteration) ||
        !parse_int(argv[4], &want_consumed) || !parse_int(argv[5], &want_step) ||
        (strcmp(argv[6], "zero") && strcmp(argv[6], "nonzero"))) {
        fprintf(stderr,
                "usage: %s SAVE_DIR ITERATION EXPECT_ITERATION EXPECT_CONSUMED EXPECT_STEP "
                "zero|nonzero\n",
                argv[0]);
        return 2;
    }
    const bool zero = strcmp(argv[6], "zero") == 0;
    char err[2048];
    CheckpointReader *r = checkpoint_open(argv[1], iteration, err, sizeof err);
    if (!r) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    const CheckpointMeta *m = checkpoint_meta(r);
    expect_field("iteration", m->iteration, want_iteration);
    expect_field("consumed samples", m->consumed_train_samples, want_consumed);
    expect_field("scheduler steps", m->scheduler_num_steps, want_consumed);
    expect_field("optimizer step", m->optimizer_step, want_step);
    if (!m->has_optimizer_state) {
        printf("FAIL: the checkpoint holds no optimizer state\n");
        failures++;
    }
    if (!checkpoint_verify_coverage(r, err, sizeof err)) {
        printf("FAIL: %s\n", err);
        failures++;
    }
    Census w = {0}, mom[2] = {{0}, {0}};
    bool read_ok = checkpoint_num_params(r) > 0;
    for (int i = 0; read_ok && i < checkpoint_num_params(r); i++) {
        const char *name = checkpoint_param_name(r, i);
        int ndim;
        int64_t shape[CHECKPOINT_MAX_DIMS], numel = 1;
        checkpoint_param_shape(r, name, &ndim, shape);
        for (int d = 0; d < ndim; d++)
            numel *= shape[d];
        read_ok = census(r, name, numel, CKPT_WEIGHT, &w) &&
                  (!m->has_optimizer_state || (census(r, name, numel, CKPT_EXP_AVG, &mom[0]) &&
                                               census(r, name, numel, CKPT_EXP_AVG_SQ, &mom[1])));
    }
    if (!read_ok) failures++;
    if (w.nonfinite) {
        printf("FAIL: %" PRId64 " weights are not finite\n", w.nonfinite);
        failures++;
    }
    if (w.nonzero == 0) {
        printf("FAIL: every weight is zero\n");
        failures++;
    }
    const char *labels[2] = {"exp_avg", "exp_avg_sq"};
    for (int k = 0; read_ok && m->has_optimizer_state && k < 2; k++) {
        if (zero && mom[k].nonzero) {
            printf("FAIL: %" PRId64 " %s elements are not zero (a fresh optimizer has none)\n",
                   mom[k].nonzero, labels[k]);
            failures++;
        }
        if (!zero && (mom[k].nonzero == 0 || mom[k].nonfinite || (k == 1 && mom[k].negative))) {
            printf("FAIL: %s: %" PRId64 " non-zero, %" PRId64 " not finite, %" PRId64
                   " negative elements\n",
                   labels[k], mom[k].nonzero, mom[k].nonfinite, mom[k].negative);
            failures++;
        }
    }
    checkpoint_close(r);
    if (failures) return 1;
    printf("ok\n");
    return 0;
}
