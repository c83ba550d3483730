/* tests/test_ring_attention.c — the block ops of ring attention
 * (attention_block_forward/backward, backend.h) on the CPU backend against
 * the whole-sequence attention of the same backend, which test_backend_arch
 * checks against a double reference and finite differences.
 *
 * The sequence is cut as context parallelism cuts it, written out here
 * literally: 2 CP chunks, CP rank r holding chunks r and 2 CP - 1 - r. Each
 * rank's queries meet every rank's keys, block by block, in an order that
 * starts with a block its first chunk cannot see at all (every row's lse
 * still -inf after the first call), and the merged output and log-sum-exp
 * must be the whole attention's rows. The backward adds each block's query
 * gradient to the query rank and its key and value gradients to the key
 * rank; their sums must be the whole backward's rows. Shapes cross the
 * CPU's 64-row blocks inside one rank's rows (a block holding the end of
 * one chunk and the start of the other), with query groups, documents
 * (--reset-attention-mask) and attention dropout. A wrong placement (every
 * block given the query rank's coordinates) is rejected by the same
 * comparison. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "test_backend_util.h"

static const double TOL = 2e-5;

typedef struct {
    int B, T, CP, NH, NG, HS;
    size_t row, C;
    int L; /* rows of each sequence per rank */
} Shape;

static Shape shape(int B, int CP, int chunk, int NH, int NG, int HS) {
    Shape s = {.B = B, .T = 2 * CP * chunk, .CP = CP, .NH = NH, .NG = NG, .HS = HS};
    s.row = (size_t)NG * (NH / NG + 2) * HS;
    s.C = (size_t)NH * HS;
    s.L = s.T / CP;
    return s;
}

/* Sequence position of rank r's local row i. */
static int place(const Shape *s, int r, int i) {
    const int chunk = s->T / (2 * s->CP);
    return i < chunk ? r * chunk + i : (2 * s->CP - 1 - r) * chunk + (i - chunk);
}

/* Rank r's rows of a [B, T, width] array (or of a [B, NH, T] one with
 * heads: a row per (b, h, t) of width 1). */
static float *take_rows(const Shape *s, const float *x, int r, size_t width, int planes) {
    float *o = xmalloc((size_t)planes * s->L * width * sizeof(float));
    for (int p = 0; p < planes; p++)
        for (int i = 0; i < s->L; i++)
            memcpy(o + ((size_t)p * s->L + i) * width,
                   x + ((size_t)p * s->T + place(s, r, i)) * width, width * sizeof(float));
    return o;
}

static int32_t *take_ids(const Shape *s, const int32_t *x, int r) {
    int32_t *o = xmalloc((size_t)s->B * s->L * sizeof(int32_t));
    for (int b = 0; b < s->B; b++)
        for (int i = 0; i < s->L; i++) o[b * s->L + i] = x[b * s->T + place(s, r, i)];
    return o;
}

/* Documents of random lengths 1..40 in every sequence. */
static void random_documents(TestRng *rng, const Shape *s, int32_t *key_start) {
    for (int b = 0; b < s->B; b++) {
        int start = 0, left = 1 + test_rng_below(rng, 40);
        for (int t = 0; t < s->T; t++) {
            key_start[b * s->T + t] = start;
            if (--left == 0) start = t + 1, left = 1 + test_rng_below(rng, 40);
        }
    }
}

typedef struct {
    float *qkv, *R, *out, *lse, *dqkv; /* host, this rank's rows */
    int32_t *coords, *key_start;       /* host (the CPU backend's device memory is the host's) */
} RankData;

/* Rank q's queries against rank src's keys; `misplace`: the keys given
 * the query rank's coordinates (the wrong placement the test rejects). */
static AttentionBlock block_of(const Shape *s, const RankData *rk, int q, int src, bool misplace) {
    return (AttentionBlock){.Tq = s->L, .Tk = s->L, .seq_length = s->T,
                            .q_coord = rk[q].coords,
                            .k_coord = misplace ? rk[q].coords : rk[src].coords};
}

static int check_ring(Backend *be, TestRng *rng, Shape s, bool documents, bool dropout,
                      bool misplace) {
    const size_t rows = (size_t)s.B * s.T, qn = rows * s.row, on = rows * s.C;
    float *qkv = rand_floats(rng, qn, -1.5f, 1.5f), *R = rand_floats(rng, on, -1, 1);
    int32_t *key_start = xmalloc(rows * sizeof(int32_t));
    random_documents(rng, &s, key_start);
    const AttentionDropout drop = {.seed = 5, .stream = 9, .sample0 = 3, .head0 = 0,
                                   .heads_total = (uint64_t)s.NH,
                                   .threshold = (uint32_t)(0.2 * 4294967296.0),
                                   .scale = 1.0f / 0.8f};
    const AttentionDropout *d = dropout ? &drop : NULL;
    const int32_t *ks = documents ? key_start : NULL;

    /* The whole sequence. */
    float *out = xmalloc(on * 4), *lse = xmalloc((size_t)s.B * s.NH * s.T * 4);
    float *dqkv = xmalloc(qn * 4);
    CHECK(be->ops->attention_saved_bytes(be, s.B, s.T, s.NH, s.NG, s.HS) ==
          (size_t)s.B * s.NH * s.T * sizeof(float));
    be->ops->attention_forward(be, out, lse, qkv, s.B, s.T, s.NH, s.NG, s.HS, ks, d);
    be->ops->attention_backward(be, dqkv, R, qkv, out, lse, s.B, s.T, s.NH, s.NG, s.HS, ks, d);

    RankData rk[8];
    const size_t ln = (size_t)s.B * s.L;
    for (int r = 0; r < s.CP; r++) {
        rk[r].qkv = take_rows(&s, qkv, r, s.row, s.B);
        rk[r].R = take_rows(&s, R, r, s.C, s.B);
        rk[r].out = rand_floats(rng, ln * s.C, -9, 9); /* stale: the first block overwrites */
        rk[r].lse = rand_floats(rng, ln * s.NH, -9, 9);
        rk[r].dqkv = calloc(ln * s.row, sizeof(float));
        rk[r].coords = xmalloc((size_t)s.L * sizeof(int32_t));
        for (int i = 0; i < s.L; i++) rk[r].coords[i] = place(&s, r, i);
        rk[r].key_start = documents ? take_ids(&s, key_start, r) : NULL;
    }
    /* Query rank q meets key rank (q + 1 + k) % CP at step k: the first
     * block is one rank 0's first chunk cannot see at all. */
    for (int q = 0; q < s.CP; q++)
        for (int k = 0; k < s.CP; k++) {
            const int src = (q + 1 + k) % s.CP;
            const AttentionBlock blk = block_of(&s, rk, q, src, misplace);
            be->ops->attention_block_forward(be, rk[q].out, rk[q].lse, rk[q].qkv, rk[src].qkv, s.B,
                                             s.NH, s.NG, s.HS, &blk, rk[q].key_start, d, k == 0);
        }
    for (int q = 0; q < s.CP; q++)
        for (int k = 0; k < s.CP; k++) {
            const int src = (q + 1 + k) % s.CP;
            const AttentionBlock blk = block_of(&s, rk, q, src, misplace);
            be->ops->attention_block_backward(be, rk[q].dqkv, rk[src].dqkv, rk[q].R, rk[q].qkv,
                                              rk[src].qkv, rk[q].out, rk[q].lse, s.B, s.NH, s.NG,
                                              s.HS, &blk, rk[q].key_start, d);
        }
    double worst = 0.0;
    for (int r = 0; r < s.CP; r++) {
        float *want_out = take_rows(&s, out, r, s.C, s.B);
        float *want_lse = take_rows(&s, lse, r, 1, s.B * s.NH);
        float *want_dqkv = take_rows(&s, dqkv, r, s.row, s.B);
        double *wo = to_double(want_out, ln * s.C), *wl = to_double(want_lse, ln * s.NH);
        double *wd = to_double(want_dqkv, ln * s.row);
        const double e[3] = {rel_err(rk[r].out, wo, ln * s.C), rel_err(rk[r].lse, wl, ln * s.NH),
                             rel_err(rk[r].dqkv, wd, ln * s.row)};
        for (int i = 0; i < 3; i++) worst = e[i] > worst || isnan(e[i]) ? e[i] : worst;
        if (!misplace) {
            CHECK(!compare_verbose("ring attention output", rk[r].out, wo, ln * s.C, TOL));
            CHECK(!compare_verbose("ring attention lse", rk[r].lse, wl, ln * s.NH, TOL));
            CHECK(!compare_verbose("ring attention dqkv", rk[r].dqkv, wd, ln * s.row, TOL));
        }
        free(want_out), free(want_lse), free(want_dqkv), free(wo), free(wl), free(wd);
        free(rk[r].qkv), free(rk[r].R), free(rk[r].out), free(rk[r].lse), free(rk[r].dqkv);
        free(rk[r].coords), free(rk[r].key_start);
    }
    if (misplace) CHECK(!(worst <= 100 * TOL)); /* NaN counts as rejected too */
    free(qkv), free(R), free(key_start), free(out), free(lse), free(dqkv);
    return 0;
}

static int test_ring(Backend *be, TestRng *rng) {
    /* CP 2, chunks of 40: a rank's 80 rows cross the 64-row block edge. */
    CHECK(!check_ring(be, rng, shape(2, 2, 40, 4, 2, 4), false, false, false));
    CHECK(!check_ring(be, rng, shape(2, 2, 40, 4, 2, 4), true, false, false));
    CHECK(!check_ring(be, rng, shape(2, 2, 40, 4, 2, 4), true, true, false));
    /* CP 3 (not a power of two), multi-head; CP 4 with GQA of one group. */
    CHECK(!check_ring(be, rng, shape(1, 3, 23, 3, 3, 8), true, true, false));
    CHECK(!check_ring(be, rng, shape(2, 4, 9, 4, 1, 4), false, true, false));
    /* Blocks placed at the query rank's coordinates attend to the wrong keys. */
    CHECK(!check_ring(be, rng, shape(2, 2, 40, 4, 2, 4), false, false, true));
    return 0;
}

int main(void) {
    Backend *be = backend_create("cpu", 0, NULL, 0);
    if (!be) {
        fprintf(stderr, "backend_create(\"cpu\") failed\n");
        return 1;
    }
    TestRng rng = {20261204};
    int failures = 0;
    RUN(failures, test_ring(be, &rng));
    backend_destroy(be);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "ring attention block checks passed");
    return failures ? 1 : 0;
}
