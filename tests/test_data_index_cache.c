/* The index cache under --data-cache-path. A second creation must read the
 * cache instead of building (the datasets' index counters say so, and no
 * file is rewritten), give the same samples as a run without any cache, and
 * every input the indices depend on (seed, seq_length, a shard's documents)
 * must lead to a new build, while what they do not depend on (the tokens
 * inside documents of unchanged lengths) keeps the cache. Damaged files
 * (flipped byte, truncation, a well-formed file with impossible contents)
 * are rejected and rebuilt. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"

#define SEQ 16
#define VOCAB (1 << 22)
#define TYPE "TestTokenizer"
#define BLOCK 65536 /* the blend's block size, which the cache test crosses */

static char dir[256], cache[300];
static const int64_t PROBES[] = {0, 1, 2, 99, 5000, 3 * BLOCK + 17, 1000};
#define NUM_PROBES ((int)(sizeof PROBES / sizeof *PROBES))

static char *in_dir(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Documents of lengths 10 + (d * 29 + shift) % 60; `salt` changes only the
 * token values. */
static void write_shard(const char *name, int tag, int num_docs, int shift, int salt) {
    char err[1024];
    TokenShardWriter *w = token_shard_writer_create(in_dir(name), TYPE, VOCAB, 0, err, sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t buf[128];
    for (int d = 0; d < num_docs; d++) {
        int len = 10 + (d * 29 + shift) % 60;
        for (int i = 0; i < len; i++) buf[i] = tag * 1000000 + d * 1000 + i + salt;
        CHECK(token_shard_writer_add_document(w, buf, (size_t)len, err, sizeof err));
    }
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
}

typedef struct {
    uint64_t seed;
    int seq_length;
    bool use_cache;
} Setup;

static BlendedDataset *open_blend(Setup s) {
    const char *words[] = {"0.6", in_dir("a.h5"), "0.4", in_dir("b.h5")};
    GPTDataConfig cfg = {.data_path = words, .data_path_count = 4, .split = "90,10,0",
                         .seq_length = s.seq_length, .seed = s.seed,
                         .cache_dir = s.use_cache ? cache : NULL};
    char err[1024];
    BlendedDataset *ds = blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err);
    CHECK_MSG(ds, "%s", err);
    return ds;
}

/* Reads the probe samples (touching several epochs of each component and
 * block 3 of the blend) into out[NUM_PROBES][seq+1]; returns the stats. */
static DataIndexStats read_probes(Setup s, int32_t *out) {
    BlendedDataset *ds = open_blend(s);
    char err[1024];
    for (int p = 0; p < NUM_PROBES; p++)
        CHECK_MSG(blended_dataset_get_sample(ds, PROBES[p], out + p * (s.seq_length + 1), err,
                                             sizeof err),
                  "%s", err);
    DataIndexStats st = blended_dataset_index_stats(ds);
    blended_dataset_free(ds);
    return st;
}

static int count_cache_files(void) {
    DIR *d = opendir(cache);
    CHECK(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".idx") != NULL;
    closedir(d);
    return n;
}

/* Any file whose name contains `needle`. */
static char *find_cache_file(const char *needle) {
    static char path[1024];
    DIR *d = opendir(cache);
    CHECK(d);
    path[0] = '\0';
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, needle) && strstr(e->d_name, ".idx") && !strstr(e->d_name, ".tmp"))
            snprintf(path, sizeof path, "%s/%s", cache, e->d_name);
    closedir(d);
    CHECK_MSG(path[0], "no cache file matching %s", needle);
    return path;
}

static void print_stats(const char *what, DataIndexStats s) {
    printf("%-28s built %lld loaded %lld stored %lld rejected %lld\n", what, (long long)s.built,
           (long long)s.loaded, (long long)s.stored, (long long)s.rejected);
}

/* --------------------------------------------------------------- reuse */

static void check_reuse(int32_t *reference) {
    Setup s = {1234, SEQ, true};
    int32_t got[NUM_PROBES * (SEQ + 1)];
    DataIndexStats first = read_probes(s, got);
    print_stats("first (empty cache)", first);
    CHECK(first.built > 0 && first.loaded == 0 && first.stored == first.built);
    CHECK(first.rejected == 0 && first.store_failures == 0);
    CHECK(memcmp(got, reference, sizeof got) == 0); /* same samples as without a cache */
    int files = count_cache_files();
    CHECK(files == first.stored);

    struct stat before;
    CHECK(stat(find_cache_file("blend"), &before) == 0);
    DataIndexStats second = read_probes(s, got);
    print_stats("second (same inputs)", second);
    CHECK(second.built == 0 && second.stored == 0 && second.rejected == 0);
    CHECK(second.loaded == first.built);
    CHECK(memcmp(got, reference, sizeof got) == 0);
    CHECK(count_cache_files() == files);
    struct stat after;
    CHECK(stat(find_cache_file("blend"), &after) == 0);
    CHECK(before.st_ino == after.st_ino && before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
          before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
}

/* ---------------------------------------------------------- invalidation */

static void check_invalidation(void) {
    int32_t got[NUM_PROBES * (SEQ + 2)];
    int files = count_cache_files();

    /* Another seed: every epoch is new; the blend table (weights only) is not. */
    DataIndexStats st = read_probes((Setup){99, SEQ, true}, got);
    print_stats("seed 99", st);
    CHECK(st.built > 0 && st.loaded == 1 && st.rejected == 0);
    CHECK(count_cache_files() == files + st.stored);
    files = count_cache_files();

    /* Another seq_length: new epochs. */
    st = read_probes((Setup){1234, SEQ + 1, true}, got);
    print_stats("seq_length 17", st);
    CHECK(st.built > 0 && st.loaded == 1);
    CHECK(count_cache_files() == files + st.stored);

    /* Same document lengths, other tokens: the indices still hold, and the
     * samples show the new tokens. */
    int32_t reference[NUM_PROBES * (SEQ + 1)];
    write_shard("b.h5", 2, 40, 5, 7);
    st = read_probes((Setup){1234, SEQ, false}, reference);
    st = read_probes((Setup){1234, SEQ, true}, got);
    print_stats("b.h5 new tokens", st);
    CHECK(st.built == 0 && st.rejected == 0);
    CHECK(memcmp(got, reference, sizeof reference) == 0);

    /* Other document lengths in b.h5: its component rebuilds, a.h5's does not. */
    write_shard("b.h5", 2, 40, 11, 0);
    files = count_cache_files();
    BlendedDataset *ds = open_blend((Setup){1234, SEQ, true});
    char err[1024];
    for (int p = 0; p < NUM_PROBES; p++)
        CHECK(blended_dataset_get_sample(ds, PROBES[p], got, err, sizeof err));
    DataIndexStats a = gpt_dataset_index_stats(blended_dataset_component(ds, 0));
    DataIndexStats b = gpt_dataset_index_stats(blended_dataset_component(ds, 1));
    print_stats("b.h5 new lengths: a", a);
    print_stats("b.h5 new lengths: b", b);
    CHECK(a.built == 0 && a.loaded > 0);
    CHECK(b.built > 0 && b.loaded == 0);
    CHECK(count_cache_files() == files + b.stored);
    blended_dataset_free(ds);
}

/* -------------------------------------------------------------- damage */

static void rewrite_byte(const char *path, long offset, int delta) {
    FILE *f = fopen(path, "r+b");
    CHECK(f);
    CHECK(fseek(f, offset, SEEK_SET) == 0);
    int c = fgetc(f);
    CHECK(c != EOF);
    CHECK(fseek(f, offset, SEEK_SET) == 0);
    fputc((c + delta) & 0xff, f);
    fclose(f);
}

/* Makes `path` well-formed (header, checksum) but swaps in a payload that
 * repeats one value, which no permutation holds. The checksum is FNV-1a
 * over the payload's 64-bit words, as index_cache.h documents. */
static void forge_impossible_payload(const char *path) {
    FILE *f = fopen(path, "r+b");
    CHECK(f);
    uint64_t header[5];
    CHECK(fread(header, sizeof header, 1, f) == 1);
    uint64_t count = header[4];
    CHECK(count >= 2);
    uint64_t h = 0xCBF29CE484222325ull;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t v = 0; /* every entry 0 */
        CHECK(fwrite(&v, sizeof v, 1, f) == 1);
        h = (h ^ v) * 0x100000001B3ull;
    }
    CHECK(fwrite(&h, sizeof h, 1, f) == 1);
    fclose(f);
}

static void expect_rebuild_after(const char *what, const int32_t *reference) {
    int32_t got[NUM_PROBES * (SEQ + 1)];
    DataIndexStats st = read_probes((Setup){1234, SEQ, true}, got);
    print_stats(what, st);
    CHECK_MSG(st.rejected == 1 && st.built == 1 && st.stored == 1, "%s", what);
    CHECK(memcmp(got, reference, sizeof got) == 0);
    st = read_probes((Setup){1234, SEQ, true}, got); /* the rebuilt file is good again */
    CHECK(st.rejected == 0 && st.built == 0);
}

static void check_damage(const int32_t *reference) {
    char path[1024];
    snprintf(path, sizeof path, "%s", find_cache_file("gpt_dataset_train_epoch0_"));
    rewrite_byte(path, 40 + 8 * 3, 1); /* a payload byte: the checksum fails */
    expect_rebuild_after("flipped payload byte", reference);
    CHECK(truncate(path, 100) == 0);
    expect_rebuild_after("truncated file", reference);
    rewrite_byte(path, 0, 1); /* the magic */
    expect_rebuild_after("bad magic", reference);
    forge_impossible_payload(path);
    expect_rebuild_after("impossible epoch index", reference);
    snprintf(path, sizeof path, "%s", find_cache_file("blend"));
    forge_impossible_payload(path); /* counts that do not sum to the block starts */
    expect_rebuild_after("impossible blend table", reference);
    rewrite_byte(path, 40 + 8 * 5, 3);
    expect_rebuild_after("flipped blend table byte", reference);
}

static void check_bad_cache_dir(void) {
    /* Under a regular file: cannot be created, whoever runs the test. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/sub", in_dir("a.h5"));
    const char *words[] = {in_dir("a.h5")};
    GPTDataConfig cfg = {.data_path = words, .data_path_count = 1, .split = "1",
                         .seq_length = SEQ, .seed = 1, .cache_dir = bad};
    char err[1024];
    CHECK(!blended_dataset_create(&cfg, SPLIT_TRAIN, err, sizeof err));
    CHECK_MSG(strstr(err, "--data-cache-path") && strstr(err, bad), "%s", err);
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(path);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_data_index_cache.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    snprintf(cache, sizeof cache, "%s/cache/nested", dir); /* created on demand */
    write_shard("a.h5", 1, 50, 0, 0);
    write_shard("b.h5", 2, 40, 5, 0);

    int32_t reference[NUM_PROBES * (SEQ + 1)];
    DataIndexStats none = read_probes((Setup){1234, SEQ, false}, reference);
    CHECK(none.loaded == 0 && none.stored == 0 && none.built > 0);
    check_reuse(reference);
    check_damage(reference);
    check_bad_cache_dir();
    check_invalidation();

    remove_tree(cache);
    char parent[600];
    snprintf(parent, sizeof parent, "%s/cache", dir);
    rmdir(parent);
    unlink(in_dir("a.h5"));
    unlink(in_dir("b.h5"));
    rmdir(dir);
    printf("test_data_index_cache: ok\n");
    return 0;
}
