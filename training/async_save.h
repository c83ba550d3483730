/* training/async_save.h — the background writer of --async-save.
 *
 * Contract: one rank file at a time is written by a background thread with
 * checkpoint_write_rank (the same writer, lock and checksums as a
 * synchronous save) from a host snapshot the caller filled. The thread makes
 * no MPI call; the main thread asks whether the write has finished
 * (async_writer_done, never blocks) or waits for it (async_writer_join), and
 * does the agreement and the publish itself (training/checkpointing.c). The
 * snapshot buffer is kept between saves, so only the first save pays for
 * fresh memory. */
#ifndef GPT3D_TRAINING_ASYNC_SAVE_H
#define GPT3D_TRAINING_ASYNC_SAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/checkpoint.h"

typedef struct AsyncWriter AsyncWriter;

/* NULL with a reason in err when this build cannot write in the background
 * (an HDF5 library built without thread safety). */
AsyncWriter *async_writer_create(char *err, size_t err_size);
/* Waits for a running write first, so no thread outlives the trainer. */
void async_writer_free(AsyncWriter *w);

/* The snapshot memory, at least `floats` long; valid until the next call. */
float *async_writer_buffer(AsyncWriter *w, size_t floats);

/* Starts writing `intervals` (owned by the writer from now on, pointing
 * into the snapshot) as `rank`'s file of iteration meta->iteration under
 * save_dir. Test hooks, read here on the main thread:
 * GPT3D_TEST_ASYNC_SAVE_DELAY_MS=N delays the write by N ms (so a test sees
 * training go on, and a publish that does not wait fails);
 * GPT3D_TEST_KILL_IN_SAVE="RANK:in_async_write" SIGKILLs that rank in the
 * background thread once its rank file is written, before any agreement. */
void async_writer_start(AsyncWriter *w, const char *save_dir, int rank,
                        CheckpointInterval *intervals, int count, const CheckpointMeta *meta);

bool async_writer_pending(const AsyncWriter *w);
/* True once the background write has finished (successfully or not). */
bool async_writer_done(const AsyncWriter *w);
/* Waits for the write and ends the pending state: its result, its message
 * in err on failure, its metadata and how long it took. */
bool async_writer_join(AsyncWriter *w, CheckpointMeta *meta, double *seconds, char *err,
                       size_t err_size);

#endif
