/* training/exit_signal.h — SIGTERM as a request to save and stop.
 *
 * Contract: after exit_signal_install(), a SIGTERM (what Slurm and most
 * schedulers send before a preemption) sets a flag instead of killing the
 * process; exit_signal_received() reads it. The trainer polls it once per
 * iteration and agrees over all ranks, so every rank finishes the same
 * iteration, saves, and exits 0. */
#ifndef GPT3D_TRAINING_EXIT_SIGNAL_H
#define GPT3D_TRAINING_EXIT_SIGNAL_H

#include <stdbool.h>

void exit_signal_install(void);
bool exit_signal_received(void);

#endif
