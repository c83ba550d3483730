/* tools/convert_megatron_dataset end to end. The test writes Megatron
 * indexed datasets itself, byte by byte from the published MMIDIDX layout
 * (megatron/core/datasets/indexed_dataset.py: magic, version <Q>, dtype code
 * <B>, sequence count <Q>, document-index count <Q>, int32 lengths, int64
 * byte pointers, int64 document indices), runs the tool, and reads the shard
 * back through the data module: same documents, same tokens. Broken files
 * must be refused with one clear message naming the file, exit status 2 and
 * no output.
 * Usage: test_convert_megatron CONVERTER */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"
#include "megatron_fixture.h"

static int failures = 0;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static const char *converter;
static char work[256];

/* ------------------------------------------------- dataset writer */

/* The writer is tests/megatron_fixture.h, shared with the data module's tests. */

static void truncate_file(const char *path, long size) { CHECK(truncate(path, size) == 0); }

/* ------------------------------------------------- running the tool */

static int run(const char *args, const char *stderr_path) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s/out.txt' 2> '%s'", converter, args, work, stderr_path);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static int count_lines_starting(const char *path, const char *prefix) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, prefix, strlen(prefix))) n++;
    fclose(f);
    return n;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ------------------------------------------------- checks */

/* The shard must hold the source's documents: document d is the
 * concatenation of sequences [doc_indices[d], doc_indices[d+1]). */
static void check_shard(const char *path, const MegatronFixture *src, const char *tokenizer,
                        int64_t vocab, int64_t eod) {
    char err[2048];
    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(!strcmp(token_shard_tokenizer_type(s), tokenizer));
    CHECK(token_shard_vocab_size(s) == vocab);
    CHECK(token_shard_eod_token(s) == eod);
    CHECK(token_shard_num_documents(s) == src->num_doc_indices - 1);
    int64_t total = 0;
    for (int q = 0; q < src->num_sequences; q++)
        total += src->lengths[q];
    CHECK(token_shard_num_tokens(s) == total);
    const uint64_t *off = token_shard_document_offsets(s);
    int64_t seq_start[64];
    int64_t acc = 0;
    for (int q = 0; q < src->num_sequences; q++) {
        seq_start[q] = acc;
        acc += src->lengths[q];
    }
    for (int d = 0; d + 1 < src->num_doc_indices; d++) {
        int64_t first = src->doc_indices[d], last = src->doc_indices[d + 1];
        int64_t begin = first < src->num_sequences ? seq_start[first] : total;
        int64_t end = last < src->num_sequences ? seq_start[last] : total;
        CHECK(off[d] == (uint64_t)begin);
        CHECK(off[d + 1] == (uint64_t)end);
    }
    if (total > 0) {
        int32_t *got = malloc((size_t)total * sizeof *got);
        CHECK(token_shard_read(s, 0, (uint64_t)total, got, err, sizeof err));
        for (int64_t i = 0; i < total; i++)
            CHECK(got[i] == src->tokens[i]);
        free(got);
    }
    token_shard_close(s);
}

/* Three documents: two sequences, one sequence, no sequence at all (Megatron
 * writes that for an empty document), then one with an empty sequence. */
static const int64_t TOKENS[] = {5, 6, 7, 40000, 50256, 9, 10, 11, 1, 2, 50256};
static const int32_t LENGTHS[] = {4, 1, 3, 0, 3};
static const int64_t DOC_INDICES[] = {0, 2, 3, 3, 5};

static const MegatronFixture GOOD = {5, TOKENS, LENGTHS, 5, DOC_INDICES};

static void test_good(int dtype_code, int elem_size, const char *name) {
    char prefix[512], out[512], args[2048], errp[512];
    snprintf(prefix, sizeof prefix, "%s/good_%s", work, name);
    snprintf(out, sizeof out, "%s/good_%s.h5", work, name);
    snprintf(errp, sizeof errp, "%s/good_%s.err", work, name);
    megatron_fixture_write(prefix, &GOOD, dtype_code, elem_size);
    snprintf(args, sizeof args, "--input '%s' --output '%s' --tokenizer-type GPT2BPETokenizer",
             prefix, out);
    int rc = run(args, errp);
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "convert (%s) failed:\n", name);
        snprintf(args, sizeof args, "cat '%s' >&2", errp);
        if (system(args)) {
        }
        return;
    }
    check_shard(out, &GOOD, "GPT2BPETokenizer", 50257, 50256);
    printf("ok: %s dataset converted (4 documents, 11 tokens)\n", name);
}

/* Sequences stored in the .bin out of order (pointers jump back): a writer
 * that does not append sequentially; the documents are still in index order. */
static void test_out_of_order_layout(void) {
    char prefix[512], out[512], args[2048], errp[512];
    snprintf(prefix, sizeof prefix, "%s/reversed", work);
    snprintf(out, sizeof out, "%s/reversed.h5", work);
    snprintf(errp, sizeof errp, "%s/reversed.err", work);
    megatron_fixture_write_layout(prefix, &GOOD, 4, 4, 1);
    snprintf(args, sizeof args, "--input '%s' --output '%s' --tokenizer-type GPT2BPETokenizer",
             prefix, out);
    CHECK(run(args, errp) == 0);
    check_shard(out, &GOOD, "GPT2BPETokenizer", 50257, 50256);
}

/* Megatron's multimodal index appends one int8 mode per sequence. */
static void test_sequence_modes(void) {
    char prefix[512], out[512], args[2048], errp[512], idx[1024];
    snprintf(prefix, sizeof prefix, "%s/modes", work);
    snprintf(out, sizeof out, "%s/modes.h5", work);
    snprintf(errp, sizeof errp, "%s/modes.err", work);
    snprintf(idx, sizeof idx, "%s.idx", prefix);
    megatron_fixture_write(prefix, &GOOD, 4, 4);
    FILE *f = fopen(idx, "ab");
    for (int s = 0; s < GOOD.num_sequences; s++)
        fputc(0, f);
    fclose(f);
    snprintf(args, sizeof args, "--input '%s' --output '%s' --tokenizer-type GPT2BPETokenizer",
             prefix, out);
    CHECK(run(args, errp) == 0);
    check_shard(out, &GOOD, "GPT2BPETokenizer", 50257, 50256);
}

/* ByteTokenizer defaults and a larger dataset crossing the tool's chunks. */
static void test_byte_defaults(void) {
    enum { N = 3000 };
    static int64_t tokens[N];
    static int32_t lengths[30];
    static int64_t docs[11];
    for (int i = 0; i < N; i++)
        tokens[i] = (i * 7919) % 257;
    for (int s = 0; s < 30; s++)
        lengths[s] = 100;
    for (int d = 0; d <= 10; d++)
        docs[d] = 3 * d;
    MegatronFixture src = {30, tokens, lengths, 11, docs};
    char prefix[512], out[512], args[2048], errp[512];
    snprintf(prefix, sizeof prefix, "%s/bytes", work);
    snprintf(out, sizeof out, "%s/bytes.h5", work);
    snprintf(errp, sizeof errp, "%s/bytes.err", work);
    megatron_fixture_write(prefix, &src, 8, 2);
    snprintf(args, sizeof args, "--input '%s' --output '%s' --tokenizer-type ByteTokenizer", prefix,
             out);
    CHECK(run(args, errp) == 0);
    check_shard(out, &src, "ByteTokenizer", 257, 256);
}

/* ------------------------------------------------- bad input */

typedef void (*Damage)(const char *prefix);

static void idx_path(char *out, size_t n, const char *prefix) {
    snprintf(out, n, "%s.idx", prefix);
}
static void bin_path(char *out, size_t n, const char *prefix) {
    snprintf(out, n, "%s.bin", prefix);
}

static void bad_magic(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 0, 'X', 1);
}
static void bad_version(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 9, 2, 8);
}
static void bad_dtype(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 17, 9, 1);
}
static void float_dtype(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 17, 7, 1);
}
static void short_header(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    truncate_file(f, 20);
}
/* One byte short of the last document index. */
static void short_index(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    truncate_file(f, 34 + 12 * 5 + 8 * 5 - 1);
}
static void short_bin(const char *p) {
    char f[1024];
    bin_path(f, sizeof f, p);
    truncate_file(f, 4 * 10);
}
/* The pointer of sequence 2 far beyond the .bin. */
static void wild_pointer(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 34 + 4 * 5 + 8 * 2, 1u << 30, 8);
}
static void negative_length(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 34 + 4 * 1, 0xffffffffu, 4);
}
/* The last document index must equal the sequence count. */
static void bad_last_document(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 34 + 12 * 5 + 8 * 4, 4, 8);
}
static void decreasing_documents(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 34 + 12 * 5 + 8 * 2, 1, 8);
}
static void huge_count(const char *p) {
    char f[1024];
    idx_path(f, sizeof f, p);
    megatron_fixture_patch(f, 18, (uint64_t)1 << 60, 8);
}
static void missing_bin(const char *p) {
    char f[1024];
    bin_path(f, sizeof f, p);
    unlink(f);
}
/* 50300 is outside GPT-2's vocabulary. */
static void token_outside_vocab(const char *p) {
    char f[1024];
    bin_path(f, sizeof f, p);
    megatron_fixture_patch(f, 4 * 6, 50300, 4);
}

static void expect_refused(const char *name, Damage damage, const char *file_suffix,
                           const char *phrase) {
    char prefix[512], out[512], args[2048], errp[512], named[512];
    snprintf(prefix, sizeof prefix, "%s/bad_%s", work, name);
    snprintf(out, sizeof out, "%s/bad_%s.h5", work, name);
    snprintf(errp, sizeof errp, "%s/bad_%s.err", work, name);
    snprintf(named, sizeof named, "bad_%s%s", name, file_suffix);
    megatron_fixture_write(prefix, &GOOD, 4, 4);
    damage(prefix);
    snprintf(args, sizeof args, "--input '%s' --output '%s' --tokenizer-type GPT2BPETokenizer",
             prefix, out);
    int rc = run(args, errp);
    bool ok = rc == 2 && file_contains(errp, named) && file_contains(errp, phrase) &&
              count_lines_starting(errp, "error:") == 1 && !exists(out);
    if (!ok) {
        fprintf(stderr, "FAIL %s: rc %d, want 2 with one error naming %s and '%s':\n", name, rc,
                named, phrase);
        snprintf(args, sizeof args, "cat '%s' >&2", errp);
        if (system(args)) {
        }
        failures++;
    }
    /* No temporary file is left next to the output either. */
    snprintf(args, sizeof args, "ls '%s' | grep -q 'bad_%s.h5.tmp'", work, name);
    CHECK(system(args) != 0);
}

static void test_bad_flags(void) {
    char args[2048], errp[512];
    snprintf(errp, sizeof errp, "%s/flags.err", work);
    snprintf(args, sizeof args,
             "--input '%s/good_int32' --output '%s/x.h5' --tokenizer-type "
             "SentencePieceTokenizer",
             work, work);
    CHECK(run(args, errp) == 2 && file_contains(errp, "--vocab-size"));
    snprintf(args, sizeof args,
             "--input '%s/good_int32' --output '%s/x.h5' --tokenizer-type "
             "GPT2BPETokenizer --eod-token 60000",
             work, work);
    CHECK(run(args, errp) == 2 && file_contains(errp, "--eod-token"));
    snprintf(args, sizeof args,
             "--input '%s/nope' --output '%s/x.h5' --tokenizer-type "
             "GPT2BPETokenizer",
             work, work);
    CHECK(run(args, errp) == 2 && file_contains(errp, "nope.idx"));
    snprintf(args, sizeof args, "%s/x.h5", work);
    CHECK(!exists(args));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONVERTER\n", argv[0]);
        return 2;
    }
    converter = argv[1];
    snprintf(work, sizeof work, "/tmp/test_convert_megatron.XXXXXX");
    if (!mkdtemp(work)) return 1;
    test_good(4, 4, "int32");
    test_good(8, 2, "uint16");
    test_good(5, 8, "int64");
    test_sequence_modes();
    test_out_of_order_layout();
    test_byte_defaults();
    expect_refused("magic", bad_magic, ".idx", "bad magic");
    expect_refused("version", bad_version, ".idx", "version 2");
    expect_refused("dtype", bad_dtype, ".idx", "dtype code 9");
    expect_refused("float", float_dtype, ".idx", "float32");
    expect_refused("header", short_header, ".idx", "truncated");
    expect_refused("index", short_index, ".idx", "truncated");
    expect_refused("huge", huge_count, ".idx", "truncated");
    expect_refused("shortbin", short_bin, ".bin", "outside");
    expect_refused("pointer", wild_pointer, ".bin", "pointer 1073741824");
    expect_refused("length", negative_length, ".bin", "length -1");
    expect_refused("lastdoc", bad_last_document, ".idx", "the last must equal");
    expect_refused("decrease", decreasing_documents, ".idx", "decrease");
    expect_refused("nobin", missing_bin, ".bin", "cannot open");
    expect_refused("vocab", token_outside_vocab, ".bin", "50300");
    test_bad_flags();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
    if (system(cmd)) {
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all convert_megatron_dataset checks passed\n");
    return 0;
}
