/* checkpoint/checkpoint_reader.c — reading a checkpoint at any layout.
 *
 * checkpoint_open reads metadata.json, then walks every rank file once and
 * keeps an index of (parameter, begin, end, file, canonical shape, datasets
 * present), sorted by parameter name then begin. A read of [begin, end) of a
 * parameter walks that parameter's intervals in order and reads each overlap
 * as one hyperslab of one dataset. At most READER_OPEN_FILES rank files are
 * open at a time (least recently used is closed first), so a checkpoint of
 * thousands of ranks stays far below the process's file descriptor limit. */
#include "checkpoint/checkpoint_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READER_OPEN_FILES 16
/* checkpoint_verify_checksums reads this many checksum blocks at a time. */
#define VERIFY_CHUNK_BLOCKS 64

typedef struct {
    char *name; /* owned */
    int file;   /* rank file index */
    int ndim;
    int64_t shape[CHECKPOINT_MAX_DIMS];
    int64_t begin, end;
    unsigned tensors; /* bit (1u << CheckpointTensor) per dataset present */
} IndexEntry;

typedef struct {
    const char *name; /* points into its first entry */
    int ndim;
    int64_t shape[CHECKPOINT_MAX_DIMS];
    int64_t numel;
    int first, count; /* its entries, sorted by begin */
} IndexedParam;

typedef struct {
    int file; /* -1: slot free */
    hid_t fid;
    CkptRawFile raw; /* the same file for direct reads of its datasets' bytes */
    uint64_t last_use;
} OpenFile;

struct CheckpointReader {
    char dir[CKPT_PATH_MAX - 64]; /* room left for "/rank_%05d.h5" */
    CheckpointMeta meta;
    int num_files;
    IndexEntry *entries;
    int num_entries, cap_entries;
    IndexedParam *params;
    int num_params;
    OpenFile open[READER_OPEN_FILES];
    uint64_t clock;
    unsigned char *bounce; /* O_DIRECT reads' aligned buffer, allocated at first use */
    int64_t verified_blocks; /* checksum blocks checked so far */
};

static void file_path(const CheckpointReader *r, int file, char *out, size_t size) {
    snprintf(out, size, "%s/rank_%05d.h5", r->dir, file);
}

static bool h5_read_failed(const CheckpointReader *r, int file, const char *what, char *err,
                           size_t err_size) {
    char detail[512], path[CKPT_PATH_MAX];
    ckpt_hdf5_detail(detail, sizeof detail);
    file_path(r, file, path, sizeof path);
    ckpt_set_err(err, err_size, "cannot read checkpoint file '%s': %s%s%s", path, what,
                 detail[0] ? ": " : "", detail);
    return false;
}

/* The open HDF5 handle of a rank file, opening it (and closing the least
 * recently used one) when needed; -1 with a message on failure. *raw (when
 * raw is not NULL) gets the file's descriptors for raw reads. */
static hid_t reader_file(CheckpointReader *r, int file, const CkptRawFile **raw, char *err,
                         size_t err_size) {
    OpenFile *victim = &r->open[0];
    r->clock++;
    for (int i = 0; i < READER_OPEN_FILES; i++) {
        OpenFile *s = &r->open[i];
        if (s->file == file) {
            s->last_use = r->clock;
            if (raw) *raw = &s->raw;
            return s->fid;
        }
        if (s->last_use < victim->last_use) victim = s;
    }
    if (victim->file >= 0) {
        H5Fclose(victim->fid);
        ckpt_raw_close(&victim->raw);
    }
    victim->file = -1;
    victim->last_use = 0;
    char path[CKPT_PATH_MAX];
    file_path(r, file, path, sizeof path);
    hid_t fapl = ckpt_hdf5_fapl();
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (fid < 0) h5_read_failed(r, file, "it is not a readable HDF5 file", err, err_size);
    H5Pclose(fapl); /* only now: any HDF5 call clears the error stack */
    if (fid < 0) return -1;
    victim->file = file;
    victim->fid = fid;
    ckpt_raw_open(&victim->raw, path);
    victim->last_use = r->clock;
    if (raw) *raw = &victim->raw;
    return fid;
}

/* --- attributes ---------------------------------------------------------- */

/* An integer attribute of 1..max_n elements (a scalar when max_n == 1). */
static bool read_int_attr(hid_t loc, const char *name, int64_t *out, int max_n, int *n) {
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return false;
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    bool ok = type >= 0 && H5Tget_class(type) == H5T_INTEGER && points >= 1 && points <= max_n &&
              H5Aread(attr, H5T_NATIVE_INT64, out) >= 0;
    if (ok && n) *n = (int)points;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return ok;
}

/* A string attribute, fixed-length (as we write it) or variable-length (as
 * h5py writes Python str). */
static bool read_string_attr(hid_t loc, const char *name, char *out, size_t size) {
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return false;
    hid_t type = H5Aget_type(attr);
    bool ok = type >= 0 && H5Tget_class(type) == H5T_STRING;
    if (ok && H5Tis_variable_str(type) > 0) {
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        char *s = NULL;
        ok = H5Aread(attr, mem, &s) >= 0 && s && strlen(s) < size;
        if (ok) strcpy(out, s);
        if (s) H5free_memory(s);
        H5Tclose(mem);
    } else if (ok) {
        size_t len = H5Tget_size(type);
        ok = len < size && H5Aread(attr, type, out) >= 0;
        if (ok) out[len] = '\0';
    }
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return ok;
}

/* --- building the index -------------------------------------------------- */

typedef struct {
    CheckpointReader *r;
    int file;
    const char *param;
    char *err;
    size_t err_size;
    bool reported; /* err holds our message; H5Literate's failure adds nothing */
} IndexCtx;

static herr_t index_fail(IndexCtx *c, const char *interval, const char *why) {
    char path[CKPT_PATH_MAX];
    file_path(c->r, c->file, path, sizeof path);
    ckpt_set_err(c->err, c->err_size, "checkpoint file '%s': /%s/%s/%s: %s", path,
                 CKPT_GROUP_INTERVALS, c->param, interval, why);
    c->reported = true;
    return -1;
}

static bool entry_shape_valid(const IndexEntry *e) {
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        if (e->shape[d] <= 0 || numel > INT64_MAX / e->shape[d]) return false;
        numel *= e->shape[d];
    }
    return e->begin >= 0 && e->begin < e->end && e->end <= numel;
}

static void push_entry(CheckpointReader *r, const IndexEntry *e) {
    if (r->num_entries == r->cap_entries) {
        r->cap_entries = r->cap_entries ? 2 * r->cap_entries : 256;
        r->entries = xrealloc(r->entries, (size_t)r->cap_entries * sizeof *r->entries);
    }
    r->entries[r->num_entries++] = *e;
}

static herr_t index_interval(hid_t param_group, const char *link, const H5L_info_t *info,
                             void *data) {
    (void)info;
    IndexCtx *c = data;
    hid_t g = H5Gopen2(param_group, link, H5P_DEFAULT);
    if (g < 0) return index_fail(c, link, "is not an interval group");
    IndexEntry e = {.file = c->file};
    int64_t begin = 0, end = 0;
    bool ok = read_int_attr(g, CKPT_ATTR_SHAPE, e.shape, CHECKPOINT_MAX_DIMS, &e.ndim) &&
              read_int_attr(g, CKPT_ATTR_BEGIN, &begin, 1, NULL) &&
              read_int_attr(g, CKPT_ATTR_END, &end, 1, NULL);
    e.begin = begin;
    e.end = end;
    for (int t = CKPT_WEIGHT; ok && t <= CKPT_EXP_AVG_SQ; t++)
        if (H5Lexists(g, ckpt_tensor_name((CheckpointTensor)t), H5P_DEFAULT) > 0)
            e.tensors |= 1u << t;
    H5Gclose(g);
    if (!ok)
        return index_fail(c, link, "missing or malformed canonical_shape/begin/end attributes");
    char expected[48];
    ckpt_interval_link(expected, sizeof expected, e.begin, e.end);
    if (!entry_shape_valid(&e) || strcmp(expected, link) != 0)
        return index_fail(c, link,
                          "bounds are inconsistent with its name or canonical_shape (need "
                          "0 <= begin < end <= numel, group named <begin>_<end>)");
    if (!(e.tensors & (1u << CKPT_WEIGHT))) return index_fail(c, link, "has no weight dataset");
    e.name = xstrdup(c->param);
    push_entry(c->r, &e);
    return 0;
}

static herr_t index_param(hid_t intervals, const char *name, const H5L_info_t *info,
                          void *data) {
    (void)info;
    IndexCtx *c = data;
    c->param = name;
    hid_t g = H5Gopen2(intervals, name, H5P_DEFAULT);
    if (g < 0) return index_fail(c, "", "is not a parameter group");
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, index_interval, c);
    H5Gclose(g);
    if (rc < 0 && !c->reported) return index_fail(c, "", "cannot list its intervals");
    return rc < 0 ? -1 : 0;
}

static bool index_file(CheckpointReader *r, int file, char *err, size_t err_size) {
    char path[CKPT_PATH_MAX];
    file_path(r, file, path, sizeof path);
    if (!ckpt_is_file(path)) {
        ckpt_set_err(err, err_size,
                     "checkpoint '%s' is incomplete: rank file '%s' is missing (its metadata "
                     "says it was saved by %d ranks)",
                     r->dir, path, r->num_files);
        return false;
    }
    hid_t fid = reader_file(r, file, NULL, err, err_size);
    if (fid < 0) return false;
    char format[64];
    int64_t version = 0, rank = -1;
    /* The version must be metadata.json's: a rank file that claims another
     * one (or a metadata.json whose version digit flipped) would otherwise
     * decide whether checksums are required. */
    if (!read_string_attr(fid, CKPT_ATTR_FORMAT, format, sizeof format) ||
        strcmp(format, CHECKPOINT_FORMAT) != 0 ||
        !read_int_attr(fid, CKPT_ATTR_FORMAT_VERSION, &version, 1, NULL) ||
        version != r->meta.format_version ||
        !read_int_attr(fid, CKPT_ATTR_RANK, &rank, 1, NULL) || rank != file) {
        ckpt_set_err(err, err_size,
                     "'%s' is not rank %d of a gpt3d checkpoint of format version %d, the "
                     "version '%s/%s' names (root attributes format, format_version, rank): "
                     "one of the two files is damaged or from another checkpoint",
                     path, file, r->meta.format_version, r->dir, CKPT_META_FILE);
        return false;
    }
    IndexCtx c = {r, file, "", err, err_size, false};
    hid_t g = H5Gopen2(fid, CKPT_GROUP_INTERVALS, H5P_DEFAULT);
    if (g < 0) return h5_read_failed(r, file, "it has no /intervals group", err, err_size);
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, index_param, &c);
    if (rc < 0 && !c.reported) h5_read_failed(r, file, "cannot list /intervals", err, err_size);
    H5Gclose(g);
    return rc >= 0;
}

static int compare_entries(const void *a, const void *b) {
    const IndexEntry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->file > y->file) - (x->file < y->file);
}

static bool same_shape(const IndexEntry *a, const IndexEntry *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static void format_shape(const IndexEntry *e, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (int d = 0; d < e->ndim && used < size; d++)
        used += (size_t)snprintf(out + used, size - used, "%s%" PRId64, d ? ", " : "",
                                 e->shape[d]);
    if (used < size) snprintf(out + used, size - used, "]");
}

/* Sorts the entries and groups them into parameters, checking that every
 * file agrees on each parameter's canonical shape. */
static bool group_params(CheckpointReader *r, char *err, size_t err_size) {
    if (r->num_entries > 0) qsort(r->entries, (size_t)r->num_entries, sizeof *r->entries, compare_entries);
    r->params = xcalloc((size_t)r->num_entries + 1, sizeof *r->params);
    for (int i = 0; i < r->num_entries; i++) {
        const IndexEntry *e = &r->entries[i];
        IndexedParam *p = r->num_params ? &r->params[r->num_params - 1] : NULL;
        if (p && strcmp(p->name, e->name) == 0) {
            const IndexEntry *first = &r->entries[p->first];
            if (!same_shape(first, e)) {
                char s1[128], s2[128], f1[CKPT_PATH_MAX], f2[CKPT_PATH_MAX];
                format_shape(first, s1, sizeof s1);
                format_shape(e, s2, sizeof s2);
                file_path(r, first->file, f1, sizeof f1);
                file_path(r, e->file, f2, sizeof f2);
                ckpt_set_err(err, err_size,
                             "checkpoint '%s' is inconsistent: parameter '%s' has canonical "
                             "shape %s in '%s' but %s in '%s'",
                             r->dir, e->name, s1, f1, s2, f2);
                return false;
            }
            p->count++;
            continue;
        }
        p = &r->params[r->num_params++];
        p->name = e->name;
        p->ndim = e->ndim;
        p->numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            p->shape[d] = e->shape[d];
            p->numel *= e->shape[d];
        }
        p->first = i;
        p->count = 1;
    }
    return true;
}

/* --- public API ---------------------------------------------------------- */

/* A reader on the checkpoint in r->dir; expected_iteration < 0: any. */
static CheckpointReader *open_dir(CheckpointReader *r, int64_t expected_iteration, char *err,
                                  size_t err_size);

static CheckpointReader *new_reader(void) {
    CheckpointReader *r = xcalloc(1, sizeof *r);
    for (int i = 0; i < READER_OPEN_FILES; i++) {
        r->open[i].file = -1;
        r->open[i].raw.fd = r->open[i].raw.direct_fd = -1;
    }
    return r;
}

CheckpointReader *checkpoint_open(const char *load_dir, int64_t iteration, char *err,
                                  size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!load_dir || !*load_dir || iteration < 0) {
        ckpt_set_err(err, err_size, "checkpoint_open: no --load directory or negative iteration");
        return NULL;
    }
    CheckpointReader *r = new_reader();
    if (!ckpt_resolve_iter_dir(r->dir, sizeof r->dir, load_dir, iteration)) {
        checkpoint_iter_dir(r->dir, sizeof r->dir, load_dir, iteration);
        ckpt_set_err(err, err_size, "checkpoint directory '%s' does not exist (check --load)",
                     r->dir);
        checkpoint_close(r);
        return NULL;
    }
    return open_dir(r, iteration, err, err_size);
}

CheckpointReader *checkpoint_open_release(const char *load_dir, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    CheckpointReader *r = new_reader();
    if (!ckpt_path(r->dir, sizeof r->dir, err, err_size, "%s/%s", load_dir, CHECKPOINT_RELEASE_DIR)) {
        checkpoint_close(r);
        return NULL;
    }
    if (!ckpt_is_dir(r->dir)) {
        ckpt_set_err(err, err_size,
                     "'%s/%s' says release, but '%s' is not a directory: a release tracker names "
                     "the checkpoint in DIR/release",
                     load_dir, CKPT_LATEST_FILE, r->dir);
        checkpoint_close(r);
        return NULL;
    }
    return open_dir(r, -1, err, err_size);
}

static CheckpointReader *open_dir(CheckpointReader *r, int64_t iteration, char *err,
                                  size_t err_size) {
    char meta_path[CKPT_PATH_MAX];
    bool ok = ckpt_path(meta_path, sizeof meta_path, err, err_size, "%s/%s", r->dir,
                        CKPT_META_FILE) &&
              ckpt_meta_read_file(meta_path, &r->meta, err, err_size);
    if (ok && iteration >= 0 && r->meta.iteration != iteration) {
        ckpt_set_err(err, err_size, "'%s' says iteration %" PRId64 " but lies in the directory of iteration %" PRId64,
                     meta_path, r->meta.iteration, iteration);
        ok = false;
    }
    if (ok) {
        r->num_files = r->meta.world_size;
        Hdf5Quiet quiet;
        ckpt_hdf5_quiet(&quiet);
        for (int f = 0; ok && f < r->num_files; f++) ok = index_file(r, f, err, err_size);
        ckpt_hdf5_restore(&quiet, ok);
    }
    if (ok) ok = group_params(r, err, err_size);
    if (!ok) {
        checkpoint_close(r);
        return NULL;
    }
    return r;
}

void checkpoint_close(CheckpointReader *r) {
    if (!r) return;
    Hdf5Quiet quiet;
    ckpt_hdf5_quiet(&quiet);
    bool closed = true;
    for (int i = 0; i < READER_OPEN_FILES; i++)
        if (r->open[i].file >= 0) {
            closed = H5Fclose(r->open[i].fid) >= 0 && closed;
            ckpt_raw_close(&r->open[i].raw);
        }
    ckpt_hdf5_restore(&quiet, closed);
    for (int i = 0; i < r->num_entries; i++) free(r->entries[i].name);
    free(r->entries);
    free(r->params);
    free(r->bounce);
    free(r);
}

const CheckpointMeta *checkpoint_meta(const CheckpointReader *r) { return &r->meta; }

static int compare_param_name(const void *key, const void *elem) {
    return strcmp(key, ((const IndexedParam *)elem)->name);
}

static const IndexedParam *find_param(const CheckpointReader *r, const char *name) {
    if (!name || r->num_params == 0) return NULL;
    return bsearch(name, r->params, (size_t)r->num_params, sizeof *r->params,
                   compare_param_name);
}

bool checkpoint_param_shape(const CheckpointReader *r, const char *name, int *ndim,
                            int64_t shape[CHECKPOINT_MAX_DIMS]) {
    const IndexedParam *p = find_param(r, name);
    if (!p) return false;
    *ndim = p->ndim;
    for (int d = 0; d < CHECKPOINT_MAX_DIMS; d++) shape[d] = d < p->ndim ? p->shape[d] : 0;
    return true;
}

int checkpoint_num_params(const CheckpointReader *r) { return r->num_params; }

const char *checkpoint_param_name(const CheckpointReader *r, int i) {
    return i >= 0 && i < r->num_params ? r->params[i].name : NULL;
}

/* The message of a failed verified read: file, dataset, and why. */
static bool crc_read_failed(const CheckpointReader *r, int file, const char *dataset,
                            const CkptCrcResult *res, char *err, size_t err_size) {
    char path[CKPT_PATH_MAX];
    file_path(r, file, path, sizeof path);
    if (res->status == CKPT_CRC_MISMATCH)
        ckpt_set_err(err, err_size,
                     "checkpoint file %s: dataset %s fails its CRC32C check (block %" PRId64
                     ", elements [%" PRId64 ", %" PRId64 "): stored %08x, computed %08x): the "
                     "file is damaged; %s",
                     path, dataset, res->block, res->block_begin, res->block_end, res->stored,
                     res->computed, CKPT_DAMAGED_FIX);
    else if (res->status == CKPT_CRC_MALFORMED)
        ckpt_set_err(err, err_size, "checkpoint file %s: dataset %s %s: the file is damaged; %s",
                     path, dataset, res->detail, CKPT_DAMAGED_FIX);
    else
        ckpt_set_err(err, err_size, "cannot read checkpoint file '%s': dataset %s%s%s", path,
                     dataset, res->detail[0] ? ": " : "", res->detail);
    return false;
}

/* Reads elements [lo, hi) of the canonical tensor, all inside entry e. */
static bool read_piece(CheckpointReader *r, const IndexEntry *e, CheckpointTensor which,
                       int64_t lo, int64_t hi, float *out, char *err, size_t err_size) {
    const CkptRawFile *raw_file = NULL;
    hid_t fid = reader_file(r, e->file, &raw_file, err, err_size);
    if (fid < 0) return false;
    if (raw_file->direct_fd >= 0 && !r->bounce) r->bounce = ckpt_raw_bounce_new();
    const CkptRawSource raw = {raw_file, r->bounce};
    char link[48], path[CKPT_PATH_MAX];
    ckpt_interval_link(link, sizeof link, e->begin, e->end);
    if (!ckpt_path(path, sizeof path, err, err_size, "/%s/%s/%s/%s", CKPT_GROUP_INTERVALS,
                   e->name, link, ckpt_tensor_name(which)))
        return false;
    hid_t dset = H5Dopen2(fid, path, H5P_DEFAULT);
    if (dset < 0) return h5_read_failed(r, e->file, path, err, err_size);
    hid_t type = H5Dget_type(dset), fspace = H5Dget_space(dset);
    hsize_t dims = 0;
    bool ok = type >= 0 && H5Tget_class(type) == H5T_FLOAT && fspace >= 0 &&
              H5Sget_simple_extent_ndims(fspace) == 1 &&
              H5Sget_simple_extent_dims(fspace, &dims, NULL) == 1 &&
              dims == (hsize_t)(e->end - e->begin);
    if (!ok) {
        char path_file[CKPT_PATH_MAX];
        file_path(r, e->file, path_file, sizeof path_file);
        ckpt_set_err(err, err_size,
                     "checkpoint file '%s': %s must be a 1-D float dataset of %" PRId64
                     " elements",
                     path_file, path, e->end - e->begin);
    }
    if (ok) {
        CkptCrcResult res;
        ok = ckpt_crc_read(dset, fspace, (int64_t)dims, lo - e->begin, hi - e->begin, out,
                           r->meta.format_version >= 2, &raw, &r->verified_blocks, &res);
        if (!ok) crc_read_failed(r, e->file, path + 1, &res, err, err_size);
    }
    if (fspace >= 0) H5Sclose(fspace);
    if (type >= 0) H5Tclose(type);
    H5Dclose(dset);
    return ok;
}

/* Checks that entries of p cover [begin, end) and hold `which`, before any
 * I/O, so a failed read does no partial work. */
static bool plan_read(const CheckpointReader *r, const IndexedParam *p, CheckpointTensor which,
                      int64_t begin, int64_t end, char *err, size_t err_size) {
    int64_t cursor = begin;
    for (int i = p->first; i < p->first + p->count && cursor < end; i++) {
        const IndexEntry *e = &r->entries[i];
        if (e->end <= cursor) continue;
        if (e->begin > cursor) break;
        if (!(e->tensors & (1u << which))) {
            char path[CKPT_PATH_MAX];
            file_path(r, e->file, path, sizeof path);
            ckpt_set_err(err, err_size,
                         "checkpoint '%s' has no %s for parameter '%s' [%" PRId64 ", %" PRId64
                         ") in '%s' (saved without optimizer state?)",
                         r->dir, ckpt_tensor_name(which), p->name, e->begin, e->end, path);
            return false;
        }
        cursor = e->end;
    }
    if (cursor < end) {
        int64_t gap_end = end;
        for (int i = p->first; i < p->first + p->count; i++)
            if (r->entries[i].begin > cursor && r->entries[i].begin < gap_end)
                gap_end = r->entries[i].begin;
        ckpt_set_err(err, err_size,
                     "checkpoint '%s' is incomplete: elements [%" PRId64 ", %" PRId64
                     ") of parameter '%s' (%" PRId64 " elements) are in no rank file",
                     r->dir, cursor, gap_end, p->name, p->numel);
        return false;
    }
    return true;
}

bool checkpoint_read(CheckpointReader *r, const char *name, CheckpointTensor which, int64_t begin,
                     int64_t end, float *out, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    const IndexedParam *p = find_param(r, name);
    if (!p) {
        ckpt_set_err(err, err_size, "checkpoint '%s' has no parameter '%s'", r->dir,
                     name ? name : "(null)");
        return false;
    }
    if ((int)which < CKPT_WEIGHT || (int)which > CKPT_EXP_AVG_SQ || begin < 0 || begin > end ||
        end > p->numel) {
        ckpt_set_err(err, err_size,
                     "checkpoint_read: bad request [%" PRId64 ", %" PRId64
                     ") of parameter '%s' (%" PRId64 " elements), tensor %d",
                     begin, end, p->name, p->numel, (int)which);
        return false;
    }
    if (begin == end) return true;
    if (!plan_read(r, p, which, begin, end, err, err_size)) return false;
    Hdf5Quiet quiet;
    ckpt_hdf5_quiet(&quiet);
    bool ok = true;
    int64_t cursor = begin;
    for (int i = p->first; ok && i < p->first + p->count && cursor < end; i++) {
        const IndexEntry *e = &r->entries[i];
        if (e->end <= cursor) continue;
        int64_t hi = e->end < end ? e->end : end;
        ok = read_piece(r, e, which, cursor, hi, out + (cursor - begin), err, err_size);
        cursor = hi;
    }
    ckpt_hdf5_restore(&quiet, ok);
    return ok;
}

bool checkpoint_verify_coverage(CheckpointReader *r, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    for (int k = 0; k < r->num_params; k++) {
        const IndexedParam *p = &r->params[k];
        int64_t cursor = 0;
        const IndexEntry *last = NULL; /* the entry that reaches cursor */
        for (int i = p->first; i < p->first + p->count; i++) {
            const IndexEntry *e = &r->entries[i];
            char path[CKPT_PATH_MAX];
            file_path(r, e->file, path, sizeof path);
            if (e->begin > cursor) {
                ckpt_set_err(err, err_size,
                             "checkpoint '%s': parameter '%s' has a gap: elements [%" PRId64
                             ", %" PRId64 ") are in no rank file",
                             r->dir, p->name, cursor, e->begin);
                return false;
            }
            if (e->begin < cursor) {
                char other[CKPT_PATH_MAX];
                file_path(r, last->file, other, sizeof other);
                ckpt_set_err(err, err_size,
                             "checkpoint '%s': parameter '%s' has overlapping intervals [%" PRId64
                             ", %" PRId64 ") in '%s' and [%" PRId64 ", %" PRId64 ") in '%s'",
                             r->dir, p->name, last->begin, last->end, other, e->begin, e->end,
                             path);
                return false;
            }
            cursor = e->end;
            last = e;
        }
        if (cursor < p->numel) {
            ckpt_set_err(err, err_size,
                         "checkpoint '%s': parameter '%s' has a gap: elements [%" PRId64
                         ", %" PRId64 ") of %" PRId64 " are in no rank file",
                         r->dir, p->name, cursor, p->numel, p->numel);
            return false;
        }
    }
    return true;
}

bool checkpoint_verify_checksums(CheckpointReader *r, CheckpointVerifyStats *stats, char *err,
                                 size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    memset(stats, 0, sizeof *stats);
    const int64_t blocks_before = r->verified_blocks;
    int64_t cap = 0;
    float *buf = NULL;
    Hdf5Quiet quiet;
    ckpt_hdf5_quiet(&quiet);
    bool ok = true;
    for (int i = 0; ok && i < r->num_entries; i++) {
        const IndexEntry *e = &r->entries[i];
        /* Whole checksum blocks at a time, so memory stays bounded (and no
         * block is read twice) however large an interval is. */
        const int64_t n = e->end - e->begin, step = VERIFY_CHUNK_BLOCKS * ckpt_crc_block_elements(n);
        const int64_t want = n < step ? n : step;
        if (want > cap) buf = xrealloc(buf, (size_t)(cap = want) * sizeof *buf);
        for (int t = CKPT_WEIGHT; ok && t <= CKPT_EXP_AVG_SQ; t++) {
            if (!(e->tensors & (1u << t))) continue;
            for (int64_t lo = e->begin; ok && lo < e->end; lo += step)
                ok = read_piece(r, e, (CheckpointTensor)t, lo, e->end - lo < step ? e->end : lo + step,
                                buf, err, err_size);
            stats->datasets += ok;
            stats->bytes += ok ? n * (int64_t)sizeof(float) : 0;
        }
    }
    ckpt_hdf5_restore(&quiet, ok);
    free(buf);
    stats->blocks = r->verified_blocks - blocks_before;
    return ok;
}

int64_t checkpoint_stored_piece_end(const CheckpointReader *r, const char *name, int64_t pos) {
    const IndexedParam *p = find_param(r, name);
    if (!p) return -1;
    for (int i = p->first; i < p->first + p->count; i++) {
        const IndexEntry *e = &r->entries[i];
        if (e->begin <= pos && pos < e->end) return e->end;
    }
    return -1;
}
