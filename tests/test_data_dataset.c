/* GPTDataset indices. Every token of the test corpus encodes its document
 * and position (id = doc * 1000 + pos), so the test can reconstruct each
 * epoch's document stream from the samples alone and check it independently:
 * each epoch visits every sample start exactly once, samples are seq+1
 * windows of one stream made of whole documents of the split (each exactly
 * once), splits follow Megatron's document rule, and orders depend on the
 * seed and the epoch. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"

#define NUM_DOCS 120
#define SHARD0_DOCS 70
#define SEQ 16
#define VOCAB (1 << 20)

static char dir[256];
static char shard_paths[4][512]; /* two halves, a foreign one, an empty one */
static int doc_len[NUM_DOCS];

/* Lengths 0..59 in a scrambled order; every 9th document is empty. */
static int length_of(int d) { return d % 9 == 4 ? 0 : (d * 37 + 11) % 60; }

static void write_shard(const char *path, int first, int count, const char *type, int64_t vocab) {
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(path, type, vocab, 0, err, sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t buf[64];
    for (int d = first; d < first + count; d++) {
        for (int i = 0; i < doc_len[d]; i++) buf[i] = d * 1000 + i;
        CHECK_MSG(token_shard_writer_add_document(w, buf, (size_t)doc_len[d], err, sizeof err),
                  "%s", err);
    }
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
}

static GPTDataset *open_dataset(const char *split, SplitKind kind, uint64_t seed) {
    const char *paths[2] = {shard_paths[0], shard_paths[1]};
    GPTDatasetConfig cfg = {.paths = paths, .num_paths = 2, .split = split, .seq_length = SEQ,
                            .seed = seed, .expected_tokenizer_type = "TestTokenizer",
                            .expected_vocab_size = VOCAB};
    char err[1024];
    GPTDataset *ds = gpt_dataset_create(&cfg, kind, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    return ds;
}

typedef struct {
    int32_t *stream;   /* the epoch's covered stream: spe*SEQ + 1 tokens */
    int64_t length;
    int *doc_order;    /* documents in stream order (non-empty ones seen) */
    int num_seen;
    int64_t *starts;   /* start token of the epoch's k-th sample */
} Epoch;

static void free_epoch(Epoch *e) {
    free(e->stream);
    free(e->doc_order);
    free(e->starts);
}

/* Reads every sample of epoch `epoch` and rebuilds the stream it covers. */
static Epoch collect_epoch(GPTDataset *ds, int64_t epoch) {
    int64_t spe = gpt_dataset_samples_per_epoch(ds);
    Epoch e = {0};
    e.length = spe * SEQ + 1;
    e.stream = malloc((size_t)e.length * sizeof *e.stream);
    e.starts = malloc((size_t)spe * sizeof *e.starts);
    bool *filled = calloc((size_t)e.length, 1);
    bool *start_seen = calloc((size_t)spe, 1);
    int32_t sample[SEQ + 1];
    char err[1024];
    for (int64_t k = epoch * spe; k < (epoch + 1) * spe; k++) {
        int64_t ep, start;
        gpt_dataset_sample_position(ds, k, &ep, &start);
        CHECK(ep == epoch);
        CHECK(start % SEQ == 0 && start >= 0 && start / SEQ < spe);
        CHECK_MSG(!start_seen[start / SEQ], "sample start %lld visited twice", (long long)start);
        start_seen[start / SEQ] = true;
        e.starts[k - epoch * spe] = start;
        CHECK_MSG(gpt_dataset_get_sample(ds, k, sample, err, sizeof err), "%s", err);
        for (int i = 0; i <= SEQ; i++) {
            if (filled[start + i]) CHECK(e.stream[start + i] == sample[i]); /* overlaps agree */
            e.stream[start + i] = sample[i];
            filled[start + i] = true;
        }
    }
    for (int64_t i = 0; i < e.length; i++) CHECK(filled[i]);
    free(filled);
    free(start_seen);
    return e;
}

/* The stream must be whole documents of [doc_begin, doc_end) back to back,
 * each at most once, and the tokens it leaves out (the tail shorter than one
 * sample) must be exactly the rest of its last document plus the unseen
 * documents: so the epoch is a permutation of all the split's documents. */
static void check_stream_structure(Epoch *e, int doc_begin, int doc_end, int64_t split_tokens) {
    bool seen[NUM_DOCS] = {false};
    e->doc_order = malloc(NUM_DOCS * sizeof *e->doc_order);
    e->num_seen = 0;
    int cur = -1, expect_pos = 0;
    for (int64_t i = 0; i < e->length; i++) {
        int doc = e->stream[i] / 1000, pos = e->stream[i] % 1000;
        if (cur >= 0 && expect_pos < doc_len[cur]) {
            CHECK_MSG(doc == cur && pos == expect_pos, "stream token %lld: doc %d pos %d, want "
                      "doc %d pos %d", (long long)i, doc, pos, cur, expect_pos);
        } else {
            CHECK_MSG(pos == 0, "document %d entered at position %d", doc, pos);
            CHECK(doc >= doc_begin && doc < doc_end);
            CHECK_MSG(!seen[doc], "document %d appears twice in one epoch", doc);
            seen[doc] = true;
            e->doc_order[e->num_seen++] = doc;
            cur = doc;
        }
        expect_pos = pos + 1;
    }
    int64_t left_out = doc_len[cur] - expect_pos;
    for (int d = doc_begin; d < doc_end; d++)
        if (!seen[d]) left_out += doc_len[d];
    CHECK(left_out == split_tokens - e->length);
    CHECK(left_out < SEQ);
}

static bool same_starts(const Epoch *a, const Epoch *b, int64_t spe) {
    return memcmp(a->starts, b->starts, (size_t)spe * sizeof *a->starts) == 0;
}

static bool same_order(const Epoch *a, const Epoch *b) {
    return a->num_seen == b->num_seen &&
           memcmp(a->doc_order, b->doc_order, (size_t)a->num_seen * sizeof(int)) == 0;
}

static void check_split(const char *split, SplitKind kind, int doc_begin, int doc_end) {
    GPTDataset *ds = open_dataset(split, kind, 1234);
    int64_t tokens = 0;
    for (int d = doc_begin; d < doc_end; d++) tokens += doc_len[d];
    CHECK(gpt_dataset_num_documents(ds) == doc_end - doc_begin);
    CHECK(gpt_dataset_num_tokens(ds) == tokens);
    int64_t spe = gpt_dataset_samples_per_epoch(ds);
    CHECK(spe == (tokens - 1) / SEQ);

    Epoch e0 = collect_epoch(ds, 0);
    check_stream_structure(&e0, doc_begin, doc_end, tokens);
    Epoch e1 = collect_epoch(ds, 1);
    check_stream_structure(&e1, doc_begin, doc_end, tokens);
    CHECK(!same_starts(&e0, &e1, spe)); /* epochs visit samples in other orders */
    CHECK(!same_order(&e0, &e1));       /* and shuffle documents differently */

    /* Same seed: identical samples, also when read out of order (the epoch
     * cache is rebuilt when k jumps between epochs). */
    GPTDataset *again = open_dataset(split, kind, 1234);
    int32_t a[SEQ + 1], b[SEQ + 1];
    char err[1024];
    int64_t ks[] = {5 * spe + 3, 0, spe - 1, 2 * spe, 1, 5 * spe + 3};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        CHECK(gpt_dataset_get_sample(ds, ks[i], a, err, sizeof err));
        CHECK(gpt_dataset_get_sample(again, ks[i], b, err, sizeof err));
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    Epoch again0 = collect_epoch(again, 0);
    CHECK(same_starts(&e0, &again0, spe) && memcmp(e0.stream, again0.stream,
                                                   (size_t)e0.length * sizeof(int32_t)) == 0);
    /* Another seed: another sample order and document order. */
    GPTDataset *other = open_dataset(split, kind, 99);
    Epoch other0 = collect_epoch(other, 0);
    check_stream_structure(&other0, doc_begin, doc_end, tokens);
    CHECK(!same_starts(&e0, &other0, spe));
    CHECK(!same_order(&e0, &other0));
    free_epoch(&e0);
    free_epoch(&e1);
    free_epoch(&again0);
    free_epoch(&other0);
    gpt_dataset_free(ds);
    gpt_dataset_free(again);
    gpt_dataset_free(other);
}

/* Shards without documents, first, between and last, leave the global
 * document numbering and so every sample unchanged. */
static void empty_shards_change_nothing(void) {
    const char *paths[5] = {shard_paths[3], shard_paths[0], shard_paths[3], shard_paths[1],
                            shard_paths[3]};
    GPTDatasetConfig cfg = {.paths = paths, .num_paths = 5, .split = "80,15,5", .seq_length = SEQ,
                            .seed = 1234};
    char err[1024];
    GPTDataset *with_empty = gpt_dataset_create(&cfg, SPLIT_VALID, err, sizeof err);
    CHECK_MSG(with_empty, "%s", err);
    GPTDataset *plain = open_dataset("80,15,5", SPLIT_VALID, 1234);
    CHECK(gpt_dataset_num_documents(with_empty) == 114 - 96);
    Epoch a = collect_epoch(with_empty, 0), b = collect_epoch(plain, 0);
    check_stream_structure(&a, 96, 114, gpt_dataset_num_tokens(plain));
    CHECK(a.length == b.length &&
          memcmp(a.stream, b.stream, (size_t)a.length * sizeof(int32_t)) == 0);
    free_epoch(&a);
    free_epoch(&b);
    gpt_dataset_free(with_empty);
    gpt_dataset_free(plain);
}

static void expect_error(const char *const *paths, int n, const char *split, int seq,
                         const char *type, int64_t vocab, SplitKind kind, const char *phrase) {
    GPTDatasetConfig cfg = {.paths = paths, .num_paths = n, .split = split, .seq_length = seq,
                            .seed = 1, .expected_tokenizer_type = type,
                            .expected_vocab_size = vocab};
    char err[1024] = "";
    GPTDataset *ds = gpt_dataset_create(&cfg, kind, err, sizeof err);
    CHECK_MSG(!ds, "accepted a config that should fail with '%s'", phrase);
    CHECK_MSG(strstr(err, phrase), "message '%s' lacks '%s'", err, phrase);
}

static void check_errors(void) {
    const char *good[2] = {shard_paths[0], shard_paths[1]};
    const char *bad_splits[] = {"", "a,b", "1,2,3,4", "-1,2", "0,0,0", "1,,2", "1;2"};
    for (size_t i = 0; i < sizeof bad_splits / sizeof *bad_splits; i++)
        expect_error(good, 2, bad_splits[i], SEQ, NULL, 0, SPLIT_TRAIN, "--split");
    expect_error(good, 2, "100,0,0", SEQ, NULL, 0, SPLIT_VALID, "--split");
    expect_error(good, 2, "1", 100000, NULL, 0, SPLIT_TRAIN, "--seq-length");
    expect_error(good, 2, "1", 0, NULL, 0, SPLIT_TRAIN, "--seq-length");
    expect_error(good, 0, "1", SEQ, NULL, 0, SPLIT_TRAIN, "--data-path");
    expect_error(good, 2, "1", SEQ, "GPT2BPETokenizer", 0, SPLIT_TRAIN, "--tokenizer-type");
    expect_error(good, 2, "1", SEQ, NULL, 50257, SPLIT_TRAIN, "vocab_size 1048576");
    const char *mixed[2] = {shard_paths[0], shard_paths[2]};
    expect_error(mixed, 2, "1", SEQ, NULL, 0, SPLIT_TRAIN, shard_paths[2]);
    const char *missing[2] = {shard_paths[0], "/nonexistent/shard.h5"};
    expect_error(missing, 2, "1", SEQ, NULL, 0, SPLIT_TRAIN, "/nonexistent/shard.h5");
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_data_dataset.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    for (int d = 0; d < NUM_DOCS; d++) doc_len[d] = length_of(d);
    for (int i = 0; i < 4; i++)
        snprintf(shard_paths[i], sizeof shard_paths[i], "%s/s%d.h5", dir, i);
    write_shard(shard_paths[0], 0, SHARD0_DOCS, "TestTokenizer", VOCAB);
    write_shard(shard_paths[1], SHARD0_DOCS, NUM_DOCS - SHARD0_DOCS, "TestTokenizer", VOCAB);
    write_shard(shard_paths[2], 0, 3, "OtherTokenizer", VOCAB);
    write_shard(shard_paths[3], 0, 0, "TestTokenizer", VOCAB);

    /* "80,15,5" of 120 documents: boundaries round(0.80*120) = 96 and
     * round(0.95*120) = 114. Train crosses the shard boundary at 70. */
    check_split("80,15,5", SPLIT_TRAIN, 0, 96);
    check_split("80,15,5", SPLIT_VALID, 96, 114);
    check_split("80,15,5", SPLIT_TEST, 114, 120);
    /* Megatron's "98/2/0" syntax and a missing trailing part. */
    GPTDataset *ds = open_dataset("98/2/0", SPLIT_TRAIN, 1);
    CHECK(gpt_dataset_num_documents(ds) == 118); /* round(0.98*120) = 117.6 -> 118 */
    gpt_dataset_free(ds);
    ds = open_dataset("1,1", SPLIT_VALID, 1);
    CHECK(gpt_dataset_num_documents(ds) == 60);
    gpt_dataset_free(ds);
    /* Rounding half to even, as Python's round(): 0.3125 * 120 = 37.5 -> 38
     * and 0.1875 * 120 = 22.5 -> 22 (both fractions are exact in binary). */
    ds = open_dataset("3125,6875", SPLIT_TRAIN, 1);
    CHECK(gpt_dataset_num_documents(ds) == 38);
    gpt_dataset_free(ds);
    ds = open_dataset("1875,8125", SPLIT_TRAIN, 1);
    CHECK(gpt_dataset_num_documents(ds) == 22);
    gpt_dataset_free(ds);
    check_errors();

    empty_shards_change_nothing();
    for (int i = 0; i < 4; i++) unlink(shard_paths[i]);
    rmdir(dir);
    printf("test_data_dataset: ok\n");
    return 0;
}
