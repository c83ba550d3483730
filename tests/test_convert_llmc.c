/* tools/convert_llmc_tokens end to end. The test writes llm.c token files
 * from the published layout (dev/data/data_common.py: 256 little-endian
 * int32 — magic 20240520, version 1, token count — then uint16 ids), runs
 * the tool and reads the shard back through the data module. The expected
 * documents are written out by hand: a document starts at every end-of-text
 * token (kept as its first token), across file boundaries, and tokens before
 * the first end-of-text form a document of their own. Broken files are
 * refused with one message naming the file, exit 2, no output.
 * Usage: test_convert_llmc CONVERTER */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"

static int failures = 0;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define EOT 50256

static const char *converter;
static char work[256];

static void put_le(FILE *f, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        fputc((int)((v >> (8 * i)) & 0xff), f);
}

/* header[0..2] as given, the rest zero, then the ids as uint16. */
static void write_llmc(const char *path, int32_t magic, int32_t version, int32_t count,
                       const uint16_t *ids, int n) {
    FILE *f = fopen(path, "wb");
    put_le(f, (uint32_t)magic, 4);
    put_le(f, (uint32_t)version, 4);
    put_le(f, (uint32_t)count, 4);
    for (int i = 3; i < 256; i++)
        put_le(f, 0, 4);
    for (int i = 0; i < n; i++)
        put_le(f, ids[i], 2);
    fclose(f);
}

static int run(const char *args, const char *stderr_path) {
    char cmd[4096];
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

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void show(const char *path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cat '%s' >&2", path);
    if (system(cmd)) {
    }
}

/* The shard holds exactly `tokens` with document offsets `offsets`. */
static void check_shard(const char *path, const int32_t *tokens, int64_t n, const uint64_t *offsets,
                        int64_t docs, int64_t vocab, int64_t eod) {
    char err[2048];
    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(!strcmp(token_shard_tokenizer_type(s), "GPT2BPETokenizer"));
    CHECK(token_shard_vocab_size(s) == vocab);
    CHECK(token_shard_eod_token(s) == eod);
    CHECK(token_shard_num_tokens(s) == n);
    CHECK(token_shard_num_documents(s) == docs);
    if (token_shard_num_documents(s) == docs) {
        const uint64_t *off = token_shard_document_offsets(s);
        for (int64_t d = 0; d <= docs; d++)
            CHECK(off[d] == offsets[d]);
    }
    int32_t *got = malloc((size_t)n * sizeof *got);
    CHECK(token_shard_read(s, 0, (uint64_t)n, got, err, sizeof err));
    for (int64_t i = 0; i < n; i++)
        CHECK(got[i] == tokens[i]);
    free(got);
    token_shard_close(s);
}

/* Two files; a document is cut between them, as llm.c cuts its shards. */
static void test_documents(void) {
    static const uint16_t A[] = {7, 8, EOT, 1, 2};
    static const uint16_t B[] = {3, EOT, EOT, 4, 50000};
    static const int32_t ALL[] = {7, 8, EOT, 1, 2, 3, EOT, EOT, 4, 50000};
    static const uint64_t OFFSETS[] = {0, 2, 6, 7, 10};
    char a[512], b[512], out[512], errp[512], args[2048];
    snprintf(a, sizeof a, "%s/a.bin", work);
    snprintf(b, sizeof b, "%s/b.bin", work);
    snprintf(out, sizeof out, "%s/ab.h5", work);
    snprintf(errp, sizeof errp, "%s/ab.err", work);
    write_llmc(a, 20240520, 1, 5, A, 5);
    write_llmc(b, 20240520, 1, 5, B, 5);
    snprintf(args, sizeof args, "--input '%s' '%s' --output '%s'", a, b, out);
    int rc = run(args, errp);
    CHECK(rc == 0);
    if (rc != 0) {
        show(errp);
        return;
    }
    check_shard(out, ALL, 10, OFFSETS, 4, 50257, 50256);
    printf("ok: two llm.c files -> 4 documents, 10 tokens\n");
}

/* A file larger than the tool's read chunk, starting with EOT as llm.c
 * files do: every document is [EOT, 1..k]. */
static void test_large(void) {
    enum { DOCS = 30000, MAXLEN = 97 };
    uint16_t *ids = malloc((size_t)DOCS * (MAXLEN + 1) * sizeof *ids);
    int32_t *all = malloc((size_t)DOCS * (MAXLEN + 1) * sizeof *all);
    uint64_t *offsets = malloc((DOCS + 1) * sizeof *offsets);
    int64_t n = 0;
    for (int d = 0; d < DOCS; d++) {
        offsets[d] = (uint64_t)n;
        int len = 1 + (d * 31) % MAXLEN;
        ids[n] = EOT;
        all[n++] = EOT;
        for (int i = 0; i < len; i++) {
            ids[n] = (uint16_t)((d + i) % EOT);
            all[n] = ids[n];
            n++;
        }
    }
    offsets[DOCS] = (uint64_t)n;
    char in[512], out[512], errp[512], args[2048];
    snprintf(in, sizeof in, "%s/large.bin", work);
    snprintf(out, sizeof out, "%s/large.h5", work);
    snprintf(errp, sizeof errp, "%s/large.err", work);
    write_llmc(in, 20240520, 1, (int32_t)n, ids, (int)n);
    snprintf(args, sizeof args, "--input '%s' --output '%s'", in, out);
    CHECK(run(args, errp) == 0);
    check_shard(out, all, n, offsets, DOCS, 50257, 50256);
    printf("ok: %lld tokens across read chunks -> %d documents\n", (long long)n, DOCS);
    free(ids);
    free(all);
    free(offsets);
}

typedef struct {
    const char *name;
    int32_t magic, version, count;
    int n;       /* ids actually written */
    bool poison; /* an id beyond GPT-2's vocabulary at token 3 */
    const char *phrase;
} BadCase;

static void expect_refused(const BadCase *c) {
    static const uint16_t IDS[] = {EOT, 1, 2, 3, EOT, 5};
    static const uint16_t POISONED[] = {EOT, 1, 2, 60000, EOT, 5};
    char in[512], out[512], errp[512], args[2048], good[512];
    snprintf(in, sizeof in, "%s/bad_%s.bin", work, c->name);
    snprintf(good, sizeof good, "%s/fine.bin", work);
    snprintf(out, sizeof out, "%s/bad_%s.h5", work, c->name);
    snprintf(errp, sizeof errp, "%s/bad_%s.err", work, c->name);
    write_llmc(in, c->magic, c->version, c->count, c->poison ? POISONED : IDS, c->n);
    write_llmc(good, 20240520, 1, 6, IDS, 6);
    /* The bad file comes second: an error after a good file still leaves nothing. */
    snprintf(args, sizeof args, "--input '%s' '%s' --output '%s'", good, in, out);
    int rc = run(args, errp);
    char named[512];
    snprintf(named, sizeof named, "bad_%s.bin", c->name);
    bool ok =
        rc == 2 && file_contains(errp, named) && file_contains(errp, c->phrase) && !exists(out);
    if (!ok) {
        fprintf(stderr, "FAIL %s: rc %d, want 2 naming %s with '%s':\n", c->name, rc, named,
                c->phrase);
        show(errp);
        failures++;
    }
    snprintf(args, sizeof args, "ls '%s' | grep -q 'bad_%s.h5.tmp'", work, c->name);
    CHECK(system(args) != 0);
}

static void test_bad_files(void) {
    static const BadCase cases[] = {
        {"magic", 20240326, 1, 6, 6, false, "magic 20240326"},
        {"llama", 20240801, 7, 6, 6, false, "LLaMA-3"},
        {"version", 20240520, 2, 6, 6, false, "version 2"},
        {"truncated", 20240520, 1, 6, 5, false, "truncated"},
        {"trailing", 20240520, 1, 5, 6, false, "trailing"},
        {"negative", 20240520, 1, -3, 6, false, "negative"},
        {"vocab", 20240520, 1, 6, 6, true, "token 3 is 60000, outside the vocabulary"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(&cases[i]);
    /* A file shorter than the header. */
    char in[512], out[512], errp[512], args[2048];
    snprintf(in, sizeof in, "%s/tiny.bin", work);
    snprintf(out, sizeof out, "%s/tiny.h5", work);
    snprintf(errp, sizeof errp, "%s/tiny.err", work);
    FILE *f = fopen(in, "wb");
    fputs("short", f);
    fclose(f);
    snprintf(args, sizeof args, "--input '%s' --output '%s'", in, out);
    CHECK(run(args, errp) == 2 && file_contains(errp, "tiny.bin") &&
          file_contains(errp, "truncated") && !exists(out));
    snprintf(args, sizeof args, "--input '%s/none.bin' --output '%s'", work, out);
    CHECK(run(args, errp) == 2 && file_contains(errp, "none.bin") && !exists(out));
    /* An empty token file converts to nothing useful. */
    write_llmc(in, 20240520, 1, 0, NULL, 0);
    snprintf(args, sizeof args, "--input '%s' --output '%s'", in, out);
    CHECK(run(args, errp) == 2 && file_contains(errp, "no tokens") && !exists(out));
    snprintf(args, sizeof args, "--input '%s' --output '%s' --vocab-size 70000", in, out);
    CHECK(run(args, errp) == 2 && file_contains(errp, "--vocab-size"));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONVERTER\n", argv[0]);
        return 2;
    }
    converter = argv[1];
    snprintf(work, sizeof work, "/tmp/test_convert_llmc.XXXXXX");
    if (!mkdtemp(work)) return 1;
    test_documents();
    test_large();
    test_bad_files();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
    if (system(cmd)) {
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all convert_llmc_tokens checks passed\n");
    return 0;
}
