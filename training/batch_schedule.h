/* training/batch_schedule.h — the global batch of each iteration.
 *
 * Contract. Constant (--global-batch-size), or Megatron's
 * --rampup-batch-size START INCREMENT SAMPLES: START samples per iteration,
 * INCREMENT more after each SAMPLES / ((global - START) / INCREMENT)
 * consumed samples, the full global batch once more than SAMPLES are
 * consumed; or Megatron's --step-batch-size-schedule: the batch of the
 * last step whose threshold (in samples) the consumed samples have reached.
 * The batch is a pure function of the samples consumed before the
 * iteration, so a resumed run continues on the same ramp. */
#ifndef GPT3D_BATCH_SCHEDULE_H
#define GPT3D_BATCH_SCHEDULE_H

#include <stdint.h>

#define BATCH_SCHEDULE_MAX_STEPS 64

typedef struct {
    int global_batch_size;
    int rampup_start, rampup_increment; /* rampup_start 0: no ramp */
    int64_t rampup_samples;
    int num_steps; /* 0: no step schedule; else step 0 starts at 0 samples */
    int64_t step_samples[BATCH_SCHEDULE_MAX_STEPS]; /* strictly increasing */
    int step_batch[BATCH_SCHEDULE_MAX_STEPS];
} BatchSchedule;

int batch_schedule_global_batch(const BatchSchedule *b, int64_t consumed_samples);
/* The largest global batch of the run (what buffers are sized for): a step
 * schedule's steps may be larger or smaller than --global-batch-size. */
int batch_schedule_max_global_batch(const BatchSchedule *b);
/* Iterations that consume train_samples (Megatron's update_train_iters):
 * the ramp's iterations, then whole global batches (a partial last batch is
 * dropped); with a step schedule, iterations until train_samples are
 * reached (the last one may pass them, as Megatron counts). */
int64_t batch_schedule_train_iters(const BatchSchedule *b, int64_t train_samples);

#endif
