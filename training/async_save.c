#include "training/async_save.h"

#include <hdf5.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/host_memory.h"
#include "core/timer.h"

struct AsyncWriter {
    float *buffer;
    size_t buffer_floats;
    bool pending;
    pthread_t thread;
    atomic_bool done;
    /* The job: read by the thread only while pending. */
    char save_dir[4096];
    int rank;
    CheckpointInterval *intervals;
    int count;
    CheckpointMeta meta;
    long delay_ms;
    bool kill_after_write;
    /* The result: written by the thread before `done`, read after join. */
    bool ok;
    double seconds;
    char err[2048];
};

AsyncWriter *async_writer_create(char *err, size_t err_size) {
    hbool_t safe = 0;
    if (H5is_library_threadsafe(&safe) < 0 || !safe) {
        snprintf(err, err_size,
                 "--async-save needs an HDF5 library built thread-safe (training reads its data "
                 "through HDF5 while the checkpoint is written); this one is not: save "
                 "synchronously (drop --async-save) or link a thread-safe HDF5");
        return NULL;
    }
    AsyncWriter *w = xcalloc(1, sizeof *w);
    atomic_init(&w->done, false);
    return w;
}

static void *write_in_background(void *arg) {
    AsyncWriter *w = arg;
    if (w->delay_ms > 0) {
        struct timespec d = {w->delay_ms / 1000, (w->delay_ms % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
    const double start = timer_now_s();
    w->ok = checkpoint_write_rank(w->save_dir, w->meta.iteration, w->rank, w->intervals, w->count,
                                  w->err, sizeof w->err);
    w->seconds = timer_now_s() - start;
    if (w->kill_after_write) {
        fprintf(stderr, "test hook: rank %d kills itself in the background write of the save\n",
                w->rank);
        fflush(stderr);
        raise(SIGKILL);
    }
    atomic_store(&w->done, true);
    return NULL;
}

float *async_writer_buffer(AsyncWriter *w, size_t floats) {
    GPT3D_CHECK(!w->pending, "async save: the snapshot buffer is in use by a running write");
    if (floats > w->buffer_floats) {
        host_free(w->buffer, w->buffer_floats * sizeof(float));
        w->buffer = host_alloc_zeroed(floats * sizeof(float));
        GPT3D_CHECK(w->buffer, "out of host memory for the --async-save snapshot (%zu bytes)",
                    floats * sizeof(float));
        w->buffer_floats = floats;
    }
    return w->buffer;
}

static void read_test_hooks(AsyncWriter *w) {
    const char *delay = getenv("GPT3D_TEST_ASYNC_SAVE_DELAY_MS");
    w->delay_ms = delay ? atol(delay) : 0;
    const char *kill = getenv("GPT3D_TEST_KILL_IN_SAVE");
    int rank = -1;
    char point[64] = "";
    w->kill_after_write = kill && sscanf(kill, "%d:%63s", &rank, point) == 2 && rank == w->rank &&
                          strcmp(point, "in_async_write") == 0;
}

void async_writer_start(AsyncWriter *w, const char *save_dir, int rank,
                        CheckpointInterval *intervals, int count, const CheckpointMeta *meta) {
    GPT3D_CHECK(!w->pending, "async save: a write is already running");
    GPT3D_CHECK(strlen(save_dir) < sizeof w->save_dir, "--save path too long: %s", save_dir);
    strcpy(w->save_dir, save_dir);
    w->rank = rank;
    w->intervals = intervals;
    w->count = count;
    w->meta = *meta;
    w->ok = false;
    w->err[0] = '\0';
    read_test_hooks(w);
    atomic_store(&w->done, false);
    int rc = pthread_create(&w->thread, NULL, write_in_background, w);
    GPT3D_CHECK(rc == 0, "cannot start the --async-save writer thread (pthread_create: %s)",
                strerror(rc));
    w->pending = true;
}

bool async_writer_pending(const AsyncWriter *w) { return w && w->pending; }

bool async_writer_done(const AsyncWriter *w) { return atomic_load(&w->done); }

bool async_writer_join(AsyncWriter *w, CheckpointMeta *meta, double *seconds, char *err,
                       size_t err_size) {
    GPT3D_CHECK(w->pending, "async save: no write to wait for");
    pthread_join(w->thread, NULL);
    w->pending = false;
    free(w->intervals);
    w->intervals = NULL;
    *meta = w->meta;
    *seconds = w->seconds;
    if (!w->ok) snprintf(err, err_size, "%s", w->err);
    return w->ok;
}

void async_writer_free(AsyncWriter *w) {
    if (!w) return;
    if (w->pending) {
        pthread_join(w->thread, NULL);
        free(w->intervals);
    }
    host_free(w->buffer, w->buffer_floats * sizeof(float));
    free(w);
}
