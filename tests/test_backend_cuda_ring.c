/* tests/test_backend_cuda_ring.c — the CUDA backend's ring attention block
 * ops (context parallelism) against the CPU backend's on the same bf16
 * inputs. One query rank's rows of a CP 2 sequence (chunks 0 and 3 of 4)
 * meet the other rank's block first (rows of chunk 0 see none of it, so
 * their lse stays -inf) and then their own, merged; the backward adds both
 * blocks' gradients. Outputs start poisoned where the op overwrites them;
 * gradients start at values the op must add to. With GQA, documents and
 * attention dropout. Exit 77 without a GPU; --cpu-standin runs the harness
 * with a CPU backend for CUDA. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "test_backend_cuda_util.h"

typedef struct {
    int B, chunk, NH, NG, HS;
    bool documents, dropout;
} RingCase;

/* Both ranks' rows, coordinates and key starts of a CP 2 sequence. */
typedef struct {
    int L, T;
    size_t row, C;
    float *qkv[2], *dout, *dq0, *dkv[2]; /* host, bf16-representable */
    int32_t coords[2][512], *key_start;  /* key starts of rank 0's rows */
} RingData;

static int place(int rank, int chunk, int i) {
    return i < chunk ? rank * chunk + i : (3 - rank) * chunk + (i - chunk);
}

static void ring_data(TestRng *rng, const RingCase *c, RingData *d) {
    d->L = 2 * c->chunk, d->T = 4 * c->chunk;
    d->row = (size_t)c->NG * (c->NH / c->NG + 2) * c->HS;
    d->C = (size_t)c->NH * c->HS;
    const size_t qn = (size_t)c->B * d->L * d->row, on = (size_t)c->B * d->L * d->C;
    for (int r = 0; r < 2; r++) {
        d->qkv[r] = rand_bf16(rng, qn, -1.5f, 1.5f);
        d->dkv[r] = rand_bf16(rng, qn, -0.5f, 0.5f);
        for (int i = 0; i < d->L; i++) d->coords[r][i] = place(r, c->chunk, i);
    }
    d->dout = rand_bf16(rng, on, -1, 1);
    d->dq0 = d->dkv[0]; /* rank 0's own gradient buffer: dq and its own dk, dv */
    d->key_start = xmalloc((size_t)c->B * d->L * sizeof(int32_t));
    for (int b = 0; b < c->B; b++) /* documents of 13 tokens */
        for (int i = 0; i < d->L; i++) d->key_start[b * d->L + i] = d->coords[0][i] / 13 * 13;
}

typedef struct {
    float *out, *lse, *dq0, *dkv1;
} RingResult;

/* Rank 0's forward (rank 1's block first, then its own) and backward on
 * backend `be`; host results. */
static RingResult run_ring(Backend *be, const RingCase *c, const RingData *d) {
    const size_t qn = (size_t)c->B * d->L * d->row, on = (size_t)c->B * d->L * d->C;
    const size_t ln = (size_t)c->B * c->NH * d->L;
    void *qkv0 = act_upload(be, d->qkv[0], qn), *qkv1 = act_upload(be, d->qkv[1], qn);
    void *dout = act_upload(be, d->dout, on);
    void *g0 = act_upload(be, d->dkv[0], qn), *g1 = act_upload(be, d->dkv[1], qn);
    void *out = act_poisoned(be, on);
    float *lse = f32_poisoned(be, ln);
    int32_t *c0 = upload(be, d->coords[0], (size_t)d->L * sizeof(int32_t));
    int32_t *c1 = upload(be, d->coords[1], (size_t)d->L * sizeof(int32_t));
    int32_t *ks = c->documents ? upload(be, d->key_start, (size_t)c->B * d->L * sizeof(int32_t))
                               : NULL;
    const AttentionDropout drop = {.seed = 3, .stream = 8, .sample0 = 1, .head0 = 0,
                                   .heads_total = (uint64_t)c->NH,
                                   .threshold = (uint32_t)(0.15 * 4294967296.0),
                                   .scale = 1.0f / 0.85f};
    const AttentionDropout *dp = c->dropout ? &drop : NULL;
    const AttentionBlock other = {.Tq = d->L, .Tk = d->L, .seq_length = d->T, .q_coord = c0,
                                  .k_coord = c1};
    const AttentionBlock own = {.Tq = d->L, .Tk = d->L, .seq_length = d->T, .q_coord = c0,
                                .k_coord = c0};
    be->ops->attention_block_forward(be, out, lse, qkv0, qkv1, c->B, c->NH, c->NG, c->HS, &other,
                                     ks, dp, true);
    be->ops->attention_block_forward(be, out, lse, qkv0, qkv0, c->B, c->NH, c->NG, c->HS, &own,
                                     ks, dp, false);
    be->ops->attention_block_backward(be, g0, g1, dout, qkv0, qkv1, out, lse, c->B, c->NH, c->NG,
                                      c->HS, &other, ks, dp);
    be->ops->attention_block_backward(be, g0, g0, dout, qkv0, qkv0, out, lse, c->B, c->NH, c->NG,
                                      c->HS, &own, ks, dp);
    RingResult r = {act_download(be, out, on), download(be, lse, ln), act_download(be, g0, qn),
                    act_download(be, g1, qn)};
    be->ops->free(be, qkv0), be->ops->free(be, qkv1), be->ops->free(be, dout);
    be->ops->free(be, g0), be->ops->free(be, g1), be->ops->free(be, out), be->ops->free(be, lse);
    be->ops->free(be, c0), be->ops->free(be, c1);
    if (ks) be->ops->free(be, ks);
    return r;
}

static int compare(const char *what, const float *got, const float *want, size_t n, double tol) {
    double *w = to_double(want, n);
    const int rc = compare_verbose(what, got, w, n, tol);
    free(w);
    return rc;
}

static int ring_case(Pair *p, TestRng *rng, RingCase c) {
    RingData d;
    ring_data(rng, &c, &d);
    const RingResult want = run_ring(p->cpu, &c, &d), got = run_ring(p->cu, &c, &d);
    const size_t qn = (size_t)c.B * d.L * d.row, on = (size_t)c.B * d.L * d.C;
    const size_t ln = (size_t)c.B * c.NH * d.L;
    round_like_act(p->cu, want.out, on);
    CHECK(!compare("ring block output", got.out, want.out, on, BF16_TOL));
    CHECK(!compare("ring block lse", got.lse, want.lse, ln, 1e-3));
    CHECK(!compare("ring block dq (with own dk, dv)", got.dq0, want.dq0, qn, 3 * BF16_TOL));
    CHECK(!compare("ring block other rank's dk, dv", got.dkv1, want.dkv1, qn, 3 * BF16_TOL));
    /* The rows of chunk 0 saw nothing of rank 1's block; merged with their
     * own they have a finite lse (a -inf left anywhere fails the compare). */
    free(want.out), free(want.lse), free(want.dq0), free(want.dkv1);
    free(got.out), free(got.lse), free(got.dq0), free(got.dkv1);
    for (int r = 0; r < 2; r++) free(d.qkv[r]), free(d.dkv[r]);
    free(d.dout), free(d.key_start);
    return 0;
}

static int test_ring_blocks(Pair *p, TestRng *rng) {
    CHECK(!ring_case(p, rng, (RingCase){2, 40, 4, 2, 32, false, false}));
    CHECK(!ring_case(p, rng, (RingCase){2, 40, 4, 2, 32, true, false}));
    CHECK(!ring_case(p, rng, (RingCase){1, 24, 4, 4, 64, true, true}));
    CHECK(!ring_case(p, rng, (RingCase){2, 9, 6, 1, 16, false, true}));
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0x51a6a77e};
    int failures = 0;
    RUN(failures, test_ring_blocks(&p, &rng));
    pair_destroy(&p);
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
