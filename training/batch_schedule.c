#include "training/batch_schedule.h"

int batch_schedule_global_batch(const BatchSchedule *b, int64_t consumed) {
    if (b->num_steps > 0) {
        int k = 0;
        while (k + 1 < b->num_steps && consumed >= b->step_samples[k + 1]) k++;
        return b->step_batch[k];
    }
    if (b->rampup_start == 0 || consumed > b->rampup_samples) return b->global_batch_size;
    const int increments = (b->global_batch_size - b->rampup_start) / b->rampup_increment;
    if (increments == 0) return b->global_batch_size;
    const double samples_per_increment = (double)b->rampup_samples / increments;
    const int64_t steps = (int64_t)((double)consumed / samples_per_increment);
    return b->rampup_start + (int)steps * b->rampup_increment;
}

int batch_schedule_max_global_batch(const BatchSchedule *b) {
    int max = b->num_steps > 0 ? 0 : b->global_batch_size;
    for (int k = 0; k < b->num_steps; k++)
        if (b->step_batch[k] > max) max = b->step_batch[k];
    return max;
}

int64_t batch_schedule_train_iters(const BatchSchedule *b, int64_t train_samples) {
    int64_t iterations = 0, consumed = 0;
    if (b->num_steps > 0) {
        for (; consumed < train_samples; iterations++) consumed += batch_schedule_global_batch(b, consumed);
        return iterations;
    }
    if (b->rampup_start > 0)
        while (consumed <= b->rampup_samples && consumed <= train_samples) {
            consumed += batch_schedule_global_batch(b, consumed);
            iterations++;
        }
    if (train_samples > consumed) iterations += (train_samples - consumed) / b->global_batch_size;
    return iterations;
}
