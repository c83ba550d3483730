/* data/document_source.c — the DocumentSource interface and its three
 * implementations (see document_source.h): HDF5 token shards (data/shard.c),
 * Megatron .bin/.idx pairs (data/megatron_dataset.c) and mock data.
 *
 * A source is a table of three operations (read, scan, close) over the
 * reader it wraps plus the facts every kind shares (tokenizer, document
 * offsets), copied out once at open so the dataset's hot path reads plain
 * fields. */
#include "data/document_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "data/data.h"
#include "data/data_util.h"

typedef struct {
    bool (*read)(void *impl, uint64_t begin, uint64_t count, int32_t *out, char *err,
                 size_t err_size);
    bool (*scan_max)(void *impl, int64_t vocab_size, int64_t *max_id, char *err, size_t err_size);
    void (*close)(void *impl);
} SourceOps;

struct DocumentSource {
    const SourceOps *ops;
    void *impl;
    char *name;
    const char *kind;
    char *tokenizer_type;
    int64_t vocab_size, eod_token;
    int64_t num_documents, num_tokens;
    const uint64_t *offsets;
    int64_t known_max_token_id;
    uint64_t seed; /* mock data */
};

static DocumentSource *source_new(const SourceOps *ops, void *impl, const char *name,
                                  const char *kind, const char *tokenizer_type, int64_t vocab_size,
                                  int64_t eod_token) {
    DocumentSource *s = xcalloc(1, sizeof *s);
    s->ops = ops;
    s->impl = impl;
    s->name = xstrdup(name);
    s->kind = kind;
    s->tokenizer_type = xstrdup(tokenizer_type ? tokenizer_type : "");
    s->vocab_size = vocab_size;
    s->eod_token = eod_token;
    s->known_max_token_id = -1;
    return s;
}

/* ------------------------------------------------------------ shards */

static bool shard_read(void *impl, uint64_t begin, uint64_t count, int32_t *out, char *err,
                       size_t err_size) {
    return token_shard_read(impl, begin, count, out, err, err_size);
}

static bool shard_scan_max(void *impl, int64_t vocab_size, int64_t *max_id, char *err,
                           size_t err_size) {
    (void)vocab_size; /* the caller compares; a shard's scan only finds the largest */
    return token_shard_scan_max_token_id(impl, max_id, err, err_size);
}

static void shard_close(void *impl) { token_shard_close(impl); }

static const SourceOps SHARD_OPS = {shard_read, shard_scan_max, shard_close};

static DocumentSource *open_shard(const char *path, char *err, size_t err_size) {
    TokenShard *t = token_shard_open(path, err, err_size);
    if (!t) return NULL;
    DocumentSource *s =
        source_new(&SHARD_OPS, t, path, "token shard", token_shard_tokenizer_type(t),
                   token_shard_vocab_size(t), token_shard_eod_token(t));
    s->num_documents = token_shard_num_documents(t);
    s->num_tokens = token_shard_num_tokens(t);
    s->offsets = token_shard_document_offsets(t);
    s->known_max_token_id = token_shard_stored_max_token_id(t);
    return s;
}

/* ------------------------------------------------- Megatron .bin/.idx */

typedef struct {
    MegatronDataset *m;
    int64_t vocab_size;
} MegatronSource;

static bool megatron_read(void *impl, uint64_t begin, uint64_t count, int32_t *out, char *err,
                          size_t err_size) {
    const MegatronSource *ms = impl;
    if (!megatron_dataset_read(ms->m, begin, count, out, err, err_size)) return false;
    /* A cheap guard, as the shard reader's: an id past the vocabulary would
     * index past the embedding. */
    for (uint64_t i = 0; i < count; i++)
        if (out[i] >= ms->vocab_size) {
            data_set_err(
                err, err_size,
                "Megatron dataset %s: token %llu is id %d, outside the vocabulary [0, %lld) "
                "of the run's --tokenizer-type; the files changed since they were checked",
                megatron_dataset_bin_path(ms->m), (unsigned long long)(begin + i), out[i],
                (long long)ms->vocab_size);
            return false;
        }
    return true;
}

static bool megatron_scan_max(void *impl, int64_t vocab_size, int64_t *max_id, char *err,
                              size_t err_size) {
    const MegatronSource *ms = impl;
    return megatron_dataset_check_token_ids(ms->m, vocab_size, max_id, err, err_size);
}

static void megatron_close(void *impl) {
    MegatronSource *ms = impl;
    megatron_dataset_close(ms->m);
    free(ms);
}

static const SourceOps MEGATRON_OPS = {megatron_read, megatron_scan_max, megatron_close};

/* Sources without tokenizer metadata need the run's vocabulary; `what`
 * says how the source uses it. */
static bool run_vocabulary_known(const SourceTokenizer *run, const char *what, char *err,
                                 size_t err_size) {
    if (run && run->vocab_size > 0) return true;
    data_set_err(
        err, err_size,
        "%s, but the vocabulary of --tokenizer-type %s is not known: NullTokenizer takes it "
        "from --vocab-size N, HuggingFaceTokenizer and TikTokenizer from --tokenizer-model "
        "FILE (ByteTokenizer and GPT2BPETokenizer need nothing); or convert the data with "
        "tools/convert_megatron_dataset --vocab-size V --eod-token E",
        what, run && run->type ? run->type : "(none)");
    return false;
}

static DocumentSource *open_megatron(const char *path, const SourceTokenizer *run, char *err,
                                     size_t err_size) {
    size_t n = strlen(path) - 4; /* without .bin / .idx */
    char *prefix = xmalloc(n + 1);
    memcpy(prefix, path, n);
    prefix[n] = '\0';
    char what[1200];
    snprintf(what, sizeof what,
             "Megatron dataset %s.{bin,idx} records no tokenizer and is read with the run's",
             prefix);
    MegatronDataset *m = run_vocabulary_known(run, what, err, err_size)
                             ? megatron_dataset_open(prefix, err, err_size)
                             : NULL;
    free(prefix);
    if (!m) return NULL;
    MegatronSource *ms = xcalloc(1, sizeof *ms);
    ms->m = m;
    ms->vocab_size = run->vocab_size;
    DocumentSource *s = source_new(&MEGATRON_OPS, ms, megatron_dataset_bin_path(m),
                                   "Megatron dataset", run->type, run->vocab_size, run->eod_token);
    s->num_documents = megatron_dataset_num_documents(m);
    s->num_tokens = megatron_dataset_num_tokens(m);
    s->offsets = megatron_dataset_document_offsets(m);
    return s;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

DocumentSource *document_source_open(const char *path, const SourceTokenizer *run, char *err,
                                     size_t err_size) {
    if (ends_with(path, ".bin") || ends_with(path, ".idx"))
        return open_megatron(path, run, err, err_size);
    return open_shard(path, err, err_size);
}

/* ------------------------------------------------------------ mock data */

static bool mock_read(void *impl, uint64_t begin, uint64_t count, int32_t *out, char *err,
                      size_t err_size) {
    const DocumentSource *s = impl;
    if (begin > (uint64_t)s->num_tokens || count > (uint64_t)s->num_tokens - begin) {
        data_set_err(err, err_size,
                     "mock data: read of tokens [%llu, %llu) is past its %lld tokens",
                     (unsigned long long)begin, (unsigned long long)(begin + count),
                     (long long)s->num_tokens);
        return false;
    }
    const uint64_t stream = rng_stream_from_name("mock_data.tokens");
    int64_t d = count ? data_last_not_above(s->offsets, s->num_documents, begin) : 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint64_t t = begin + i;
        while (s->offsets[d + 1] <= t)
            d++;
        out[i] = t + 1 == s->offsets[d + 1]
                     ? (int32_t)s->eod_token
                     : (int32_t)rng_below(s->seed, stream, t, (uint64_t)s->vocab_size);
    }
    return true;
}

static bool mock_scan_max(void *impl, int64_t vocab_size, int64_t *max_id, char *err,
                          size_t err_size) {
    (void)impl;
    (void)err;
    (void)err_size;
    *max_id = vocab_size - 1; /* by construction (known_max_token_id says so) */
    return true;
}

static void mock_close(void *impl) { (void)impl; }

static const SourceOps MOCK_OPS = {mock_read, mock_scan_max, mock_close};

DocumentSource *document_source_mock(uint64_t seed, int seq_length, const SourceTokenizer *run,
                                     char *err, size_t err_size) {
    if (!run_vocabulary_known(run, "--mock-data draws its ids from the run's tokenizer", err,
                              err_size))
        return NULL;
    DocumentSource *s = source_new(&MOCK_OPS, NULL, "mock data", "mock data", run->type,
                                   run->vocab_size, run->eod_token);
    s->impl = s;
    s->seed = seed;
    s->num_documents = MOCK_DATA_DOCUMENTS;
    uint64_t *offsets = xmalloc((MOCK_DATA_DOCUMENTS + 1) * sizeof *offsets);
    /* Lengths from 1 to 2 x seq_length: about one sample per document, so
     * an epoch's indices stay small whatever seq_length is, and samples
     * cross document boundaries as with real data. */
    const uint64_t stream = rng_stream_from_name("mock_data.document_length");
    const uint64_t span = 2 * (uint64_t)(seq_length > 0 ? seq_length : 1);
    offsets[0] = 0;
    for (uint64_t d = 0; d < MOCK_DATA_DOCUMENTS; d++)
        offsets[d + 1] = offsets[d] + 1 + rng_below(seed, stream, d, span);
    s->offsets = offsets;
    s->num_tokens = (int64_t)offsets[MOCK_DATA_DOCUMENTS];
    s->known_max_token_id = run->vocab_size - 1;
    return s;
}

/* ------------------------------------------------------------ the interface */

void document_source_close(DocumentSource *s) {
    if (!s) return;
    if (s->ops == &MOCK_OPS) free((void *)s->offsets);
    s->ops->close(s->impl);
    free(s->name);
    free(s->tokenizer_type);
    free(s);
}

const char *document_source_name(const DocumentSource *s) { return s->name; }
const char *document_source_kind(const DocumentSource *s) { return s->kind; }
const char *document_source_tokenizer_type(const DocumentSource *s) { return s->tokenizer_type; }
int64_t document_source_vocab_size(const DocumentSource *s) { return s->vocab_size; }
int64_t document_source_eod_token(const DocumentSource *s) { return s->eod_token; }
int64_t document_source_num_documents(const DocumentSource *s) { return s->num_documents; }
int64_t document_source_num_tokens(const DocumentSource *s) { return s->num_tokens; }
const uint64_t *document_source_document_offsets(const DocumentSource *s) { return s->offsets; }
int64_t document_source_known_max_token_id(const DocumentSource *s) {
    return s->known_max_token_id;
}

bool document_source_scan_max_token_id(DocumentSource *s, int64_t *max_id, char *err,
                                       size_t err_size) {
    return s->ops->scan_max(s->impl, s->vocab_size, max_id, err, err_size);
}

bool document_source_read(DocumentSource *s, uint64_t begin, uint64_t count, int32_t *out,
                          char *err, size_t err_size) {
    return s->ops->read(s->impl, begin, count, out, err, err_size);
}
