/* Blended datasets and --data-path parsing. Every token carries its
 * component, document and position (tag * 10^6 + doc * 1000 + pos), so the
 * test sees from the tokens alone which component a sample came from. The
 * blend's sequence is checked against the proportions the weights ask for
 * (within 1% over 10,000 samples), against a plain re-statement of
 * Megatron's greedy rule written here, and for its invariants: per
 * component the local indices run 0, 1, 2, ... in global order, and sample
 * k equals the component GPTDataset's sample at that local index. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"

#define SEQ 16
#define VOCAB (1 << 22)
#define TYPE "TestTokenizer"
#define NUM_SAMPLES 10000
#define LONG_RUN 300000 /* crosses several 65,536-sample blend blocks */

static char dir[256];

static char *in_dir(const char *name) {
    static char buf[16][512];
    static int next;
    char *p = buf[next++ % 16];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_shard(const char *name, int tag, int first_doc, int num_docs, int64_t vocab) {
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(in_dir(name), TYPE, vocab, 0, err, sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t buf[128];
    for (int d = first_doc; d < first_doc + num_docs; d++) {
        int len = 10 + (d * 29 + tag * 7) % 60;
        for (int i = 0; i < len; i++) buf[i] = vocab > 65536 ? tag * 1000000 + d * 1000 + i : i;
        CHECK_MSG(token_shard_writer_add_document(w, buf, (size_t)len, err, sizeof err), "%s",
                  err);
    }
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
}

/* A config over --data-path words (space-separated, each word in dir unless numeric). */
typedef struct {
    char *items[16];
    int count;
} Words;

static Words words_of(const char *spec) {
    Words w = {{0}, 0};
    char *copy = strdup(spec);
    for (char *t = strtok(copy, " "); t; t = strtok(NULL, " ")) {
        char *end;
        strtod(t, &end);
        bool number = *end == '\0' && end != t;
        w.items[w.count++] = strdup(number || t[0] == '/' ? t : in_dir(t));
    }
    free(copy);
    return w;
}

static void words_free(Words *w) {
    for (int i = 0; i < w->count; i++) free(w->items[i]);
}

static BlendedDataset *open_blend(const char *spec, SplitKind kind, const char *split,
                                  char *err, size_t err_size) {
    Words w = words_of(spec);
    GPTDataConfig cfg = {.data_path = (const char *const *)w.items,
                         .data_path_count = w.count,
                         .split = split,
                         .seq_length = SEQ,
                         .seed = 1234,
                         .expected_tokenizer_type = TYPE};
    BlendedDataset *ds = blended_dataset_create(&cfg, kind, err, err_size);
    words_free(&w);
    return ds;
}

static BlendedDataset *must_open(const char *spec, SplitKind kind) {
    char err[1024];
    BlendedDataset *ds = open_blend(spec, kind, "90,10,0", err, sizeof err);
    CHECK_MSG(ds, "%s: %s", spec, err);
    return ds;
}

static GPTDataset *plain_dataset(const char *const *names, int n, SplitKind kind,
                                 const char *split) {
    const char *paths[8];
    for (int i = 0; i < n; i++) paths[i] = in_dir(names[i]);
    GPTDatasetConfig cfg = {.paths = paths, .num_paths = n, .split = split, .seq_length = SEQ,
                            .seed = 1234};
    char err[1024];
    GPTDataset *ds = gpt_dataset_create(&cfg, kind, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    return ds;
}

/* ----------------------------------------------------------- proportions */

/* Megatron's build_blending_indices restated: the component whose count
 * lags weight * max(k, 1) the most, the first one on ties. */
static int reference_pick(const double *w, const int64_t *counts, int n, int64_t k) {
    double scale = k < 1 ? 1.0 : (double)k;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (w[i] * scale - counts[i] > w[best] * scale - counts[best]) best = i;
    return best;
}

static void check_blend_sequence(const char *spec, const double *expected_weights, int n) {
    BlendedDataset *ds = must_open(spec, SPLIT_TRAIN);
    CHECK(blended_dataset_num_components(ds) == n);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        CHECK(fabs(blended_dataset_weight(ds, i) - expected_weights[i]) < 1e-12);
        sum += blended_dataset_weight(ds, i);
    }
    CHECK(fabs(sum - 1.0) < 1e-12);
    double w[8]; /* the rule's input: the normalised weights the dataset holds */
    for (int i = 0; i < n; i++) w[i] = blended_dataset_weight(ds, i);
    int64_t counts[8] = {0}, ref_counts[8] = {0};
    for (int64_t k = 0; k < LONG_RUN; k++) {
        int c;
        int64_t local;
        blended_dataset_sample_source(ds, k, &c, &local);
        CHECK(c >= 0 && c < n);
        CHECK_MSG(local == counts[c], "sample %lld: local %lld, component %d has %lld so far",
                  (long long)k, (long long)local, c, (long long)counts[c]);
        int ref = reference_pick(w, ref_counts, n, k);
        CHECK_MSG(c == ref, "sample %lld: component %d, the greedy rule picks %d", (long long)k,
                  c, ref);
        counts[c]++;
        ref_counts[ref]++;
        if (k + 1 == NUM_SAMPLES)
            for (int i = 0; i < n; i++) {
                double share = (double)counts[i] / NUM_SAMPLES;
                CHECK_MSG(fabs(share - expected_weights[i]) <= 0.01,
                          "%s: component %d has share %.4f of %d samples, weight %.4f", spec, i,
                          share, NUM_SAMPLES, expected_weights[i]);
            }
        for (int i = 0; i < n; i++) /* the realised share never strays by 2 samples */
            CHECK(fabs((double)counts[i] - expected_weights[i] * (double)(k + 1)) < 2.0);
    }
    /* Random access (jumping back across blocks) gives the same answers. */
    int64_t probes[] = {LONG_RUN - 1, 3, 70000, 65535, 65536, 131072, 0};
    BlendedDataset *again = must_open(spec, SPLIT_TRAIN);
    for (size_t p = 0; p < sizeof probes / sizeof *probes; p++) {
        int c1, c2;
        int64_t l1, l2;
        blended_dataset_sample_source(ds, probes[p], &c1, &l1);
        blended_dataset_sample_source(again, probes[p], &c2, &l2);
        CHECK(c1 == c2 && l1 == l2);
    }
    blended_dataset_free(again);
    blended_dataset_free(ds);
}

/* Sample k is the component GPTDataset's sample at the local index, the
 * component's files split as a plain dataset over them would be, and its
 * tokens carry the component's tag. */
static void check_blend_samples(void) {
    BlendedDataset *ds = must_open("0.7 a*.h5 0.3 b.h5", SPLIT_TRAIN);
    const char *a_files[] = {"a0.h5", "a1.h5"}, *b_files[] = {"b.h5"};
    GPTDataset *plain[2] = {plain_dataset(a_files, 2, SPLIT_TRAIN, "90,10,0"),
                            plain_dataset(b_files, 1, SPLIT_TRAIN, "90,10,0")};
    CHECK(blended_dataset_num_documents(ds) ==
          gpt_dataset_num_documents(plain[0]) + gpt_dataset_num_documents(plain[1]));
    CHECK(gpt_dataset_num_documents(plain[0]) == 54); /* 90% of 60 */
    int32_t got[SEQ + 1], want[SEQ + 1];
    char err[1024];
    for (int64_t k = 0; k < 3000; k += 7) {
        int c;
        int64_t local;
        blended_dataset_sample_source(ds, k, &c, &local);
        CHECK_MSG(blended_dataset_get_sample(ds, k, got, err, sizeof err), "%s", err);
        CHECK(gpt_dataset_get_sample(plain[c], local, want, err, sizeof err));
        CHECK(memcmp(got, want, sizeof got) == 0);
        for (int i = 0; i <= SEQ; i++) CHECK(got[i] / 1000000 == c + 1);
    }
    const char *desc = blended_dataset_description(ds);
    CHECK_MSG(strstr(desc, "0.7000 x") && strstr(desc, "0.3000 x") && strstr(desc, "b.h5") &&
                  strstr(desc, "2 shards"),
              "description: %s", desc);
    gpt_dataset_free(plain[0]);
    gpt_dataset_free(plain[1]);
    blended_dataset_free(ds);
}

/* One component, weighted or not, is exactly the plain GPTDataset. */
static void check_single_component(void) {
    const char *a_files[] = {"a0.h5", "a1.h5"};
    const char *specs[] = {"a*.h5", "a0.h5 a1.h5", "3 a*.h5"};
    GPTDataset *plain = plain_dataset(a_files, 2, SPLIT_VALID, "90,10,0");
    int64_t spe = gpt_dataset_samples_per_epoch(plain);
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        BlendedDataset *ds = must_open(specs[s], SPLIT_VALID);
        CHECK(blended_dataset_num_components(ds) == 1);
        CHECK(blended_dataset_num_documents(ds) == 6);
        int32_t got[SEQ + 1], want[SEQ + 1];
        char err[1024];
        for (int64_t k = 0; k < 4 * spe; k++) {
            int c;
            int64_t local;
            blended_dataset_sample_source(ds, k, &c, &local);
            CHECK(c == 0 && local == k);
            CHECK(blended_dataset_get_sample(ds, k, got, err, sizeof err));
            CHECK(gpt_dataset_get_sample(plain, k, want, err, sizeof err));
            CHECK(memcmp(got, want, sizeof got) == 0);
        }
        blended_dataset_free(ds);
    }
    /* Unweighted patterns of different files are one concatenated dataset. */
    const char *ab_files[] = {"a1.h5", "b.h5"};
    GPTDataset *ab = plain_dataset(ab_files, 2, SPLIT_TRAIN, "90,10,0");
    BlendedDataset *ds = must_open("a1.h5 b.h5", SPLIT_TRAIN);
    CHECK(blended_dataset_num_components(ds) == 1);
    CHECK(blended_dataset_num_documents(ds) == gpt_dataset_num_documents(ab));
    int32_t got[SEQ + 1], want[SEQ + 1];
    char err[1024];
    for (int64_t k = 0; k < 500; k++) {
        CHECK(blended_dataset_get_sample(ds, k, got, err, sizeof err));
        CHECK(gpt_dataset_get_sample(ab, k, want, err, sizeof err));
        CHECK(memcmp(got, want, sizeof got) == 0);
    }
    blended_dataset_free(ds);
    gpt_dataset_free(ab);
    gpt_dataset_free(plain);
}

/* ----------------------------------------------------------------- errors */

static void expect_parse_error(const char *spec, const char *phrase) {
    Words w = words_of(spec);
    DataPath p;
    char err[1024] = "";
    bool ok = data_path_parse("--data-path", (const char *const *)w.items, w.count, &p, err,
                              sizeof err);
    CHECK_MSG(!ok, "'%s' parsed", spec);
    CHECK_MSG(strstr(err, "--data-path") && strstr(err, phrase), "'%s': message '%s' lacks '%s'",
              spec, err, phrase);
    words_free(&w);
}

static void check_parsing(void) {
    Words w = words_of("2 a*.h5 6 b.h5");
    DataPath p;
    char err[1024];
    CHECK_MSG(data_path_parse("--data-path", (const char *const *)w.items, w.count, &p, err,
                              sizeof err),
              "%s", err);
    CHECK(p.weighted && p.num_components == 2);
    CHECK(p.components[0].num_files == 2 && p.components[1].num_files == 1);
    CHECK(strstr(p.components[0].files[0], "a0.h5") && strstr(p.components[0].files[1], "a1.h5"));
    CHECK(fabs(p.components[0].weight - 0.25) < 1e-15 && fabs(p.components[1].weight - 0.75) < 1e-15);
    data_path_free(&p);
    words_free(&w);

    expect_parse_error("0.7 a0.h5 0.3", "pairs");
    expect_parse_error("0.7 a0.h5 b.h5", "pairs");
    expect_parse_error("0.7 a0.h5 x b.h5", "x' (word 3) should be the weight");
    expect_parse_error("0 a0.h5 1 b.h5", "positive");
    expect_parse_error("-1 a0.h5 1 b.h5", "positive");
    expect_parse_error("0.5 a*.h5 0.5 nothing*.h5", "nothing*.h5: no file matches");
    expect_parse_error("a0.h5 0.3 b.h5", "looks like a weight");
    expect_parse_error("missing.h5", "missing.h5: no such file");
    DataPath none;
    CHECK(!data_path_parse("--data-path", NULL, 0, &none, err, sizeof err));
    CHECK(strstr(err, "--data-path names no token shards"));
}

static void expect_open_error(const char *spec, SplitKind kind, const char *phrase) {
    char err[1024] = "";
    BlendedDataset *ds = open_blend(spec, kind, "90,10,0", err, sizeof err);
    CHECK_MSG(!ds, "'%s' opened", spec);
    CHECK_MSG(strstr(err, phrase), "'%s': message '%s' lacks '%s'", spec, err, phrase);
}

static void check_open_errors(void) {
    /* A component made with another vocabulary: both files and values named. */
    char err[1024] = "";
    BlendedDataset *ds = open_blend("0.5 b.h5 0.5 small_vocab.h5", SPLIT_TRAIN, "1", err,
                                    sizeof err);
    CHECK(!ds);
    CHECK_MSG(strstr(err, "small_vocab.h5") && strstr(err, "b.h5") && strstr(err, "50000") &&
                  strstr(err, "4194304"),
              "%s", err);
    /* The run's tokenizer against every component, not only the first. */
    Words w = words_of("0.5 b.h5 0.5 other_type.h5");
    GPTDataConfig cfg = {.data_path = (const char *const *)w.items, .data_path_count = w.count,
                         .split = "1", .seq_length = SEQ, .seed = 1,
                         .expected_tokenizer_type = TYPE, .expected_vocab_size = VOCAB};
    CHECK(!blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err));
    CHECK_MSG(strstr(err, "other_type.h5") && strstr(err, "OtherTokenizer") &&
                  strstr(err, TYPE) && strstr(err, "component 2 of 2"),
              "%s", err);
    words_free(&w);
    /* A component whose valid split is too short is named. */
    expect_open_error("0.5 a*.h5 0.5 tiny.h5", SPLIT_VALID, "component 2 of 2 ('");
    expect_open_error("0.5 a*.h5 0.5", SPLIT_TRAIN, "pairs");
}

/* ------------------------------------------------------ per-split paths */

static BlendedDataset *open_per_split(const char *data, const char *train, const char *valid,
                                      SplitKind kind, char *err, size_t err_size) {
    Words d = words_of(data), t = words_of(train), v = words_of(valid);
    GPTDataConfig cfg = {.data_path = (const char *const *)d.items, .data_path_count = d.count,
                         .train_data_path = (const char *const *)t.items,
                         .train_data_path_count = t.count,
                         .valid_data_path = (const char *const *)v.items,
                         .valid_data_path_count = v.count,
                         .split = "969,30,1", .seq_length = SEQ, .seed = 1234};
    BlendedDataset *ds = blended_dataset_create(&cfg, kind, err, err_size);
    words_free(&d);
    words_free(&t);
    words_free(&v);
    return ds;
}

static void check_per_split_paths(void) {
    char err[1024];
    /* Each path is used whole for its split; --split is ignored. */
    BlendedDataset *train = open_per_split("", "a*.h5", "b.h5", SPLIT_TRAIN, err, sizeof err);
    CHECK_MSG(train, "%s", err);
    BlendedDataset *valid = open_per_split("", "a*.h5", "b.h5", SPLIT_VALID, err, sizeof err);
    CHECK_MSG(valid, "%s", err);
    CHECK(blended_dataset_num_documents(train) == 60);
    CHECK(blended_dataset_num_documents(valid) == 40);
    CHECK(strstr(blended_dataset_description(valid), "--valid-data-path"));
    const char *b_files[] = {"b.h5"};
    GPTDataset *b_valid = plain_dataset(b_files, 1, SPLIT_VALID, "0,1,0");
    int32_t got[SEQ + 1], want[SEQ + 1];
    for (int64_t k = 0; k < 400; k++) {
        CHECK(blended_dataset_get_sample(train, k, got, err, sizeof err));
        CHECK(got[0] / 1000000 == 1);
        CHECK(blended_dataset_get_sample(valid, k, got, err, sizeof err));
        CHECK(gpt_dataset_get_sample(b_valid, k, want, err, sizeof err));
        CHECK(memcmp(got, want, sizeof got) == 0);
    }
    gpt_dataset_free(b_valid);
    blended_dataset_free(train);
    blended_dataset_free(valid);
    /* Weighted per-split paths blend as --data-path does. */
    train = open_per_split("", "0.5 a*.h5 0.5 c.h5", "b.h5", SPLIT_TRAIN, err, sizeof err);
    CHECK_MSG(train && blended_dataset_num_components(train) == 2, "%s", err);
    blended_dataset_free(train);
    /* Both kinds, or a split without its path, are errors naming the flags. */
    CHECK(!open_per_split("b.h5", "a*.h5", "", SPLIT_TRAIN, err, sizeof err));
    CHECK_MSG(strstr(err, "--data-path and --train-data-path"), "%s", err);
    CHECK(!open_per_split("", "a*.h5", "", SPLIT_VALID, err, sizeof err));
    CHECK_MSG(strstr(err, "no valid data") && strstr(err, "--valid-data-path"), "%s", err);
    /* The split's own phrase too: every flag name also appears in the
     * both-kinds message, so a flag alone matches a message left from there. */
    CHECK(!open_per_split("", "", "b.h5", SPLIT_TRAIN, err, sizeof err));
    CHECK_MSG(strstr(err, "no train data") && strstr(err, "--train-data-path"), "%s", err);
    CHECK(!open_per_split("", "a*.h5", "b.h5", SPLIT_TEST, err, sizeof err));
    CHECK_MSG(strstr(err, "no test data") && strstr(err, "--test-data-path"), "%s", err);
    CHECK(!open_per_split("", "a*.h5", "nothing.h5", SPLIT_VALID, err, sizeof err));
    CHECK_MSG(strstr(err, "--valid-data-path") && strstr(err, "nothing.h5"), "%s", err);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_data_blend.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    write_shard("a0.h5", 1, 0, 30, VOCAB);
    write_shard("a1.h5", 1, 30, 30, VOCAB);
    write_shard("b.h5", 2, 0, 40, VOCAB);
    write_shard("c.h5", 3, 0, 25, VOCAB);
    write_shard("tiny.h5", 4, 0, 3, VOCAB);
    write_shard("small_vocab.h5", 5, 0, 10, 50000);
    {
        char err[1024];
        TokenShardWriter *w = token_shard_writer_create(in_dir("other_type.h5"), "OtherTokenizer",
                                                        VOCAB, 0, err, sizeof err);
        CHECK_MSG(w, "%s", err);
        int32_t doc[40] = {0};
        CHECK(token_shard_writer_add_document(w, doc, 40, err, sizeof err));
        CHECK(token_shard_writer_finish(w, err, sizeof err));
    }

    const double two[] = {0.7, 0.3}, three[] = {0.5, 0.3, 0.2};
    check_blend_sequence("0.7 a*.h5 0.3 b.h5", two, 2);
    check_blend_sequence("5 a*.h5 3 b.h5 2 c.h5", three, 3);
    check_blend_samples();
    check_single_component();
    check_parsing();
    check_open_errors();
    check_per_split_paths();

    const char *names[] = {"a0.h5", "a1.h5", "b.h5", "c.h5", "tiny.h5", "small_vocab.h5",
                           "other_type.h5"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) unlink(in_dir(names[i]));
    rmdir(dir);
    printf("test_data_blend: ok\n");
    return 0;
}
