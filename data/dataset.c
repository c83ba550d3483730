/* data/dataset.c — Megatron-style GPTDataset indices over token shards.
 *
 * The documents of all shards, concatenated in --data-path order, are split
 * by document (Megatron's rule: boundaries at round(cumulative fraction *
 * documents), rounding half to even as Python does). For epoch e the split's
 * documents are permuted by a Fisher-Yates shuffle drawn from the
 * counter-based RNG keyed by (seed, stream(split, e)); the epoch's token
 * stream is those documents back to back; sample j of the epoch is stream
 * tokens [j*L, j*L + L + 1) with L = seq_length, so samples cross document
 * boundaries and consecutive samples share one token; the epoch's samples
 * are visited in a second shuffled order. Because every draw is a pure
 * function of global coordinates, any rank reads any global sample and the
 * data seen does not depend on the parallel layout.
 *
 * Only one epoch's indices are held (document permutation, prefix sums of the
 * permuted document lengths, sample permutation), built on first use, so
 * memory is O(documents + samples per epoch) however long the run.
 *
 * With a cache directory (--data-cache-path) an epoch's indices are one cache
 * file keyed by everything they depend on: the document structure of every
 * shard (document and token counts, a hash of /document_offsets), the
 * split's document range, the split kind, seq_length, seed, epoch and the
 * format version. Not the shards' paths or mtimes: the indices depend on
 * document lengths only, so a shard copied elsewhere or touched reuses its
 * cache, and any change to its documents' lengths names another file. A
 * cache file is checked (header, checksum, and that its arrays are a
 * permutation and the matching prefix sums) before it is trusted. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "data/data.h"
#include "data/data_util.h"
#include "data/document_source.h"
#include "data/index_cache.h"
#include "data/token_ids.h"

#define NUM_SPLITS 3

static const char *const SPLIT_NAMES[NUM_SPLITS] = {"train", "valid", "test"};

struct GPTDataset {
    DocumentSource **shards; /* shards, Megatron pairs or mock data alike */
    int num_shards;
    int64_t *shard_first_doc; /* num_shards + 1 global document starts */
    SplitKind split;
    int64_t doc_begin; /* the split's global documents [doc_begin, doc_end) */
    int64_t doc_end;
    int64_t num_tokens;
    int64_t samples_per_epoch;
    int seq_length;
    uint64_t seed;
    /* The resident epoch: one buffer (the cache file's payload) holding */
    int64_t epoch;             /* -1 before the first build */
    int64_t *epoch_index;      /* the three arrays below, back to back */
    int64_t *doc_order;        /* split-local document ids in stream order */
    int64_t *stream_offset;    /* num_docs + 1 prefix sums along doc_order */
    int64_t *sample_order;     /* visiting order of the epoch's samples */
    char *cache_dir;           /* NULL: no index cache */
    IndexKey cache_key;        /* of everything but the epoch */
    DataIndexStats stats;
};

/* ------------------------------------------------------------------ split */

/* `text` without its quote characters: a recipe that builds its flags in a
 * bash array often delivers --split '"949,50,1"' (the quotes kept), which
 * Megatron's parser reads as 949,50,1 since it only picks out the numbers.
 * Any other stray character is still an error. Caller frees. */
static char *without_quotes(const char *text) {
    char *out = xstrdup(text), *w = out;
    for (const char *r = text; *r; r++)
        if (*r != '"' && *r != '\'') *w++ = *r;
    *w = '\0';
    return out;
}

/* `shown` is the flag's value as given, for messages. */
static bool parse_split_numbers(const char *text, const char *shown, double fractions[NUM_SPLITS],
                                char *err, size_t err_size) {
    static const char HINT[] = "expected up to three comma-separated non-negative numbers with a "
                               "positive sum, such as 969,30,1";
    if (!*text) {
        data_set_err(err, err_size, "--split is empty%s; %s", *shown ? " (only quotes)" : "", HINT);
        return false;
    }
    char sep = strchr(text, ',') ? ',' : (strchr(text, '/') ? '/' : ',');
    double sum = 0.0;
    int parts = 0;
    const char *p = text;
    for (int i = 0; i < NUM_SPLITS; i++) fractions[i] = 0.0;
    for (;;) {
        char *end = NULL;
        double v = strtod(p, &end);
        while (end && isspace((unsigned char)*end)) end++;
        if (end == p || !(v >= 0.0) || !isfinite(v) || parts == NUM_SPLITS ||
            (*end != sep && *end != '\0')) {
            data_set_err(err, err_size, "--split '%s' is malformed: %s", shown, HINT);
            return false;
        }
        fractions[parts++] = v;
        sum += v;
        if (*end == '\0') break;
        p = end + 1;
    }
    if (!(sum > 0.0)) {
        data_set_err(err, err_size, "--split '%s' sums to 0: %s", shown, HINT);
        return false;
    }
    for (int i = 0; i < NUM_SPLITS; i++) fractions[i] /= sum;
    return true;
}

/* Parses Megatron's --split ("969,30,1", "98/2/0", "1", quoted or not) into
 * normalised fractions; missing trailing parts are 0. */
static bool parse_split(const char *text, double fractions[NUM_SPLITS], char *err,
                        size_t err_size) {
    char *bare = without_quotes(text ? text : "");
    bool ok = parse_split_numbers(bare, text ? text : "", fractions, err, err_size);
    free(bare);
    return ok;
}

/* Document boundaries [bounds[s], bounds[s+1]) of each split. */
static void split_bounds(const double fractions[NUM_SPLITS], int64_t num_docs,
                         int64_t bounds[NUM_SPLITS + 1]) {
    double cumulative = 0.0;
    bounds[0] = 0;
    for (int s = 0; s < NUM_SPLITS; s++) {
        cumulative += fractions[s];
        double b = nearbyint(cumulative * (double)num_docs); /* half to even, as Python */
        if (b < (double)bounds[s]) b = (double)bounds[s];
        if (b > (double)num_docs) b = (double)num_docs;
        bounds[s + 1] = (int64_t)b;
    }
    bounds[NUM_SPLITS] = num_docs;
}

/* ------------------------------------------------------------------ shards */

static const char *path_flag(const GPTDatasetConfig *cfg) {
    return cfg->data_path_flag ? cfg->data_path_flag : "--data-path";
}

static bool check_shard_matches(const DocumentSource *s, const DocumentSource *first,
                                const GPTDatasetConfig *cfg, char *err, size_t err_size) {
    const char *type = document_source_tokenizer_type(s);
    if (cfg->expected_tokenizer_type && strcmp(type, cfg->expected_tokenizer_type) != 0) {
        data_set_err(err, err_size,
                     "token shard %s was made with tokenizer_type '%s' but this run uses "
                     "--tokenizer-type %s; pass --tokenizer-type %s or re-make the shard with "
                     "tools/preprocess_data --tokenizer-type %s",
                     document_source_name(s), type, cfg->expected_tokenizer_type, type,
                     cfg->expected_tokenizer_type);
        return false;
    }
    if (cfg->expected_vocab_size > 0 && document_source_vocab_size(s) != cfg->expected_vocab_size) {
        data_set_err(
            err, err_size,
            "token shard %s has vocab_size %lld but this run's tokenizer (--tokenizer-type / "
            "--vocab-file) has vocab_size %lld; re-make the shard with the run's tokenizer",
            document_source_name(s), (long long)document_source_vocab_size(s),
            (long long)cfg->expected_vocab_size);
        return false;
    }
    if (s == first) return true;
    if (strcmp(type, document_source_tokenizer_type(first)) != 0 ||
        document_source_vocab_size(s) != document_source_vocab_size(first) ||
        document_source_eod_token(s) != document_source_eod_token(first)) {
        data_set_err(
            err, err_size,
            "token shard %s (tokenizer_type '%s', vocab_size %lld, eod_token %lld) does not "
            "match %s (tokenizer_type '%s', vocab_size %lld, eod_token %lld); every "
            "%s shard must be made with one tokenizer",
            document_source_name(s), type, (long long)document_source_vocab_size(s),
            (long long)document_source_eod_token(s), document_source_name(first),
            document_source_tokenizer_type(first), (long long)document_source_vocab_size(first),
            (long long)document_source_eod_token(first), path_flag(cfg));
        return false;
    }
    return true;
}

static bool open_shards(GPTDataset *ds, const GPTDatasetConfig *cfg, char *err, size_t err_size) {
    const SourceTokenizer run = {cfg->expected_tokenizer_type, cfg->tokenizer_vocab_size,
                                 cfg->tokenizer_eod_token};
    const int n = cfg->mock_data ? 1 : cfg->num_paths;
    ds->shards = xcalloc((size_t)n, sizeof *ds->shards);
    ds->shard_first_doc = xcalloc((size_t)n + 1, sizeof *ds->shard_first_doc);
    for (int i = 0; i < n; i++) {
        DocumentSource *s =
            cfg->mock_data ? document_source_mock(cfg->seed, cfg->seq_length, &run, err, err_size)
                           : document_source_open(cfg->paths[i], &run, err, err_size);
        if (!s) return false;
        ds->shards[ds->num_shards++] = s;
        if (!check_shard_matches(s, ds->shards[0], cfg, err, err_size)) return false;
        ds->shard_first_doc[i + 1] = ds->shard_first_doc[i] + document_source_num_documents(s);
    }
    return true;
}

/* The shard holding global document `doc`. */
static int shard_of_document(const GPTDataset *ds, int64_t doc) {
    int lo = 0, hi = ds->num_shards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (ds->shard_first_doc[mid] <= doc) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Token range of global document `doc` inside its shard. */
static void document_extent(const GPTDataset *ds, int64_t doc, int *shard, uint64_t *begin,
                            uint64_t *length) {
    int s = shard_of_document(ds, doc);
    const uint64_t *offsets = document_source_document_offsets(ds->shards[s]);
    int64_t local = doc - ds->shard_first_doc[s];
    *shard = s;
    *begin = offsets[local];
    *length = offsets[local + 1] - offsets[local];
}

static int64_t split_num_docs(const GPTDataset *ds) { return ds->doc_end - ds->doc_begin; }

static int64_t count_split_tokens(const GPTDataset *ds) {
    int64_t total = 0;
    for (int64_t d = ds->doc_begin; d < ds->doc_end; d++) {
        int shard;
        uint64_t begin, length;
        document_extent(ds, d, &shard, &begin, &length);
        total += (int64_t)length;
    }
    return total;
}

/* ------------------------------------------------------------------ epochs */

/* SplitMix64's finaliser: spreads (split, epoch) over the 64-bit stream id. */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t epoch_stream(const char *purpose, SplitKind split, int64_t epoch) {
    return mix64(mix64(rng_stream_from_name(purpose) ^ (uint64_t)split) + (uint64_t)epoch);
}

/* Fisher-Yates on 0..n-1, draw i from (seed, stream, i). */
static void shuffled_identity(int64_t *a, int64_t n, uint64_t seed, uint64_t stream) {
    for (int64_t i = 0; i < n; i++) a[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(seed, stream, (uint64_t)i, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static int64_t epoch_index_length(const GPTDataset *ds) {
    return 2 * split_num_docs(ds) + 1 + ds->samples_per_epoch;
}

/* Points the three arrays into `index` (which the dataset then owns). */
static void adopt_epoch_index(GPTDataset *ds, int64_t *index) {
    if (index != ds->epoch_index) free(ds->epoch_index);
    ds->epoch_index = index;
    ds->doc_order = index;
    ds->stream_offset = index + split_num_docs(ds);
    ds->sample_order = index + 2 * split_num_docs(ds) + 1;
}

static void build_epoch(GPTDataset *ds, int64_t epoch) {
    int64_t n = split_num_docs(ds);
    shuffled_identity(ds->doc_order, n, ds->seed,
                      epoch_stream("gpt_dataset.document_shuffle", ds->split, epoch));
    ds->stream_offset[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int shard;
        uint64_t begin, length;
        document_extent(ds, ds->doc_begin + ds->doc_order[i], &shard, &begin, &length);
        ds->stream_offset[i + 1] = ds->stream_offset[i] + (int64_t)length;
    }
    GPT3D_CHECK(ds->stream_offset[n] == ds->num_tokens, "epoch stream has %lld tokens, split %lld",
                (long long)ds->stream_offset[n], (long long)ds->num_tokens);
    shuffled_identity(ds->sample_order, ds->samples_per_epoch, ds->seed,
                      epoch_stream("gpt_dataset.sample_shuffle", ds->split, epoch));
}

/* True when `a` holds a permutation of 0..n-1 (seen: n zeroed bytes). */
static bool is_permutation(const int64_t *a, int64_t n, unsigned char *seen) {
    for (int64_t i = 0; i < n; i++) {
        if (a[i] < 0 || a[i] >= n || seen[a[i]]) return false;
        seen[a[i]] = 1;
    }
    return true;
}

/* A loaded epoch must be exactly what build_epoch could have made of these
 * shards, or reading samples from it could run out of bounds. */
static bool epoch_index_consistent(const GPTDataset *ds, int64_t *index) {
    int64_t n = split_num_docs(ds), spe = ds->samples_per_epoch;
    const int64_t *order = index, *offset = index + n, *samples = index + 2 * n + 1;
    unsigned char *seen = xcalloc((size_t)(n > spe ? n : spe) + 1, 1);
    bool ok = offset[0] == 0 && is_permutation(order, n, seen);
    for (int64_t i = 0; ok && i < n; i++) {
        int shard;
        uint64_t begin, length;
        document_extent(ds, ds->doc_begin + order[i], &shard, &begin, &length);
        ok = offset[i + 1] == offset[i] + (int64_t)length;
    }
    if (ok) {
        memset(seen, 0, (size_t)spe);
        ok = is_permutation(samples, spe, seen);
    }
    free(seen);
    return ok;
}

static char *epoch_cache_file(const GPTDataset *ds, int64_t epoch, uint64_t *key) {
    IndexKey k = ds->cache_key;
    index_key_u64(&k, (uint64_t)epoch);
    *key = k.h;
    char stem[96];
    snprintf(stem, sizeof stem, "gpt_dataset_%s_epoch%lld", SPLIT_NAMES[ds->split],
             (long long)epoch);
    return index_cache_path(ds->cache_dir, stem, k.h);
}

static bool load_epoch(GPTDataset *ds, const char *path, uint64_t key) {
    int64_t count;
    IndexCacheStatus status;
    int64_t *index = index_cache_read(path, key, &count, &status);
    if (index && count == epoch_index_length(ds) && epoch_index_consistent(ds, index)) {
        adopt_epoch_index(ds, index);
        ds->stats.loaded++;
        return true;
    }
    free(index);
    if (status != INDEX_CACHE_MISSING) ds->stats.rejected++;
    return false;
}

static void ensure_epoch(GPTDataset *ds, int64_t epoch) {
    if (ds->epoch == epoch) return;
    uint64_t key = 0;
    char *path = ds->cache_dir ? epoch_cache_file(ds, epoch, &key) : NULL;
    if (!path || !load_epoch(ds, path, key)) {
        build_epoch(ds, epoch);
        ds->stats.built++;
        if (path) {
            bool stored = index_cache_write(path, key, ds->epoch_index, epoch_index_length(ds));
            if (stored) ds->stats.stored++;
            else ds->stats.store_failures++;
        }
    }
    free(path);
    ds->epoch = epoch;
}

/* Index i in the stream order of the document holding stream token `pos`:
 * the last i with stream_offset[i] <= pos, which skips empty documents. */
static int64_t stream_document_at(const GPTDataset *ds, int64_t pos) {
    int64_t lo = 0, hi = split_num_docs(ds) - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (ds->stream_offset[mid] <= pos) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* ------------------------------------------------------------------ public */

static bool validate_config(const GPTDatasetConfig *cfg, char *err, size_t err_size) {
    if (!cfg->mock_data && (cfg->num_paths <= 0 || !cfg->paths)) {
        data_set_err(err, err_size,
                     "%s names no token shards; give one or more .h5 files "
                     "made by tools/preprocess_data",
                     path_flag(cfg));
        return false;
    }
    if (cfg->seq_length <= 0) {
        data_set_err(err, err_size, "--seq-length must be positive, got %d", cfg->seq_length);
        return false;
    }
    return true;
}

/* Everything an epoch's indices depend on except the epoch (see the top). */
static void compute_cache_key(GPTDataset *ds) {
    IndexKey *k = &ds->cache_key;
    index_key_init(k, "gpt_dataset.epoch_index");
    index_key_u64(k, (uint64_t)ds->num_shards);
    for (int i = 0; i < ds->num_shards; i++) {
        const DocumentSource *s = ds->shards[i];
        index_key_u64(k, (uint64_t)document_source_num_documents(s));
        index_key_u64(k, (uint64_t)document_source_num_tokens(s));
        index_key_words(k, document_source_document_offsets(s),
                        (size_t)document_source_num_documents(s) + 1);
    }
    index_key_u64(k, (uint64_t)ds->doc_begin);
    index_key_u64(k, (uint64_t)ds->doc_end);
    index_key_u64(k, (uint64_t)ds->split);
    index_key_u64(k, (uint64_t)ds->seq_length);
    index_key_u64(k, ds->seed);
}

static void report_short_split(const GPTDataset *ds, const GPTDatasetConfig *cfg, char *err,
                               size_t err_size) {
    if (cfg->data_path_flag && strcmp(cfg->data_path_flag, "--data-path") != 0) {
        data_set_err(err, err_size,
                     "%s has %lld documents and %lld tokens, fewer than one sample of --seq-length "
                     "%d + 1 tokens; give it more data",
                     cfg->data_path_flag, (long long)split_num_docs(ds), (long long)ds->num_tokens,
                     cfg->seq_length);
        return;
    }
    data_set_err(err, err_size,
                 "the %s split (--split %s) of --data-path has %lld documents and %lld tokens, "
                 "fewer than one sample of --seq-length %d + 1 tokens; give it more data "
                 "(--data-path) or a larger share (--split)",
                 SPLIT_NAMES[ds->split], cfg->split, (long long)split_num_docs(ds),
                 (long long)ds->num_tokens, cfg->seq_length);
}

GPTDataset *gpt_dataset_create(const GPTDatasetConfig *cfg, SplitKind split, char *err,
                               size_t err_size) {
    GPT3D_CHECK(split >= SPLIT_TRAIN && split <= SPLIT_TEST, "bad split kind %d", (int)split);
    if (cfg->too_short) *cfg->too_short = false;
    double fractions[NUM_SPLITS];
    if (!validate_config(cfg, err, err_size) || !parse_split(cfg->split, fractions, err, err_size))
        return NULL;
    GPTDataset *ds = xcalloc(1, sizeof *ds);
    ds->split = split;
    ds->seq_length = cfg->seq_length;
    ds->seed = cfg->seed;
    ds->epoch = -1;
    if (!open_shards(ds, cfg, err, err_size)) {
        gpt_dataset_free(ds);
        return NULL;
    }
    int64_t bounds[NUM_SPLITS + 1];
    split_bounds(fractions, ds->shard_first_doc[ds->num_shards], bounds);
    ds->doc_begin = bounds[split];
    ds->doc_end = bounds[split + 1];
    ds->num_tokens = count_split_tokens(ds);
    ds->samples_per_epoch = ds->num_tokens > 0 ? (ds->num_tokens - 1) / cfg->seq_length : 0;
    if (ds->samples_per_epoch == 0) {
        report_short_split(ds, cfg, err, err_size);
        if (cfg->too_short) *cfg->too_short = true;
        gpt_dataset_free(ds);
        return NULL;
    }
    if (cfg->cache_dir) {
        if (!index_cache_prepare_dir(cfg->cache_dir, err, err_size)) {
            gpt_dataset_free(ds);
            return NULL;
        }
        ds->cache_dir = xstrdup(cfg->cache_dir);
        compute_cache_key(ds);
    }
    for (int i = 0; i < ds->num_shards; i++) {
        bool scanned = false;
        if (!token_ids_check(ds->shards[i], ds->cache_dir, cfg->scans, &scanned, err,
                             err_size)) {
            gpt_dataset_free(ds);
            return NULL;
        }
        ds->stats.shards_scanned += scanned;
    }
    adopt_epoch_index(ds, xmalloc((size_t)epoch_index_length(ds) * sizeof(int64_t)));
    return ds;
}

void gpt_dataset_free(GPTDataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->num_shards; i++)
        document_source_close(ds->shards[i]);
    free(ds->shards);
    free(ds->shard_first_doc);
    free(ds->epoch_index);
    free(ds->cache_dir);
    free(ds);
}

int64_t gpt_dataset_samples_per_epoch(const GPTDataset *ds) { return ds->samples_per_epoch; }
int64_t gpt_dataset_num_documents(const GPTDataset *ds) { return split_num_docs(ds); }
int64_t gpt_dataset_num_tokens(const GPTDataset *ds) { return ds->num_tokens; }
const char *gpt_dataset_tokenizer_type(const GPTDataset *ds) {
    return document_source_tokenizer_type(ds->shards[0]);
}
int64_t gpt_dataset_vocab_size(const GPTDataset *ds) {
    return document_source_vocab_size(ds->shards[0]);
}
int64_t gpt_dataset_eod_token(const GPTDataset *ds) {
    return document_source_eod_token(ds->shards[0]);
}
int gpt_dataset_num_shards(const GPTDataset *ds) { return ds->num_shards; }
const char *gpt_dataset_shard_path(const GPTDataset *ds, int shard) {
    GPT3D_CHECK(shard >= 0 && shard < ds->num_shards, "shard %d of %d", shard, ds->num_shards);
    return document_source_name(ds->shards[shard]);
}
DataIndexStats gpt_dataset_index_stats(const GPTDataset *ds) { return ds->stats; }

void gpt_dataset_sample_position(GPTDataset *ds, int64_t k, int64_t *epoch, int64_t *start_token) {
    GPT3D_CHECK(k >= 0, "negative sample index %lld", (long long)k);
    int64_t e = k / ds->samples_per_epoch;
    ensure_epoch(ds, e);
    *epoch = e;
    *start_token = ds->sample_order[k % ds->samples_per_epoch] * ds->seq_length;
}

bool gpt_dataset_get_sample(GPTDataset *ds, int64_t k, int32_t *out, char *err, size_t err_size) {
    int64_t epoch, pos;
    gpt_dataset_sample_position(ds, k, &epoch, &pos);
    int64_t need = (int64_t)ds->seq_length + 1;
    int64_t filled = 0;
    /* One hyperslab read per document piece the sample touches. */
    for (int64_t i = stream_document_at(ds, pos); filled < need; i++) {
        GPT3D_CHECK(i < split_num_docs(ds), "sample %lld runs past its epoch", (long long)k);
        int shard;
        uint64_t begin, length;
        document_extent(ds, ds->doc_begin + ds->doc_order[i], &shard, &begin, &length);
        int64_t skip = pos + filled - ds->stream_offset[i];
        int64_t take = (int64_t)length - skip;
        if (take > need - filled) take = need - filled;
        if (take <= 0) continue;
        if (!document_source_read(ds->shards[shard], begin + (uint64_t)skip, (uint64_t)take,
                                  out + filled, err, err_size))
            return false;
        filled += take;
    }
    return true;
}
