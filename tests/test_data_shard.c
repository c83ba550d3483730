/* Token shards: writer/reader round trip on the uint16 and uint32 paths,
 * publication by rename, abort, and the reader's rejection of malformed files
 * (written here with the HDF5 API directly, including an h5py-style file with
 * variable-length string attributes that must be accepted). */
#include <dirent.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"

static char dir[256];

static char *path_in_dir(const char *name) {
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int files_in_dir(void) {
    DIR *d = opendir(dir);
    CHECK(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void remove_dir_files(void) {
    DIR *d = opendir(dir);
    CHECK(d);
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(path_in_dir(e->d_name));
    closedir(d);
}

/* Document d of a round-trip corpus: lengths cycle through 0..6 (so empty
 * documents occur), with one document longer than the writer's 1M-token
 * stage; ids are a function of (d, i) spread over the vocabulary. */
static size_t doc_length(int d) { return d == 5 ? ((size_t)1 << 20) + 12345 : (size_t)(d % 7); }
static int32_t doc_token(int d, size_t i, int64_t vocab) {
    return (int32_t)(((uint64_t)d * 7919u + i * 104729u) % (uint64_t)vocab);
}

static void round_trip(int64_t vocab, int num_docs) {
    char err[1024] = "";
    const char *path = path_in_dir("rt.h5");
    TokenShardWriter *w = token_shard_writer_create(path, "TestTokenizer", vocab, vocab - 1, err,
                                                    sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t *buf = malloc(doc_length(5) * sizeof *buf);
    uint64_t total = 0;
    for (int d = 0; d < num_docs; d++) {
        for (size_t i = 0; i < doc_length(d); i++) buf[i] = doc_token(d, i, vocab);
        CHECK_MSG(token_shard_writer_add_document(w, buf, doc_length(d), err, sizeof err), "%s",
                  err);
        total += doc_length(d);
    }
    CHECK(token_shard_writer_num_documents(w) == (uint64_t)num_docs);
    CHECK(token_shard_writer_num_tokens(w) == total);
    CHECK(access(path, F_OK) != 0); /* not published before finish */
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
    CHECK(files_in_dir() == 1); /* the temporary file was renamed */

    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    CHECK(strcmp(token_shard_tokenizer_type(s), "TestTokenizer") == 0);
    CHECK(token_shard_vocab_size(s) == vocab);
    CHECK(token_shard_eod_token(s) == vocab - 1);
    CHECK(token_shard_num_documents(s) == num_docs);
    CHECK(token_shard_num_tokens(s) == (int64_t)total);
    const uint64_t *off = token_shard_document_offsets(s);
    uint64_t expect = 0;
    for (int d = 0; d < num_docs; d++) {
        CHECK(off[d] == expect);
        expect += doc_length(d);
    }
    CHECK(off[num_docs] == total);
    for (int d = 0; d < num_docs; d++) {
        size_t n = doc_length(d);
        if (n == 0) continue;
        for (size_t i = 0; i < n; i++) buf[i] = -1;
        CHECK_MSG(token_shard_read(s, off[d], n, buf, err, sizeof err), "%s", err);
        for (size_t i = 0; i < n; i++) CHECK(buf[i] == doc_token(d, i, vocab));
    }
    /* A read spanning documents, then reads past the end. */
    CHECK(off[5] - off[1] == 10);
    CHECK(token_shard_read(s, off[1], 10, buf, err, sizeof err));
    CHECK(buf[0] == doc_token(1, 0, vocab) && buf[1] == doc_token(2, 0, vocab) &&
          buf[9] == doc_token(4, 3, vocab));
    CHECK(token_shard_read(s, total, 0, buf, err, sizeof err));
    CHECK(!token_shard_read(s, total - 1, 2, buf, err, sizeof err));
    CHECK(strstr(err, "rt.h5"));
    token_shard_close(s);

    /* The file's dtype follows the vocabulary size. */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = H5Dopen2(f, "/tokens", H5P_DEFAULT);
    hid_t type = H5Dget_type(dset);
    CHECK(H5Tget_size(type) == (vocab <= 65536 ? 2u : 4u));
    CHECK(H5Tget_sign(type) == H5T_SGN_NONE);
    hid_t dcpl = H5Dget_create_plist(dset);
    CHECK(H5Pget_layout(dcpl) == H5D_CHUNKED);
    CHECK(H5Pget_nfilters(dcpl) == 0);
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Dclose(dset);
    H5Fclose(f);
    free(buf);
    remove_dir_files();
}

static void writer_abort_and_bad_ids(void) {
    char err[1024] = "";
    const char *path = path_in_dir("aborted.h5");
    TokenShardWriter *w = token_shard_writer_create(path, "ByteTokenizer", 257, 256, err,
                                                    sizeof err);
    CHECK_MSG(w, "%s", err);
    int32_t good[3] = {1, 2, 256}, bad[2] = {5, 257};
    CHECK(token_shard_writer_add_document(w, good, 3, err, sizeof err));
    CHECK(!token_shard_writer_add_document(w, bad, 2, err, sizeof err));
    CHECK(strstr(err, "257"));
    CHECK(files_in_dir() == 1); /* only the temporary file */
    token_shard_writer_abort(w);
    CHECK(files_in_dir() == 0);
    CHECK(!token_shard_writer_create("/nonexistent-dir/x.h5", "ByteTokenizer", 257, 256, err,
                                     sizeof err));
    CHECK(strstr(err, "/nonexistent-dir/x.h5"));
}

/* ------------------------------------------------------- hand-made shards */

typedef struct {
    const char *format;
    bool vlen_strings; /* h5py style */
    bool omit_eod;
    hid_t int_attr_type;
    int64_t vocab;
    hid_t tokens_type;
    hid_t offsets_type;
    uint64_t offsets[4];
    int num_offsets;
    int num_tokens;
    int64_t max_token_id; /* root attribute; -1 leaves it out */
    int64_t fifth_token;  /* replaces token 4 (255) when > 0 */
} HandMade;

static HandMade valid_hand_made(void) {
    HandMade h = {"gpt3d-tokens", false, false, H5T_STD_I64LE, 257, H5T_STD_U16LE,
                  H5T_STD_U64LE, {0, 2, 2, 5}, 4, 5, -1, 0};
    return h;
}

static void put_string_attr(hid_t file, const char *name, const char *value, bool vlen) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (vlen) {
        H5Tset_size(type, H5T_VARIABLE);
        H5Tset_cset(type, H5T_CSET_UTF8);
    } else {
        H5Tset_size(type, strlen(value));
        H5Tset_strpad(type, H5T_STR_NULLPAD);
    }
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(H5Awrite(a, type, vlen ? (const void *)&value : (const void *)value) >= 0);
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
}

static void put_int_attr(hid_t file, const char *name, hid_t type, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(H5Awrite(a, H5T_NATIVE_INT64, &value) >= 0);
    H5Aclose(a);
    H5Sclose(space);
}

static void put_vector(hid_t file, const char *name, hid_t type, hid_t mem_type, const void *data,
                       hsize_t n) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(space);
}

static void write_hand_made(const char *path, const HandMade *h) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    put_string_attr(f, "format", h->format, h->vlen_strings);
    put_int_attr(f, "format_version", h->int_attr_type, 1);
    put_string_attr(f, "tokenizer_type", "ByteTokenizer", h->vlen_strings);
    put_int_attr(f, "vocab_size", h->int_attr_type, h->vocab);
    if (!h->omit_eod) put_int_attr(f, "eod_token", h->int_attr_type, 256);
    if (h->max_token_id >= 0) put_int_attr(f, "max_token_id", h->int_attr_type, h->max_token_id);
    int64_t tokens[8] = {104, 105, 256, 0, 255, 7, 7, 7};
    if (h->fifth_token > 0) tokens[4] = h->fifth_token;
    put_vector(f, "tokens", h->tokens_type, H5T_NATIVE_INT64, tokens, (hsize_t)h->num_tokens);
    put_vector(f, "document_offsets", h->offsets_type, H5T_NATIVE_UINT64, h->offsets,
               (hsize_t)h->num_offsets);
    H5Fclose(f);
}

/* Writes the variant, expects the reader to refuse it with a message that
 * names the file and contains `phrase`. */
static void expect_rejected(const HandMade *h, const char *phrase) {
    const char *path = path_in_dir("bad.h5");
    write_hand_made(path, h);
    char err[1024] = "";
    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK_MSG(!s, "accepted a shard that should fail with '%s'", phrase);
    CHECK_MSG(strstr(err, path) && strstr(err, phrase), "message '%s' lacks '%s'", err, phrase);
    unlink(path);
}

static void reader_accepts_h5py_style(void) {
    HandMade h = valid_hand_made();
    h.vlen_strings = true;
    h.int_attr_type = H5T_STD_I32LE;
    const char *path = path_in_dir("h5py.h5");
    write_hand_made(path, &h);
    char err[1024] = "";
    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    CHECK(strcmp(token_shard_tokenizer_type(s), "ByteTokenizer") == 0);
    CHECK(token_shard_num_documents(s) == 3 && token_shard_num_tokens(s) == 5);
    int32_t got[5];
    CHECK_MSG(token_shard_read(s, 0, 5, got, err, sizeof err), "%s", err);
    int32_t want[5] = {104, 105, 256, 0, 255};
    CHECK(memcmp(got, want, sizeof want) == 0);
    token_shard_close(s);
    unlink(path);
    h = valid_hand_made(); /* fixed-length, NUL-padded strings */
    write_hand_made(path, &h);
    s = token_shard_open(path, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    token_shard_close(s);
    unlink(path);
}

static void reader_rejects_malformed(void) {
    char err[1024] = "";
    const char *missing = path_in_dir("missing.h5");
    CHECK(!token_shard_open(missing, err, sizeof err));
    CHECK(strstr(err, missing) && strstr(err, "No such file"));

    const char *text = path_in_dir("text.h5");
    FILE *f = fopen(text, "w");
    fputs("not hdf5\n", f);
    fclose(f);
    CHECK(!token_shard_open(text, err, sizeof err));
    CHECK(strstr(err, text) && strstr(err, "not a readable HDF5 file"));
    unlink(text);

    HandMade h = valid_hand_made();
    h.format = "megatron-mmap";
    expect_rejected(&h, "format is 'megatron-mmap'");
    h = valid_hand_made();
    h.omit_eod = true;
    expect_rejected(&h, "'eod_token' is missing");
    h = valid_hand_made();
    h.offsets[3] = 4;
    expect_rejected(&h, "ends at 4 but /tokens holds 5");
    h = valid_hand_made();
    h.offsets[2] = 1;
    expect_rejected(&h, "decreases at document 1");
    h = valid_hand_made();
    h.offsets[0] = 1;
    expect_rejected(&h, "must start at 0");
    h = valid_hand_made();
    h.tokens_type = H5T_STD_I32LE;
    expect_rejected(&h, "/tokens must be uint16");
    h = valid_hand_made();
    h.tokens_type = H5T_STD_U32LE; /* too wide for vocab 257 */
    expect_rejected(&h, "/tokens must be uint16");
    h = valid_hand_made();
    h.vocab = 70000; /* needs uint32 */
    expect_rejected(&h, "/tokens must be uint32");
    h = valid_hand_made();
    h.offsets_type = H5T_STD_I64LE;
    expect_rejected(&h, "/document_offsets must be uint64");
    h = valid_hand_made();
    h.num_offsets = 0;
    h.num_tokens = 0;
    expect_rejected(&h, "/document_offsets is empty");
}

/* Opens a one-shard dataset of `path`; NULL with err on refusal. */
static GPTDataset *open_split(const char *path, const char *cache, TokenIdScans *scans,
                              const char *split, SplitKind which, char *err, size_t err_size) {
    const char *paths[1] = {path};
    GPTDatasetConfig cfg = {.paths = paths, .num_paths = 1, .split = split, .seq_length = 2,
                            .seed = 1, .cache_dir = cache, .scans = scans};
    return gpt_dataset_create(&cfg, which, err, err_size);
}

static GPTDataset *open_one(const char *path, const char *cache, char *err, size_t err_size) {
    return open_split(path, cache, NULL, "1,0,0", SPLIT_TRAIN, err, err_size);
}

/* Without --data-cache-path, the datasets of one run (its splits, blend
 * components) share a TokenIdScans: the first to open a shard without
 * max_token_id scans it, the next does not; a rewritten file is scanned
 * again. (The hand-made shard is too short to split, so both open train.) */
static void token_ids_scanned_once_per_process(void) {
    char err[1024] = "";
    const char *path = path_in_dir("ids_once.h5");
    HandMade h = valid_hand_made();
    write_hand_made(path, &h);
    TokenIdScans *scans = token_id_scans_new();
    for (int open = 0; open < 2; open++) {
        GPTDataset *ds = open_split(path, NULL, scans, "1,0,0", SPLIT_TRAIN, err, sizeof err);
        CHECK_MSG(ds, "%s", err);
        CHECK(gpt_dataset_index_stats(ds).shards_scanned == (open == 0 ? 1 : 0));
        gpt_dataset_free(ds);
    }
    h.fifth_token = 4000;
    write_hand_made(path, &h);
    CHECK(!open_split(path, NULL, scans, "1,0,0", SPLIT_TRAIN, err, sizeof err));
    CHECK_MSG(strstr(err, "token id 4000"), "%s", err);
    token_id_scans_free(scans);
    unlink(path);
}

/* Token ids are checked against the vocabulary when a dataset opens a
 * shard: from the writer's max_token_id attribute, else by one scan whose
 * result --data-cache-path keeps. */
static void token_ids_checked_at_open(void) {
    char err[1024] = "";
    const char *path = path_in_dir("ids.h5");
    /* The writer records the largest id, and it is the true one. */
    TokenShardWriter *w = token_shard_writer_create(path, "ByteTokenizer", 257, 256, err, sizeof err);
    CHECK_MSG(w, "%s", err);
    const int32_t doc[4] = {3, 250, 17, 256};
    CHECK(token_shard_writer_add_document(w, doc, 4, err, sizeof err));
    CHECK_MSG(token_shard_writer_finish(w, err, sizeof err), "%s", err);
    TokenShard *s = token_shard_open(path, err, sizeof err);
    CHECK_MSG(s, "%s", err);
    int64_t scanned_max = -2;
    CHECK(token_shard_scan_max_token_id(s, &scanned_max, err, sizeof err) && scanned_max == 256);
    CHECK(token_shard_stored_max_token_id(s) == 256);
    token_shard_close(s);
    GPTDataset *ds = open_one(path, NULL, err, sizeof err);
    CHECK_MSG(ds && gpt_dataset_index_stats(ds).shards_scanned == 0, "%s", err);
    gpt_dataset_free(ds);
    unlink(path);

    /* Without the attribute: scanned, an id outside the vocabulary refused. */
    HandMade h = valid_hand_made();
    h.fifth_token = 4000;
    write_hand_made(path, &h);
    CHECK(!open_one(path, NULL, err, sizeof err));
    CHECK_MSG(strstr(err, path) && strstr(err, "token id 4000, outside its vocabulary [0, 257)"),
              "%s", err);
    /* A lying attribute is refused too, and named as the source. */
    h = valid_hand_made();
    h.max_token_id = 300;
    write_hand_made(path, &h);
    CHECK(!open_one(path, NULL, err, sizeof err));
    CHECK_MSG(strstr(err, "token id 300") && strstr(err, "max_token_id attribute"), "%s", err);

    /* A clean shard without the attribute: scanned once, then cached. */
    const char *cache = path_in_dir("cache");
    h = valid_hand_made();
    write_hand_made(path, &h);
    for (int run = 0; run < 2; run++) {
        ds = open_one(path, cache, err, sizeof err);
        CHECK_MSG(ds, "%s", err);
        CHECK(gpt_dataset_index_stats(ds).shards_scanned == (run == 0 ? 1 : 0));
        gpt_dataset_free(ds);
    }
    /* Rewritten with a bad id: another key, so scanned again and refused. */
    h.fifth_token = 4000;
    write_hand_made(path, &h);
    CHECK(!open_one(path, cache, err, sizeof err) && strstr(err, "token id 4000"));
    unlink(path);
    test_remove_dir(cache);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/test_data_shard.XXXXXX", tmp);
    CHECK(mkdtemp(dir));
    round_trip(257, 40000);    /* uint16; > one offsets stage of documents */
    round_trip(100000, 300);   /* uint32 */
    writer_abort_and_bad_ids();
    reader_accepts_h5py_style();
    reader_rejects_malformed();
    token_ids_checked_at_open();
    token_ids_scanned_once_per_process();
    CHECK(files_in_dir() == 0);
    rmdir(dir);
    printf("test_data_shard: ok\n");
    return 0;
}
