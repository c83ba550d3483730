/* Megatron .bin/.idx read in place, --data-path prefixes, --split quotes and
 * --mock-data (data/megatron_dataset.c, data/document_source.c,
 * data/data_path.c, data/dataset.c).
 * - The reader on pairs written by tests/megatron_fixture.h (not by the
 *   reader's code) in four dtypes and both layouts (sequential as Megatron
 *   writes, and sequences stored out of order): counts, document offsets,
 *   every token window; bad version, unknown and float dtypes, a .bin cut
 *   short or too long, negative and out-of-vocabulary ids: one error naming
 *   the file.
 * - A dataset over a pair gives the same samples as one over a shard holding
 *   the same documents; a mixed-format blend opens and draws from both.
 * - Prefix resolution for every form, the ambiguous and broken ones, and a
 *   prefix that resolves to nothing (the message lists every path tried).
 * - Mock data: deterministic from the seed, ids in the vocabulary, EOD at
 *   document ends, and sample k the same whatever order or subset of samples
 *   a reader asks for (what makes it layout independent). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "megatron_fixture.h"
#include "test_util.h"

#define SEQ 8
#define BYTE_VOCAB 257
#define BYTE_EOD 256

static char dir[256];

static char *in_dir(const char *name) {
    static char buf[16][512];
    static int next;
    char *p = buf[next++ % 16];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void touch(const char *name) {
    FILE *f = fopen(in_dir(name), "wb");
    CHECK(f);
    fclose(f);
}

/* ------------------------------------------------------------ the corpus */

/* 40 documents of 1 to 2 sequences; token values below 256 (any dtype).
 * Document 7 is empty (no sequence), document 11 has an empty sequence. */
enum { DOCS = 40, MAX_SEQS = 80, MAX_TOKENS = 4000 };

typedef struct {
    int64_t tokens[MAX_TOKENS];
    int32_t lengths[MAX_SEQS];
    int64_t doc_indices[DOCS + 1];
    int num_sequences, num_tokens;
    uint64_t doc_offsets[DOCS + 1];
} Corpus;

static void make_corpus(Corpus *c) {
    memset(c, 0, sizeof *c);
    for (int d = 0; d < DOCS; d++) {
        c->doc_indices[d] = c->num_sequences;
        c->doc_offsets[d] = (uint64_t)c->num_tokens;
        int seqs = d == 7 ? 0 : 1 + d % 2;
        for (int q = 0; q < seqs; q++) {
            int len = d == 11 && q == 1 ? 0 : 3 + (d * 13 + q * 5) % 40;
            for (int i = 0; i < len; i++)
                c->tokens[c->num_tokens++] = (d * 31 + q * 7 + i * 3) % 256; /* uint8 too */
            c->lengths[c->num_sequences++] = len;
        }
    }
    c->doc_indices[DOCS] = c->num_sequences;
    c->doc_offsets[DOCS] = (uint64_t)c->num_tokens;
}

static MegatronFixture fixture_of(const Corpus *c) {
    return (MegatronFixture){c->num_sequences, c->tokens, c->lengths, DOCS + 1, c->doc_indices};
}

static void write_pair(const char *name, const Corpus *c, int code, int size, int reversed) {
    MegatronFixture f = fixture_of(c);
    megatron_fixture_write_layout(in_dir(name), &f, code, size, reversed);
}

/* The same documents as an HDF5 shard. */
static void write_shard(const char *name, const Corpus *c) {
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(in_dir(name), "ByteTokenizer", BYTE_VOCAB,
                                                    BYTE_EOD, err, sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t doc[MAX_TOKENS];
    for (int d = 0; d < DOCS; d++) {
        int n = (int)(c->doc_offsets[d + 1] - c->doc_offsets[d]);
        for (int i = 0; i < n; i++)
            doc[i] = (int32_t)c->tokens[c->doc_offsets[d] + (uint64_t)i];
        CHECK_MSG(token_shard_writer_add_document(w, doc, (size_t)n, err, sizeof err), "%s", err);
    }
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
}

/* ------------------------------------------------------------ the reader */

static void check_reader(const Corpus *c, int code, int size, const char *dtype, int reversed) {
    char name[64], err[1024];
    snprintf(name, sizeof name, "reader_%s_%d", dtype, reversed);
    write_pair(name, c, code, size, reversed);
    MegatronDataset *m = megatron_dataset_open(in_dir(name), err, sizeof err);
    CHECK_MSG(m, "%s: %s", name, err);
    CHECK(strcmp(megatron_dataset_dtype_name(m), dtype) == 0);
    CHECK(megatron_dataset_num_sequences(m) == c->num_sequences);
    CHECK(megatron_dataset_num_documents(m) == DOCS);
    CHECK(megatron_dataset_num_tokens(m) == c->num_tokens);
    CHECK(memcmp(megatron_dataset_document_offsets(m), c->doc_offsets, sizeof c->doc_offsets) == 0);
    CHECK_HAS(megatron_dataset_bin_path(m), ".bin");
    /* Every window of up to 50 tokens, so reads cross sequences and documents. */
    int32_t got[64];
    for (int b = 0; b < c->num_tokens; b++)
        for (int n = 1; n <= 50 && b + n <= c->num_tokens; n += 7) {
            CHECK_MSG(megatron_dataset_read(m, (uint64_t)b, (uint64_t)n, got, err, sizeof err),
                      "%s", err);
            for (int i = 0; i < n; i++)
                CHECK_MSG(got[i] == c->tokens[b + i], "%s: token %d", name, b + i);
        }
    CHECK(!megatron_dataset_read(m, (uint64_t)c->num_tokens - 1, 2, got, err, sizeof err));
    CHECK_HAS(err, "past");
    int64_t max_id = -2, want = 0;
    for (int i = 0; i < c->num_tokens; i++)
        if (c->tokens[i] > want) want = c->tokens[i];
    CHECK_MSG(megatron_dataset_check_token_ids(m, BYTE_VOCAB, &max_id, err, sizeof err), "%s", err);
    CHECK(max_id == want);
    /* One less than the largest id makes that id out of vocabulary. */
    CHECK(!megatron_dataset_check_token_ids(m, want, &max_id, err, sizeof err));
    CHECK_HAS(err, name);
    CHECK_HAS(err, ".bin");
    CHECK_HAS(err, "outside the vocabulary");
    megatron_dataset_close(m);
}

/* A pair damaged by `damage` is refused naming `file_suffix`'s file and `phrase`. */
typedef void (*Damage)(const char *prefix, const Corpus *c);

static void expect_refused(const Corpus *c, const char *name, Damage damage,
                           const char *file_suffix, const char *phrase) {
    char err[1024] = "", named[128];
    write_pair(name, c, 4, 4, 0);
    damage(in_dir(name), c);
    MegatronDataset *m = megatron_dataset_open(in_dir(name), err, sizeof err);
    int64_t max_id;
    /* Ids are checked by the scan, not at open. */
    if (m && !megatron_dataset_check_token_ids(m, BYTE_VOCAB, &max_id, err, sizeof err)) {
        megatron_dataset_close(m);
        m = NULL;
    }
    CHECK_MSG(!m, "%s: accepted", name);
    snprintf(named, sizeof named, "%s%s", name, file_suffix);
    CHECK_HAS(err, named);
    CHECK_HAS(err, phrase);
}

static char *file_of(const char *prefix, const char *suffix) {
    static char path[1024];
    snprintf(path, sizeof path, "%s%s", prefix, suffix);
    return path;
}

static void other_version(const char *p, const Corpus *c) {
    (void)c;
    megatron_fixture_patch(file_of(p, ".idx"), 9, 2, 8);
}
static void unknown_dtype(const char *p, const Corpus *c) {
    (void)c;
    megatron_fixture_patch(file_of(p, ".idx"), 17, 11, 1);
}
static void float_dtype(const char *p, const Corpus *c) {
    (void)c;
    megatron_fixture_patch(file_of(p, ".idx"), 17, 6, 1);
}
static void short_bin(const char *p, const Corpus *c) {
    CHECK(truncate(file_of(p, ".bin"), 4L * (c->num_tokens - 2)) == 0);
}
static void long_bin(const char *p, const Corpus *c) {
    (void)c;
    FILE *f = fopen(file_of(p, ".bin"), "ab");
    megatron_put_le(f, 5, 4);
    fclose(f);
}
static void negative_id(const char *p, const Corpus *c) {
    (void)c;
    megatron_fixture_patch(file_of(p, ".bin"), 4 * 10, (uint32_t)-5, 4);
}
static void id_past_vocab(const char *p, const Corpus *c) {
    (void)c;
    megatron_fixture_patch(file_of(p, ".bin"), 4 * 12, 300, 4);
}
static void no_idx(const char *p, const Corpus *c) {
    (void)c;
    unlink(file_of(p, ".idx"));
}

static void check_reader_errors(const Corpus *c) {
    expect_refused(c, "bad_version", other_version, ".idx", "version 2");
    expect_refused(c, "bad_dtype", unknown_dtype, ".idx", "dtype code 11");
    expect_refused(c, "bad_float", float_dtype, ".idx", "float64");
    expect_refused(c, "bad_short", short_bin, ".bin", "shorter than its index says");
    expect_refused(c, "bad_long", long_bin, ".bin", "not one pair");
    expect_refused(c, "bad_negative", negative_id, ".bin", "is -5");
    expect_refused(c, "bad_vocab", id_past_vocab, ".bin", "is 300, outside the vocabulary");
    expect_refused(c, "bad_noidx", no_idx, ".idx", "cannot open");
}

/* ------------------------------------------------------------ datasets */

static GPTDataConfig byte_config(const char *const *words, int n, const char *split) {
    return (GPTDataConfig){.data_path = words,
                           .data_path_count = n,
                           .split = split,
                           .seq_length = SEQ,
                           .seed = 5,
                           .expected_tokenizer_type = "ByteTokenizer",
                           .tokenizer_vocab_size = BYTE_VOCAB,
                           .tokenizer_eod_token = BYTE_EOD};
}

static BlendedDataset *open_words(const char *const *words, int n, const char *split,
                                  SplitKind kind, char *err, size_t err_size) {
    GPTDataConfig cfg = byte_config(words, n, split);
    return blended_dataset_create(&cfg, kind, err, err_size);
}

static void check_same_samples(BlendedDataset *a, BlendedDataset *b, int64_t n) {
    int32_t x[SEQ + 1], y[SEQ + 1];
    char err[1024];
    for (int64_t k = 0; k < n; k++) {
        CHECK_MSG(blended_dataset_get_sample(a, k, x, err, sizeof err), "%s", err);
        CHECK_MSG(blended_dataset_get_sample(b, k, y, err, sizeof err), "%s", err);
        CHECK_MSG(memcmp(x, y, sizeof x) == 0, "sample %lld differs", (long long)k);
    }
}

/* A pair read in place and a shard of the same documents: same samples in
 * every split, for both layouts of the pair. */
static void check_pair_equals_shard(void) {
    const char *shard[] = {in_dir("same.h5")};
    const char *pairs[2][1] = {{in_dir("reader_uint16_0")}, {in_dir("reader_int32_1.idx")}};
    char err[1024];
    for (int kind = SPLIT_TRAIN; kind <= SPLIT_VALID; kind++)
        for (int p = 0; p < 2; p++) {
            BlendedDataset *a = open_words(shard, 1, "80,20,0", (SplitKind)kind, err, sizeof err);
            CHECK_MSG(a, "%s", err);
            BlendedDataset *b =
                open_words(pairs[p], 1, "80,20,0", (SplitKind)kind, err, sizeof err);
            CHECK_MSG(b, "%s", err);
            CHECK(blended_dataset_num_tokens(a) == blended_dataset_num_tokens(b));
            CHECK(blended_dataset_num_documents(a) == blended_dataset_num_documents(b));
            CHECK(strcmp(blended_dataset_tokenizer_type(b), "ByteTokenizer") == 0);
            CHECK(blended_dataset_vocab_size(b) == BYTE_VOCAB);
            check_same_samples(a, b, 500);
            blended_dataset_free(a);
            blended_dataset_free(b);
        }
}

static void check_mixed_blend(void) {
    const char *words[] = {"0.5", in_dir("reader_uint16_0"), "0.5", in_dir("same.h5")};
    char err[1024];
    BlendedDataset *ds = open_words(words, 4, "1", SPLIT_TRAIN, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    CHECK(blended_dataset_num_components(ds) == 2);
    int seen[2] = {0, 0};
    int32_t x[SEQ + 1];
    for (int64_t k = 0; k < 200; k++) {
        int c;
        int64_t local;
        blended_dataset_sample_source(ds, k, &c, &local);
        seen[c]++;
        CHECK_MSG(blended_dataset_get_sample(ds, k, x, err, sizeof err), "%s", err);
    }
    CHECK(seen[0] == 100 && seen[1] == 100);
    const char *desc = blended_dataset_description(ds);
    CHECK_HAS(desc, "reader_uint16_0.{bin,idx} (Megatron");
    CHECK_HAS(desc, "same.h5");
    blended_dataset_free(ds);
    /* Unweighted words: the file and the prefix both shown. */
    const char *plain[] = {in_dir("same.h5"), in_dir("reader_uint16_0")};
    ds = open_words(plain, 2, "1", SPLIT_TRAIN, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    desc = blended_dataset_description(ds);
    CHECK_HAS(desc, "same.h5 ");
    CHECK_HAS(desc, "[");
    CHECK_HAS(desc, "reader_uint16_0.{bin,idx} (Megatron");
    CHECK_HAS(desc, "2 shards");
    blended_dataset_free(ds);
}

static void check_pair_errors_in_datasets(const Corpus *c) {
    char err[1024];
    /* Ids past the run's vocabulary, found when the dataset opens. */
    write_pair("ds_vocab", c, 8, 2, 0);
    megatron_fixture_patch(file_of(in_dir("ds_vocab"), ".bin"), 2 * 3, 4000, 2);
    const char *vocab_words[] = {in_dir("ds_vocab")};
    CHECK(!open_words(vocab_words, 1, "1", SPLIT_TRAIN, err, sizeof err));
    CHECK_HAS(err, "ds_vocab.bin");
    CHECK_HAS(err, "4000");
    /* A run tokenizer without a known vocabulary cannot read a pair. */
    const char *words[] = {in_dir("reader_uint16_0")};
    GPTDataConfig cfg = byte_config(words, 1, "1");
    cfg.expected_tokenizer_type = "SomeTokenizer";
    cfg.tokenizer_vocab_size = 0;
    CHECK(!blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err));
    CHECK_HAS(err, "--tokenizer-type SomeTokenizer");
    CHECK_HAS(err, "reader_uint16_0");
}

/* ------------------------------------------------------------ prefixes */

static bool parse_one(const char *word, DataPath *p, char *err, size_t err_size) {
    const char *words[] = {in_dir(word)};
    return data_path_parse("--data-path", words, 1, p, err, err_size);
}

static void expect_files(const char *word, int n, const char *const *names, const char *note) {
    DataPath p;
    char err[2048] = "";
    CHECK_MSG(parse_one(word, &p, err, sizeof err), "%s: %s", word, err);
    CHECK_MSG(p.num_components == 1 && p.components[0].num_files == n, "%s: %d files", word,
              p.components[0].num_files);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(p.components[0].files[i], in_dir(names[i])) == 0);
    if (note) {
        CHECK_MSG(p.components[0].resolved, "%s: no resolution note", word);
        CHECK_HAS(p.components[0].resolved, note);
    } else {
        CHECK(!p.components[0].resolved);
    }
    data_path_free(&p);
}

static void expect_parse_error(const char *word, const char *const *phrases, int n) {
    DataPath p;
    char err[2048] = "";
    CHECK_MSG(!parse_one(word, &p, err, sizeof err), "%s resolved", word);
    CHECK_HAS(err, "--data-path");
    for (int i = 0; i < n; i++)
        CHECK_HAS(err, phrases[i]);
}

static void check_prefixes(void) {
    touch("solo.h5");
    expect_files("solo", 1, (const char *[]){"solo.h5"}, "solo.h5");
    expect_files("solo.h5", 1, (const char *[]){"solo.h5"}, NULL); /* a file, as given */
    touch("many_00000.h5");
    touch("many_00001.h5");
    touch("many_00002.h5");
    touch("many_notashard.h5");
    expect_files("many", 3, (const char *[]){"many_00000.h5", "many_00001.h5", "many_00002.h5"},
                 "3 numbered shards");
    touch("mm.bin");
    touch("mm.idx");
    expect_files("mm", 1, (const char *[]){"mm.bin"}, "Megatron, read in place");
    expect_files("mm.idx", 1, (const char *[]){"mm.bin"}, NULL);
    expect_files("mm.*", 1, (const char *[]){"mm.bin"}, NULL); /* the pair once */
    /* Both forms: the Megatron pair, said in the note. */
    touch("both.h5");
    touch("both.bin");
    touch("both.idx");
    expect_files("both", 1, (const char *[]){"both.bin"}, "not used");

    touch("amb.h5");
    touch("amb_00000.h5");
    expect_parse_error("amb", (const char *[]){"ambiguous", "amb.h5", "amb_00000.h5"}, 3);
    touch("gap_00000.h5");
    touch("gap_00002.h5");
    expect_parse_error("gap", (const char *[]){"gap_00001.h5 is missing"}, 1);
    touch("half.bin");
    expect_parse_error("half", (const char *[]){"half.bin exists but", "half.idx does not"}, 2);
    expect_parse_error("nothing",
                       (const char *[]){in_dir("nothing"), "nothing.bin + ", "nothing.idx",
                                        "nothing.h5", "nothing_00000.h5", "tools/preprocess_data",
                                        "tools/convert_megatron_dataset"},
                       7);
    expect_parse_error("absent.h5", (const char *[]){"absent.h5: no such file"}, 1);
    expect_parse_error("absent.bin", (const char *[]){"absent.bin: no such file"}, 1);
}

/* ------------------------------------------------------------ --split */

static void check_split_quotes(void) {
    const char *shard[] = {in_dir("same.h5")};
    const char *splits[] = {"\"80,15,5\"", "'80,15,5'", "\"'80,15,5'\"", " \"80\",\"15\",\"5\" "};
    char err[1024];
    for (int kind = SPLIT_TRAIN; kind <= SPLIT_TEST; kind++) {
        BlendedDataset *plain = open_words(shard, 1, "80,15,5", (SplitKind)kind, err, sizeof err);
        CHECK_MSG(plain, "%s", err);
        for (size_t i = 0; i < sizeof splits / sizeof *splits; i++) {
            BlendedDataset *q = open_words(shard, 1, splits[i], (SplitKind)kind, err, sizeof err);
            CHECK_MSG(q, "--split %s: %s", splits[i], err);
            CHECK(blended_dataset_num_documents(q) == blended_dataset_num_documents(plain));
            check_same_samples(plain, q, 20);
            blended_dataset_free(q);
        }
        blended_dataset_free(plain);
    }
    /* Quotes are forgiven, nothing else. */
    const char *bad[] = {"\"1;2\"", "'a,b'", "\"\"", "'1,,2'"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(!open_words(shard, 1, bad[i], SPLIT_TRAIN, err, sizeof err), "--split %s",
                  bad[i]);
        CHECK_HAS(err, "--split");
    }
}

/* ------------------------------------------------------------ --mock-data */

static BlendedDataset *open_mock(uint64_t seed, SplitKind kind) {
    GPTDataConfig cfg = byte_config(NULL, 0, "969,30,1");
    cfg.mock_data = true;
    cfg.seed = seed;
    char err[1024];
    BlendedDataset *ds = blended_dataset_create(&cfg, kind, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    return ds;
}

enum { MOCK_READS = 2000 };

static void check_mock_data(void) {
    BlendedDataset *a = open_mock(11, SPLIT_TRAIN), *b = open_mock(11, SPLIT_TRAIN);
    BlendedDataset *other = open_mock(12, SPLIT_TRAIN);
    CHECK(blended_dataset_num_documents(a) == MOCK_DATA_DOCUMENTS * 969 / 1000);
    static int32_t first[MOCK_READS][SEQ + 1];
    int32_t x[SEQ + 1];
    char err[1024];
    int64_t eods = 0, differ = 0;
    for (int64_t k = 0; k < MOCK_READS; k++) {
        CHECK_MSG(blended_dataset_get_sample(a, k, first[k], err, sizeof err), "%s", err);
        CHECK(blended_dataset_get_sample(other, k, x, err, sizeof err));
        differ += memcmp(first[k], x, sizeof x) != 0;
        for (int i = 0; i <= SEQ; i++) {
            CHECK(first[k][i] >= 0 && first[k][i] < BYTE_VOCAB);
            eods += first[k][i] == BYTE_EOD;
        }
    }
    CHECK_MSG(differ > MOCK_READS * 9 / 10, "another seed changed only %lld samples",
              (long long)differ);
    /* Documents average SEQ + 1 tokens, each ending in EOD: about one EOD
     * per sample (random ids add 1 in 257). */
    CHECK_MSG(eods > MOCK_READS / 2 && eods < MOCK_READS * 2, "%lld EODs in %d samples",
              (long long)eods, MOCK_READS);
    /* Sample k does not depend on which samples a reader asked for before:
     * b reads them backwards in four interleaved strides, as four
     * data-parallel ranks of another layout would. */
    for (int r = 0; r < 4; r++)
        for (int64_t k = MOCK_READS - 1 - r; k >= 0; k -= 4) {
            CHECK(blended_dataset_get_sample(b, k, x, err, sizeof err));
            CHECK_MSG(memcmp(first[k], x, sizeof x) == 0, "mock sample %lld depends on the order",
                      (long long)k);
        }
    blended_dataset_free(a);
    blended_dataset_free(b);
    blended_dataset_free(other);

    BlendedDataset *valid = open_mock(11, SPLIT_VALID);
    CHECK(blended_dataset_num_documents(valid) == MOCK_DATA_DOCUMENTS * 30 / 1000);
    CHECK_HAS(blended_dataset_description(valid), "mock data");
    blended_dataset_free(valid);

    /* --mock-data with paths, or without a known vocabulary: refused. */
    const char *words[] = {in_dir("same.h5")};
    GPTDataConfig cfg = byte_config(words, 1, "1");
    cfg.mock_data = true;
    CHECK(!blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err));
    CHECK_HAS(err, "--mock-data");
    cfg = byte_config(NULL, 0, "1");
    cfg.mock_data = true;
    cfg.tokenizer_vocab_size = 0;
    CHECK(!blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err));
    CHECK_HAS(err, "--mock-data");
    CHECK_HAS(err, "--tokenizer-type");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_data_megatron.XXXXXX");
    CHECK(mkdtemp(dir));
    static Corpus c;
    make_corpus(&c);
    check_reader(&c, 8, 2, "uint16", 0);
    check_reader(&c, 8, 2, "uint16", 1);
    check_reader(&c, 4, 4, "int32", 0);
    check_reader(&c, 4, 4, "int32", 1);
    check_reader(&c, 1, 1, "uint8", 0);
    check_reader(&c, 5, 8, "int64", 1);
    printf("ok: reader, 4 dtypes, sequential and out-of-order layouts\n");
    check_reader_errors(&c);
    printf("ok: damaged pairs refused naming the file\n");
    write_shard("same.h5", &c);
    check_pair_equals_shard();
    check_mixed_blend();
    check_pair_errors_in_datasets(&c);
    printf("ok: datasets over pairs equal shards; mixed blend\n");
    check_prefixes();
    printf("ok: prefix resolution\n");
    check_split_quotes();
    printf("ok: --split quotes\n");
    check_mock_data();
    printf("ok: --mock-data\n");
    test_remove_dir(dir);
    printf("all Megatron data checks passed\n");
    return 0;
}
