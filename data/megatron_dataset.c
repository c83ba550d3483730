/* data/megatron_dataset.c — Megatron-LM's indexed dataset (PREFIX.bin +
 * PREFIX.idx, the MMIDIDX format), read in place through mmap.
 *
 * This file is the one owner of the format (data.h states the layout): the
 * training dataset and tools/convert_megatron_dataset both read through it.
 *
 * Opening validates the whole index once, by a linear pass over the mapped
 * arrays (about a second per 10^8 sequences): the header, the file size the
 * counts imply, every document index, and every sequence's bytes inside the
 * .bin. Only the document offsets (8 bytes per document) are held in memory;
 * tokens stay in the page cache. Megatron's writer lays the sequences out
 * back to back, so token t of the document stream is simply at byte
 * first_pointer + t * dtype_size; an index whose pointers jump around (other
 * writers) is still read correctly through per-sequence token offsets, at 8
 * more bytes per sequence. Integers are read little-endian, as numpy writes
 * them on every platform Megatron runs on. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "data/data.h"
#include "data/data_util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the Megatron reader loads little-endian token arrays directly"
#endif

#define HEADER_BYTES 34 /* magic 9 + version 8 + dtype 1 + two counts 8 + 8 */

static const char MAGIC[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

/* ------------------------------------------------------------ dtypes */

typedef enum {
    DT_UINT8 = 1,
    DT_INT8 = 2,
    DT_INT16 = 3,
    DT_INT32 = 4,
    DT_INT64 = 5,
    DT_FLOAT64 = 6,
    DT_FLOAT32 = 7,
    DT_UINT16 = 8
} DTypeCode;

typedef struct {
    int code;
    const char *name;
    int size;
    bool integer;
} TokenDType;

/* Megatron's DType enum, by value. */
static const TokenDType DTYPES[] = {
    {DT_UINT8, "uint8", 1, true},      {DT_INT8, "int8", 1, true},
    {DT_INT16, "int16", 2, true},      {DT_INT32, "int32", 4, true},
    {DT_INT64, "int64", 8, true},      {DT_FLOAT64, "float64", 8, false},
    {DT_FLOAT32, "float32", 4, false}, {DT_UINT16, "uint16", 2, true},
};

static const TokenDType *dtype_of_code(int code) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].code == code) return &DTYPES[i];
    return NULL;
}

/* Token i of a little-endian array of `code` (an integer dtype). */
static int64_t token_at(const unsigned char *p, int code, uint64_t i) {
    switch (code) {
    case DT_UINT8: return p[i];
    case DT_INT8: return (int8_t)p[i];
    case DT_INT16: {
        int16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case DT_UINT16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return v;
    }
    case DT_INT32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    default: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    }
}

static uint64_t load_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------ files */

typedef struct {
    char *path;
    const unsigned char *data; /* NULL for an empty file */
    uint64_t size;
} MappedFile;

static bool map_file(MappedFile *f, const char *path, char *err, size_t err_size) {
    f->path = xstrdup(path);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        data_set_err(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        data_set_err(err, err_size, "'%s' is not a regular file", path);
        return false;
    }
    f->size = (uint64_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            data_set_err(err, err_size, "cannot map '%s' into memory: %s", path, strerror(errno));
            close(fd);
            return false;
        }
        f->data = p;
    }
    close(fd); /* the mapping keeps the file */
    return true;
}

static void unmap_file(MappedFile *f) {
    if (f->data) munmap((void *)f->data, (size_t)f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------ the index */

struct MegatronDataset {
    MappedFile idx, bin;
    const TokenDType *dtype;
    uint64_t num_sequences, num_doc_indices;
    const unsigned char *lengths;  /* int32[num_sequences], in idx */
    const unsigned char *pointers; /* int64[num_sequences], in idx */
    const unsigned char *doc_indices;
    uint64_t num_tokens;
    uint64_t *doc_offsets;  /* documents + 1 token offsets */
    uint64_t first_pointer; /* byte of token 0 when contiguous */
    uint64_t *seq_offsets;  /* sequences + 1 token offsets; NULL when contiguous */
};

static int32_t sequence_length(const MegatronDataset *m, uint64_t s) {
    int32_t v;
    memcpy(&v, m->lengths + 4 * s, 4);
    return v;
}

static int64_t sequence_pointer(const MegatronDataset *m, uint64_t s) {
    return (int64_t)load_u64(m->pointers + 8 * s);
}

static bool check_index_size(const MegatronDataset *m, char *err, size_t err_size) {
    const uint64_t n = m->num_sequences, k = m->num_doc_indices, size = m->idx.size;
    /* Bound the counts by the file size first so the products cannot overflow. */
    if (n > size / 12 || k > size / 8) {
        data_set_err(err, err_size,
                     "'%s' is truncated: its header counts %" PRIu64 " sequences and %" PRIu64
                     " document indices, more than its %" PRIu64 " bytes can hold",
                     m->idx.path, n, k, size);
        return false;
    }
    const uint64_t expected = HEADER_BYTES + 12 * n + 8 * k;
    if (size == expected || size == expected + n) return true; /* + multimodal modes */
    data_set_err(err, err_size,
                 "'%s' %s: %" PRIu64 " sequences and %" PRIu64 " document indices need %" PRIu64
                 " bytes (or %" PRIu64 " with sequence modes) but the file has %" PRIu64,
                 m->idx.path, size < expected ? "is truncated" : "has unexpected trailing bytes", n,
                 k, expected, expected + n, size);
    return false;
}

static bool read_header(MegatronDataset *m, char *err, size_t err_size) {
    const unsigned char *h = m->idx.data;
    if (m->idx.size < HEADER_BYTES) {
        data_set_err(err, err_size,
                     "'%s' is truncated: %" PRIu64
                     " bytes, shorter than the %d-byte MMIDIDX header",
                     m->idx.path, m->idx.size, HEADER_BYTES);
        return false;
    }
    if (memcmp(h, MAGIC, sizeof MAGIC) != 0) {
        data_set_err(err, err_size,
                     "'%s' is not a Megatron indexed dataset index: bad magic (want "
                     "\"MMIDIDX\\x00\\x00\"; the legacy 'lazy'/'cached' formats are not supported)",
                     m->idx.path);
        return false;
    }
    uint64_t version = load_u64(h + 9);
    if (version != 1) {
        data_set_err(err, err_size,
                     "'%s': index version %" PRIu64 " is not supported (want 1, what Megatron-LM's "
                     "preprocess_data.py writes)",
                     m->idx.path, version);
        return false;
    }
    m->dtype = dtype_of_code(h[17]);
    if (!m->dtype) {
        data_set_err(err, err_size, "'%s': unknown token dtype code %d (Megatron's codes are 1-8)",
                     m->idx.path, h[17]);
        return false;
    }
    if (!m->dtype->integer) {
        data_set_err(err, err_size, "'%s': the tokens are %s (dtype code %d), not integer ids",
                     m->idx.path, m->dtype->name, m->dtype->code);
        return false;
    }
    m->num_sequences = load_u64(h + 18);
    m->num_doc_indices = load_u64(h + 26);
    if (!check_index_size(m, err, err_size)) return false;
    m->lengths = h + HEADER_BYTES;
    m->pointers = m->lengths + 4 * m->num_sequences;
    m->doc_indices = m->pointers + 8 * m->num_sequences;
    return true;
}

/* Every sequence inside the .bin; records whether they lie back to back. */
static bool check_sequences(MegatronDataset *m, bool *contiguous, char *err, size_t err_size) {
    const uint64_t size = (uint64_t)m->dtype->size;
    *contiguous = true;
    m->num_tokens = 0;
    m->first_pointer = m->num_sequences ? (uint64_t)sequence_pointer(m, 0) : 0;
    for (uint64_t s = 0; s < m->num_sequences; s++) {
        const int64_t len = sequence_length(m, s), ptr = sequence_pointer(m, s);
        const uint64_t bytes = (uint64_t)len * size;
        if (len < 0 || ptr < 0 || (uint64_t)ptr > m->bin.size ||
            bytes > m->bin.size - (uint64_t)ptr) {
            data_set_err(err, err_size,
                         "sequence %" PRIu64 " of '%s' lies outside '%s': pointer %" PRId64
                         ", length %" PRId64 " %s tokens, but the .bin has %" PRIu64
                         " bytes (the .bin is shorter than its index says, or the two files are "
                         "not one pair)",
                         s, m->idx.path, m->bin.path, ptr, len, m->dtype->name, m->bin.size);
            return false;
        }
        if ((uint64_t)ptr != m->first_pointer + m->num_tokens * size) *contiguous = false;
        m->num_tokens += (uint64_t)len;
    }
    const uint64_t end = m->first_pointer + m->num_tokens * size;
    if (*contiguous && m->num_sequences > 0 && end != m->bin.size) {
        data_set_err(err, err_size,
                     "'%s' has %" PRIu64 " bytes but '%s' describes %" PRIu64
                     " %s tokens ending at "
                     "byte %" PRIu64 "; the two files are not one pair (re-make or re-copy both)",
                     m->bin.path, m->bin.size, m->idx.path, m->num_tokens, m->dtype->name, end);
        return false;
    }
    return true;
}

/* Token offsets of each sequence, for an index whose pointers jump. */
static void build_sequence_offsets(MegatronDataset *m) {
    m->seq_offsets = xmalloc((size_t)(m->num_sequences + 1) * sizeof *m->seq_offsets);
    m->seq_offsets[0] = 0;
    for (uint64_t s = 0; s < m->num_sequences; s++)
        m->seq_offsets[s + 1] = m->seq_offsets[s] + (uint64_t)sequence_length(m, s);
}

/* Document k's first sequence, checked: the first is 0, they never
 * decrease, and the last is the sequence count. */
static bool document_boundary(const MegatronDataset *m, uint64_t k, uint64_t previous,
                              uint64_t *out, char *err, size_t err_size) {
    *out = load_u64(m->doc_indices + 8 * k);
    const char *problem = NULL;
    if (k == 0 && *out != 0)
        problem = "the first must be 0";
    else if ((int64_t)*out < 0 || *out > m->num_sequences)
        problem = "it is beyond the sequences";
    else if (*out < previous)
        problem = "the indices decrease";
    else if (k == m->num_doc_indices - 1 && *out != m->num_sequences)
        problem = "the last must equal the sequence count";
    if (!problem) return true;
    data_set_err(err, err_size,
                 "'%s': document index %" PRIu64 " is %" PRId64 " but %s (%" PRIu64 " sequences)",
                 m->idx.path, k, (int64_t)*out, problem, m->num_sequences);
    return false;
}

/* Document offsets in tokens: prefix sums of the sequence lengths, taken
 * at the document boundaries. */
static bool build_document_offsets(MegatronDataset *m, char *err, size_t err_size) {
    if (m->num_doc_indices == 0) {
        data_set_err(err, err_size,
                     "'%s' holds no document indices (a valid index has at least the leading 0)",
                     m->idx.path);
        return false;
    }
    m->doc_offsets = xmalloc((size_t)m->num_doc_indices * sizeof *m->doc_offsets);
    uint64_t seq = 0, tokens = 0, previous = 0;
    for (uint64_t k = 0; k < m->num_doc_indices; k++) {
        uint64_t first;
        if (!document_boundary(m, k, previous, &first, err, err_size)) return false;
        for (; seq < first; seq++)
            tokens += (uint64_t)sequence_length(m, seq);
        m->doc_offsets[k] = tokens;
        previous = first;
    }
    return true;
}

static char *with_suffix(const char *prefix, const char *suffix) {
    size_t n = strlen(prefix) + strlen(suffix) + 1;
    char *s = xmalloc(n);
    snprintf(s, n, "%s%s", prefix, suffix);
    return s;
}

MegatronDataset *megatron_dataset_open(const char *prefix, char *err, size_t err_size) {
    MegatronDataset *m = xcalloc(1, sizeof *m);
    char *idx_path = with_suffix(prefix, ".idx"), *bin_path = with_suffix(prefix, ".bin");
    bool contiguous = true;
    bool ok = map_file(&m->idx, idx_path, err, err_size) &&
              map_file(&m->bin, bin_path, err, err_size) && read_header(m, err, err_size) &&
              check_sequences(m, &contiguous, err, err_size) &&
              build_document_offsets(m, err, err_size);
    free(idx_path);
    free(bin_path);
    if (!ok) {
        megatron_dataset_close(m);
        return NULL;
    }
    if (!contiguous) build_sequence_offsets(m);
    return m;
}

void megatron_dataset_close(MegatronDataset *m) {
    if (!m) return;
    unmap_file(&m->idx);
    unmap_file(&m->bin);
    free(m->doc_offsets);
    free(m->seq_offsets);
    free(m);
}

const char *megatron_dataset_idx_path(const MegatronDataset *m) { return m->idx.path; }
const char *megatron_dataset_bin_path(const MegatronDataset *m) { return m->bin.path; }
const char *megatron_dataset_dtype_name(const MegatronDataset *m) { return m->dtype->name; }
int64_t megatron_dataset_num_sequences(const MegatronDataset *m) {
    return (int64_t)m->num_sequences;
}
int64_t megatron_dataset_num_documents(const MegatronDataset *m) {
    return (int64_t)m->num_doc_indices - 1;
}
int64_t megatron_dataset_num_tokens(const MegatronDataset *m) { return (int64_t)m->num_tokens; }
const uint64_t *megatron_dataset_document_offsets(const MegatronDataset *m) {
    return m->doc_offsets;
}

/* ------------------------------------------------------------ tokens */

/* The last sequence starting at or before stream token `t`. */
static uint64_t sequence_at(const MegatronDataset *m, uint64_t t) {
    return (uint64_t)data_last_not_above(m->seq_offsets, (int64_t)m->num_sequences, t);
}

/* Calls `visit` on the runs of .bin bytes that hold stream tokens
 * [begin, begin + count), in order. */
typedef bool (*RunVisitor)(const unsigned char *run, uint64_t first_token, uint64_t n, void *ctx);

static bool visit_runs(const MegatronDataset *m, uint64_t begin, uint64_t count, RunVisitor visit,
                       void *ctx) {
    const uint64_t size = (uint64_t)m->dtype->size;
    if (!m->seq_offsets)
        return visit(m->bin.data + m->first_pointer + begin * size, begin, count, ctx);
    for (uint64_t s = sequence_at(m, begin), t = begin; t < begin + count; s++) {
        const uint64_t skip = t - m->seq_offsets[s];
        uint64_t n = m->seq_offsets[s + 1] - t;
        if (n > begin + count - t) n = begin + count - t;
        if (n == 0) continue;
        if (!visit(m->bin.data + (uint64_t)sequence_pointer(m, s) + skip * size, t, n, ctx))
            return false;
        t += n;
    }
    return true;
}

typedef struct {
    const MegatronDataset *m;
    int32_t *out;
    uint64_t begin;
    char *err;
    size_t err_size;
} ReadContext;

static bool copy_run(const unsigned char *run, uint64_t first, uint64_t n, void *ctx) {
    ReadContext *c = ctx;
    int32_t *out = c->out + (first - c->begin);
    const int code = c->m->dtype->code;
    for (uint64_t i = 0; i < n; i++) {
        int64_t id = token_at(run, code, i);
        if (id < 0 || id > INT32_MAX) {
            data_set_err(c->err, c->err_size,
                         "'%s': token %" PRIu64 " is id %" PRId64 ", outside every vocabulary; the "
                         "file is damaged or is not a token dataset",
                         c->m->bin.path, first + i, id);
            return false;
        }
        out[i] = (int32_t)id;
    }
    return true;
}

bool megatron_dataset_read(const MegatronDataset *m, uint64_t begin, uint64_t count, int32_t *out,
                           char *err, size_t err_size) {
    if (count == 0) return true;
    if (begin > m->num_tokens || count > m->num_tokens - begin) {
        data_set_err(err, err_size,
                     "'%s': read of tokens [%" PRIu64 ", %" PRIu64 ") is past its %" PRIu64
                     " tokens",
                     m->bin.path, begin, begin + count, m->num_tokens);
        return false;
    }
    ReadContext c = {m, out, begin, err, err_size};
    return visit_runs(m, begin, count, copy_run, &c);
}

typedef struct {
    const MegatronDataset *m;
    int64_t vocab_size, max_id;
    char *err;
    size_t err_size;
} ScanContext;

/* The sequence and position of stream token t, for messages. */
static void locate_token(const MegatronDataset *m, uint64_t t, uint64_t *seq, uint64_t *pos) {
    uint64_t s = 0, start = 0;
    if (m->seq_offsets) {
        s = sequence_at(m, t);
        start = m->seq_offsets[s];
    } else {
        for (; s < m->num_sequences && start + (uint64_t)sequence_length(m, s) <= t; s++)
            start += (uint64_t)sequence_length(m, s);
    }
    *seq = s;
    *pos = t - start;
}

static bool scan_run(const unsigned char *run, uint64_t first, uint64_t n, void *ctx) {
    ScanContext *c = ctx;
    const int code = c->m->dtype->code;
    int64_t lo = 0, hi = c->max_id;
    for (uint64_t i = 0; i < n; i++) {
        int64_t id = token_at(run, code, i);
        if (id < lo) lo = id;
        if (id > hi) hi = id;
    }
    if (lo >= 0 && hi < c->vocab_size) {
        c->max_id = hi;
        return true;
    }
    for (uint64_t i = 0; i < n; i++) {
        int64_t id = token_at(run, code, i);
        if (id >= 0 && id < c->vocab_size) continue;
        uint64_t seq, pos;
        locate_token(c->m, first + i, &seq, &pos);
        data_set_err(c->err, c->err_size,
                     "'%s': token %" PRIu64 " of sequence %" PRIu64 " is %" PRId64
                     ", outside the vocabulary [0, %" PRId64 ") (check --vocab-size and "
                     "--tokenizer-type: the dataset must be made with the run's tokenizer)",
                     c->m->bin.path, pos, seq, id, c->vocab_size);
        return false;
    }
    return false; /* not reached: a token out of range was found above */
}

bool megatron_dataset_check_token_ids(const MegatronDataset *m, int64_t vocab_size, int64_t *max_id,
                                      char *err, size_t err_size) {
    enum { RUN = 1 << 20 }; /* tokens per pass, so a bad id is found near where it is */
    ScanContext c = {m, vocab_size, -1, err, err_size};
    for (uint64_t t = 0; t < m->num_tokens; t += RUN) {
        uint64_t n = m->num_tokens - t < RUN ? m->num_tokens - t : RUN;
        if (!visit_runs(m, t, n, scan_run, &c)) return false;
    }
    *max_id = c.max_id;
    return true;
}
