/* data/blended_dataset.c — Megatron's BlendedDataset over GPTDatasets.
 *
 * Which component serves global sample k follows Megatron's
 * build_blending_indices (megatron/core/datasets/helpers.cpp): walking k =
 * 0, 1, 2, ..., pick the component i with the largest
 * weight_i * max(k, 1) - count_i (the first one on ties), where count_i is
 * how many of samples 0..k-1 went to i; the sample is i's local sample
 * count_i. So every component's local indices are 0, 1, 2, ... in global
 * order, and after n samples each count is within about one of weight * n.
 *
 * Megatron materialises that table for the whole run (N samples: 10 bytes
 * each, 16 GB at 10^9). Here the rule is replayed per block of
 * BLEND_BLOCK_SAMPLES samples instead: a block table records each
 * component's count at the start of every block (C int64 per 65,536
 * samples: 370 KB for 10^9 samples of a 3-way blend), and the block holding
 * the sample being read is expanded into (component, local index) on
 * demand, which costs BLEND_BLOCK_SAMPLES * C steps once per block. Only
 * the block table takes a scan from sample 0; it grows by doubling, so a run
 * that reads samples in order scans at most twice, and it is what
 * --data-cache-path stores (one file keyed by the weights, the block size
 * and the format version: the rule uses nothing else, so train and valid
 * blends with the same weights share it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "data/data.h"
#include "data/data_util.h"
#include "data/index_cache.h"

#define BLEND_BLOCK_SAMPLES ((int64_t)1 << 16)

static const char *const SPLIT_NAMES[3] = {"train", "valid", "test"};

struct BlendedDataset {
    SplitKind split;
    int64_t test_fail_at; /* GPT3D_TEST_FAIL_DATA_READ_AT: a sample whose read fails; -1 none */
    int num_components;
    GPTDataset **components;
    double *weights; /* normalised */
    char **patterns;
    char *description;
    /* The blend index; unused with one component. */
    int64_t *block_counts;    /* num_blocks rows of C: counts before block b */
    int64_t num_blocks;       /* rows known */
    int64_t resident_block;   /* the expanded block, -1 for none */
    int32_t *block_component; /* BLEND_BLOCK_SAMPLES entries */
    int64_t *block_local;
    char *cache_path; /* NULL: no cache */
    uint64_t cache_key;
    DataIndexStats stats;
};

/* ------------------------------------------------------------ the rule */

/* Runs the greedy rule over samples [first, first + n), advancing counts[C];
 * records each sample's component and local index when the arrays are given. */
static void blend_run(const BlendedDataset *ds, int64_t first, int64_t n, int64_t *counts,
                      int32_t *component, int64_t *local) {
    const int C = ds->num_components;
    const double *w = ds->weights;
    for (int64_t k = first; k < first + n; k++) {
        double scale = k > 1 ? (double)k : 1.0;
        int best = 0;
        double best_lag = w[0] * scale - (double)counts[0];
        for (int i = 1; i < C; i++) {
            double lag = w[i] * scale - (double)counts[i];
            if (lag > best_lag) {
                best_lag = lag;
                best = i;
            }
        }
        if (component) {
            component[k - first] = best;
            local[k - first] = counts[best];
        }
        counts[best]++;
    }
}

/* ------------------------------------------------------ the block table */

static void store_block_table(BlendedDataset *ds) {
    if (!ds->cache_path) return;
    if (index_cache_write(ds->cache_path, ds->cache_key, ds->block_counts,
                          ds->num_blocks * ds->num_components))
        ds->stats.stored++;
    else
        ds->stats.store_failures++;
}

/* A cached table must start at zero and gain exactly one block of samples
 * per row without any count going down; anything else is rebuilt. */
static bool block_table_consistent(const int64_t *rows, int64_t num_rows, int C) {
    for (int64_t b = 0; b < num_rows; b++) {
        int64_t sum = 0;
        for (int i = 0; i < C; i++) {
            int64_t v = rows[b * C + i];
            if (v < 0 || (b > 0 && v < rows[(b - 1) * C + i])) return false;
            sum += v;
        }
        if (sum != b * BLEND_BLOCK_SAMPLES) return false;
    }
    return true;
}

static void load_block_table(BlendedDataset *ds) {
    int64_t count;
    IndexCacheStatus status;
    int64_t *rows = index_cache_read(ds->cache_path, ds->cache_key, &count, &status);
    const int C = ds->num_components;
    if (rows && count >= C && count % C == 0 && block_table_consistent(rows, count / C, C)) {
        free(ds->block_counts);
        ds->block_counts = rows;
        ds->num_blocks = count / C;
        ds->stats.loaded++;
        return;
    }
    free(rows);
    if (status != INDEX_CACHE_MISSING) ds->stats.rejected++;
}

/* Makes row `block` known, doubling the table so in-order reading scans
 * O(samples) in total. */
static void extend_block_table(BlendedDataset *ds, int64_t block) {
    if (block < ds->num_blocks) return;
    const int C = ds->num_components;
    int64_t want = block + 1 > 2 * ds->num_blocks ? block + 1 : 2 * ds->num_blocks;
    ds->block_counts = xrealloc(ds->block_counts, (size_t)(want * C) * sizeof(int64_t));
    for (int64_t b = ds->num_blocks; b < want; b++) {
        int64_t *row = ds->block_counts + b * C;
        memcpy(row, row - C, (size_t)C * sizeof *row);
        blend_run(ds, (b - 1) * BLEND_BLOCK_SAMPLES, BLEND_BLOCK_SAMPLES, row, NULL, NULL);
    }
    ds->num_blocks = want;
    ds->stats.built++;
    store_block_table(ds);
}

static void expand_block(BlendedDataset *ds, int64_t block) {
    extend_block_table(ds, block);
    const int C = ds->num_components;
    int64_t *counts = xmalloc((size_t)C * sizeof *counts);
    memcpy(counts, ds->block_counts + block * C, (size_t)C * sizeof *counts);
    blend_run(ds, block * BLEND_BLOCK_SAMPLES, BLEND_BLOCK_SAMPLES, counts, ds->block_component,
              ds->block_local);
    free(counts);
    ds->resident_block = block;
}

static void setup_blend_index(BlendedDataset *ds, const char *cache_dir) {
    const int C = ds->num_components;
    ds->block_counts = xcalloc((size_t)C, sizeof *ds->block_counts); /* row 0: all zero */
    ds->num_blocks = 1;
    ds->resident_block = -1;
    ds->block_component = xmalloc((size_t)BLEND_BLOCK_SAMPLES * sizeof *ds->block_component);
    ds->block_local = xmalloc((size_t)BLEND_BLOCK_SAMPLES * sizeof *ds->block_local);
    if (!cache_dir) return;
    IndexKey k;
    index_key_init(&k, "blended_dataset.block_counts");
    index_key_u64(&k, (uint64_t)C);
    for (int i = 0; i < C; i++) index_key_f64(&k, ds->weights[i]);
    index_key_u64(&k, (uint64_t)BLEND_BLOCK_SAMPLES);
    ds->cache_key = k.h;
    ds->cache_path = index_cache_path(cache_dir, "blend", k.h);
    load_block_table(ds);
}

/* ------------------------------------------------------------- creation */

/* Which flag's words make this split, and how that flag is split. */
typedef struct {
    const char *flag;
    const char *const *words;
    int count;
    const char *split;
} SplitSource;

static bool choose_source(const GPTDataConfig *cfg, SplitKind split, SplitSource *src, char *err,
                          size_t err_size) {
    bool per_split = cfg->train_data_path_count > 0 || cfg->valid_data_path_count > 0 ||
                     cfg->test_data_path_count > 0;
    if (cfg->mock_data) {
        if (per_split || cfg->data_path_count > 0) {
            data_set_err(err, err_size,
                         "--mock-data replaces the data: give either --mock-data or "
                         "--data-path/--train-data-path/--valid-data-path/--test-data-path");
            return false;
        }
        *src = (SplitSource){"--mock-data", NULL, 0, cfg->split};
        return true;
    }
    if (!per_split) {
        *src = (SplitSource){"--data-path", cfg->data_path, cfg->data_path_count, cfg->split};
        return true;
    }
    if (cfg->data_path_count > 0) {
        data_set_err(
            err, err_size,
            "--data-path and --train-data-path/--valid-data-path/--test-data-path exclude "
            "each other: give either --data-path (divided by --split) or a path per split");
        return false;
    }
    static const char *const FLAGS[3] = {"--train-data-path", "--valid-data-path",
                                         "--test-data-path"};
    static const char *const WHOLE[3] = {"1,0,0", "0,1,0", "0,0,1"};
    const char *const *words[3] = {cfg->train_data_path, cfg->valid_data_path,
                                   cfg->test_data_path};
    const int counts[3] = {cfg->train_data_path_count, cfg->valid_data_path_count,
                           cfg->test_data_path_count};
    if (counts[split] <= 0) {
        data_set_err(err, err_size,
                     "no %s data: per-split paths are given but %s is not; give %s (each per-split "
                     "path is used whole for its split), or use --data-path with --split",
                     SPLIT_NAMES[split], FLAGS[split], FLAGS[split]);
        return false;
    }
    *src = (SplitSource){FLAGS[split], words[split], counts[split], WHOLE[split]};
    return true;
}

static bool check_components_agree(const BlendedDataset *ds, const char *flag, char *err,
                                   size_t err_size) {
    const GPTDataset *a = ds->components[0];
    for (int i = 1; i < ds->num_components; i++) {
        const GPTDataset *b = ds->components[i];
        if (strcmp(gpt_dataset_tokenizer_type(a), gpt_dataset_tokenizer_type(b)) == 0 &&
            gpt_dataset_vocab_size(a) == gpt_dataset_vocab_size(b) &&
            gpt_dataset_eod_token(a) == gpt_dataset_eod_token(b))
            continue;
        data_set_err(
            err, err_size,
            "%s: token shard %s (tokenizer_type '%s', vocab_size %lld, eod_token %lld) does "
            "not match %s (tokenizer_type '%s', vocab_size %lld, eod_token %lld); every "
            "component of a blend must be made with one tokenizer",
            flag, gpt_dataset_shard_path(b, 0), gpt_dataset_tokenizer_type(b),
            (long long)gpt_dataset_vocab_size(b), (long long)gpt_dataset_eod_token(b),
            gpt_dataset_shard_path(a, 0), gpt_dataset_tokenizer_type(a),
            (long long)gpt_dataset_vocab_size(a), (long long)gpt_dataset_eod_token(a));
        return false;
    }
    return true;
}

static void describe(BlendedDataset *ds, const char *flag) {
    data_appendf(&ds->description, "%s (%s):", SPLIT_NAMES[ds->split], flag);
    for (int i = 0; i < ds->num_components; i++) {
        const GPTDataset *c = ds->components[i];
        data_appendf(&ds->description, "%s ", i ? ";" : "");
        if (ds->num_components > 1) data_appendf(&ds->description, "%.4f x ", ds->weights[i]);
        data_appendf(&ds->description,
                     "%s (%d shard%s, %lld documents, %lld tokens, %lld samples "
                     "per epoch)",
                     ds->patterns[i], gpt_dataset_num_shards(c),
                     gpt_dataset_num_shards(c) == 1 ? "" : "s",
                     (long long)gpt_dataset_num_documents(c), (long long)gpt_dataset_num_tokens(c),
                     (long long)gpt_dataset_samples_per_epoch(c));
    }
}

/* How a component appears in the description: its words, with how their
 * prefixes resolved ("web -> web.{bin,idx} ..." stands for itself when the
 * prefix is the only word). */
static char *component_label(const DataPathComponent *pc) {
    if (!pc->resolved) return xstrdup(pc->pattern);
    if (!strchr(pc->pattern, ' ')) return xstrdup(pc->resolved);
    char *label = NULL;
    data_appendf(&label, "%s [%s]", pc->pattern, pc->resolved);
    return label;
}

/* One GPTDataset per component; a failure names the component when there
 * are several. */
static bool create_components(BlendedDataset *ds, const GPTDataConfig *cfg,
                              const SplitSource *src, const DataPath *path, char *err,
                              size_t err_size) {
    ds->num_components = path->num_components;
    ds->components = xcalloc((size_t)ds->num_components, sizeof *ds->components);
    ds->weights = xcalloc((size_t)ds->num_components, sizeof *ds->weights);
    ds->patterns = xcalloc((size_t)ds->num_components, sizeof *ds->patterns);
    for (int i = 0; i < ds->num_components; i++) {
        const DataPathComponent *pc = &path->components[i];
        ds->weights[i] = pc->weight;
        ds->patterns[i] = component_label(pc);
        GPTDatasetConfig gc = {
            .paths = (const char *const *)pc->files,
            .num_paths = pc->num_files,
            .split = src->split,
            .seq_length = cfg->seq_length,
            .seed = cfg->seed,
            .expected_tokenizer_type = cfg->expected_tokenizer_type,
            .expected_vocab_size = cfg->expected_vocab_size,
            .cache_dir = cfg->cache_dir,
            .data_path_flag = src->flag,
            .scans = cfg->scans,
            .tokenizer_vocab_size = cfg->tokenizer_vocab_size,
            .tokenizer_eod_token = cfg->tokenizer_eod_token,
            .mock_data = cfg->mock_data,
            .too_short = cfg->too_short,
        };
        char inner[1024];
        ds->components[i] = gpt_dataset_create(&gc, ds->split, inner, sizeof inner);
        if (!ds->components[i]) {
            if (path->num_components > 1)
                data_set_err(err, err_size, "%s component %d of %d ('%s'): %s", src->flag, i + 1,
                             path->num_components, pc->pattern, inner);
            else
                data_set_err(err, err_size, "%s", inner);
            return false;
        }
    }
    return true;
}

/* The components of a split: its flag's words parsed, or for --mock-data
 * one component without files (the dataset makes its documents). */
static bool parse_source(const GPTDataConfig *cfg, const SplitSource *src, DataPath *path,
                         char *err, size_t err_size) {
    if (!cfg->mock_data)
        return data_path_parse(src->flag, src->words, src->count, path, err, err_size);
    memset(path, 0, sizeof *path);
    path->num_components = 1;
    path->components = xcalloc(1, sizeof *path->components);
    path->components[0].pattern = xstrdup("mock data");
    path->components[0].weight = 1.0;
    return true;
}

BlendedDataset *blended_dataset_create(const GPTDataConfig *cfg, SplitKind split, char *err,
                                       size_t err_size) {
    GPT3D_CHECK(split >= SPLIT_TRAIN && split <= SPLIT_TEST, "bad split kind %d", (int)split);
    if (cfg->too_short) *cfg->too_short = false;
    SplitSource src;
    if (!choose_source(cfg, split, &src, err, err_size)) return NULL;
    DataPath path;
    if (!parse_source(cfg, &src, &path, err, err_size)) return NULL;
    BlendedDataset *ds = xcalloc(1, sizeof *ds);
    ds->split = split;
    const char *fail_at = getenv("GPT3D_TEST_FAIL_DATA_READ_AT");
    ds->test_fail_at = split == SPLIT_TRAIN && fail_at ? strtoll(fail_at, NULL, 10) : -1;
    bool ok = create_components(ds, cfg, &src, &path, err, err_size) &&
              check_components_agree(ds, src.flag, err, err_size);
    data_path_free(&path);
    if (!ok) {
        blended_dataset_free(ds);
        return NULL;
    }
    if (ds->num_components > 1) setup_blend_index(ds, cfg->cache_dir);
    describe(ds, src.flag);
    return ds;
}

void blended_dataset_free(BlendedDataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->num_components; i++) {
        gpt_dataset_free(ds->components[i]);
        free(ds->patterns[i]);
    }
    free(ds->components);
    free(ds->patterns);
    free(ds->weights);
    free(ds->description);
    free(ds->block_counts);
    free(ds->block_component);
    free(ds->block_local);
    free(ds->cache_path);
    free(ds);
}

/* --------------------------------------------------------------- access */

void blended_dataset_sample_source(BlendedDataset *ds, int64_t k, int *component,
                                   int64_t *local_index) {
    GPT3D_CHECK(k >= 0, "negative sample index %lld", (long long)k);
    if (ds->num_components == 1) {
        *component = 0;
        *local_index = k;
        return;
    }
    int64_t block = k / BLEND_BLOCK_SAMPLES;
    if (block != ds->resident_block) expand_block(ds, block);
    *component = ds->block_component[k % BLEND_BLOCK_SAMPLES];
    *local_index = ds->block_local[k % BLEND_BLOCK_SAMPLES];
}

bool blended_dataset_get_sample(BlendedDataset *ds, int64_t k, int32_t *out, char *err,
                                size_t err_size) {
    if (k == ds->test_fail_at) {
        data_set_err(
            err, err_size,
            "test hook: the read of training sample %lld fails (GPT3D_TEST_FAIL_DATA_READ_AT)",
            (long long)k);
        return false;
    }
    int c;
    int64_t local;
    blended_dataset_sample_source(ds, k, &c, &local);
    return gpt_dataset_get_sample(ds->components[c], local, out, err, err_size);
}

int blended_dataset_num_components(const BlendedDataset *ds) { return ds->num_components; }

double blended_dataset_weight(const BlendedDataset *ds, int component) {
    GPT3D_CHECK(component >= 0 && component < ds->num_components, "component %d", component);
    return ds->weights[component];
}

GPTDataset *blended_dataset_component(const BlendedDataset *ds, int component) {
    GPT3D_CHECK(component >= 0 && component < ds->num_components, "component %d", component);
    return ds->components[component];
}

const char *blended_dataset_description(const BlendedDataset *ds) { return ds->description; }

const char *blended_dataset_tokenizer_type(const BlendedDataset *ds) {
    return gpt_dataset_tokenizer_type(ds->components[0]);
}

int64_t blended_dataset_vocab_size(const BlendedDataset *ds) {
    return gpt_dataset_vocab_size(ds->components[0]);
}

int64_t blended_dataset_eod_token(const BlendedDataset *ds) {
    return gpt_dataset_eod_token(ds->components[0]);
}

int64_t blended_dataset_num_documents(const BlendedDataset *ds) {
    int64_t n = 0;
    for (int i = 0; i < ds->num_components; i++) n += gpt_dataset_num_documents(ds->components[i]);
    return n;
}

int64_t blended_dataset_num_tokens(const BlendedDataset *ds) {
    int64_t n = 0;
    for (int i = 0; i < ds->num_components; i++) n += gpt_dataset_num_tokens(ds->components[i]);
    return n;
}

DataIndexStats blended_dataset_index_stats(const BlendedDataset *ds) {
    DataIndexStats s = ds->stats;
    for (int i = 0; i < ds->num_components; i++) {
        DataIndexStats c = gpt_dataset_index_stats(ds->components[i]);
        s.built += c.built;
        s.loaded += c.loaded;
        s.stored += c.stored;
        s.rejected += c.rejected;
        s.store_failures += c.store_failures;
    }
    return s;
}
