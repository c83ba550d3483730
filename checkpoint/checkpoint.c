/* checkpoint/checkpoint.c — writing one rank's file of a checkpoint.
 *
 * Layout of <save>/iter_%07d/rank_%05d.h5 (HDF5, readable with h5py):
 *   /                          attributes format = "gpt3d-checkpoint" (string),
 *                              format_version = 3, rank (int64)
 *   /intervals/<parameter>/    one group per canonical parameter name (names
 *                              hold dots, never '/')
 *   /intervals/<parameter>/<begin>_<end>/
 *                              one group per owned interval, named by its
 *                              bounds in decimal; attributes canonical_shape
 *                              (int64[ndim], the full canonical shape), begin,
 *                              end (int64); datasets weight, exp_avg,
 *                              exp_avg_sq: fp32 little-endian, 1-D,
 *                              end - begin elements, contiguous (so a reader's
 *                              hyperslab is one seek and one read). The moments
 *                              are absent when the run saved no optimizer
 *                              state. Each dataset has attributes crc32c
 *                              (uint32[nblocks]) and crc32c_block_elements
 *                              (int64): see checkpoint_crc.c.
 * Files use HDF5's 1.8 format (superblock 2, object header 2), whose
 * metadata HDF5 checksums itself: a flipped header byte fails to open
 * instead of pointing a dataset at other bytes.
 * The directory protocol (.tmp, publish, latest) is in checkpoint_fs.c,
 * metadata.json in checkpoint_meta.c, reading in checkpoint_reader.c. */
#include "checkpoint/checkpoint_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"

void ckpt_hdf5_quiet(Hdf5Quiet *saved) {
    if (H5Eget_auto2(H5E_DEFAULT, &saved->func, &saved->data) < 0) {
        saved->func = NULL;
        saved->data = NULL;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ckpt_hdf5_restore(const Hdf5Quiet *saved, bool succeeded) {
    if (succeeded) H5Eset_auto2(H5E_DEFAULT, saved->func, saved->data);
}

typedef struct {
    char *out;
    size_t size;
} DetailSink;

static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    DetailSink *sink = data;
    if (n == 0 && e->desc) snprintf(sink->out, sink->size, "%s", e->desc);
    return 0;
}

void ckpt_hdf5_detail(char *out, size_t size) {
    out[0] = '\0';
    DetailSink sink = {out, size};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &sink);
}

hid_t ckpt_hdf5_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    GPT3D_CHECK(fapl >= 0, "H5Pcreate(H5P_FILE_ACCESS) failed");
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
    /* Lustre and some NFS mounts have no flock; lock where possible. */
    H5Pset_file_locking(fapl, true, true);
#endif
    return fapl;
}

const char *ckpt_tensor_name(CheckpointTensor which) {
    switch (which) {
    case CKPT_WEIGHT: return "weight";
    case CKPT_EXP_AVG: return "exp_avg";
    case CKPT_EXP_AVG_SQ: return "exp_avg_sq";
    }
    return "?";
}

void ckpt_interval_link(char *out, size_t size, int64_t begin, int64_t end) {
    snprintf(out, size, "%" PRId64 "_%" PRId64, begin, end);
}

/* What a failed write reports: the file, what we were doing, HDF5's reason. */
typedef struct {
    const char *path;
    char *err;
    size_t err_size;
} WriteCtx;

static bool h5_failed(const WriteCtx *w, const char *what, const char *name) {
    char detail[512];
    ckpt_hdf5_detail(detail, sizeof detail);
    ckpt_set_err(w->err, w->err_size, "cannot write checkpoint file '%s': %s%s%s%s failed%s%s",
                 w->path, what, name[0] ? " '" : "", name, name[0] ? "'" : "",
                 detail[0] ? ": " : "", detail);
    return false;
}

static bool write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                       hsize_t n, const void *value, const WriteCtx *w) {
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t attr = space < 0 ? -1 : H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = attr >= 0 && H5Awrite(attr, mem_type, value) >= 0;
    if (!ok) h5_failed(w, "attribute", name);
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return ok;
}

static bool write_i64_attr(hid_t loc, const char *name, int64_t value, const WriteCtx *w) {
    return write_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, 1, &value, w);
}

static bool write_string_attr(hid_t loc, const char *name, const char *value,
                              const WriteCtx *w) {
    hid_t type = H5Tcopy(H5T_C_S1);
    GPT3D_CHECK(type >= 0, "H5Tcopy failed");
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    bool ok = write_attr(loc, name, type, type, 0, 1, value, w);
    H5Tclose(type);
    return ok;
}

/* The checksum pass runs over the caller's buffer, not the file, at
 * several GB/s (core/crc32c.h), so it costs little next to the write. */
static bool write_checksums(hid_t dset, const float *data, int64_t n, const WriteCtx *w) {
    const int64_t block = ckpt_crc_block_elements(n), count = (n + block - 1) / block;
    uint32_t *crc = xmalloc((size_t)count * sizeof *crc);
    crc32c_blocks(data, (size_t)n * sizeof *data, (size_t)block * sizeof *data, crc);
    bool ok = write_attr(dset, CKPT_ATTR_CRC, H5T_STD_U32LE, H5T_NATIVE_UINT32, 1,
                         (hsize_t)count, crc, w) &&
              write_i64_attr(dset, CKPT_ATTR_CRC_BLOCK, block, w);
    free(crc);
    return ok;
}

static bool write_dataset(hid_t group, const char *name, const float *data, int64_t n,
                          hid_t dcpl, const WriteCtx *w) {
    hsize_t dims = (hsize_t)n;
    hid_t space = H5Screate_simple(1, &dims, NULL);
    hid_t dset = space < 0 ? -1
                           : H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl,
                                        H5P_DEFAULT);
    bool ok = dset >= 0 && H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                    data) >= 0;
    if (!ok) h5_failed(w, "dataset", name);
    if (ok) ok = write_checksums(dset, data, n, w);
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    return ok;
}

/* Checked before the file is created so bad input leaves nothing behind. */
static bool validate_interval(const CheckpointInterval *iv, int i, const WriteCtx *w) {
    const char *name = iv->name ? iv->name : "(null)";
    const char *why = NULL;
    int64_t numel = 1;
    if (!iv->name || !*iv->name || strchr(iv->name, '/') || strcmp(iv->name, ".") == 0)
        why = "the parameter name must be non-empty and hold no '/'";
    else if (iv->ndim < 1 || iv->ndim > CHECKPOINT_MAX_DIMS)
        why = "ndim must be between 1 and CHECKPOINT_MAX_DIMS";
    for (int d = 0; !why && d < iv->ndim; d++) {
        if (iv->shape[d] <= 0 || numel > INT64_MAX / iv->shape[d])
            why = "the canonical shape must be positive and its size fit in int64";
        else
            numel *= iv->shape[d];
    }
    if (!why && (iv->begin < 0 || iv->begin > iv->end || iv->end > numel))
        why = "the interval must satisfy 0 <= begin <= end <= numel";
    if (!why && iv->end > iv->begin && !iv->weight) why = "its weight pointer is NULL";
    if (why) {
        ckpt_set_err(w->err, w->err_size,
                     "cannot write checkpoint file '%s': interval %d (parameter '%s', [%" PRId64
                     ", %" PRId64 ")): %s",
                     w->path, i, name, iv->begin, iv->end, why);
        return false;
    }
    return true;
}

static hid_t open_or_create_group(hid_t parent, const char *name, const WriteCtx *w) {
    htri_t exists = H5Lexists(parent, name, H5P_DEFAULT);
    hid_t g = exists > 0 ? H5Gopen2(parent, name, H5P_DEFAULT)
                         : H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) h5_failed(w, "group", name);
    return g;
}

static bool write_interval(hid_t intervals, const CheckpointInterval *iv, hid_t dcpl,
                           const WriteCtx *w) {
    hid_t param = open_or_create_group(intervals, iv->name, w);
    if (param < 0) return false;
    char link[48];
    ckpt_interval_link(link, sizeof link, iv->begin, iv->end);
    if (H5Lexists(param, link, H5P_DEFAULT) > 0) {
        ckpt_set_err(w->err, w->err_size,
                     "cannot write checkpoint file '%s': interval [%" PRId64 ", %" PRId64
                     ") of parameter '%s' is listed twice",
                     w->path, iv->begin, iv->end, iv->name);
        H5Gclose(param);
        return false;
    }
    hid_t g = H5Gcreate2(param, link, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) h5_failed(w, "group", link);
    H5Gclose(param);
    if (g < 0) return false;
    int64_t n = iv->end - iv->begin;
    bool ok = write_attr(g, CKPT_ATTR_SHAPE, H5T_STD_I64LE, H5T_NATIVE_INT64, 1,
                         (hsize_t)iv->ndim, iv->shape, w) &&
              write_i64_attr(g, CKPT_ATTR_BEGIN, iv->begin, w) &&
              write_i64_attr(g, CKPT_ATTR_END, iv->end, w) &&
              write_dataset(g, ckpt_tensor_name(CKPT_WEIGHT), iv->weight, n, dcpl, w);
    if (ok && iv->exp_avg)
        ok = write_dataset(g, ckpt_tensor_name(CKPT_EXP_AVG), iv->exp_avg, n, dcpl, w);
    if (ok && iv->exp_avg_sq)
        ok = write_dataset(g, ckpt_tensor_name(CKPT_EXP_AVG_SQ), iv->exp_avg_sq, n, dcpl, w);
    H5Gclose(g);
    return ok;
}

static bool write_rank_file(hid_t fid, int rank, const CheckpointInterval *intervals,
                            int count, const WriteCtx *w) {
    if (!write_string_attr(fid, CKPT_ATTR_FORMAT, CHECKPOINT_FORMAT, w) ||
        !write_i64_attr(fid, CKPT_ATTR_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, w) ||
        !write_i64_attr(fid, CKPT_ATTR_RANK, rank, w))
        return false;
    hid_t group =
        H5Gcreate2(fid, CKPT_GROUP_INTERVALS, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) return h5_failed(w, "group", CKPT_GROUP_INTERVALS);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    GPT3D_CHECK(dcpl >= 0, "H5Pcreate(H5P_DATASET_CREATE) failed");
    H5Pset_layout(dcpl, H5D_CONTIGUOUS);
    /* Every element is written right away; filling first would write twice. */
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    bool ok = true;
    for (int i = 0; ok && i < count; i++)
        if (intervals[i].end > intervals[i].begin)
            ok = write_interval(group, &intervals[i], dcpl, w);
    H5Pclose(dcpl);
    H5Gclose(group);
    return ok;
}

static bool check_write_args(const char *save_dir, int64_t iteration, int rank, int count,
                             const CheckpointInterval *intervals, char *err, size_t err_size) {
    if (!save_dir || !*save_dir || iteration < 0 || rank < 0 || count < 0 ||
        (count > 0 && !intervals)) {
        ckpt_set_err(err, err_size,
                     "checkpoint_write_rank: bad arguments (save dir '%s', iteration %" PRId64
                     ", rank %d, %d intervals)",
                     save_dir ? save_dir : "(null)", iteration, rank, count);
        return false;
    }
    return true;
}

bool checkpoint_write_rank(const char *save_dir, int64_t iteration, int rank,
                           const CheckpointInterval *intervals, int count, char *err,
                           size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!check_write_args(save_dir, iteration, rank, count, intervals, err, err_size))
        return false;
    char tmp[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if (!ckpt_iter_path(tmp, sizeof tmp, save_dir, iteration, CKPT_TMP_SUFFIX, err, err_size) ||
        !ckpt_rank_path(path, sizeof path, tmp, rank, err, err_size))
        return false;
    WriteCtx w = {path, err, err_size};
    for (int i = 0; i < count; i++)
        if (!validate_interval(&intervals[i], i, &w)) return false;
    if (!ckpt_is_dir(tmp)) {
        ckpt_set_err(err, err_size,
                     "cannot write '%s': '%s' does not exist (checkpoint_begin_save must run "
                     "first, and --save must be a filesystem every rank sees)",
                     path, tmp);
        return false;
    }
    Hdf5Quiet quiet;
    ckpt_hdf5_quiet(&quiet);
    hid_t fapl = ckpt_hdf5_fapl();
    /* The 1.8 format checksums HDF5's own metadata; pinning both bounds keeps
     * the files readable by every HDF5 from 1.8 on, whatever HDF5 wrote them. */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    bool ok = fid >= 0 || h5_failed(&w, "creating the file", "");
    H5Pclose(fapl); /* only now: any HDF5 call clears the error stack */
    if (ok) ok = write_rank_file(fid, rank, intervals, count, &w);
    if (fid >= 0 && H5Fclose(fid) < 0 && ok) ok = h5_failed(&w, "closing the file", "");
    ckpt_hdf5_restore(&quiet, ok);
    /* Each writer flushes its own file: on a shared filesystem the rank that
     * publishes cannot flush another node's cache. */
    if (ok) ok = ckpt_fsync_path(path, false, err, err_size);
    if (!ok) unlink(path); /* so publish sees this rank's file as missing */
    return ok;
}
