/* tools/inspect_shard end to end: runs the built tool (argv[1]) on shards the
 * test writes, whose documents, counts and lengths it knows, and checks the
 * printed attributes, counts, statistics, ids and decoded text. With
 * ByteTokenizer the ids are the UTF-8 bytes of the text. A GPT-2 shard shows
 * ids only without --vocab-file/--merge-file, and with GPT-2's vocabulary
 * (fetched into argv[2] by the script argv[3], tools/fetch_gpt2_vocab.sh, as
 * test_tokenizer_gpt2 does) ids [15496, 995] must decode to "Hello world"
 * (GPT-2's well-known ids for those two words) with no vocab_size warning.
 * Without the vocabulary the test fails, or skips under
 * GPT3D_ALLOW_MISSING_PREREQS=1 after the other checks (test_gpt2_prereq.h). */
#include <hdf5.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"
#include "test_gpt2_prereq.h"
#include "test_util.h"

static const char *tool;
static char dir[256];
static char out[1 << 16];

static const char *const DOCS[] = {"hello world\n", "second document\twith tab", "", "third"};
#define NUM_DOCS 4

static char *in_dir(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int run_tool(const char *fmt, ...) {
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s > %s 2>&1", tool, args, in_dir("log.txt"));
    int status = system(cmd);
    CHECK(status != -1 && WIFEXITED(status));
    FILE *f = fopen(in_dir("log.txt"), "rb");
    CHECK(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    return WEXITSTATUS(status);
}

#define EXPECT_OUTPUT(phrase) CHECK_MSG(strstr(out, phrase), "output lacks '%s':\n%s", phrase, out)

static void write_byte_shard(const char *path) {
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(path, "ByteTokenizer", 257, 256, err,
                                                    sizeof err);
    CHECK_MSG(w, "%s", err);
    for (int d = 0; d < NUM_DOCS; d++) {
        int32_t ids[64];
        size_t n = strlen(DOCS[d]);
        for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)DOCS[d][i];
        if (d == 3) ids[n++] = 256; /* the last document ends with EOD */
        CHECK(token_shard_writer_add_document(w, ids, n, err, sizeof err));
    }
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
}

static void check_byte_shard(void) {
    char shard[512];
    snprintf(shard, sizeof shard, "%s", in_dir("bytes.h5"));
    write_byte_shard(shard);
    size_t total = 0, lo = 1000, hi = 0;
    for (int d = 0; d < NUM_DOCS; d++) {
        size_t n = strlen(DOCS[d]) + (d == 3);
        total += n;
        if (n < lo) lo = n;
        if (n > hi) hi = n;
    }
    CHECK(run_tool("%s", shard) == 0);
    EXPECT_OUTPUT("format = \"gpt3d-tokens\"");
    EXPECT_OUTPUT("tokenizer_type = \"ByteTokenizer\"");
    EXPECT_OUTPUT("vocab_size = 257");
    EXPECT_OUTPUT("eod_token = 256");
    EXPECT_OUTPUT("token dtype: uint16");
    EXPECT_OUTPUT("documents: 4\n");
    char line[256];
    snprintf(line, sizeof line, "tokens: %zu\n", total);
    EXPECT_OUTPUT(line);
    snprintf(line, sizeof line, "document length: min %zu, mean %.2f, max %zu tokens (1 empty)",
             lo, (double)total / NUM_DOCS, hi);
    EXPECT_OUTPUT(line);
    /* Document 0 by default: its bytes as ids and its text. */
    EXPECT_OUTPUT("document 0: 12 tokens at [0, 12) of /tokens, showing 12");
    EXPECT_OUTPUT("ids: 104 101 108 108 111 32 119 111 114 108 100 10\n");
    EXPECT_OUTPUT("text (ByteTokenizer):\nhello world\n\n--- end of text ---");

    CHECK(run_tool("--input %s --document 1", shard) == 0);
    EXPECT_OUTPUT("document 1: 24 tokens at [12, 36)");
    EXPECT_OUTPUT("second document\twith tab\n--- end of text ---");
    CHECK(run_tool("%s --document 3", shard) == 0);
    EXPECT_OUTPUT("third<|endoftext|>");
    CHECK(run_tool("%s --document 2", shard) == 0);
    EXPECT_OUTPUT("document 2: 0 tokens");
    CHECK(run_tool("%s --document 1 --max-tokens 6", shard) == 0);
    EXPECT_OUTPUT("showing 6");
    EXPECT_OUTPUT("ids: 115 101 99 111 110 100\n");
    EXPECT_OUTPUT("second\n--- end of text (truncated by --max-tokens) ---");

    CHECK(run_tool("%s --document 4", shard) == 2);
    EXPECT_OUTPUT("--document 4: the shard has 4 documents, numbered 0 to 3");
    CHECK(run_tool("%s --max-tokens -1", shard) == 2);
    EXPECT_OUTPUT("--max-tokens");
    CHECK(run_tool("%s --input %s", shard, shard) == 2);
    CHECK(run_tool("%s --documnet 1", shard) == 2);
    EXPECT_OUTPUT("--document");
    CHECK(run_tool("--help") == 0);
    EXPECT_OUTPUT("usage: inspect_shard FILE.h5");
    EXPECT_OUTPUT("--max-tokens K");
}

/* A GPT-2 shard: ids only without the vocabulary, text with it. */
static void check_gpt2_shard(const char *vocab_dir, const char *fetch_script, Gpt2Missing *missing) {
    char shard[512];
    snprintf(shard, sizeof shard, "%s", in_dir("gpt2.h5"));
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(shard, "GPT2BPETokenizer", 50257, 50256, err,
                                                    sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t ids[] = {15496, 995, 50256};
    CHECK(token_shard_writer_add_document(w, ids, 3, err, sizeof err));
    CHECK(token_shard_writer_finish(w, err, sizeof err));
    CHECK(run_tool("%s", shard) == 0);
    EXPECT_OUTPUT("ids: 15496 995 50256\n");
    EXPECT_OUTPUT("not decoded (GPT2BPETokenizer needs --vocab-file and --merge-file");

    char vocab[4096], merges[4096], package[4096];
    if (!gpt2_find_vocabulary(vocab_dir, fetch_script, vocab, merges, package, sizeof vocab,
                              missing)) {
        gpt2_missing_add(missing, "GPT-2 decoding by inspect_shard was not checked");
        return;
    }
    CHECK(run_tool("%s --vocab-file %s --merge-file %s", shard, vocab, merges) == 0);
    EXPECT_OUTPUT("text (GPT2BPETokenizer):\nHello world<|endoftext|>\n--- end of text ---");
    /* The shard and GPT-2's vocabulary agree on 50257 ids, so no mismatch note. */
    CHECK_MSG(!strstr(out, "has vocab_size"), "unexpected vocab_size note:\n%s", out);
    printf("GPT-2 decoding: ok (%s)\n", vocab);
}

/* A file HDF5 opens but that is no valid shard: its attributes are still
 * shown, then the reader's complaint, exit 1. */
static void check_invalid_shards(void) {
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir("foreign.h5"));
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(file >= 0);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, 6);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, "format", type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(attr >= 0 && H5Awrite(attr, type, "other") >= 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    H5Fclose(file);
    CHECK(run_tool("%s", path) == 1);
    EXPECT_OUTPUT("format = \"other\"");
    EXPECT_OUTPUT("/tokens: missing");
    EXPECT_OUTPUT("error: token shard");
    EXPECT_OUTPUT(path);

    FILE *f = fopen(in_dir("text.h5"), "w");
    CHECK(f);
    fputs("not hdf5\n", f);
    fclose(f);
    CHECK(run_tool("%s", in_dir("text.h5")) == 2);
    EXPECT_OUTPUT("not a readable HDF5 file");
    CHECK(run_tool("%s", in_dir("missing.h5")) == 2);
    EXPECT_OUTPUT("missing.h5");
    CHECK(run_tool("--document 1") == 2);
    EXPECT_OUTPUT("no shard given");
}

int main(int argc, char **argv) {
    CHECK_MSG(argc == 4, "usage: %s INSPECT_SHARD_BINARY GPT2_VOCAB_DIR FETCH_SCRIPT", argv[0]);
    tool = argv[1];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_data_inspect_shard.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    check_byte_shard();
    Gpt2Missing missing = {0};
    check_gpt2_shard(argv[2], argv[3], &missing);
    check_invalid_shards();
    const char *names[] = {"bytes.h5", "gpt2.h5", "foreign.h5", "text.h5", "log.txt"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) unlink(in_dir(names[i]));
    rmdir(dir);
    if (missing.count) return gpt2_missing_verdict("test_data_inspect_shard", &missing);
    printf("test_data_inspect_shard: ok\n");
    return 0;
}
