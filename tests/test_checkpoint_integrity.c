/* Checkpoint integrity (issue 14): a damaged checkpoint either loads exactly
 * the numbers that were saved or fails with one line naming the damaged
 * file; it never loads different numbers.
 * - 200 byte mutations (fixed seed) of a small two-rank checkpoint: 40 in
 *   metadata.json, 80 in the rank files' HDF5 metadata (8 of them in the
 *   superblock), 80 in their float data. Every load reads each tensor in
 *   pieces of odd length, the way a resharded load does, and compares every
 *   element bitwise. Float data and superblock damage must always fail; no
 *   HDF5 handle may stay open after a failed load.
 * - A partial read that does not cover a damaged element of a block still
 *   fails (the whole block is verified), and one in another block succeeds.
 * - A dataset stripped of its checksum attributes fails; a version 1
 *   checkpoint (no checksums anywhere) still loads exactly, and
 *   checkpoint_verify_checksums reports zero blocks for it.
 * - checkpoint_find_verified skips a checkpoint that fails, and finds none
 *   when every candidate fails.
 * - HDF5 prints nothing, during the failed loads or at its shutdown. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/checkpoint.h"
#include "test_checkpoint_meta.h"
#include "test_util.h"

#define ITER 7
#define WORLD 2
#define PIECE 7919 /* a prime: pieces start at odd offsets inside blocks */

typedef struct {
    const char *name;
    int64_t numel, cut; /* rank 0 holds [0, cut), rank 1 [cut, numel) */
} Param;

static const Param PARAMS[] = {
    {"decoder.final_layernorm.weight", 37, 0},
    {"embedding.word_embeddings.weight", 150001, 90000}, /* two blocks in rank 0 */
    {"decoder.layers.0.self_attention.linear_qkv.weight", 200, 120},
};
#define NUM_PARAMS ((int)(sizeof PARAMS / sizeof PARAMS[0]))

typedef struct {
    char save[1024], dir[2048], meta_path[4096], rank_path[WORLD][4096];
    CheckpointMeta meta;
    float *values[NUM_PARAMS][3];
    float *buf;
    /* Byte ranges [off, off + len) of every dataset's float data. */
    int num_ranges;
    struct {
        int file;
        haddr_t off;
        hsize_t len;
    } ranges[WORLD * NUM_PARAMS * 3];
} Fixture;

typedef enum { OUT_EXACT, OUT_NAMED, OUT_UNNAMED, OUT_DIFFERENT, NUM_OUTCOMES } Outcome;
static const char *const OUTCOME_NAMES[NUM_OUTCOMES] = {
    "loaded exactly", "failed naming the file", "FAILED WITHOUT NAMING THE FILE",
    "LOADED DIFFERENT NUMBERS"};

static uint64_t next_random(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Distinctive values, so a metadata flip that still parses shows as a
 * difference from what was written. */
static CheckpointMeta make_meta(void) {
    CheckpointMeta m = test_checkpoint_meta(ITER, WORLD);
    m.consumed_train_samples = 112;
    m.loss_scale = 65536.0;
    m.model.ffn_hidden_size = 16;
    m.model.vocab_size = 250;
    m.model.seed = 4321;
    snprintf(m.data_description, sizeof m.data_description, "--data-path corpus --split 98,2,0");
    snprintf(m.tokenizer_type, sizeof m.tokenizer_type, "GPT2BPETokenizer");
    return m;
}

static void write_checkpoint(Fixture *f) {
    char err[2048];
    CHECK_MSG(checkpoint_begin_save(f->save, ITER, err, sizeof err), "%s", err);
    for (int rank = 0; rank < WORLD; rank++) {
        CheckpointInterval iv[NUM_PARAMS];
        int n = 0;
        for (int p = 0; p < NUM_PARAMS; p++) {
            int64_t b = rank == 0 ? 0 : PARAMS[p].cut, e = rank == 0 ? PARAMS[p].cut : PARAMS[p].numel;
            if (b == e) continue;
            iv[n++] = (CheckpointInterval){PARAMS[p].name, 1, {PARAMS[p].numel}, b, e,
                                           f->values[p][0] + b, f->values[p][1] + b,
                                           f->values[p][2] + b};
        }
        CHECK_MSG(checkpoint_write_rank(f->save, ITER, rank, iv, n, err, sizeof err), "%s", err);
    }
    CHECK_MSG(checkpoint_write_meta(f->save, &f->meta, err, sizeof err), "%s", err);
    CHECK_MSG(checkpoint_publish(f->save, ITER, err, sizeof err), "%s", err);
}

/* Where each dataset's floats lie in its file (contiguous layout). */
static void find_data_ranges(Fixture *f) {
    for (int rank = 0; rank < WORLD; rank++) {
        hid_t fid = H5Fopen(f->rank_path[rank], H5F_ACC_RDONLY, H5P_DEFAULT);
        CHECK(fid >= 0);
        for (int p = 0; p < NUM_PARAMS; p++) {
            int64_t b = rank == 0 ? 0 : PARAMS[p].cut, e = rank == 0 ? PARAMS[p].cut : PARAMS[p].numel;
            if (b == e) continue;
            for (int t = 0; t < 3; t++) {
                static const char *const T[3] = {"weight", "exp_avg", "exp_avg_sq"};
                char path[512];
                snprintf(path, sizeof path, "/intervals/%s/%" PRId64 "_%" PRId64 "/%s",
                         PARAMS[p].name, b, e, T[t]);
                hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
                CHECK_MSG(d >= 0, "%s", path);
                int k = f->num_ranges++;
                f->ranges[k].file = rank;
                f->ranges[k].off = H5Dget_offset(d);
                f->ranges[k].len = H5Dget_storage_size(d);
                CHECK(f->ranges[k].off != HADDR_UNDEF && f->ranges[k].len == (hsize_t)(e - b) * 4);
                H5Dclose(d);
            }
        }
        H5Fclose(fid);
    }
}

static void setup(Fixture *f, const char *root, const char *name) {
    memset(f, 0, sizeof *f);
    snprintf(f->save, sizeof f->save, "%s/%s", root, name);
    checkpoint_iter_dir(f->dir, sizeof f->dir, f->save, ITER);
    snprintf(f->meta_path, sizeof f->meta_path, "%s/metadata.json", f->dir);
    for (int r = 0; r < WORLD; r++)
        snprintf(f->rank_path[r], sizeof f->rank_path[r], "%s/rank_%05d.h5", f->dir, r);
    f->meta = make_meta();
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (int p = 0; p < NUM_PARAMS; p++)
        for (int t = 0; t < 3; t++) {
            f->values[p][t] = malloc((size_t)PARAMS[p].numel * sizeof(float));
            CHECK(f->values[p][t]);
            for (int64_t i = 0; i < PARAMS[p].numel; i++)
                f->values[p][t][i] = (float)((int64_t)(next_random(&s) % 2000001) - 1000000) * 1e-4f;
        }
    f->buf = malloc((size_t)PARAMS[1].numel * sizeof(float));
    CHECK(f->buf);
    write_checkpoint(f);
    f->meta.format_version = CHECKPOINT_FORMAT_VERSION; /* what a read reports */
    find_data_ranges(f);
}

static void teardown(Fixture *f) {
    for (int p = 0; p < NUM_PARAMS; p++)
        for (int t = 0; t < 3; t++) free(f->values[p][t]);
    free(f->buf);
}

static Outcome failed(const char *err, const char *damaged) {
    return strstr(err, damaged) && !strchr(err, '\n') ? OUT_NAMED : OUT_UNNAMED;
}

/* Loads every tensor piece by piece, as a resharded load does, and compares
 * metadata and every element bitwise with what was saved. */
static Outcome load_and_compare(Fixture *f, const char *damaged, char *err, size_t err_size) {
    CheckpointReader *r = checkpoint_open(f->save, ITER, err, err_size);
    if (!r) return failed(err, damaged);
    Outcome out = OUT_EXACT;
    if (memcmp(checkpoint_meta(r), &f->meta, sizeof f->meta) != 0 ||
        checkpoint_num_params(r) != NUM_PARAMS)
        out = OUT_DIFFERENT;
    for (int p = 0; out == OUT_EXACT && p < NUM_PARAMS; p++)
        for (int t = 0; out == OUT_EXACT && t < 3; t++) {
            const int64_t n = PARAMS[p].numel;
            for (int64_t lo = 0; out == OUT_EXACT && lo < n; lo += PIECE) {
                int64_t hi = n - lo < PIECE ? n : lo + PIECE;
                if (!checkpoint_read(r, PARAMS[p].name, (CheckpointTensor)t, lo, hi, f->buf + lo,
                                     err, err_size))
                    out = failed(err, damaged);
            }
            if (out == OUT_EXACT && memcmp(f->buf, f->values[p][t], (size_t)n * sizeof(float)))
                out = OUT_DIFFERENT;
        }
    checkpoint_close(r);
    return out;
}

static int flip_byte(const char *path, long pos, unsigned char mask) {
    FILE *fp = fopen(path, "r+b");
    CHECK(fp);
    CHECK(fseek(fp, pos, SEEK_SET) == 0);
    int c = fgetc(fp);
    CHECK(c != EOF);
    CHECK(fseek(fp, pos, SEEK_SET) == 0);
    CHECK(fputc(c ^ mask, fp) != EOF);
    CHECK(fclose(fp) == 0);
    return c;
}

static long file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    CHECK(fp);
    CHECK(fseek(fp, 0, SEEK_END) == 0);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

static bool in_data(const Fixture *f, int file, long pos) {
    for (int k = 0; k < f->num_ranges; k++)
        if (f->ranges[k].file == file && (haddr_t)pos >= f->ranges[k].off &&
            (haddr_t)pos < f->ranges[k].off + f->ranges[k].len)
            return true;
    return false;
}

enum { CAT_META, CAT_SUPERBLOCK, CAT_HEADER, CAT_DATA, NUM_CATS };
static const char *const CAT_NAMES[NUM_CATS] = {"metadata.json", "HDF5 superblock",
                                                "other HDF5 metadata", "float data"};

/* The i-th mutation's category, file and byte position. */
static int pick(const Fixture *f, int i, uint64_t *s, const char **path, long *pos) {
    if (i < 40) {
        *path = f->meta_path;
        *pos = (long)(next_random(s) % (uint64_t)file_size(f->meta_path));
        return CAT_META;
    }
    int file = i % WORLD;
    *path = f->rank_path[file];
    if (i < 48) { /* superblock version 2: 48 bytes, checksum included */
        *pos = (long)(next_random(s) % 48);
        return CAT_SUPERBLOCK;
    }
    if (i < 120) {
        long size = file_size(*path);
        do *pos = 48 + (long)(next_random(s) % (uint64_t)(size - 48));
        while (in_data(f, file, *pos));
        return CAT_HEADER;
    }
    hsize_t total = 0;
    for (int k = 0; k < f->num_ranges; k++) total += f->ranges[k].len;
    hsize_t at = next_random(s) % total;
    for (int k = 0; k < f->num_ranges; k++) {
        if (at < f->ranges[k].len) {
            *path = f->rank_path[f->ranges[k].file];
            *pos = (long)(f->ranges[k].off + at);
            break;
        }
        at -= f->ranges[k].len;
    }
    return CAT_DATA;
}

static void test_random_mutations(const char *root) {
    Fixture f;
    setup(&f, root, "mutations");
    char err[4096];
    CHECK_MSG(load_and_compare(&f, "", err, sizeof err) == OUT_EXACT, "intact: %s", err);
    int counts[NUM_CATS][NUM_OUTCOMES] = {{0}};
    uint64_t s = 20240914;
    for (int i = 0; i < 200; i++) {
        const char *path = NULL;
        long pos = 0;
        int cat = pick(&f, i, &s, &path, &pos);
        unsigned char mask = (unsigned char)(1 + next_random(&s) % 255);
        int original = flip_byte(path, pos, mask);
        err[0] = '\0';
        Outcome o = load_and_compare(&f, path, err, sizeof err);
        counts[cat][o]++;
        if (o >= OUT_UNNAMED || (o == OUT_EXACT && (cat == CAT_DATA || cat == CAT_SUPERBLOCK)))
            fprintf(stderr, "mutation %d: %s byte %ld of %s ^ 0x%02x: %s (%s)\n", i,
                    CAT_NAMES[cat], pos, path, mask, OUTCOME_NAMES[o], err);
        else if (i % 20 == 0 && o == OUT_NAMED)
            printf("  e.g. %s byte %ld: %s\n", CAT_NAMES[cat], pos, err);
        CHECK_MSG(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0,
                  "mutation %d left HDF5 objects open", i);
        CHECK(flip_byte(path, pos, mask) == (original ^ mask));
    }
    int bad = 0;
    for (int c = 0; c < NUM_CATS; c++) {
        printf("%-20s:", CAT_NAMES[c]);
        for (int o = 0; o < NUM_OUTCOMES; o++) printf(" %s %d;", OUTCOME_NAMES[o], counts[c][o]);
        printf("\n");
        bad += counts[c][OUT_UNNAMED] + counts[c][OUT_DIFFERENT];
    }
    CHECK_MSG(bad == 0, "%d mutations loaded different numbers or failed without naming the file", bad);
    /* Every float is read, and every superblock byte is under its checksum. */
    CHECK(counts[CAT_DATA][OUT_NAMED] == 80);
    CHECK(counts[CAT_SUPERBLOCK][OUT_NAMED] == 8);
    CHECK_MSG(load_and_compare(&f, "", err, sizeof err) == OUT_EXACT, "restored: %s", err);
    teardown(&f);
}

/* A damaged element is found by any read touching its block, even one that
 * does not ask for that element. */
static void test_partial_read(const char *root) {
    Fixture f;
    setup(&f, root, "partial");
    char err[4096];
    /* Rank 0's word embedding weight: [0, 90000), blocks [0, 65536) and [65536, 90000). */
    const char *name = PARAMS[1].name;
    int k;
    for (k = 0; k < f.num_ranges; k++)
        if (f.ranges[k].file == 0 && f.ranges[k].len == 90000 * 4) break;
    CHECK(k < f.num_ranges);
    const int64_t damaged = 70001;
    flip_byte(f.rank_path[0], (long)(f.ranges[k].off + damaged * 4 + 1), 0x10);
    CheckpointReader *r = checkpoint_open(f.save, ITER, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    CHECK_MSG(!checkpoint_read(r, name, CKPT_WEIGHT, damaged + 5, damaged + 9, f.buf, err,
                               sizeof err),
              "a read inside a damaged block passed");
    CHECK_MSG(strstr(err, f.rank_path[0]) && strstr(err, "weight fails its CRC32C check") &&
                  strstr(err, name),
              "%s", err);
    printf("partial read of a damaged block: %s\n", err);
    CHECK_MSG(!checkpoint_read(r, name, CKPT_WEIGHT, 60000, 66000, f.buf, err, sizeof err),
              "a read ending in a damaged block passed");
    CHECK_MSG(checkpoint_read(r, name, CKPT_WEIGHT, 100, 65536, f.buf, err, sizeof err), "%s", err);
    CHECK(memcmp(f.buf, f.values[1][0] + 100, (65536 - 100) * sizeof(float)) == 0);
    CHECK_MSG(checkpoint_read(r, name, CKPT_EXP_AVG, damaged, damaged + 1, f.buf, err, sizeof err),
              "%s", err);
    CHECK(memcmp(f.buf, f.values[1][1] + damaged, sizeof(float)) == 0);
    CheckpointVerifyStats st;
    CHECK(!checkpoint_verify_checksums(r, &st, err, sizeof err));
    CHECK_MSG(strstr(err, f.rank_path[0]), "%s", err);
    checkpoint_close(r);
    teardown(&f);
}

static void strip_rank_file(const char *path, bool all, int version) {
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(fid >= 0);
    for (int p = 0; p < NUM_PARAMS; p++) {
        char group[512];
        snprintf(group, sizeof group, "/intervals/%s", PARAMS[p].name);
        if (H5Lexists(fid, "/intervals", H5P_DEFAULT) <= 0 || H5Lexists(fid, group, H5P_DEFAULT) <= 0)
            continue;
        hid_t g = H5Gopen2(fid, group, H5P_DEFAULT);
        hsize_t n = 0;
        CHECK(H5Gget_num_objs(g, &n) >= 0 && n == 1);
        char link[64], dpath[640];
        CHECK(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, 0, link, sizeof link,
                                 H5P_DEFAULT) > 0);
        H5Gclose(g);
        for (int t = 0; t < (all ? 3 : 1); t++) {
            static const char *const T[3] = {"weight", "exp_avg", "exp_avg_sq"};
            snprintf(dpath, sizeof dpath, "%s/%s/%s", group, link, T[t]);
            hid_t d = H5Dopen2(fid, dpath, H5P_DEFAULT);
            CHECK(d >= 0);
            for (int a = 0; a < 2; a++) {
                const char *attr = a ? "crc32c_block_elements" : "crc32c";
                if (H5Aexists(d, attr) > 0) CHECK(H5Adelete(d, attr) >= 0);
            }
            H5Dclose(d);
        }
        if (!all) break;
    }
    if (version) {
        int64_t v = version;
        hid_t a = H5Aopen(fid, "format_version", H5P_DEFAULT);
        CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
        H5Aclose(a);
    }
    CHECK(H5Fclose(fid) >= 0);
}

/* metadata.json as a version 1 save wrote it: version 1, no checksum. */
static void downgrade_meta(const char *path) {
    FILE *fp = fopen(path, "rb");
    CHECK(fp);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    cJSON *root = cJSON_Parse(text);
    CHECK(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "crc32c");
    cJSON_ReplaceItemInObjectCaseSensitive(root, "format_version", cJSON_CreateNumber(1));
    char *out = cJSON_Print(root);
    fp = fopen(path, "wb");
    CHECK(fp && fputs(out, fp) >= 0 && fclose(fp) == 0);
    cJSON_free(out);
    cJSON_Delete(root);
}

static void test_missing_checksums_and_version_1(const char *root) {
    Fixture f;
    setup(&f, root, "version1");
    char err[4096];
    strip_rank_file(f.rank_path[1], false, 0);
    CHECK(load_and_compare(&f, f.rank_path[1], err, sizeof err) == OUT_NAMED);
    CHECK_MSG(strstr(err, "has no crc32c"), "%s", err);
    printf("stripped dataset: %s\n", err);
    strip_rank_file(f.rank_path[1], true, 1);
    strip_rank_file(f.rank_path[0], true, 1);
    /* Rank files of version 1 under a version 2 metadata.json: refused. */
    CHECK(load_and_compare(&f, f.rank_path[0], err, sizeof err) == OUT_NAMED);
    CHECK_MSG(strstr(err, "metadata.json"), "%s", err);
    downgrade_meta(f.meta_path);
    f.meta.format_version = 1;
    Outcome o = load_and_compare(&f, "", err, sizeof err);
    CHECK_MSG(o == OUT_EXACT, "version 1: %s (%s)", OUTCOME_NAMES[o], err);
    CheckpointReader *r = checkpoint_open(f.save, ITER, err, sizeof err);
    CHECK_MSG(r, "%s", err);
    CheckpointVerifyStats st;
    CHECK_MSG(checkpoint_verify_checksums(r, &st, err, sizeof err), "%s", err);
    CHECK(st.blocks == 0 && st.datasets == 3 * 5 && st.bytes == 3 * 4 * (37 + 150001 + 200));
    checkpoint_close(r);
    printf("version 1 checkpoint: loads exactly, %" PRId64 " datasets read, no checksums\n",
           st.datasets);
    teardown(&f);
}

/* HDF5's exit-time shutdown prints "infinite loop closing library" when a
 * failed load left state behind while its error printing is on; run the
 * shutdown now, with stderr captured, and require silence. */
static void check_quiet_shutdown(const char *root) {
    char path[4096];
    snprintf(path, sizeof path, "%s/hdf5_close.txt", root);
    fflush(stderr);
    int saved = dup(2);
    FILE *fp = fopen(path, "w+");
    CHECK(saved >= 0 && fp && dup2(fileno(fp), 2) >= 0);
    H5close();
    fflush(stderr);
    CHECK(dup2(saved, 2) >= 0);
    close(saved);
    char text[4096] = "";
    rewind(fp);
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    CHECK_MSG(n == 0, "HDF5 printed at shutdown: %s", text);
}

/* --data-offset FILE (for tests/test_checkpoint_integrity.sh): prints the
 * byte offset of a float in the middle of the file's largest dataset. */
typedef struct {
    haddr_t off;
    hsize_t len;
} Largest;

static herr_t visit_dataset(hid_t fid, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    Largest *best = data;
    hid_t obj = H5Oopen(fid, name, H5P_DEFAULT);
    if (obj >= 0 && H5Iget_type(obj) == H5I_DATASET) {
        hsize_t len = H5Dget_storage_size(obj);
        if (len > best->len) {
            best->len = len;
            best->off = H5Dget_offset(obj);
        }
    }
    if (obj >= 0) H5Oclose(obj);
    return 0;
}

static int print_data_offset(const char *path) {
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK_MSG(fid >= 0, "cannot open %s", path);
    Largest best = {HADDR_UNDEF, 0};
    CHECK(H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_INC, visit_dataset, &best) >= 0);
    CHECK(best.len >= 8 && best.off != HADDR_UNDEF);
    H5Fclose(fid);
    printf("%llu\n", (unsigned long long)(best.off + best.len / 8 * 4 + 2));
    return 0;
}

static void test_find_verified(const char *root) {
    Fixture f;
    setup(&f, root, "find");
    char err[4096], older[2100];
    int64_t found = -1;
    CHECK_MSG(checkpoint_verify_full(f.save, ITER, err, sizeof err), "%s", err);
    snprintf(older, sizeof older, "%s/iter_%07d", f.save, ITER - 2);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && sed -i 's/\"iteration\":[[:space:]]*%d,/\"iteration\": %d,/' "
             "'%s/metadata.json'", f.dir, older, ITER, ITER - 2, older);
    CHECK(system(cmd) == 0);
    /* The copy's metadata changed, so its checksum must now fail. */
    CHECK(!checkpoint_verify_full(f.save, ITER - 2, err, sizeof err) && strstr(err, "CRC32C"));
    CHECK(checkpoint_find_verified(f.save, ITER, &found, err, sizeof err) && found == ITER);
    flip_byte(f.rank_path[1], (long)f.ranges[f.num_ranges - 1].off + 5, 0x40);
    CHECK(!checkpoint_find_verified(f.save, ITER, &found, err, sizeof err));
    CHECK_MSG(strstr(err, f.rank_path[1]), "the newest candidate's failure: %s", err);
    teardown(&f);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--data-offset") == 0) return print_data_offset(argv[2]);
    char root[] = "/tmp/gpt3d_test_integrity_XXXXXX";
    CHECK(mkdtemp(root));
    test_partial_read(root);
    test_missing_checksums_and_version_1(root);
    test_find_verified(root);
    test_random_mutations(root);
    check_quiet_shutdown(root);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
    printf("test_checkpoint_integrity: OK\n");
    return 0;
}
