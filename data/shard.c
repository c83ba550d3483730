/* data/shard.c — reading and writing HDF5 token shards (DESIGN "Data").
 *
 * Every entry point turns HDF5's automatic error printing off for the calling
 * thread (error stacks are per thread in thread-safe builds) so that the one
 * message we return, naming the file, the problem and the fix, is what the
 * user sees; the innermost HDF5 message is appended where it helps.
 *
 * The reader disables the chunk cache of /tokens: samples are small random
 * slices, and without a cache HDF5 reads just the selected bytes of an
 * uncompressed chunk instead of whole chunks. It also disables HDF5 file
 * locking, which fails on some parallel file systems and protects nothing
 * for read-only files published by rename.
 *
 * The writer streams: tokens and document offsets are staged in fixed-size
 * buffers and appended to chunked, extendible datasets, so its memory does
 * not grow with the corpus. */
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "data/data.h"
#include "data/data_util.h"

#define TOKENS_CHUNK_ELEMENTS ((hsize_t)1 << 18)
#define TOKENS_STAGE_ELEMENTS ((size_t)1 << 20) /* a multiple of the chunk */
#define OFFSETS_CHUNK_ELEMENTS ((hsize_t)1 << 15)
#define OFFSETS_STAGE_ELEMENTS ((size_t)1 << 15)
#define UINT16_VOCAB_LIMIT 65536

static const char MAKE_IT_HINT[] =
    "make shards with tools/preprocess_data, or see the README for the format";

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *client) {
    if (n == 0 && e->desc) snprintf((char *)client, 256, "%s", e->desc);
    return 0;
}

/* The most specific message on this thread's HDF5 error stack, or "". */
static void hdf5_reason(char reason[256]) {
    reason[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, reason);
}

static bool is_uint16_vocab(int64_t vocab_size) { return vocab_size <= UINT16_VOCAB_LIMIT; }

/* ------------------------------------------------------------------ reader */

struct TokenShard {
    char *path;
    hid_t file;
    hid_t tokens;
    char *tokenizer_type;
    int64_t vocab_size;
    int64_t eod_token;
    int64_t num_documents;
    int64_t num_tokens;
    int64_t stored_max_token_id; /* -1: the shard has no max_token_id attribute */
    uint64_t *offsets;
};

static void shard_release(TokenShard *s) {
    if (s->tokens >= 0) H5Dclose(s->tokens);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->path);
    free(s->tokenizer_type);
    free(s->offsets);
    free(s);
}

/* Opens root attribute `name` and checks it holds one value of `klass`. */
static hid_t open_scalar_attr(const TokenShard *s, const char *name, H5T_class_t klass,
                              const char *kind, char *err, size_t err_size) {
    if (H5Aexists(s->file, name) <= 0) {
        data_set_err(err, err_size, "token shard %s: root attribute '%s' is missing; %s", s->path,
                     name, MAKE_IT_HINT);
        return -1;
    }
    hid_t attr = H5Aopen(s->file, name, H5P_DEFAULT);
    if (attr < 0) {
        data_set_err(err, err_size, "token shard %s: cannot open root attribute '%s'", s->path,
                     name);
        return -1;
    }
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    bool ok = type >= 0 && space >= 0 && H5Tget_class(type) == klass &&
              H5Sget_simple_extent_npoints(space) == 1;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (!ok) {
        H5Aclose(attr);
        data_set_err(err, err_size, "token shard %s: root attribute '%s' must be a single %s; %s",
                     s->path, name, kind, MAKE_IT_HINT);
        return -1;
    }
    return attr;
}

/* Reads a string attribute stored either variable-length (as h5py writes
 * str) or fixed-length (as the C API usually does). */
static char *read_string_attr(const TokenShard *s, const char *name, char *err, size_t err_size) {
    hid_t attr = open_scalar_attr(s, name, H5T_STRING, "string", err, err_size);
    if (attr < 0) return NULL;
    hid_t file_type = H5Aget_type(attr);
    hid_t mem_type = H5Tcopy(H5T_C_S1);
    H5Tset_cset(mem_type, H5Tget_cset(file_type)); /* HDF5 converts no ASCII<->UTF-8 */
    char *value = NULL;
    herr_t rc;
    if (H5Tis_variable_str(file_type) > 0) {
        H5Tset_size(mem_type, H5T_VARIABLE);
        char *vl = NULL;
        rc = H5Aread(attr, mem_type, &vl);
        if (rc >= 0) value = xstrdup(vl ? vl : "");
        if (rc >= 0 && vl) H5free_memory(vl);
    } else {
        size_t size = H5Tget_size(file_type);
        H5Tset_size(mem_type, size);
        H5Tset_strpad(mem_type, H5Tget_strpad(file_type));
        value = xcalloc(size + 1, 1);
        rc = H5Aread(attr, mem_type, value);
        /* Fixed strings may be space-padded (Fortran style). */
        for (size_t n = strlen(value); n > 0 && value[n - 1] == ' '; n--) value[n - 1] = '\0';
    }
    H5Tclose(mem_type);
    H5Tclose(file_type);
    H5Aclose(attr);
    if (rc < 0) {
        free(value);
        data_set_err(err, err_size, "token shard %s: cannot read string attribute '%s'", s->path,
                     name);
        return NULL;
    }
    return value;
}

/* Reads an integer attribute of any integer width and signedness. */
static bool read_int_attr(const TokenShard *s, const char *name, int64_t *out, char *err,
                          size_t err_size) {
    hid_t attr = open_scalar_attr(s, name, H5T_INTEGER, "integer", err, err_size);
    if (attr < 0) return false;
    herr_t rc = H5Aread(attr, H5T_NATIVE_INT64, out);
    H5Aclose(attr);
    if (rc < 0) {
        data_set_err(err, err_size, "token shard %s: cannot read integer attribute '%s'", s->path,
                     name);
        return false;
    }
    return true;
}

static bool read_attributes(TokenShard *s, char *err, size_t err_size) {
    char *format = read_string_attr(s, "format", err, err_size);
    if (!format) return false;
    bool format_ok = strcmp(format, TOKEN_SHARD_FORMAT) == 0;
    if (!format_ok)
        data_set_err(err, err_size, "token shard %s: attribute format is '%s', expected '%s'; %s",
                     s->path, format, TOKEN_SHARD_FORMAT, MAKE_IT_HINT);
    free(format);
    if (!format_ok) return false;
    int64_t version = 0;
    if (!read_int_attr(s, "format_version", &version, err, err_size)) return false;
    if (version != TOKEN_SHARD_FORMAT_VERSION) {
        data_set_err(err, err_size,
                     "token shard %s: format_version is %lld but this gpt3d reads version %d; "
                     "re-make it with this gpt3d's tools/preprocess_data",
                     s->path, (long long)version, TOKEN_SHARD_FORMAT_VERSION);
        return false;
    }
    s->tokenizer_type = read_string_attr(s, "tokenizer_type", err, err_size);
    if (!s->tokenizer_type) return false;
    if (!read_int_attr(s, "vocab_size", &s->vocab_size, err, err_size)) return false;
    if (!read_int_attr(s, "eod_token", &s->eod_token, err, err_size)) return false;
    if (s->vocab_size <= 0 || s->vocab_size > INT32_MAX) {
        data_set_err(err, err_size, "token shard %s: vocab_size %lld is not in [1, 2^31); %s",
                     s->path, (long long)s->vocab_size, MAKE_IT_HINT);
        return false;
    }
    if (s->eod_token < 0 || s->eod_token >= s->vocab_size) {
        data_set_err(err, err_size,
                     "token shard %s: eod_token %lld is outside the vocabulary [0, %lld)", s->path,
                     (long long)s->eod_token, (long long)s->vocab_size);
        return false;
    }
    /* Optional: shards from before it, or from other writers, lack it. */
    s->stored_max_token_id = -1;
    if (H5Aexists(s->file, "max_token_id") > 0 &&
        (!read_int_attr(s, "max_token_id", &s->stored_max_token_id, err, err_size) ||
         s->stored_max_token_id < 0)) {
        if (s->stored_max_token_id < 0)
            data_set_err(err, err_size, "token shard %s: max_token_id %lld is negative; %s",
                         s->path, (long long)s->stored_max_token_id, MAKE_IT_HINT);
        return false;
    }
    return true;
}

/* Opens 1-D dataset `name` and returns its length in *length. */
static hid_t open_vector(TokenShard *s, const char *name, hid_t dapl, hsize_t *length, char *err,
                         size_t err_size) {
    if (H5Lexists(s->file, name, H5P_DEFAULT) <= 0) {
        data_set_err(err, err_size, "token shard %s: dataset %s is missing; %s", s->path, name,
                     MAKE_IT_HINT);
        return -1;
    }
    hid_t dset = H5Dopen2(s->file, name, dapl);
    if (dset < 0) {
        data_set_err(err, err_size, "token shard %s: %s is not a dataset; %s", s->path, name,
                     MAKE_IT_HINT);
        return -1;
    }
    hid_t space = H5Dget_space(dset);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (rank == 1) H5Sget_simple_extent_dims(space, length, NULL);
    if (space >= 0) H5Sclose(space);
    if (rank != 1) {
        H5Dclose(dset);
        data_set_err(err, err_size, "token shard %s: %s must be 1-D, it has %d dimensions; %s",
                     s->path, name, rank, MAKE_IT_HINT);
        return -1;
    }
    return dset;
}

/* True when `dset` holds unsigned integers of `bytes` bytes. */
static bool has_unsigned_type(hid_t dset, size_t bytes) {
    hid_t type = H5Dget_type(dset);
    bool ok = type >= 0 && H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE &&
              H5Tget_size(type) == bytes;
    if (type >= 0) H5Tclose(type);
    return ok;
}

static bool open_tokens(TokenShard *s, char *err, size_t err_size) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
    hsize_t length = 0;
    s->tokens = open_vector(s, "/tokens", dapl, &length, err, err_size);
    H5Pclose(dapl);
    if (s->tokens < 0) return false;
    bool narrow = is_uint16_vocab(s->vocab_size);
    if (!has_unsigned_type(s->tokens, narrow ? 2 : 4)) {
        data_set_err(
            err, err_size,
            "token shard %s: /tokens must be %s for vocab_size %lld (uint16 when vocab_size "
            "<= 65536, else uint32); %s",
            s->path, narrow ? "uint16" : "uint32", (long long)s->vocab_size, MAKE_IT_HINT);
        return false;
    }
    s->num_tokens = (int64_t)length;
    return true;
}

static bool check_offsets(const TokenShard *s, char *err, size_t err_size) {
    const uint64_t *o = s->offsets;
    int64_t n = s->num_documents;
    if (o[0] != 0) {
        data_set_err(err, err_size,
                     "token shard %s: /document_offsets must start at 0, it starts at %llu",
                     s->path, (unsigned long long)o[0]);
        return false;
    }
    for (int64_t d = 0; d < n; d++) {
        if (o[d + 1] < o[d]) {
            data_set_err(
                err, err_size,
                "token shard %s: /document_offsets decreases at document %lld (%llu -> %llu); "
                "offsets must be non-decreasing",
                s->path, (long long)d, (unsigned long long)o[d], (unsigned long long)o[d + 1]);
            return false;
        }
    }
    if (o[n] != (uint64_t)s->num_tokens) {
        data_set_err(
            err, err_size,
            "token shard %s: /document_offsets ends at %llu but /tokens holds %lld tokens; "
            "the last offset must equal the token count (was the file written completely?)",
            s->path, (unsigned long long)o[n], (long long)s->num_tokens);
        return false;
    }
    return true;
}

static bool read_offsets(TokenShard *s, char *err, size_t err_size) {
    hsize_t length = 0;
    hid_t dset = open_vector(s, "/document_offsets", H5P_DEFAULT, &length, err, err_size);
    if (dset < 0) return false;
    if (!has_unsigned_type(dset, 8)) {
        H5Dclose(dset);
        data_set_err(
            err, err_size,
            "token shard %s: /document_offsets must be uint64 (h5py: dtype=numpy.uint64); %s",
            s->path, MAKE_IT_HINT);
        return false;
    }
    if (length == 0) {
        H5Dclose(dset);
        data_set_err(err, err_size,
                     "token shard %s: /document_offsets is empty; it needs documents+1 entries "
                     "starting with 0",
                     s->path);
        return false;
    }
    s->num_documents = (int64_t)length - 1;
    s->offsets = xmalloc((size_t)length * sizeof *s->offsets);
    herr_t rc = H5Dread(dset, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->offsets);
    H5Dclose(dset);
    if (rc < 0) {
        data_set_err(err, err_size, "token shard %s: cannot read /document_offsets", s->path);
        return false;
    }
    return check_offsets(s, err, err_size);
}

/* Names the reason a path cannot be opened as HDF5, using errno when the
 * file itself is the problem (`reason` is HDF5's, taken right after the
 * failed call since every HDF5 call clears the error stack). */
static void explain_open_failure(const char *path, const char *reason, char *err,
                                 size_t err_size) {
    struct stat st;
    if (stat(path, &st) != 0) {
        data_set_err(err, err_size, "cannot open token shard %s: %s; check --data-path", path,
                     strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        data_set_err(err, err_size,
                     "token shard %s is a directory; give .h5 files (or a glob) to "
                     "--data-path",
                     path);
    } else {
        data_set_err(err, err_size, "token shard %s is not a readable HDF5 file (%s); %s", path,
                     reason[0] ? reason : "unknown HDF5 error", MAKE_IT_HINT);
    }
}

TokenShard *token_shard_open(const char *path, char *err, size_t err_size) {
    quiet_hdf5();
    TokenShard *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(path);
    s->file = -1;
    s->tokens = -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, false, true);
#endif
    s->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    char reason[256] = "";
    if (s->file < 0) hdf5_reason(reason);
    H5Pclose(fapl);
    if (s->file < 0) {
        explain_open_failure(path, reason, err, err_size);
        shard_release(s);
        return NULL;
    }
    if (!read_attributes(s, err, err_size) || !open_tokens(s, err, err_size) ||
        !read_offsets(s, err, err_size)) {
        shard_release(s);
        return NULL;
    }
    return s;
}

void token_shard_close(TokenShard *s) {
    if (!s) return;
    quiet_hdf5();
    shard_release(s);
}

const char *token_shard_path(const TokenShard *s) { return s->path; }
const char *token_shard_tokenizer_type(const TokenShard *s) { return s->tokenizer_type; }
int64_t token_shard_vocab_size(const TokenShard *s) { return s->vocab_size; }
int64_t token_shard_eod_token(const TokenShard *s) { return s->eod_token; }
int64_t token_shard_num_documents(const TokenShard *s) { return s->num_documents; }
int64_t token_shard_num_tokens(const TokenShard *s) { return s->num_tokens; }
const uint64_t *token_shard_document_offsets(const TokenShard *s) { return s->offsets; }
int64_t token_shard_stored_max_token_id(const TokenShard *s) { return s->stored_max_token_id; }

bool token_shard_scan_max_token_id(TokenShard *s, int64_t *max_id, char *err, size_t err_size) {
    enum { CHUNK = 1 << 20 };
    uint32_t *buf = xmalloc(CHUNK * sizeof *buf);
    hid_t file_space = H5Dget_space(s->tokens);
    int64_t best = -1;
    bool ok = file_space >= 0;
    char reason[256] = "";
    quiet_hdf5();
    for (uint64_t at = 0; ok && at < (uint64_t)s->num_tokens; at += CHUNK) {
        hsize_t start = at, n = (uint64_t)s->num_tokens - at < CHUNK ? s->num_tokens - at : CHUNK;
        hid_t mem_space = H5Screate_simple(1, &n, NULL);
        ok = H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &n, NULL) >= 0 &&
             H5Dread(s->tokens, H5T_NATIVE_UINT32, mem_space, file_space, H5P_DEFAULT, buf) >= 0;
        H5Sclose(mem_space);
        for (hsize_t i = 0; ok && i < n; i++)
            if ((int64_t)buf[i] > best) best = buf[i];
    }
    if (!ok) hdf5_reason(reason);
    if (file_space >= 0) H5Sclose(file_space);
    free(buf);
    if (!ok) {
        data_set_err(err, err_size, "token shard %s: reading its tokens failed (%s)", s->path,
                     reason);
        return false;
    }
    *max_id = best;
    return true;
}

bool token_shard_read(TokenShard *s, uint64_t begin, uint64_t count, int32_t *out, char *err,
                      size_t err_size) {
    if (count == 0) return true;
    if (begin > (uint64_t)s->num_tokens || count > (uint64_t)s->num_tokens - begin) {
        data_set_err(err, err_size,
                     "token shard %s: read of tokens [%llu, %llu) is past its %lld tokens", s->path,
                     (unsigned long long)begin, (unsigned long long)(begin + count),
                     (long long)s->num_tokens);
        return false;
    }
    quiet_hdf5();
    hsize_t start = begin, n = count;
    hid_t file_space = H5Dget_space(s->tokens);
    hid_t mem_space = H5Screate_simple(1, &n, NULL);
    herr_t rc = H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (rc >= 0) rc = H5Dread(s->tokens, H5T_NATIVE_INT32, mem_space, file_space, H5P_DEFAULT, out);
    char reason[256] = "";
    if (rc < 0) hdf5_reason(reason);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    if (rc < 0) {
        data_set_err(err, err_size, "token shard %s: reading tokens [%llu, %llu) failed (%s)",
                     s->path, (unsigned long long)begin, (unsigned long long)(begin + count),
                     reason);
        return false;
    }
    /* A cheap guard: an out-of-vocabulary id would index past the embedding. */
    for (uint64_t i = 0; i < count; i++) {
        if (out[i] < 0 || out[i] >= s->vocab_size) {
            data_set_err(
                err, err_size,
                "token shard %s: token %llu is id %d, outside the vocabulary [0, %lld); the "
                "file is corrupt or was written with another tokenizer",
                s->path, (unsigned long long)(begin + i), out[i], (long long)s->vocab_size);
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ writer */

/* A 1-D chunked dataset that grows by appending staged elements. */
typedef struct {
    hid_t dset;
    hid_t mem_type;
    size_t elem_size;
    unsigned char *stage;
    size_t staged;
    size_t stage_cap;
    uint64_t written;
    char *reason; /* the writer's: HDF5's words for the last failure */
} Appender;

struct TokenShardWriter {
    char *path;
    char *tmp_path;
    char *tokenizer_type;
    int64_t vocab_size;
    int64_t eod_token;
    hid_t file;
    Appender tokens;
    Appender offsets;
    uint64_t num_tokens;
    uint64_t num_documents;
    int64_t max_token_id; /* stored as an attribute, so readers check ids without a scan */
    char reason[256];
};

static bool appender_create(Appender *a, hid_t file, const char *name, hid_t file_type,
                            hid_t mem_type, hsize_t chunk, size_t stage_cap, char *reason) {
    a->reason = reason;
    hsize_t zero = 0, unlimited = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &zero, &unlimited);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_obj_track_times(dcpl, false); /* no timestamps: same input, same file bytes */
    a->dset = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (a->dset < 0) hdf5_reason(reason);
    H5Pclose(dcpl);
    H5Sclose(space);
    a->mem_type = mem_type;
    a->elem_size = H5Tget_size(mem_type);
    a->stage = xmalloc(stage_cap * a->elem_size);
    a->staged = 0;
    a->stage_cap = stage_cap;
    a->written = 0;
    return a->dset >= 0;
}

static bool appender_flush(Appender *a) {
    if (a->staged == 0) return true;
    hsize_t start = a->written, n = a->staged, total = a->written + a->staged;
    if (H5Dset_extent(a->dset, &total) < 0) {
        hdf5_reason(a->reason);
        return false;
    }
    hid_t file_space = H5Dget_space(a->dset);
    hid_t mem_space = H5Screate_simple(1, &n, NULL);
    herr_t rc = H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (rc >= 0) rc = H5Dwrite(a->dset, a->mem_type, mem_space, file_space, H5P_DEFAULT, a->stage);
    if (rc < 0) hdf5_reason(a->reason);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    if (rc < 0) return false;
    a->written = total;
    a->staged = 0;
    return true;
}

/* Room for one more element; flushes the stage when it is full. */
static void *appender_slot(Appender *a, bool *ok) {
    if (a->staged == a->stage_cap && !appender_flush(a)) {
        *ok = false;
        return NULL;
    }
    return a->stage + a->elem_size * a->staged++;
}

static void appender_close(Appender *a) {
    if (a->dset >= 0) H5Dclose(a->dset);
    a->dset = -1;
    free(a->stage);
    a->stage = NULL;
}

static void writer_io_error(const TokenShardWriter *w, const char *what, char *err,
                            size_t err_size) {
    data_set_err(err, err_size,
                 "writing token shard %s: %s failed (%s); check free disk space and "
                 "permissions",
                 w->tmp_path, what, w->reason[0] ? w->reason : "unknown HDF5 error");
}

static void writer_release(TokenShardWriter *w) {
    appender_close(&w->tokens);
    appender_close(&w->offsets);
    if (w->file >= 0) H5Fclose(w->file);
    w->file = -1;
    free(w->path);
    free(w->tmp_path);
    free(w->tokenizer_type);
    free(w);
}

/* fopen first so an unwritable directory is reported with errno's words. */
static bool probe_writable(const char *tmp_path, char *err, size_t err_size) {
    FILE *f = fopen(tmp_path, "wb");
    if (!f) {
        data_set_err(err, err_size,
                     "cannot create %s: %s; check that the output directory exists and "
                     "is writable",
                     tmp_path, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

TokenShardWriter *token_shard_writer_create(const char *path, const char *tokenizer_type,
                                            int64_t vocab_size, int64_t eod_token, char *err,
                                            size_t err_size) {
    if (vocab_size <= 0 || vocab_size > INT32_MAX || eod_token < 0 || eod_token >= vocab_size) {
        data_set_err(err, err_size,
                     "token shard %s: vocab_size %lld / eod_token %lld are inconsistent", path,
                     (long long)vocab_size, (long long)eod_token);
        return NULL;
    }
    quiet_hdf5();
    TokenShardWriter *w = xcalloc(1, sizeof *w);
    w->path = xstrdup(path);
    size_t n = strlen(path) + 32;
    w->tmp_path = xmalloc(n);
    snprintf(w->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    w->tokenizer_type = xstrdup(tokenizer_type);
    w->vocab_size = vocab_size;
    w->eod_token = eod_token;
    w->max_token_id = -1;
    w->file = -1;
    w->tokens.dset = w->offsets.dset = -1;
    if (!probe_writable(w->tmp_path, err, err_size)) {
        writer_release(w);
        return NULL;
    }
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) hdf5_reason(w->reason);
    bool narrow = is_uint16_vocab(vocab_size);
    bool ok = w->file >= 0 &&
              appender_create(&w->tokens, w->file, "tokens",
                              narrow ? H5T_STD_U16LE : H5T_STD_U32LE,
                              narrow ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32,
                              TOKENS_CHUNK_ELEMENTS, TOKENS_STAGE_ELEMENTS, w->reason) &&
              appender_create(&w->offsets, w->file, "document_offsets", H5T_STD_U64LE,
                              H5T_NATIVE_UINT64, OFFSETS_CHUNK_ELEMENTS, OFFSETS_STAGE_ELEMENTS,
                              w->reason);
    if (ok) {
        uint64_t *first = appender_slot(&w->offsets, &ok);
        *first = 0;
    }
    if (!ok) {
        writer_io_error(w, "creating the file", err, err_size);
        token_shard_writer_abort(w);
        return NULL;
    }
    return w;
}

static bool tokens_in_vocab(TokenShardWriter *w, const int32_t *tokens, size_t count,
                            char *err, size_t err_size) {
    for (size_t i = 0; i < count; i++) {
        if (tokens[i] > w->max_token_id) w->max_token_id = tokens[i];
        if (tokens[i] < 0 || tokens[i] >= w->vocab_size) {
            data_set_err(err, err_size,
                         "token shard %s: token id %d is outside the vocabulary [0, %lld)", w->path,
                         tokens[i], (long long)w->vocab_size);
            return false;
        }
    }
    return true;
}

/* Converts ids into the stage in runs, flushing each time it fills. */
static bool stage_tokens(TokenShardWriter *w, const int32_t *tokens, size_t count, char *err,
                         size_t err_size) {
    if (!tokens_in_vocab(w, tokens, count, err, err_size)) return false;
    Appender *a = &w->tokens;
    bool narrow = is_uint16_vocab(w->vocab_size);
    while (count > 0) {
        if (a->staged == a->stage_cap && !appender_flush(a)) {
            writer_io_error(w, "appending tokens", err, err_size);
            return false;
        }
        size_t run = a->stage_cap - a->staged;
        if (run > count) run = count;
        if (narrow) {
            uint16_t *dst = (uint16_t *)(void *)a->stage + a->staged;
            for (size_t i = 0; i < run; i++) dst[i] = (uint16_t)tokens[i];
        } else {
            uint32_t *dst = (uint32_t *)(void *)a->stage + a->staged;
            for (size_t i = 0; i < run; i++) dst[i] = (uint32_t)tokens[i];
        }
        a->staged += run;
        tokens += run;
        count -= run;
    }
    return true;
}

bool token_shard_writer_add_document(TokenShardWriter *w, const int32_t *tokens, size_t count,
                                     char *err, size_t err_size) {
    quiet_hdf5();
    if (!stage_tokens(w, tokens, count, err, err_size)) return false;
    w->num_tokens += count;
    w->num_documents++;
    bool ok = true;
    uint64_t *end = appender_slot(&w->offsets, &ok);
    if (!ok) {
        writer_io_error(w, "appending document offsets", err, err_size);
        return false;
    }
    *end = w->num_tokens;
    return true;
}

uint64_t token_shard_writer_num_tokens(const TokenShardWriter *w) { return w->num_tokens; }
uint64_t token_shard_writer_num_documents(const TokenShardWriter *w) { return w->num_documents; }

/* Variable-length UTF-8, as h5py writes str: h5py users read back a str,
 * not bytes. */
static bool write_string_attr(hid_t file, const char *name, const char *value, char *reason) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr >= 0 ? H5Awrite(attr, type, &value) : -1;
    if (rc < 0) hdf5_reason(reason);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return rc >= 0;
}

static bool write_int_attr(hid_t file, const char *name, int64_t value, char *reason) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr >= 0 ? H5Awrite(attr, H5T_NATIVE_INT64, &value) : -1;
    if (rc < 0) hdf5_reason(reason);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return rc >= 0;
}

static bool write_root_attributes(TokenShardWriter *w) {
    char *r = w->reason;
    return write_string_attr(w->file, "format", TOKEN_SHARD_FORMAT, r) &&
           write_int_attr(w->file, "format_version", TOKEN_SHARD_FORMAT_VERSION, r) &&
           write_string_attr(w->file, "tokenizer_type", w->tokenizer_type, r) &&
           write_int_attr(w->file, "vocab_size", w->vocab_size, r) &&
           write_int_attr(w->file, "eod_token", w->eod_token, r) &&
           (w->max_token_id < 0 || write_int_attr(w->file, "max_token_id", w->max_token_id, r));
}

bool token_shard_writer_finish(TokenShardWriter *w, char *err, size_t err_size) {
    quiet_hdf5();
    if (!appender_flush(&w->tokens) || !appender_flush(&w->offsets)) {
        writer_io_error(w, "flushing data", err, err_size);
        token_shard_writer_abort(w);
        return false;
    }
    if (!write_root_attributes(w)) {
        writer_io_error(w, "writing attributes", err, err_size);
        token_shard_writer_abort(w);
        return false;
    }
    appender_close(&w->tokens);
    appender_close(&w->offsets);
    herr_t rc = H5Fclose(w->file);
    if (rc < 0) hdf5_reason(w->reason);
    w->file = -1;
    if (rc < 0) {
        writer_io_error(w, "closing the file", err, err_size);
        token_shard_writer_abort(w);
        return false;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        data_set_err(err, err_size, "cannot rename %s to %s: %s", w->tmp_path, w->path,
                     strerror(errno));
        token_shard_writer_abort(w);
        return false;
    }
    writer_release(w);
    return true;
}

void token_shard_writer_abort(TokenShardWriter *w) {
    if (!w) return;
    quiet_hdf5();
    appender_close(&w->tokens);
    appender_close(&w->offsets);
    if (w->file >= 0) H5Fclose(w->file);
    w->file = -1;
    unlink(w->tmp_path);
    writer_release(w);
}
