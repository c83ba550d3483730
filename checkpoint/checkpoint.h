/* checkpoint/checkpoint.h — layout-independent checkpoints.
 *
 * Contract. A checkpoint of iteration I lives in <save>/iter_%07d/ and holds
 * - metadata.json: format, iteration, consumed samples, optimizer step and
 *   scheduler state, loss scale, the model shape, the layout it was saved
 *   with (TP, PP, DP, world), data description and seed (CheckpointMeta);
 * - one HDF5 file per rank, rank_%05d.h5, holding the canonical intervals
 *   that rank owns: for each, the parameter name, its canonical shape, the
 *   interval [begin, end) of the flattened canonical tensor, and fp32 arrays
 *   weight, exp_avg, exp_avg_sq of end-begin elements (moments optional).
 * A save goes into <save>/iter_%07d.tmp/ and is published by
 * checkpoint_publish() (rename to the final name, then
 * latest_checkpointed_iteration.txt written to a temporary file, fsync'd,
 * renamed over the old one, and the directory fsync'd), which the caller runs
 * on one rank after every rank has written its file. A crash at any moment
 * leaves the previous checkpoint intact and the one `latest` names.
 * Loading reads any interval of any parameter from whichever rank files hold
 * it, so a checkpoint written at one layout loads at any other.
 * Integrity (format version 2). Every dataset carries CRC32C checksums of
 * consecutive blocks of its elements: attribute crc32c (uint32[nblocks]) and
 * crc32c_block_elements (int64: 65536, doubled until there are at most 4096
 * blocks, so the attribute stays small). checkpoint_read reads the whole
 * blocks a range touches and verifies them before returning any element;
 * a mismatch fails naming the file, the dataset and the block.
 * metadata.json carries "crc32c", the CRC32C of its values (see
 * checkpoint_meta.c). Rank files are written with HDF5's 1.8+ file format,
 * whose superblock and object headers carry HDF5's own checksums, so a
 * damaged header fails in HDF5, reported with the file's name.
 * checkpoint_verify_checksums reads every dataset and checks every block.
 * Version 1 checkpoints (no checksums) load unverified.
 * This module does no communication; errors come back as messages. */
#ifndef GPT3D_CHECKPOINT_H
#define GPT3D_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/transformer_config.h"

#define CHECKPOINT_FORMAT "gpt3d-checkpoint"
/* Version 2 added the checksums (see Integrity above), version 3 the
 * architecture variant; version 1 and 2 checkpoints still load. */
#define CHECKPOINT_FORMAT_VERSION 6
#define CHECKPOINT_MIN_FORMAT_VERSION 1
#define CHECKPOINT_MAX_DIMS 4

typedef struct {
    int64_t iteration;
    int64_t consumed_train_samples;
    int64_t optimizer_step;     /* Adam's t */
    int64_t scheduler_num_steps; /* samples of the steps taken (the LR scheduler's) */
    /* Loss scaling (format 6; kind "none" when read from an older file):
     * the kind (CHECKPOINT_LOSS_SCALERS), the scale of the next step and
     * the dynamic scaler's two trackers. */
    int loss_scaler;
    double loss_scale;
    int loss_scale_growth_tracker, loss_scale_hysteresis_tracker;
    /* The model (its architecture fields, seq_length and seed are stored;
     * the init std and recomputation are not). */
    TransformerConfig model;
    /* layout it was saved with */
    int tensor_model_parallel_size, pipeline_model_parallel_size, data_parallel_size, world_size;
    int context_parallel_size; /* format 4; 1 when read from an older file */
    bool has_optimizer_state;
    char data_description[1024]; /* e.g. the --data-path and --split given */
    char tokenizer_type[64];
    int format_version; /* set by reading; a save always writes CHECKPOINT_FORMAT_VERSION */
} CheckpointMeta;

typedef enum {
    CKPT_LOSS_SCALER_NONE,
    CKPT_LOSS_SCALER_CONSTANT,
    CKPT_LOSS_SCALER_DYNAMIC
} CheckpointLossScaler;
extern const char *const CHECKPOINT_LOSS_SCALERS[]; /* "none", "constant", "dynamic" */

typedef enum { CKPT_WEIGHT = 0, CKPT_EXP_AVG = 1, CKPT_EXP_AVG_SQ = 2 } CheckpointTensor;

typedef struct {
    const char *name;                  /* canonical parameter name */
    int ndim;
    int64_t shape[CHECKPOINT_MAX_DIMS]; /* canonical full shape */
    int64_t begin, end;                /* canonical flat interval owned */
    const float *weight;               /* host fp32, end-begin elements */
    const float *exp_avg;              /* NULL when no optimizer state */
    const float *exp_avg_sq;
} CheckpointInterval;

/* Directory names. iter_dir gets "<save>/iter_0000100". */
void checkpoint_iter_dir(char *out, size_t size, const char *save_dir, int64_t iteration);

/* Creates <save>/iter_%07d.tmp/ fresh (removing a stale one). One rank calls
 * it; the others wait (barrier) before writing. */
bool checkpoint_begin_save(const char *save_dir, int64_t iteration, char *err, size_t err_size);
/* Writes this rank's file into the .tmp directory. */
bool checkpoint_write_rank(const char *save_dir, int64_t iteration, int rank,
                           const CheckpointInterval *intervals, int count, char *err,
                           size_t err_size);
/* Writes metadata.json into the .tmp directory (one rank). */
bool checkpoint_write_meta(const char *save_dir, const CheckpointMeta *meta, char *err,
                           size_t err_size);
/* After every rank wrote: fsync, rename .tmp to the final name (replacing an
 * older checkpoint of the same iteration), then replace
 * latest_checkpointed_iteration.txt by rename. One rank. */
bool checkpoint_publish(const char *save_dir, int64_t iteration, char *err, size_t err_size);

/* checkpoint_publish with a test hook: crash and fault-injection tests need
 * to act between publish's steps, which only this module can reach. It calls
 * hook(point, ctx) at "after_rename" (the new directory has its final name,
 * latest_checkpointed_iteration.txt still names the previous checkpoint) and
 * at "tracker_write" (its temporary file is open); a non-zero return is an
 * errno value that step then fails with, as a full disk would (ENOSPC).
 * hook may be NULL. */
typedef int (*CheckpointPublishHook)(const char *point, void *ctx);
bool checkpoint_publish_with_hook(const char *save_dir, int64_t iteration,
                                  CheckpointPublishHook hook, void *ctx, char *err,
                                  size_t err_size);

/* Megatron's converters write "release" into the tracker and the
 * checkpoint into DIR/release: weights to start a run from, at iteration 0,
 * without optimizer state. True when load_dir's tracker says so. */
#define CHECKPOINT_RELEASE_DIR "release"
bool checkpoint_tracker_is_release(const char *load_dir);

/* Reads latest_checkpointed_iteration.txt alone. Returns false (err empty)
 * when there is none; false with a message when it is malformed or names a
 * missing directory. Runs and tools resume with checkpoint_find_resume. */
bool checkpoint_find_latest(const char *load_dir, int64_t *iteration, char *err, size_t err_size);

/* The checkpoint a run or tool resumes from (checkpoint_recover.c): the
 * newest complete one in load_dir (metadata.json, every rank file it
 * declares, every element covered once). The tracker is trusted when it
 * names the newest iter_* directory and that one is complete; otherwise
 * (tracker missing, empty, malformed, naming a missing or incomplete
 * directory, or older than a complete one) *iteration is the newest complete
 * checkpoint and note gets one line saying so ("no usable
 * latest_checkpointed_iteration.txt in DIR (why): resuming from the newest
 * complete checkpoint iter_0000100"); note is empty when there is nothing to
 * say. False with err empty when load_dir holds no checkpoint at all (no
 * tracker, no iter_* directory); false with a message when it has
 * checkpoints but none is complete, or a tracker and no checkpoint. */
bool checkpoint_find_resume(const char *load_dir, int64_t *iteration, char *note,
                            size_t note_size, char *err, size_t err_size);
/* True when iteration's checkpoint in dir would load; else why says why. */
bool checkpoint_is_complete(const char *dir, int64_t iteration, char *why, size_t why_size);

/* A run never overwrites a checkpoint it did not write. A run starting at
 * start_iteration saves only later iterations, except that it may re-save
 * the state it loaded: resaving_start says whether iter_<start_iteration> in
 * save_dir is that state (--save is the --load directory). False with a
 * message naming the clashing iter_* directories and the fix (--load them,
 * or another --save) when save_dir holds later ones (or the start one
 * otherwise). A missing save_dir is fine. */
bool checkpoint_check_save_target(const char *save_dir, int64_t start_iteration,
                                  bool resaving_start, char *err, size_t err_size);

/* The iteration a tool should open: `requested` when the user gave
 * --iteration, else the one checkpoint_find_resume picks (note as there).
 * False with a message naming the flag or directory and the fix when the
 * request is negative, load_dir is not a directory, or it holds no usable
 * checkpoint. */
bool checkpoint_resolve_iteration(const char *load_dir, bool given, int64_t requested,
                                  int64_t *iteration, char *note, size_t note_size, char *err,
                                  size_t err_size);

/* Ownership of a --save directory (checkpoint_lock.c). The lock is
 * <save>/.gpt3d_save.lock, naming host, pid and start time, created
 * exclusively and flock()ed for the holder's life. checkpoint_lock_save_dir
 * creates save_dir if missing, probes it (checkpoint_probe_save_dir), and
 * takes the lock. NULL with err when another run holds it (its host, pid and
 * start named), when a lock names another host (never taken over: delete the
 * file if that run is gone), or the directory is unusable. A lock left by a
 * process of this host that is gone is taken over, atomically, and note says
 * so; note is empty otherwise. checkpoint_unlock removes the file and
 * releases; after a crash the file stays, and the next run on this host takes
 * it over. One process per --save: the caller locks on one rank. */
typedef struct CheckpointLock CheckpointLock;
CheckpointLock *checkpoint_lock_save_dir(const char *save_dir, char *note, size_t note_size,
                                         char *err, size_t err_size);
void checkpoint_unlock(CheckpointLock *lock);
/* Creates save_dir if missing and writes, fsyncs and removes a small file in
 * it, so an unwritable or full --save is found before any work; false with
 * one line naming --save and the reason. */
bool checkpoint_probe_save_dir(const char *save_dir, char *err, size_t err_size);

typedef struct CheckpointReader CheckpointReader;

CheckpointReader *checkpoint_open(const char *load_dir, int64_t iteration, char *err,
                                  size_t err_size);
/* The checkpoint in load_dir/release, whatever iteration its metadata
 * records. */
CheckpointReader *checkpoint_open_release(const char *load_dir, char *err, size_t err_size);
void checkpoint_close(CheckpointReader *r);
const CheckpointMeta *checkpoint_meta(const CheckpointReader *r);
/* Canonical shape of a parameter; false when the checkpoint lacks it. */
bool checkpoint_param_shape(const CheckpointReader *r, const char *name, int *ndim,
                            int64_t shape[CHECKPOINT_MAX_DIMS]);
int checkpoint_num_params(const CheckpointReader *r);
const char *checkpoint_param_name(const CheckpointReader *r, int i);
/* Fills out[0, end-begin) with elements [begin, end) of the parameter's
 * canonical flat tensor, from whichever rank files hold them. False with a
 * message when some element is not covered (or the tensor is absent). */
bool checkpoint_read(CheckpointReader *r, const char *name, CheckpointTensor which, int64_t begin,
                     int64_t end, float *out, char *err, size_t err_size);
/* Verifies that every canonical element of every parameter is covered exactly
 * once across the rank files; false with a message naming the first gap or
 * overlap. */
bool checkpoint_verify_coverage(CheckpointReader *r, char *err, size_t err_size);
/* One past the last element of the first stored interval of the parameter
 * that holds element pos; -1 when none holds it or the parameter is absent.
 * A tool that reads piece by piece up to these ends reads every piece from a
 * single rank file, so a comparison of two checkpoints does not depend on
 * how checkpoint_read stitches intervals together. */
int64_t checkpoint_stored_piece_end(const CheckpointReader *r, const char *name, int64_t pos);

/* What checkpoint_verify_checksums read. */
typedef struct {
    int64_t datasets; /* datasets read whole */
    int64_t bytes;    /* their element bytes */
    int64_t blocks;   /* checksum blocks verified (0 for a version 1 checkpoint) */
} CheckpointVerifyStats;
/* Reads every dataset of every rank file and checks every checksum block;
 * false with a message naming the first damaged file and dataset. */
bool checkpoint_verify_checksums(CheckpointReader *r, CheckpointVerifyStats *stats, char *err,
                                 size_t err_size);

/* Opens the checkpoint of `iteration` under load_dir and checks all of it:
 * coverage and every checksum. False with the first defect. */
bool checkpoint_verify_full(const char *load_dir, int64_t iteration, char *err, size_t err_size);

/* The newest checkpoint under load_dir at or below `at_most` that passes
 * checkpoint_verify_full, trying iter_* directories newest first; false when
 * none does. `first_err` (may be NULL) gets the reason the newest candidate
 * failed, so a caller can say why a checkpoint it expected was skipped. */
bool checkpoint_find_verified(const char *load_dir, int64_t at_most, int64_t *found,
                              char *first_err, size_t first_err_size);

#endif
