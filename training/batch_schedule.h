/* training/batch_schedule.h — the global batch of each iteration.
 *
 * Contract. Constant (--global-batch-size), or Megatron's
 * --rampup-batch-size START INCREMENT SAMPLES: START samples per iteration,
 * INCREMENT more after each SAMPLES / ((global - START) / INCREMENT)
 * consumed samples, the full global batch once more than SAMPLES are
 * consumed. The batch is a pure function of the samples consumed before the
 * iteration, so a resumed run continues on the same ramp. */
#ifndef GPT3D_BATCH_SCHEDULE_H
#define GPT3D_BATCH_SCHEDULE_H

#include <stdint.h>

typedef struct {
    int global_batch_size;
    int rampup_start, rampup_increment; /* rampup_start 0: no ramp */
    int64_t rampup_samples;
} BatchSchedule;

int batch_schedule_global_batch(const BatchSchedule *b, int64_t consumed_samples);
/* Iterations that consume train_samples (Megatron's update_train_iters):
 * the ramp's iterations, then whole global batches (a partial last batch is
 * dropped). */
int64_t batch_schedule_train_iters(const BatchSchedule *b, int64_t train_samples);

#endif
