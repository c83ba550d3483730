/* tests/test_checkpoint.c — checkpoint save/publish/load, in one process.
 *
 * A fake model of three parameters is cut into intervals owned by several
 * "ranks" (each write_rank call is one rank), published, and read back at
 * ranges that cross rank boundaries. Every stored value is a formula of
 * (generation, parameter, tensor, element), exactly representable in fp32,
 * so the expected data never comes from the code under test. */
#include "checkpoint/checkpoint.h"
#include "test_checkpoint_meta.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            return 1;                                                                \
        }                                                                            \
    } while (0)

/* As CHECK, and prints the module's message. */
#define CHECK_OK(call, err)                                                                   \
    do {                                                                                      \
        if (!(call)) {                                                                        \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, err);        \
            return 1;                                                                         \
        }                                                                                     \
    } while (0)

/* The call must fail with a message containing `needle`. */
#define CHECK_FAILS_WITH(call, err, needle)                                                   \
    do {                                                                                      \
        (err)[0] = '\0';                                                                      \
        if (call) {                                                                           \
            fprintf(stderr, "%s:%d: %s succeeded, expected failure\n", __FILE__, __LINE__,    \
                    #call);                                                                   \
            return 1;                                                                         \
        }                                                                                     \
        if (!strstr(err, needle)) {                                                           \
            fprintf(stderr, "%s:%d: message of %s lacks '%s': %s\n", __FILE__, __LINE__,      \
                    #call, needle, err);                                                      \
            return 1;                                                                         \
        }                                                                                     \
    } while (0)

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[CHECKPOINT_MAX_DIMS];
} FakeParam;

enum { P_FC1, P_LNF, P_QKV, NUM_FAKE };
static const FakeParam FAKE[NUM_FAKE] = {
    {"decoder.layers.0.mlp.linear_fc1.weight", 2, {8, 4}},
    {"decoder.final_layernorm.bias", 1, {12}},
    {"decoder.layers.0.self_attention.linear_qkv.bias", 3, {3, 2, 4}},
};

static int64_t fake_numel(int p) {
    int64_t n = 1;
    for (int d = 0; d < FAKE[p].ndim; d++) n *= FAKE[p].shape[d];
    return n;
}

static float value(int gen, int p, int tensor, int64_t i) {
    return (float)(gen * 100000 + p * 1000 + i) + 0.25f * (float)tensor + 0.125f;
}

typedef struct {
    int param, rank;
    int64_t begin, end;
} Piece;

/* rank 0: fc1[0,13) lnf[0,12); rank 1: fc1[13,32) qkv[0,7); rank 2: qkv[7,24) */
static const Piece GOOD_PLAN[] = {
    {P_FC1, 0, 0, 13}, {P_LNF, 0, 0, 12}, {P_FC1, 1, 13, 32}, {P_QKV, 1, 0, 7}, {P_QKV, 2, 7, 24},
};
#define NPIECES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static CheckpointMeta make_meta(int64_t iteration, int world) {
    return test_checkpoint_meta(iteration, world);
}

/* Writes the pieces of one rank, with data of generation gen. */
static bool write_rank_pieces(const char *save, int64_t iteration, int rank, const Piece *plan,
                              int n, int gen, bool moments, char *err, size_t err_size) {
    CheckpointInterval iv[8];
    float *bufs[8][3];
    memset(iv, 0, sizeof iv);
    int count = 0;
    for (int k = 0; k < n; k++) {
        if (plan[k].rank != rank || count == 8) continue;
        const Piece *pc = &plan[k];
        CheckpointInterval *c = &iv[count];
        c->name = FAKE[pc->param].name;
        c->ndim = FAKE[pc->param].ndim;
        memcpy(c->shape, FAKE[pc->param].shape, sizeof c->shape);
        c->begin = pc->begin;
        c->end = pc->end;
        for (int t = 0; t < 3; t++) {
            bufs[count][t] = malloc((size_t)(pc->end - pc->begin + 1) * sizeof(float));
            for (int64_t i = pc->begin; i < pc->end; i++)
                bufs[count][t][i - pc->begin] = value(gen, pc->param, t, i);
        }
        c->weight = bufs[count][0];
        c->exp_avg = moments ? bufs[count][1] : NULL;
        c->exp_avg_sq = moments ? bufs[count][2] : NULL;
        count++;
    }
    bool ok = checkpoint_write_rank(save, iteration, rank, iv, count, err, err_size);
    for (int k = 0; k < count; k++)
        for (int t = 0; t < 3; t++) free(bufs[k][t]);
    return ok;
}

/* A whole save: begin, every rank, metadata, publish. */
static bool save_plan(const char *save, int64_t iteration, const Piece *plan, int n, int world,
                      int gen, bool moments, char *err, size_t err_size) {
    if (!checkpoint_begin_save(save, iteration, err, err_size)) return false;
    for (int r = 0; r < world; r++)
        if (!write_rank_pieces(save, iteration, r, plan, n, gen, moments, err, err_size))
            return false;
    CheckpointMeta meta = make_meta(iteration, world);
    meta.has_optimizer_state = moments;
    return checkpoint_write_meta(save, &meta, err, err_size) &&
           checkpoint_publish(save, iteration, err, err_size);
}

static bool save_good(const char *save, int64_t iteration, int gen, char *err, size_t size) {
    return save_plan(save, iteration, GOOD_PLAN, NPIECES(GOOD_PLAN), 3, gen, true, err, size);
}

static int param_index(const char *name) {
    for (int p = 0; p < NUM_FAKE; p++)
        if (strcmp(FAKE[p].name, name) == 0) return p;
    return -1;
}

/* Reads [b, e) of tensor t of parameter p and compares with the formula. */
static int check_range(CheckpointReader *r, int gen, int p, int t, int64_t b, int64_t e) {
    char err[1024];
    float out[64];
    CHECK(e - b <= 64);
    CHECK_OK(checkpoint_read(r, FAKE[p].name, (CheckpointTensor)t, b, e, out, err, sizeof err),
             err);
    for (int64_t i = b; i < e; i++)
        if (out[i - b] != value(gen, p, t, i)) {
            fprintf(stderr, "param %d tensor %d [%" PRId64 ", %" PRId64 "): element %" PRId64
                            " is %g, expected %g\n",
                    p, t, b, e, i, (double)out[i - b], (double)value(gen, p, t, i));
            return 1;
        }
    return 0;
}

/* Every tensor of every parameter, whole. */
static int check_all_data(const char *save, int64_t iteration, int gen) {
    char err[1024];
    CheckpointReader *r = checkpoint_open(save, iteration, err, sizeof err);
    CHECK_OK(r != NULL, err);
    for (int p = 0; p < NUM_FAKE; p++)
        for (int t = 0; t < 3; t++)
            if (check_range(r, gen, p, t, 0, fake_numel(p))) return 1;
    checkpoint_close(r);
    return 0;
}

static void join(char *out, size_t size, const char *a, const char *b) {
    int n = snprintf(out, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "test path too long: %s/%s\n", a, b);
        exit(1);
    }
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0700);
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[4096];
            join(child, sizeof child, path, e->d_name);
            remove_tree(child);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* ------------------------------------------------------------------------ */

static int test_round_trip(const char *root) {
    char save[4096], err[1024], path[4096];
    join(save, sizeof save, root, "round_trip/nested");
    CHECK_OK(save_good(save, 7, 0, err, sizeof err), err);

    join(path, sizeof path, save, "iter_0000007/rank_00002.h5");
    CHECK(exists(path));
    join(path, sizeof path, save, "iter_0000007/metadata.json");
    CHECK(exists(path));
    join(path, sizeof path, save, "iter_0000007.tmp");
    CHECK(!exists(path));
    join(path, sizeof path, save, "latest_checkpointed_iteration.txt");
    char text[32] = {0};
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    CHECK(fread(text, 1, sizeof text - 1, f) == 1);
    fclose(f);
    CHECK(strcmp(text, "7") == 0); /* Megatron's format */

    int64_t latest = -1;
    CHECK_OK(checkpoint_find_latest(save, &latest, err, sizeof err), err);
    CHECK(latest == 7);
    char dir[4096];
    checkpoint_iter_dir(dir, sizeof dir, save, 7);
    join(path, sizeof path, save, "iter_0000007");
    CHECK(strcmp(dir, path) == 0);

    CheckpointReader *r = checkpoint_open(save, 7, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK(checkpoint_num_params(r) == NUM_FAKE);
    CHECK(checkpoint_param_name(r, NUM_FAKE) == NULL);
    bool seen[NUM_FAKE] = {false};
    for (int i = 0; i < NUM_FAKE; i++) {
        const char *name = checkpoint_param_name(r, i);
        int p = param_index(name);
        CHECK(p >= 0 && !seen[p]);
        seen[p] = true;
        if (i > 0) CHECK(strcmp(checkpoint_param_name(r, i - 1), name) < 0); /* sorted */
        int ndim = 0;
        int64_t shape[CHECKPOINT_MAX_DIMS];
        CHECK(checkpoint_param_shape(r, name, &ndim, shape));
        CHECK(ndim == FAKE[p].ndim);
        for (int d = 0; d < ndim; d++) CHECK(shape[d] == FAKE[p].shape[d]);
    }
    int ndim;
    int64_t shape[CHECKPOINT_MAX_DIMS];
    CHECK(!checkpoint_param_shape(r, "decoder.no_such.weight", &ndim, shape));
    CHECK_OK(checkpoint_verify_coverage(r, err, sizeof err), err);

    /* Every sub-range of the parameter split between ranks 0 and 1 at 13,
     * and of the one split between ranks 1 and 2 at 7, for all tensors. */
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < NUM_FAKE; p++)
            for (int64_t b = 0; b <= fake_numel(p); b++)
                for (int64_t e = b; e <= fake_numel(p); e++)
                    if (check_range(r, 0, p, t, b, e)) return 1;

    float out[4];
    CHECK_FAILS_WITH(checkpoint_read(r, FAKE[P_LNF].name, CKPT_WEIGHT, 10, 13, out, err,
                                     sizeof err),
                     err, FAKE[P_LNF].name);
    CHECK_FAILS_WITH(checkpoint_read(r, "missing.weight", CKPT_WEIGHT, 0, 1, out, err, sizeof err),
                     err, "missing.weight");
    checkpoint_close(r);
    return 0;
}

static int test_meta_round_trip(const char *root) {
    char save[4096], err[1024];
    join(save, sizeof save, root, "meta");
    CheckpointMeta m = make_meta(3, 8);
    m.consumed_train_samples = INT64_C(5000000000123); /* > 2^32 */
    m.optimizer_step = (INT64_C(1) << 32) + 5;
    m.scheduler_num_steps = INT64_C(1) << 53; /* the largest exact value */
    m.loss_scale = 0.1 * 3.0;                 /* not a short decimal */
    m.model.num_layers = 96;
    m.model.hidden_size = 12288;
    m.model.num_attention_heads = 96;
    m.model.ffn_hidden_size = 49152;
    m.model.vocab_size = 50257;
    m.model.padded_vocab_size = 50304;
    m.model.max_position_embeddings = 2048;
    m.model.seq_length = 1024;
    transformer_config_set_gpt2_variant(&m.model);
    m.tensor_model_parallel_size = 2;
    m.pipeline_model_parallel_size = 2;
    m.data_parallel_size = 2;
    m.world_size = 8;
    m.context_parallel_size = 1;
    m.model.seed = (UINT64_C(1) << 40) + 3;
    m.has_optimizer_state = false;
    snprintf(m.data_description, sizeof m.data_description,
             "0.7 \"web\\*.h5\" 0.3 b\u00fccher.h5\n--split 969,30,1\t");
    snprintf(m.tokenizer_type, sizeof m.tokenizer_type, "GPT2BPETokenizer");

    CHECK_OK(checkpoint_begin_save(save, 3, err, sizeof err), err);
    CHECK_OK(checkpoint_write_meta(save, &m, err, sizeof err), err);
    for (int r = 0; r < 8; r++)
        CHECK_OK(checkpoint_write_rank(save, 3, r, NULL, 0, err, sizeof err), err);
    CHECK_OK(checkpoint_publish(save, 3, err, sizeof err), err);
    CheckpointReader *r = checkpoint_open(save, 3, err, sizeof err);
    CHECK_OK(r != NULL, err);
    const CheckpointMeta *g = checkpoint_meta(r);
    CHECK(g->iteration == 3);
    CHECK(g->consumed_train_samples == m.consumed_train_samples);
    CHECK(g->optimizer_step == m.optimizer_step);
    CHECK(g->scheduler_num_steps == m.scheduler_num_steps);
    CHECK(memcmp(&g->loss_scale, &m.loss_scale, sizeof(double)) == 0);
    CHECK(g->model.num_layers == 96 && g->model.hidden_size == 12288 && g->model.num_attention_heads == 96);
    CHECK(g->model.ffn_hidden_size == 49152 && g->model.vocab_size == 50257 && g->model.padded_vocab_size == 50304);
    CHECK(g->model.max_position_embeddings == 2048 && g->model.seq_length == 1024);
    CHECK(g->tensor_model_parallel_size == 2 && g->pipeline_model_parallel_size == 2);
    CHECK(g->data_parallel_size == 2 && g->world_size == 8);
    CHECK(g->model.seed == m.model.seed);
    CHECK(g->has_optimizer_state == false);
    CHECK(strcmp(g->data_description, m.data_description) == 0);
    CHECK(strcmp(g->tokenizer_type, "GPT2BPETokenizer") == 0);
    CHECK(checkpoint_num_params(r) == 0);
    CHECK_OK(checkpoint_verify_coverage(r, err, sizeof err), err);
    checkpoint_close(r);

    /* Values JSON cannot hold exactly, and inconsistent layouts, are refused. */
    CHECK_OK(checkpoint_begin_save(save, 4, err, sizeof err), err);
    CheckpointMeta bad = make_meta(4, 1);
    bad.model.seed = (UINT64_C(1) << 53) + 1;
    CHECK_FAILS_WITH(checkpoint_write_meta(save, &bad, err, sizeof err), err, "seed");
    bad = make_meta(4, 1);
    bad.consumed_train_samples = INT64_MAX;
    CHECK_FAILS_WITH(checkpoint_write_meta(save, &bad, err, sizeof err), err,
                     "consumed_train_samples");
    bad = make_meta(4, 4);
    bad.data_parallel_size = 2;
    CHECK_FAILS_WITH(checkpoint_write_meta(save, &bad, err, sizeof err), err, "world_size");
    bad = make_meta(5, 1); /* no begin_save for iteration 5 */
    CHECK_FAILS_WITH(checkpoint_write_meta(save, &bad, err, sizeof err), err, "iter_0000005.tmp");
    return 0;
}

static int test_bad_metadata_file(const char *root) {
    char save[4096], err[1024], path[4096];
    join(save, sizeof save, root, "badmeta");
    CHECK_OK(save_good(save, 1, 0, err, sizeof err), err);
    join(path, sizeof path, save, "iter_0000001/metadata.json");
    write_text(path, "{\"format\": \"gpt3d-checkpoint\", \"format_version\": 1,");
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err, path);
    char newer[128]; /* a version after this build's */
    snprintf(newer, sizeof newer, "{\"format\": \"gpt3d-checkpoint\", \"format_version\": %d}",
             CHECKPOINT_FORMAT_VERSION + 1);
    write_text(path, newer);
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err, "format_version");
    write_text(path, "{\"format\": \"gpt3d-checkpoint\", \"format_version\": 1, \"iteration\": 1}");
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err,
                     "consumed_train_samples");
    return 0;
}

static int test_coverage_errors(const char *root) {
    char save[4096], err[1024];
    float out[32];
    /* lnf [5,7) held by nobody */
    const Piece gap[] = {{P_FC1, 0, 0, 32}, {P_LNF, 0, 0, 5}, {P_LNF, 1, 7, 12}, {P_QKV, 1, 0, 24}};
    join(save, sizeof save, root, "gap");
    CHECK_OK(save_plan(save, 2, gap, NPIECES(gap), 2, 0, true, err, sizeof err), err);
    CheckpointReader *r = checkpoint_open(save, 2, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK_FAILS_WITH(checkpoint_verify_coverage(r, err, sizeof err), err, FAKE[P_LNF].name);
    CHECK(strstr(err, "[5, 7)") != NULL);
    CHECK_FAILS_WITH(checkpoint_read(r, FAKE[P_LNF].name, CKPT_WEIGHT, 3, 9, out, err, sizeof err),
                     err, "[5, 7)");
    if (check_range(r, 0, P_LNF, CKPT_EXP_AVG, 0, 5)) return 1;
    if (check_range(r, 0, P_LNF, CKPT_WEIGHT, 7, 12)) return 1;
    checkpoint_close(r);

    /* fc1 [10,14) held by both ranks */
    const Piece overlap[] = {{P_FC1, 0, 0, 14}, {P_LNF, 0, 0, 12}, {P_FC1, 1, 10, 32}, {P_QKV, 1, 0, 24}};
    join(save, sizeof save, root, "overlap");
    CHECK_OK(save_plan(save, 2, overlap, NPIECES(overlap), 2, 0, true, err, sizeof err), err);
    r = checkpoint_open(save, 2, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK_FAILS_WITH(checkpoint_verify_coverage(r, err, sizeof err), err, "overlap");
    CHECK(strstr(err, FAKE[P_FC1].name) && strstr(err, "rank_00001.h5"));
    checkpoint_close(r);

    /* fc1 ends short of its 32 elements */
    const Piece tail[] = {{P_FC1, 0, 0, 31}, {P_LNF, 0, 0, 12}, {P_QKV, 0, 0, 24}};
    join(save, sizeof save, root, "tail");
    CHECK_OK(save_plan(save, 2, tail, NPIECES(tail), 1, 0, true, err, sizeof err), err);
    r = checkpoint_open(save, 2, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK_FAILS_WITH(checkpoint_verify_coverage(r, err, sizeof err), err, "[31, 32)");
    checkpoint_close(r);
    return 0;
}

static int test_no_moments(const char *root) {
    char save[4096], err[1024];
    float out[32];
    join(save, sizeof save, root, "nomoments");
    CHECK_OK(save_plan(save, 4, GOOD_PLAN, NPIECES(GOOD_PLAN), 3, 0, false, err, sizeof err), err);
    CheckpointReader *r = checkpoint_open(save, 4, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK(!checkpoint_meta(r)->has_optimizer_state);
    if (check_range(r, 0, P_FC1, CKPT_WEIGHT, 0, 32)) return 1;
    CHECK_FAILS_WITH(checkpoint_read(r, FAKE[P_FC1].name, CKPT_EXP_AVG, 5, 20, out, err, sizeof err),
                     err, "exp_avg");
    CHECK(strstr(err, FAKE[P_FC1].name) != NULL);
    CHECK_FAILS_WITH(checkpoint_read(r, FAKE[P_QKV].name, CKPT_EXP_AVG_SQ, 0, 1, out, err, sizeof err),
                     err, "exp_avg_sq");
    checkpoint_close(r);
    return 0;
}

static int test_find_latest(const char *root) {
    char save[4096], err[1024], path[4096];
    int64_t it = -1;
    join(save, sizeof save, root, "latest");
    mkdir(save, 0700);
    strcpy(err, "junk");
    CHECK(!checkpoint_find_latest(save, &it, err, sizeof err));
    CHECK(err[0] == '\0');
    join(path, sizeof path, root, "no_such_dir");
    strcpy(err, "junk");
    CHECK(!checkpoint_find_latest(path, &it, err, sizeof err));
    CHECK(err[0] == '\0');

    join(path, sizeof path, save, "latest_checkpointed_iteration.txt");
    const char *garbage[] = {"abc", "", "12x", "-3", "release", "1 2", "99999999999999999999"};
    for (int i = 0; i < NPIECES(garbage); i++) {
        write_text(path, garbage[i]);
        CHECK_FAILS_WITH(checkpoint_find_latest(save, &it, err, sizeof err), err, path);
    }
    write_text(path, "99\n");
    CHECK_FAILS_WITH(checkpoint_find_latest(save, &it, err, sizeof err), err, "iter_0000099");
    CHECK_FAILS_WITH(checkpoint_open(save, 99, err, sizeof err) != NULL, err, "iter_0000099");
    return 0;
}

static int test_resave_same_iteration(const char *root) {
    char save[4096], err[1024], path[4096];
    join(save, sizeof save, root, "resave");
    CHECK_OK(save_good(save, 5, 0, err, sizeof err), err);
    if (check_all_data(save, 5, 0)) return 1;
    CHECK_OK(save_good(save, 5, 1, err, sizeof err), err);
    if (check_all_data(save, 5, 1)) return 1;
    join(path, sizeof path, save, "iter_0000005.old");
    CHECK(!exists(path));
    join(path, sizeof path, save, "iter_0000005.tmp");
    CHECK(!exists(path));
    int64_t it = -1;
    CHECK_OK(checkpoint_find_latest(save, &it, err, sizeof err), err);
    CHECK(it == 5);
    return 0;
}

static int test_crash_before_publish(const char *root) {
    char save[4096], err[1024];
    join(save, sizeof save, root, "crash");
    CHECK_OK(save_good(save, 10, 0, err, sizeof err), err);
    /* A later save dies after writing some ranks. */
    CHECK_OK(checkpoint_begin_save(save, 20, err, sizeof err), err);
    CHECK_OK(write_rank_pieces(save, 20, 0, GOOD_PLAN, NPIECES(GOOD_PLAN), 1, true, err,
                               sizeof err),
             err);
    /* A re-save of the published iteration dies too. */
    CHECK_OK(checkpoint_begin_save(save, 10, err, sizeof err), err);
    CHECK_OK(write_rank_pieces(save, 10, 1, GOOD_PLAN, NPIECES(GOOD_PLAN), 2, true, err,
                               sizeof err),
             err);
    int64_t it = -1;
    CHECK_OK(checkpoint_find_latest(save, &it, err, sizeof err), err);
    CHECK(it == 10);
    if (check_all_data(save, 10, 0)) return 1;
    CHECK_FAILS_WITH(checkpoint_open(save, 20, err, sizeof err) != NULL, err, "iter_0000020");

    /* Publishing a save whose rank 1 never wrote is refused. */
    CHECK_OK(checkpoint_begin_save(save, 30, err, sizeof err), err);
    for (int r = 0; r < 3; r += 2)
        CHECK_OK(write_rank_pieces(save, 30, r, GOOD_PLAN, NPIECES(GOOD_PLAN), 0, true, err,
                                   sizeof err),
                 err);
    CheckpointMeta meta = make_meta(30, 3);
    CHECK_OK(checkpoint_write_meta(save, &meta, err, sizeof err), err);
    CHECK_FAILS_WITH(checkpoint_publish(save, 30, err, sizeof err), err, "rank_00001.h5");
    CHECK_OK(checkpoint_find_latest(save, &it, err, sizeof err), err);
    CHECK(it == 10);
    return 0;
}

/* A crash between publish's two renames of a re-save leaves only
 * iter_I.old; readers use it and the next begin_save puts it back. */
static int test_crash_between_renames(const char *root) {
    char save[4096], err[1024], final[4096], aside[4096];
    join(save, sizeof save, root, "aside");
    CHECK_OK(save_good(save, 10, 0, err, sizeof err), err);
    join(final, sizeof final, save, "iter_0000010");
    join(aside, sizeof aside, save, "iter_0000010.old");
    CHECK(rename(final, aside) == 0);
    int64_t it = -1;
    CHECK_OK(checkpoint_find_latest(save, &it, err, sizeof err), err);
    CHECK(it == 10);
    if (check_all_data(save, 10, 0)) return 1;
    CHECK_OK(checkpoint_begin_save(save, 11, err, sizeof err), err);
    CHECK(exists(final) && !exists(aside));
    if (check_all_data(save, 10, 0)) return 1;
    return 0;
}

static int test_stale_tmp_cleaned(const char *root) {
    char save[4096], err[1024], tmp[4096], path[4096];
    join(save, sizeof save, root, "stale");
    join(tmp, sizeof tmp, save, "iter_0000030.tmp");
    mkdir(save, 0700);
    mkdir(tmp, 0700);
    join(path, sizeof path, tmp, "rank_00007.h5");
    write_text(path, "half-written");
    join(path, sizeof path, tmp, "sub");
    mkdir(path, 0700);
    join(path, sizeof path, tmp, "sub/deeper.bin");
    write_text(path, "x");
    CHECK_OK(checkpoint_begin_save(save, 30, err, sizeof err), err);
    DIR *d = opendir(tmp);
    CHECK(d != NULL);
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
    closedir(d);
    CHECK(entries == 0);
    return 0;
}

static int test_unwritable(const char *root) {
    char save[4096], err[1024], file[4096];
    join(file, sizeof file, root, "plain_file");
    write_text(file, "not a directory");
    join(save, sizeof save, file, "ckpt");
    CHECK_FAILS_WITH(checkpoint_begin_save(save, 1, err, sizeof err), err, "--save");
    CHECK(strstr(err, file) != NULL);
    CHECK_FAILS_WITH(checkpoint_begin_save(file, 1, err, sizeof err), err, "--save");
    CHECK_FAILS_WITH(checkpoint_begin_save("", 1, err, sizeof err), err, "--save");
    if (geteuid() != 0) { /* root ignores permission bits */
        char locked[4096];
        join(locked, sizeof locked, root, "locked");
        mkdir(locked, 0500);
        join(save, sizeof save, locked, "ckpt");
        CHECK_FAILS_WITH(checkpoint_begin_save(save, 1, err, sizeof err), err, "--save");
        CHECK_FAILS_WITH(checkpoint_begin_save(locked, 1, err, sizeof err), err, "not writable");
    }
    return 0;
}

static int test_inconsistent_files(const char *root) {
    char save[4096], err[1024], path[4096];
    /* Two ranks disagree on fc1's canonical shape. */
    join(save, sizeof save, root, "shape");
    CHECK_OK(checkpoint_begin_save(save, 1, err, sizeof err), err);
    static float data[32];
    CheckpointInterval a = {FAKE[P_FC1].name, 2, {8, 4}, 0, 16, data, NULL, NULL};
    CheckpointInterval b = {FAKE[P_FC1].name, 2, {4, 8}, 16, 32, data, NULL, NULL};
    CHECK_OK(checkpoint_write_rank(save, 1, 0, &a, 1, err, sizeof err), err);
    CHECK_OK(checkpoint_write_rank(save, 1, 1, &b, 1, err, sizeof err), err);
    CheckpointMeta meta = make_meta(1, 2);
    CHECK_OK(checkpoint_write_meta(save, &meta, err, sizeof err), err);
    CHECK_OK(checkpoint_publish(save, 1, err, sizeof err), err);
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err, "canonical shape");
    CHECK(strstr(err, FAKE[P_FC1].name) != NULL);

    /* A rank file lost after publishing. */
    join(save, sizeof save, root, "lost");
    CHECK_OK(save_good(save, 1, 0, err, sizeof err), err);
    join(path, sizeof path, save, "iter_0000001/rank_00001.h5");
    CHECK(unlink(path) == 0);
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err, path);
    /* ... or replaced by something that is not HDF5. */
    write_text(path, "garbage");
    CHECK_FAILS_WITH(checkpoint_open(save, 1, err, sizeof err) != NULL, err, path);
    return 0;
}

static int test_bad_intervals(const char *root) {
    char save[4096], err[1024], path[4096];
    join(save, sizeof save, root, "badiv");
    CHECK_OK(checkpoint_begin_save(save, 1, err, sizeof err), err);
    static float data[64];
    CheckpointInterval iv = {FAKE[P_FC1].name, 2, {8, 4}, 20, 33, data, NULL, NULL};
    CHECK_FAILS_WITH(checkpoint_write_rank(save, 1, 0, &iv, 1, err, sizeof err), err,
                     FAKE[P_FC1].name);
    iv.end = 32;
    iv.name = "a/b";
    CHECK_FAILS_WITH(checkpoint_write_rank(save, 1, 0, &iv, 1, err, sizeof err), err, "'/'");
    iv.name = FAKE[P_FC1].name;
    iv.ndim = 0;
    CHECK_FAILS_WITH(checkpoint_write_rank(save, 1, 0, &iv, 1, err, sizeof err), err, "ndim");
    iv.ndim = 2;
    CheckpointInterval twice[2] = {iv, iv};
    CHECK_FAILS_WITH(checkpoint_write_rank(save, 1, 0, twice, 2, err, sizeof err), err, "twice");
    join(path, sizeof path, save, "iter_0000001.tmp/rank_00000.h5");
    CHECK(!exists(path)); /* a failed write leaves no file for publish to accept */
    CHECK_FAILS_WITH(checkpoint_write_rank(save, 2, 0, &iv, 1, err, sizeof err), err,
                     "iter_0000002.tmp");
    return 0;
}

/* More rank files than the reader keeps open, and tensors of millions of
 * elements split at odd offsets: exercises eviction and large hyperslabs. */
static int test_many_files_large_tensor(const char *root) {
    enum { WORLD = 40 };
    const int64_t numel = 3000017; /* prime: every cut is at an odd offset */
    char save[4096], err[1024];
    join(save, sizeof save, root, "large");
    float *data = malloc((size_t)numel * sizeof(float));
    float *out = malloc((size_t)numel * sizeof(float));
    CHECK(data && out);
    for (int64_t i = 0; i < numel; i++) data[i] = (float)(i % 1000003) * 0.5f;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(checkpoint_begin_save(save, 100, err, sizeof err), err);
    for (int r = 0; r < WORLD; r++) {
        int64_t b = numel * r / WORLD, e = numel * (r + 1) / WORLD;
        CheckpointInterval iv = {"embedding.word_embeddings.weight", 2, {numel, 1}, b, e,
                                 data + b, data + b, data + b};
        CHECK_OK(checkpoint_write_rank(save, 100, r, &iv, 1, err, sizeof err), err);
    }
    CheckpointMeta meta = make_meta(100, WORLD);
    meta.tensor_model_parallel_size = 4;
    meta.pipeline_model_parallel_size = 2;
    meta.data_parallel_size = 5;
    CHECK_OK(checkpoint_write_meta(save, &meta, err, sizeof err), err);
    CHECK_OK(checkpoint_publish(save, 100, err, sizeof err), err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CheckpointReader *r = checkpoint_open(save, 100, err, sizeof err);
    CHECK_OK(r != NULL, err);
    CHECK_OK(checkpoint_verify_coverage(r, err, sizeof err), err);
    for (int pass = 0; pass < 2; pass++) {
        memset(out, 0, (size_t)numel * sizeof(float));
        CHECK_OK(checkpoint_read(r, "embedding.word_embeddings.weight", CKPT_EXP_AVG_SQ, 0, numel,
                                 out, err, sizeof err),
                 err);
        CHECK(memcmp(out, data, (size_t)numel * sizeof(float)) == 0);
    }
    /* A window in the middle of the files, after the cache was cycled. */
    int64_t b = numel / 3 + 11, e = numel / 2 + 7;
    CHECK_OK(checkpoint_read(r, "embedding.word_embeddings.weight", CKPT_WEIGHT, b, e, out, err,
                             sizeof err),
             err);
    CHECK(memcmp(out, data + b, (size_t)(e - b) * sizeof(float)) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    checkpoint_close(r);
    printf("large: saved %.1f MB in %.3f s, read it twice in %.3f s\n",
           3.0 * (double)numel * 4 / 1e6,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           (double)(t2.tv_sec - t1.tv_sec) + 1e-9 * (double)(t2.tv_nsec - t1.tv_nsec));
    free(data);
    free(out);
    return 0;
}

int main(void) {
    char root[] = "/tmp/gpt3d_test_checkpoint_XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    struct {
        const char *name;
        int (*fn)(const char *);
    } tests[] = {
        {"round_trip", test_round_trip},
        {"meta_round_trip", test_meta_round_trip},
        {"bad_metadata_file", test_bad_metadata_file},
        {"coverage_errors", test_coverage_errors},
        {"no_moments", test_no_moments},
        {"find_latest", test_find_latest},
        {"resave_same_iteration", test_resave_same_iteration},
        {"crash_before_publish", test_crash_before_publish},
        {"crash_between_renames", test_crash_between_renames},
        {"stale_tmp_cleaned", test_stale_tmp_cleaned},
        {"unwritable", test_unwritable},
        {"inconsistent_files", test_inconsistent_files},
        {"bad_intervals", test_bad_intervals},
        {"many_files_large_tensor", test_many_files_large_tensor},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int rc = tests[i].fn(root);
        printf("%-26s %s\n", tests[i].name, rc ? "FAILED" : "ok");
        failed += rc != 0;
    }
    remove_tree(root);
    if (failed) fprintf(stderr, "%d checkpoint test(s) failed\n", failed);
    return failed ? 1 : 0;
}
