/* tools/preprocess_data end to end: runs the built tool (argv[1]) on small
 * JSONL and plain-text corpora and reads its shards back with the shard
 * reader. With ByteTokenizer the expected ids are the UTF-8 bytes of the
 * text, which the test knows independently of the tool. */
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"

static const char *tool;
static char dir[256];
static char out_text[1 << 16]; /* stdout + stderr of the last run */

static char *path_in_dir(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *name, const char *content, size_t len) {
    FILE *f = fopen(path_in_dir(name), "wb");
    CHECK(f);
    CHECK(fwrite(content, 1, len, f) == len);
    fclose(f);
}

/* Runs the tool with `args` (a shell word list); returns its exit status. */
static int run_tool(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s > %s/log.txt 2>&1", tool, args, dir);
    int status = system(cmd);
    CHECK(status != -1 && WIFEXITED(status));
    FILE *f = fopen(path_in_dir("log.txt"), "rb");
    CHECK(f);
    size_t n = fread(out_text, 1, sizeof out_text - 1, f);
    out_text[n] = '\0';
    fclose(f);
    unlink(path_in_dir("log.txt"));
    return WEXITSTATUS(status);
}

static int count_files(const char *needle) {
    DIR *d = opendir(dir);
    CHECK(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

static void remove_matching(const char *needle) {
    DIR *d = opendir(dir);
    CHECK(d);
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && strstr(e->d_name, needle)) unlink(path_in_dir(e->d_name));
    closedir(d);
}

static bool same_file_bytes(const char *a, const char *b) {
    FILE *fa = fopen(path_in_dir(a), "rb"), *fb = fopen(path_in_dir(b), "rb");
    CHECK(fa && fb);
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
    } while (ca == cb && ca != EOF);
    fclose(fa);
    fclose(fb);
    return ca == cb;
}

typedef struct {
    int64_t docs, tokens;
    uint64_t *offsets;
    int32_t *ids;
} ShardData;

static ShardData read_shard(const char *name) {
    char err[1024];
    TokenShard *s = token_shard_open(path_in_dir(name), err, sizeof err);
    CHECK_MSG(s, "%s", err);
    CHECK(strcmp(token_shard_tokenizer_type(s), "ByteTokenizer") == 0);
    CHECK(token_shard_vocab_size(s) == 257 && token_shard_eod_token(s) == 256);
    ShardData d = {token_shard_num_documents(s), token_shard_num_tokens(s), NULL, NULL};
    d.offsets = malloc((size_t)(d.docs + 1) * sizeof *d.offsets);
    memcpy(d.offsets, token_shard_document_offsets(s), (size_t)(d.docs + 1) * sizeof *d.offsets);
    d.ids = malloc((size_t)(d.tokens + 1) * sizeof *d.ids);
    CHECK_MSG(token_shard_read(s, 0, (uint64_t)d.tokens, d.ids, err, sizeof err), "%s", err);
    token_shard_close(s);
    return d;
}

static void free_shard(ShardData *d) {
    free(d->offsets);
    free(d->ids);
}

/* Document `doc` of the shard must hold exactly the bytes of `text` (and
 * EOD after them when `eod`). */
static void check_document(const ShardData *d, int64_t doc, const char *text, bool eod) {
    size_t n = strlen(text);
    CHECK(doc < d->docs);
    CHECK_MSG(d->offsets[doc + 1] - d->offsets[doc] == n + (eod ? 1 : 0), "document %lld has %llu "
              "tokens, want %zu", (long long)doc,
              (unsigned long long)(d->offsets[doc + 1] - d->offsets[doc]), n + (eod ? 1 : 0));
    const int32_t *ids = d->ids + d->offsets[doc];
    for (size_t i = 0; i < n; i++) CHECK(ids[i] == (unsigned char)text[i]);
    if (eod) CHECK(ids[n] == 256);
}

/* The texts of small.jsonl, as decoded JSON strings. */
static const char *const SMALL_TEXTS[] = {"hello", "", "h\xc3\xa9llo w\xc3\xb6rld\n",
                                          "tab\tquote\" slash/ \xe2\x82\xac"};
static const char SMALL_JSONL[] =
    "{\"text\": \"hello\", \"id\": 1}\n"
    "{\"text\": \"\", \"meta\": \"m2\"}\n"
    "\n"
    "{\"meta\": \"m3\", \"text\": \"h\xc3\xa9llo w\\u00f6rld\\n\"}\r\n"
    "{\"text\": \"tab\\tquote\\\" slash\\/ \\u20ac\", \"meta\": \"m4\"}";

static void jsonl_and_plain_text(void) {
    write_file("small.jsonl", SMALL_JSONL, strlen(SMALL_JSONL));
    const char plain[] = "first line\nsecond \xc3\xa9 line\n";
    write_file("plain.txt", plain, strlen(plain));

    CHECK(run_tool("--input %s/small.jsonl --output-prefix %s/a --tokenizer-type ByteTokenizer",
                   dir, dir) == 0);
    CHECK(strstr(out_text, "a_text_document.h5: 4 documents"));
    ShardData d = read_shard("a_text_document.h5");
    CHECK(d.docs == 4);
    for (int i = 0; i < 4; i++) check_document(&d, i, SMALL_TEXTS[i], false);
    free_shard(&d);

    /* Several inputs (JSONL then plain text), --append-eod. */
    CHECK(run_tool("--input %s/small.jsonl %s/plain.txt --output-prefix %s/b --append-eod "
                   "--tokenizer-type ByteTokenizer",
                   dir, dir, dir) == 0);
    d = read_shard("b_text_document.h5");
    CHECK(d.docs == 5);
    for (int i = 0; i < 4; i++) check_document(&d, i, SMALL_TEXTS[i], true);
    check_document(&d, 4, plain, true);
    free_shard(&d);

    /* Two keys: one output per key, documents aligned line by line. */
    CHECK(run_tool("--input %s/small.jsonl --json-keys text meta --output-prefix %s/c "
                   "--tokenizer-type ByteTokenizer --skip-bad-lines",
                   dir, dir) == 0);
    CHECK(strstr(out_text, "skipped 1 bad lines")); /* line 1 has no "meta" */
    d = read_shard("c_text_document.h5");
    CHECK(d.docs == 3);
    for (int i = 0; i < 3; i++) check_document(&d, i, SMALL_TEXTS[i + 1], false);
    free_shard(&d);
    d = read_shard("c_meta_document.h5");
    CHECK(d.docs == 3);
    check_document(&d, 0, "m2", false);
    check_document(&d, 2, "m4", false);
    free_shard(&d);
    remove_matching("_document");

    /* A directory: every file below it in name order, hidden files skipped
     * ("corpus/a" sorts before "corpus/a.jsonl"). */
    CHECK(mkdir(path_in_dir("corpus"), 0755) == 0 && mkdir(path_in_dir("corpus/a"), 0755) == 0);
    write_file("corpus/a/c.txt", "deep", 4);
    write_file("corpus/a.jsonl", "{\"text\": \"j1\"}\n{\"text\": \"j2\"}\n", 30);
    write_file("corpus/b.txt", "bee", 3);
    write_file("corpus/.hidden.txt", "no", 2);
    CHECK(run_tool("--input %s/corpus --output-prefix %s/dir --tokenizer-type ByteTokenizer", dir,
                   dir) == 0);
    d = read_shard("dir_text_document.h5");
    CHECK(d.docs == 4);
    check_document(&d, 0, "deep", false);
    check_document(&d, 1, "j1", false);
    check_document(&d, 2, "j2", false);
    check_document(&d, 3, "bee", false);
    free_shard(&d);
    remove_matching("_document");
    unlink(path_in_dir("corpus/a/c.txt"));
    rmdir(path_in_dir("corpus/a"));
    const char *corpus_files[] = {"corpus/a.jsonl", "corpus/b.txt", "corpus/.hidden.txt"};
    for (int i = 0; i < 3; i++) unlink(path_in_dir(corpus_files[i]));
    rmdir(path_in_dir("corpus"));
}

/* A corpus large enough for many batches; returns the expected documents. */
static char **write_big_corpus(int n) {
    char **texts = malloc((size_t)n * sizeof *texts);
    FILE *f = fopen(path_in_dir("big.jsonl"), "wb");
    CHECK(f);
    for (int i = 0; i < n; i++) {
        int len = (i * 7919) % 600;
        texts[i] = malloc((size_t)len + 1);
        for (int j = 0; j < len; j++) texts[i][j] = (char)('a' + (i + j * 3) % 26);
        texts[i][len] = '\0';
        fprintf(f, "{\"text\": \"%s\", \"n\": %d}\n", texts[i], i);
    }
    fclose(f);
    return texts;
}

static void workers_give_identical_output(void) {
    enum { N = 8000 }; /* about 2.4 MB: several 1 MB batches */
    char **texts = write_big_corpus(N);
    CHECK(run_tool("--input %s/big.jsonl --output-prefix %s/w1 --tokenizer-type ByteTokenizer "
                   "--append-eod --workers 1",
                   dir, dir) == 0);
    CHECK(run_tool("--input %s/big.jsonl --output-prefix %s/w3 --tokenizer-type ByteTokenizer "
                   "--append-eod --workers 3",
                   dir, dir) == 0);
    ShardData a = read_shard("w1_text_document.h5"), b = read_shard("w3_text_document.h5");
    CHECK(a.docs == N && b.docs == N && a.tokens == b.tokens);
    CHECK(memcmp(a.offsets, b.offsets, (size_t)(N + 1) * sizeof *a.offsets) == 0);
    CHECK(memcmp(a.ids, b.ids, (size_t)a.tokens * sizeof *a.ids) == 0);
    for (int i = 0; i < N; i++) check_document(&a, i, texts[i], true);
    /* No timestamps or thread-dependent layout: the files themselves match. */
    CHECK(same_file_bytes("w1_text_document.h5", "w3_text_document.h5"));
    free_shard(&a);
    free_shard(&b);

    /* Numbered shards: a new one starts before a document would pass the
     * limit, so shards stay within it (no document here is longer). */
    CHECK(run_tool("--input %s/big.jsonl --output-prefix %s/s --tokenizer-type ByteTokenizer "
                   "--workers 2 --shard-size-tokens 300000",
                   dir, dir) == 0);
    CHECK(count_files("s_text_document.h5") == 0);
    int64_t doc = 0;
    int shards = 0;
    for (;; shards++) {
        char name[64];
        snprintf(name, sizeof name, "s_text_document_%05d.h5", shards);
        if (access(path_in_dir(name), F_OK) != 0) break;
        ShardData s = read_shard(name);
        CHECK(s.tokens <= 300000);
        snprintf(name, sizeof name, "s_text_document_%05d.h5", shards + 1);
        if (access(path_in_dir(name), F_OK) == 0) CHECK(s.tokens > 300000 - 600); /* full */
        for (int64_t i = 0; i < s.docs; i++) check_document(&s, i, texts[doc + i], false);
        doc += s.docs;
        free_shard(&s);
    }
    CHECK(doc == N);
    CHECK(shards >= 7); /* about 2.4M tokens / 300k */
    for (int i = 0; i < N; i++) free(texts[i]);
    free(texts);
    remove_matching("_document");
}

static void bad_lines(void) {
    const char bad[] = "{\"text\": \"ok\"}\n"
                       "{\"text\": \"fine\"}\n"
                       "{\"text\": \"broken\"\n"
                       "{\"body\": \"no text key\"}\n"
                       "{\"text\": \"bad \xff byte\"}\n"
                       "{\"text\": 42}\n"
                       "{\"text\": \"last\"} trailing\n"
                       "{\"text\": \"end\"}\n";
    write_file("bad.jsonl", bad, strlen(bad));
    CHECK(run_tool("--input %s/bad.jsonl --output-prefix %s/bad --tokenizer-type ByteTokenizer",
                   dir, dir) != 0);
    CHECK_MSG(strstr(out_text, "bad.jsonl:3: malformed JSON"), "%s", out_text);
    CHECK(count_files("bad_text") == 0); /* no shard, no temporary file */

    /* An error after numbered shards were completed removes them too. */
    CHECK(run_tool("--input %s/bad.jsonl --output-prefix %s/bad --tokenizer-type ByteTokenizer "
                   "--shard-size-tokens 2",
                   dir, dir) != 0);
    CHECK(count_files("bad_text") == 0);

    CHECK(run_tool("--input %s/bad.jsonl --output-prefix %s/bad --tokenizer-type ByteTokenizer "
                   "--skip-bad-lines",
                   dir, dir) == 0);
    CHECK(strstr(out_text, "bad.jsonl:4: missing key 'text'"));
    CHECK(strstr(out_text, "bad.jsonl:5: value of key 'text' is not valid UTF-8"));
    CHECK(strstr(out_text, "bad.jsonl:6: key 'text' is not a string"));
    CHECK(strstr(out_text, "bad.jsonl:7: malformed JSON"));
    CHECK(strstr(out_text, "skipped 5 bad lines"));
    ShardData d = read_shard("bad_text_document.h5");
    CHECK(d.docs == 3);
    check_document(&d, 0, "ok", false);
    check_document(&d, 1, "fine", false);
    check_document(&d, 2, "end", false);
    free_shard(&d);

    /* Invalid UTF-8 in a plain-text file names the line. */
    const char plain[] = "good\nalso good\nbad \xc3\x28 here\n";
    write_file("bad.txt", plain, strlen(plain));
    CHECK(run_tool("--input %s/bad.txt --output-prefix %s/badtxt --tokenizer-type ByteTokenizer",
                   dir, dir) != 0);
    CHECK_MSG(strstr(out_text, "bad.txt:3: not valid UTF-8"), "%s", out_text);
    CHECK(count_files("badtxt") == 0);
    remove_matching("_document");
}

static void bad_flags(void) {
    CHECK(run_tool("--input %s/small.jsonl --output-prefix %s/x --tokenizer-type ByteTokenizer "
                   "--wokers 2",
                   dir, dir) == 2);
    CHECK(strstr(out_text, "--wokers") && strstr(out_text, "--workers"));
    CHECK(run_tool("--input %s/small.jsonl --output-prefix %s/x", dir, dir) == 2);
    CHECK(strstr(out_text, "--tokenizer-type"));
    CHECK(run_tool("--input %s/small.jsonl --output-prefix %s/x --tokenizer-type Nope", dir,
                   dir) == 2);
    CHECK(strstr(out_text, "Nope"));
    CHECK(run_tool("--input %s/small.jsonl --output-prefix %s/x --tokenizer-type ByteTokenizer "
                   "--workers 0",
                   dir, dir) == 2);
    CHECK(strstr(out_text, "--workers"));
    CHECK(run_tool("--input %s/none.jsonl --output-prefix %s/x --tokenizer-type ByteTokenizer",
                   dir, dir) == 2);
    CHECK(strstr(out_text, "none.jsonl"));
    CHECK(run_tool("--help") == 0);
    CHECK(strstr(out_text, "--shard-size-tokens") && strstr(out_text, "--append-eod"));
    CHECK(count_files("x_") == 0);
}

int main(int argc, char **argv) {
    CHECK_MSG(argc == 2, "usage: %s PATH_TO_PREPROCESS_DATA", argv[0]);
    tool = argv[1];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_preprocess.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    jsonl_and_plain_text();
    workers_give_identical_output();
    bad_lines();
    bad_flags();
    remove_matching("");
    rmdir(dir);
    printf("test_preprocess_data: ok\n");
    return 0;
}
