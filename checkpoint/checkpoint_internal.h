/* checkpoint/checkpoint_internal.h — what the C files of checkpoint/ share.
 * Not part of the module's contract; nothing outside checkpoint/ includes it
 * but tests/test_checkpoint_raw.c (raw reads have no public entry point). */
#ifndef GPT3D_CHECKPOINT_INTERNAL_H
#define GPT3D_CHECKPOINT_INTERNAL_H

#include "checkpoint/checkpoint.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

#define CKPT_PATH_MAX 4096
#define CKPT_META_FILE "metadata.json"
#define CKPT_LATEST_FILE "latest_checkpointed_iteration.txt"
#define CKPT_TMP_SUFFIX ".tmp"
/* Where publish parks an older copy of the same iteration for the moment
 * between its two renames; readers fall back to it (see ckpt_resolve_iter_dir). */
#define CKPT_ASIDE_SUFFIX ".old"

/* Writes a message into err (tolerates err == NULL or err_size == 0). */
void ckpt_set_err(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);

/* snprintf into a path buffer; false with a message when it does not fit. */
bool ckpt_path(char *out, size_t size, char *err, size_t err_size, const char *fmt, ...)
    GPT3D_PRINTF(5, 6);

/* <save>/iter_%07d<suffix> ("" for the final name). */
bool ckpt_iter_path(char *out, size_t size, const char *save_dir, int64_t iteration,
                    const char *suffix, char *err, size_t err_size);
/* <dir>/rank_%05d.h5 */
bool ckpt_rank_path(char *out, size_t size, const char *dir, int rank, char *err,
                    size_t err_size);

bool ckpt_is_dir(const char *path);
bool ckpt_is_file(const char *path);

/* The directory holding iteration I: the final name, or the aside copy when a
 * crash hit publish between its two renames. False when neither exists. */
bool ckpt_resolve_iter_dir(char *out, size_t size, const char *dir, int64_t iteration);

/* mkdir -p of a --save directory, then a check that we may create entries
 * in it; false with a message naming --save. created (may be NULL) gets the
 * outermost directory this call created, "" when it created none. */
bool ckpt_make_save_dir(const char *save_dir, char *created, size_t created_size, char *err,
                        size_t err_size);

/* "iter_<7+ digits><suffix>" -> its iteration. */
bool ckpt_parse_iter_name(const char *name, const char *suffix, int64_t *iteration);

/* The iterations of dir's published checkpoints, newest first, each once:
 * iter_N and the iter_N.old a publish parks for a moment (a reader opens
 * either). Unfinished saves (.tmp) are not checkpoints. *out is owned by the
 * caller (free); false with a message when dir cannot be listed. */
bool ckpt_list_iterations(const char *dir, int64_t **out, int *count, char *err,
                          size_t err_size);

/* latest_checkpointed_iteration.txt of dir: missing, unusable (why says
 * why: "it is empty", "it is malformed", ...), or naming *iteration (whose
 * directory may not exist). */
typedef enum { CKPT_TRACKER_MISSING, CKPT_TRACKER_BAD, CKPT_TRACKER_OK } CkptTracker;
CkptTracker ckpt_read_tracker(const char *dir, int64_t *iteration, char *why, size_t why_size);

/* fsync a file or a directory by path. */
bool ckpt_fsync_path(const char *path, bool is_dir, char *err, size_t err_size);

/* metadata.json: validation, writing and reading (checkpoint_meta.c). */
bool ckpt_meta_validate(const CheckpointMeta *meta, const char *where, char *err,
                        size_t err_size);
bool ckpt_meta_write_file(const char *path, const CheckpointMeta *meta, char *err,
                          size_t err_size);
bool ckpt_meta_read_file(const char *path, CheckpointMeta *meta, char *err, size_t err_size);

/* HDF5 prints its error stack to stderr by default; every public entry point
 * silences it for its duration so the user sees our message, and restores the
 * caller's setting afterwards, but only when the call succeeded: HDF5 1.10
 * keeps internal state of a file whose metadata failed to load (no handle of
 * ours stays open, yet H5close cannot finish), and at exit prints "HDF5:
 * infinite loop closing library" if printing is on. Left off after a failure,
 * it stays off: later calls save and restore "off". */
typedef struct {
    H5E_auto2_t func;
    void *data;
} Hdf5Quiet;
void ckpt_hdf5_quiet(Hdf5Quiet *saved);
void ckpt_hdf5_restore(const Hdf5Quiet *saved, bool succeeded);
/* The most specific message on HDF5's error stack ("" when empty); call it
 * right after the failing call, before anything else touches the stack. */
void ckpt_hdf5_detail(char *out, size_t size);
/* File access list shared by the writer and the reader: strong close, and
 * file locking that degrades gracefully on filesystems without it. */
hid_t ckpt_hdf5_fapl(void);

/* Root attributes every rank file carries. */
#define CKPT_ATTR_FORMAT "format"
#define CKPT_ATTR_FORMAT_VERSION "format_version"
#define CKPT_ATTR_RANK "rank"
#define CKPT_ATTR_SHAPE "canonical_shape"
#define CKPT_ATTR_BEGIN "begin"
#define CKPT_ATTR_END "end"
#define CKPT_GROUP_INTERVALS "intervals"
/* Integrity (format version 2): attributes of every dataset, and the
 * metadata.json field (see checkpoint.h). */
#define CKPT_ATTR_CRC "crc32c"
#define CKPT_ATTR_CRC_BLOCK "crc32c_block_elements"
#define CKPT_META_CRC "crc32c"
#define CKPT_CRC_MIN_BLOCK 65536
#define CKPT_CRC_MAX_BLOCKS 4096
/* The fix every "fails its CRC32C check" message ends with. */
#define CKPT_DAMAGED_FIX                                                                          \
    "resume from an earlier checkpoint (checkpoint_info --load DIR --iteration N --verify "     \
    "checks one; --load resumes from the iteration DIR/latest_checkpointed_iteration.txt names)"

/* Elements per checksum block of a dataset of n elements. */
int64_t ckpt_crc_block_elements(int64_t n);

/* How a verified read failed, for the caller to name file and dataset. */
typedef enum { CKPT_CRC_OK, CKPT_CRC_IO, CKPT_CRC_MALFORMED, CKPT_CRC_MISMATCH } CkptCrcStatus;
typedef struct {
    CkptCrcStatus status;
    int64_t block, block_begin, block_end; /* CKPT_CRC_MISMATCH: elements of the dataset */
    uint32_t stored, computed;
    char detail[512]; /* HDF5's innermost message (CKPT_CRC_IO), or what is malformed */
} CkptCrcResult;

/* Raw reads of contiguous datasets (checkpoint_raw.c): a rank file opened
 * beside its HDF5 handle, buffered and, where the filesystem allows it,
 * O_DIRECT (direct_fd -1 where refused; fd -1 when the file cannot be
 * opened, and then HDF5 reads everything). */
typedef struct {
    int fd, direct_fd;
} CkptRawFile;
#define CKPT_RAW_BOUNCE_BYTES (8u << 20)
typedef struct {
    const CkptRawFile *file;
    unsigned char *bounce; /* CKPT_RAW_BOUNCE_BYTES, page aligned; NULL: buffered reads */
} CkptRawSource;
void ckpt_raw_open(CkptRawFile *f, const char *path);
void ckpt_raw_close(CkptRawFile *f);
/* NULL when out of memory (reads are then buffered). free() releases it. */
unsigned char *ckpt_raw_bounce_new(void);
/* The file offset of a dataset of n elements whose bytes are n IEEE F32LE
 * values stored contiguously, on a little-endian host; -1 otherwise. */
int64_t ckpt_raw_offset(hid_t dset, int64_t n);
/* len bytes at file offset off into out; false with detail on an I/O error
 * or a file that ends early. */
bool ckpt_raw_read(const CkptRawFile *f, unsigned char *bounce, int64_t off, size_t len,
                   void *out, char *detail, size_t size);

/* Elements [lo, hi) of a 1-D float dataset of n elements into out, reading
 * the whole checksum blocks the range touches and verifying each. A dataset
 * without checksum attributes is read unverified when !required, and fails
 * as malformed when required. raw (may be NULL) reads a contiguous
 * dataset's bytes directly. *blocks (may be NULL) counts verified blocks. */
bool ckpt_crc_read(hid_t dset, hid_t fspace, int64_t n, int64_t lo, int64_t hi, float *out,
                   bool required, const CkptRawSource *raw, int64_t *blocks,
                   CkptCrcResult *res);

/* Dataset name of each CheckpointTensor. */
const char *ckpt_tensor_name(CheckpointTensor which);

/* Link name of an interval group: "<begin>_<end>" in decimal. */
void ckpt_interval_link(char *out, size_t size, int64_t begin, int64_t end);

#endif
