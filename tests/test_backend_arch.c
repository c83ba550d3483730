/* tests/test_backend_arch.c — the ops of the modern architectures on the CPU
 * reference backend, against double-precision references written here from
 * backend.h's contract, gradients against central finite differences:
 * LayerNorm's epsilon and 1p offset, RMSNorm, SwiGLU, squared ReLU, dropout
 * (its mask a pure function of global coordinates: cut into blocks as the
 * layouts cut it, it is the same mask), rotary embeddings in both pairings,
 * attention with query groups and attention dropout, and the query/key
 * norm (--qk-layernorm), including a tensor-parallel rank's share of the
 * heads. Each check also shows that it rejects a plausible wrong
 * implementation (the epsilon ignored, the other rotary pairing, a dropout
 * mask keyed without the rank's head offset, query and key norms swapped). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "core/rng.h"
#include "test_backend_util.h"

static const double FWD_TOL = 5e-6;
static const double GRAD_TOL = 1e-5;

/* ---- norms ------------------------------------------------------------------ */

typedef struct {
    int N, C;
    bool rms;
    double eps, offset;
    double *x, *w, *b;
    const double *R;
} NormCtx;

static void norm_ref(double *out, double *rstd, const NormCtx *c) {
    for (int n = 0; n < c->N; n++) {
        const double *x = c->x + (size_t)n * c->C;
        double mu = 0.0, var = 0.0;
        if (!c->rms) {
            for (int j = 0; j < c->C; j++) mu += x[j];
            mu /= c->C;
        }
        for (int j = 0; j < c->C; j++) var += (x[j] - mu) * (x[j] - mu);
        double rs = 1.0 / sqrt(var / c->C + c->eps);
        for (int j = 0; j < c->C; j++)
            out[(size_t)n * c->C + j] =
                (x[j] - mu) * rs * (c->w[j] + c->offset) + (c->rms ? 0.0 : c->b[j]);
        if (rstd) rstd[n] = rs;
    }
}

static double norm_objective(void *p) {
    NormCtx *c = p;
    size_t n = (size_t)c->N * c->C;
    double *out = xmalloc(n * sizeof(double));
    norm_ref(out, NULL, c);
    double s = dot_d(out, c->R, n);
    free(out);
    return s;
}

static void norm_forward(Backend *be, bool rms, void *out, float *mean, float *rstd, void *x,
                         void *w, void *b, int N, int C, float eps, float offset) {
    if (rms) be->ops->rmsnorm_forward(be, out, rstd, x, w, N, C, eps, offset);
    else be->ops->layernorm_forward(be, out, mean, rstd, x, w, b, N, C, eps, offset);
}

/* eps 0.05 is large enough that ignoring it fails the comparison. */
static int check_norm(Backend *be, TestRng *rng, bool rms, float offset) {
    enum { N = 5, C = 12 };
    const size_t xn = (size_t)N * C;
    const float eps = 0.05f;
    float *x = rand_floats(rng, xn, -1.5f, 1.5f), *R = rand_floats(rng, xn, -1, 1);
    /* with the 1p offset the stored weight is near zero, as it is trained */
    float *w = rand_floats(rng, C, offset ? -0.3f : 0.5f, offset ? 0.3f : 1.5f);
    float *b = rand_floats(rng, C, -0.5f, 0.5f), *prior = rand_floats(rng, xn, -1, 1);
    NormCtx ctx = {N, C, rms, eps, offset, to_double(x, xn), to_double(w, C), to_double(b, C),
                   to_double(R, xn)};
    float *d_x = upload(be, x, xn * 4), *d_w = upload(be, w, C * 4), *d_b = upload(be, b, C * 4);
    float *d_R = upload(be, R, xn * 4), *d_dx = upload(be, prior, xn * 4);
    float *d_out = be->ops->alloc(be, xn * 4), *d_mean = be->ops->alloc(be, N * 4);
    float *d_rstd = be->ops->alloc(be, N * 4), *d_dw = be->ops->alloc(be, C * 4);
    float *d_db = be->ops->alloc(be, C * 4);
    norm_forward(be, rms, d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C, eps, offset);
    double want[N * C], want_rstd[N];
    norm_ref(want, want_rstd, &ctx);
    float *out = download(be, d_out, xn), *rstd = download(be, d_rstd, N);
    CHECK(!compare_verbose("norm forward", out, want, xn, FWD_TOL));
    CHECK(!compare_verbose("norm rstd", rstd, want_rstd, N, FWD_TOL));
    ctx.eps = 1e-5; /* an op that ignored eps would match this instead */
    norm_ref(want, NULL, &ctx);
    CHECK(rel_err(out, want, xn) > 100 * FWD_TOL);
    ctx.eps = eps;

    if (rms) be->ops->rmsnorm_backward(be, d_dx, d_dw, d_R, d_x, d_w, d_rstd, N, C, offset);
    else be->ops->layernorm_backward(be, d_dx, d_dw, d_db, d_R, d_x, d_w, d_mean, d_rstd, N, C, offset);
    float *dx = download(be, d_dx, xn), *dw = download(be, d_dw, C), *db = download(be, d_db, C);
    for (size_t i = 0; i < xn; i++) dx[i] -= prior[i]; /* backward adds into dinp */
    double num_x[N * C], num_w[C], num_b[C];
    numerical_grad(norm_objective, &ctx, ctx.x, NULL, xn, num_x);
    numerical_grad(norm_objective, &ctx, ctx.w, NULL, C, num_w);
    CHECK(!check_close("norm dinp (added)", dx, num_x, xn, GRAD_TOL));
    CHECK(!check_close("norm dweight", dw, num_w, C, GRAD_TOL));
    if (!rms) {
        numerical_grad(norm_objective, &ctx, ctx.b, NULL, C, num_b);
        CHECK(!check_close("layernorm dbias", db, num_b, C, GRAD_TOL));
    }

    free(x), free(R), free(w), free(b), free(prior), free(ctx.x), free(ctx.w), free(ctx.b);
    free((void *)ctx.R), free(out), free(rstd), free(dx), free(dw), free(db);
    void *bufs[] = {d_x, d_w, d_b, d_R, d_dx, d_out, d_mean, d_rstd, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->ops->free(be, bufs[i]);
    return 0;
}

static int test_norms(Backend *be, TestRng *rng) {
    CHECK(!check_norm(be, rng, false, 0.0f));
    CHECK(!check_norm(be, rng, false, 1.0f));
    CHECK(!check_norm(be, rng, true, 0.0f));
    CHECK(!check_norm(be, rng, true, 1.0f));
    return 0;
}

/* ---- MLP activations -------------------------------------------------------- */

typedef struct {
    size_t n_in, n_out;
    bool swiglu;
    double *x;
    const double *R;
} ActCtx;

static void act_ref(double *out, const ActCtx *c) {
    for (size_t i = 0; i < c->n_out; i++) {
        if (c->swiglu) {
            double gate = c->x[2 * i], up = c->x[2 * i + 1];
            out[i] = gate / (1.0 + exp(-gate)) * up;
        } else {
            double r = c->x[i] > 0 ? c->x[i] : 0.0;
            out[i] = r * r;
        }
    }
}

static double act_objective(void *p) {
    ActCtx *c = p;
    double *out = xmalloc(c->n_out * sizeof(double));
    act_ref(out, c);
    double s = dot_d(out, c->R, c->n_out);
    free(out);
    return s;
}

static int check_activation(Backend *be, TestRng *rng, bool swiglu) {
    enum { N = 6, F = 10 };
    const size_t n_out = (size_t)N * F, n_in = swiglu ? 2 * n_out : n_out;
    /* |x| >= 0.05 keeps finite differences away from squared ReLU's kink */
    float *x = rand_floats(rng, n_in, -3, 3), *R = rand_floats(rng, n_out, -1, 1);
    for (size_t i = 0; i < n_in; i++)
        if (fabsf(x[i]) < 0.05f) x[i] = x[i] < 0 ? -0.05f : 0.05f;
    ActCtx ctx = {n_in, n_out, swiglu, to_double(x, n_in), to_double(R, n_out)};
    float *d_x = upload(be, x, n_in * 4), *d_R = upload(be, R, n_out * 4);
    float *d_out = be->ops->alloc(be, n_out * 4), *d_dx = upload(be, x, n_in * 4); /* stale */
    if (swiglu) be->ops->swiglu_forward(be, d_out, d_x, N, F);
    else be->ops->squared_relu_forward(be, d_out, d_x, n_out);
    double *want = xmalloc(n_out * sizeof(double));
    act_ref(want, &ctx);
    float *out = download(be, d_out, n_out);
    CHECK(!compare_verbose(swiglu ? "swiglu forward" : "squared relu forward", out, want, n_out,
                           FWD_TOL));
    if (swiglu) be->ops->swiglu_backward(be, d_dx, d_x, d_R, N, F);
    else be->ops->squared_relu_backward(be, d_dx, d_x, d_R, n_out);
    float *dx = download(be, d_dx, n_in);
    double *num = xmalloc(n_in * sizeof(double));
    numerical_grad(act_objective, &ctx, ctx.x, NULL, n_in, num);
    CHECK(!check_close(swiglu ? "swiglu dinp" : "squared relu dinp", dx, num, n_in, GRAD_TOL));
    free(x), free(R), free(ctx.x), free((void *)ctx.R), free(want), free(out), free(dx), free(num);
    be->ops->free(be, d_x), be->ops->free(be, d_R), be->ops->free(be, d_out);
    be->ops->free(be, d_dx);
    return 0;
}

static int test_activations(Backend *be, TestRng *rng) {
    CHECK(!check_activation(be, rng, true));
    CHECK(!check_activation(be, rng, false));
    return 0;
}

/* ---- dropout ---------------------------------------------------------------- */

static uint32_t threshold_of(double p) { return (uint32_t)llround(p * 4294967296.0); }

static bool kept(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t threshold) {
    return rng_block(seed, stream, counter).v[0] >= threshold;
}

/* A [rows, cols] block of a [*, row_stride] plane at (row0, col0): the
 * op's output is exactly x * scale where the counter keeps it, else 0; the
 * whole plane cut into four blocks gives the plane computed at once (what
 * a tensor- or sequence-parallel rank computes of the whole); the backward
 * applies the same mask; the op works in place; another stream gives
 * another mask; the kept fraction is 1 - p. */
static int test_dropout(Backend *be, TestRng *rng) {
    enum { ROWS = 24, COLS = 40 };
    const size_t n = (size_t)ROWS * COLS;
    const double p = 0.3;
    DropoutKey key = {.seed = 1234, .stream = 99, .row0 = 1000, .row_stride = 4096, .col0 = 512,
                      .threshold = threshold_of(p), .scale = (float)(1.0 / (1.0 - p))};
    float *x = rand_floats(rng, n, -2, 2);
    float *d_x = upload(be, x, n * 4), *d_out = be->ops->alloc(be, n * 4);
    be->ops->dropout_forward(be, d_out, d_x, ROWS, COLS, &key);
    float *out = download(be, d_out, n);
    size_t kept_count = 0;
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {
            size_t i = (size_t)r * COLS + c;
            uint64_t counter = (key.row0 + r) * key.row_stride + key.col0 + c;
            bool keep = kept(key.seed, key.stream, counter, key.threshold);
            kept_count += keep;
            float want = keep ? x[i] * key.scale : 0.0f;
            if (memcmp(&out[i], &want, sizeof want)) {
                fprintf(stderr, "  dropout (%d, %d): %g, want %g\n", r, c, out[i], want);
                return 1;
            }
        }
    /* binomial: 4 standard deviations */
    const double expect = (1 - p) * n, sd = sqrt(n * p * (1 - p));
    CHECK(fabs((double)kept_count - expect) < 4 * sd);

    /* the same plane in four blocks, as two ranks of each split compute it */
    float *tiled = xmalloc(n * 4);
    const int r_half = ROWS / 2, c_half = COLS / 2;
    float *d_blk_in = be->ops->alloc(be, (size_t)r_half * c_half * 4);
    float *d_blk_out = be->ops->alloc(be, (size_t)r_half * c_half * 4);
    for (int br = 0; br < 2; br++)
        for (int bc = 0; bc < 2; bc++) {
            float *blk = xmalloc((size_t)r_half * c_half * 4);
            for (int r = 0; r < r_half; r++)
                memcpy(blk + (size_t)r * c_half, x + (size_t)(br * r_half + r) * COLS + bc * c_half,
                       (size_t)c_half * 4);
            be->ops->copy_to_device(be, d_blk_in, blk, (size_t)r_half * c_half * 4);
            DropoutKey k = key;
            k.row0 += (uint64_t)br * r_half;
            k.col0 += (uint64_t)bc * c_half;
            be->ops->dropout_forward(be, d_blk_out, d_blk_in, r_half, c_half, &k);
            be->ops->copy_to_host(be, blk, d_blk_out, (size_t)r_half * c_half * 4);
            for (int r = 0; r < r_half; r++)
                memcpy(tiled + (size_t)(br * r_half + r) * COLS + bc * c_half,
                       blk + (size_t)r * c_half, (size_t)c_half * 4);
            free(blk);
        }
    CHECK(!memcmp(tiled, out, n * 4));

    /* backward: the same mask on the gradient; in place */
    float *g = rand_floats(rng, n, -1, 1);
    float *d_g = upload(be, g, n * 4);
    be->ops->dropout_backward(be, d_g, d_g, ROWS, COLS, &key);
    float *dg = download(be, d_g, n);
    for (size_t i = 0; i < n; i++) {
        float want = out[i] != 0.0f ? g[i] * key.scale : 0.0f;
        CHECK(!memcmp(&dg[i], &want, sizeof want));
    }
    be->ops->copy_to_device(be, d_g, x, n * 4);
    be->ops->dropout_forward(be, d_g, d_g, ROWS, COLS, &key);
    float *inplace = download(be, d_g, n);
    CHECK(!memcmp(inplace, out, n * 4));

    DropoutKey other = key;
    other.stream++;
    be->ops->dropout_forward(be, d_out, d_x, ROWS, COLS, &other);
    float *out2 = download(be, d_out, n);
    size_t same_mask = 0;
    for (size_t i = 0; i < n; i++) same_mask += (out2[i] == 0.0f) == (out[i] == 0.0f);
    CHECK(same_mask < n - n / 10);

    free(x), free(out), free(tiled), free(g), free(dg), free(inplace), free(out2);
    be->ops->free(be, d_x), be->ops->free(be, d_out), be->ops->free(be, d_blk_in);
    be->ops->free(be, d_blk_out), be->ops->free(be, d_g);
    return 0;
}

/* ---- rotary position embedding ---------------------------------------------- */

typedef struct {
    int B, T, NH, NG, HS, rot;
    double base;
    bool interleaved;
    const int32_t *position_ids; /* host [B*T]; NULL: row t has position t */
    double *qkv;
    const double *R;
} RopeCtx;

static size_t qkv_row(int NH, int NG, int HS) { return (size_t)NG * (NH / NG + 2) * HS; }

/* Rotates query and key heads (every head of a group but its last, the
 * value) by Hugging Face's rotate-half or Megatron's interleaved pairing. */
static void rope_ref(double *out, const RopeCtx *c) {
    const size_t row = qkv_row(c->NH, c->NG, c->HS), n = (size_t)c->B * c->T * row;
    const int per_group = c->NH / c->NG + 2, half = c->rot / 2;
    memcpy(out, c->qkv, n * sizeof(double));
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (int g = 0; g < c->NG; g++)
                for (int h = 0; h < per_group - 1; h++) {
                    size_t head = ((size_t)b * c->T + t) * row + ((size_t)g * per_group + h) * c->HS;
                    for (int i = 0; i < half; i++) {
                        const int pos = c->position_ids ? c->position_ids[b * c->T + t] : t;
                        double angle = pos / pow(c->base, 2.0 * i / c->rot);
                        size_t ix = head + (c->interleaved ? 2 * i : i);
                        size_t iy = ix + (c->interleaved ? 1 : half);
                        double x = c->qkv[ix], y = c->qkv[iy];
                        out[ix] = x * cos(angle) - y * sin(angle);
                        out[iy] = y * cos(angle) + x * sin(angle);
                    }
                }
}

static double rope_objective(void *p) {
    RopeCtx *c = p;
    size_t n = (size_t)c->B * c->T * qkv_row(c->NH, c->NG, c->HS);
    double *out = xmalloc(n * sizeof(double));
    rope_ref(out, c);
    double s = dot_d(out, c->R, n);
    free(out);
    return s;
}

/* fp32 angles t * inv_freq differ from double ones by about t * 2^-24. */
static const double ROPE_TOL = 2e-5;

/* Position ids restarting at documents of lengths 3, 1, 7 (sequence 0)
 * and 6, 5 (sequence 1), as --reset-position-ids makes them. */
static void document_position_ids(int32_t *ids, int T) {
    static const int lengths[2][3] = {{3, 1, 7}, {6, 5, 0}};
    for (int b = 0; b < 2; b++)
        for (int d = 0, t = 0; d < 3; d++)
            for (int k = 0; k < lengths[b][d] && t < T; k++) ids[b * T + t++] = k;
}

static int check_rope(Backend *be, TestRng *rng, bool interleaved, int rot, bool with_ids) {
    const int B = 2, T = 11, NH = 4, NG = 2, HS = 8;
    const size_t n = (size_t)B * T * qkv_row(NH, NG, HS);
    float *x = rand_floats(rng, n, -1, 1), *R = rand_floats(rng, n, -1, 1);
    int32_t ids[2 * 11];
    document_position_ids(ids, T);
    RopeCtx ctx = {B,           T,   NH, NG, HS, rot, 500.0, interleaved, with_ids ? ids : NULL,
                   to_double(x, n), to_double(R, n)};
    int32_t *d_ids = with_ids ? upload(be, ids, sizeof ids) : NULL;
    float *d = upload(be, x, n * 4);
    be->ops->rope_forward(be, d, B, T, NH, NG, HS, rot, (float)ctx.base, interleaved, d_ids);
    double *want = xmalloc(n * sizeof(double));
    rope_ref(want, &ctx);
    float *out = download(be, d, n);
    CHECK(!compare_verbose("rope forward", out, want, n, ROPE_TOL));
    /* value heads and features past rot_dim come through bitwise */
    for (size_t i = 0; i < n; i++)
        if (want[i] == ctx.qkv[i]) CHECK(out[i] == x[i]);
    ctx.interleaved = !interleaved; /* the other pairing must not pass */
    rope_ref(want, &ctx);
    CHECK(rel_err(out, want, n) > 100 * ROPE_TOL);
    ctx.interleaved = interleaved;
    if (with_ids) { /* nor the positions ignored */
        ctx.position_ids = NULL;
        rope_ref(want, &ctx);
        CHECK(rel_err(out, want, n) > 100 * ROPE_TOL);
        ctx.position_ids = ids;
    }

    /* backward is the adjoint: d sum(rope(x) R) / dx = rope_backward(R) */
    be->ops->copy_to_device(be, d, R, n * 4);
    be->ops->rope_backward(be, d, B, T, NH, NG, HS, rot, (float)ctx.base, interleaved, d_ids);
    float *dx = download(be, d, n);
    double *num = xmalloc(n * sizeof(double));
    numerical_grad(rope_objective, &ctx, ctx.qkv, NULL, n, num);
    CHECK(!check_close("rope backward", dx, num, n, ROPE_TOL));
    free(x), free(R), free(ctx.qkv), free((void *)ctx.R), free(want), free(out), free(dx);
    free(num);
    be->ops->free(be, d);
    if (d_ids) be->ops->free(be, d_ids);
    return 0;
}

static int test_rope(Backend *be, TestRng *rng) {
    CHECK(!check_rope(be, rng, false, 8, false));
    CHECK(!check_rope(be, rng, true, 8, false));
    CHECK(!check_rope(be, rng, false, 4, false)); /* --rotary-percent 0.5 */
    CHECK(!check_rope(be, rng, true, 4, false));
    CHECK(!check_rope(be, rng, false, 8, true)); /* --reset-position-ids */
    CHECK(!check_rope(be, rng, true, 4, true));
    return 0;
}

/* ---- attention with query groups and attention dropout ---------------------- */

typedef struct {
    int B, T, NH, NG, HS;
    const AttentionDropout *drop; /* NULL: none */
    const int32_t *key_start;     /* host [B*T]; NULL: every row sees keys from 0 */
    double *qkv;
    const double *R;
} GroupAttentionCtx;

/* out [B, T, NH, HS]: query head h = g * (NH/NG) + j of group g attends with
 * the group's key and value to keys key_start .. t; kept probabilities
 * scaled, dropped ones zero. */
static void group_attention_ref(double *out, const GroupAttentionCtx *c) {
    const int T = c->T, HS = c->HS, Q = c->NH / c->NG;
    const size_t row = qkv_row(c->NH, c->NG, HS), C = (size_t)c->NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    double *p = xmalloc((size_t)T * sizeof(double));
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++) {
            const size_t group = (size_t)(h / Q) * (Q + 2) * HS;
            const size_t qo = group + (size_t)(h % Q) * HS, ko = group + (size_t)Q * HS;
            const size_t vo = ko + HS;
            for (int t = 0; t < T; t++) {
                const double *q = c->qkv + ((size_t)b * T + t) * row + qo;
                double maxval = -INFINITY, sum = 0.0;
                const int j0 = c->key_start ? c->key_start[b * T + t] : 0;
                for (int j = 0; j <= t; j++) {
                    p[j] = scale * dot_d(q, c->qkv + ((size_t)b * T + j) * row + ko, HS);
                    if (j >= j0 && p[j] > maxval) maxval = p[j];
                }
                for (int j = 0; j <= t; j++) sum += (p[j] = j < j0 ? 0.0 : exp(p[j] - maxval));
                for (int j = 0; j <= t; j++) p[j] /= sum;
                if (c->drop) {
                    const AttentionDropout *d = c->drop;
                    uint64_t plane = ((d->sample0 + b) * d->heads_total + d->head0 + h) *
                                     (uint64_t)T * (uint64_t)T;
                    for (int j = 0; j <= t; j++)
                        p[j] = kept(d->seed, d->stream, plane + (uint64_t)t * T + j, d->threshold)
                                   ? p[j] * d->scale
                                   : 0.0;
                }
                for (int e = 0; e < HS; e++) {
                    double o = 0.0;
                    for (int j = 0; j <= t; j++) o += p[j] * c->qkv[((size_t)b * T + j) * row + vo + e];
                    out[((size_t)b * T + t) * C + (size_t)h * HS + e] = o;
                }
            }
        }
    free(p);
}

static double group_attention_objective(void *p) {
    GroupAttentionCtx *c = p;
    size_t n = (size_t)c->B * c->T * c->NH * c->HS;
    double *out = xmalloc(n * sizeof(double));
    group_attention_ref(out, c);
    double s = dot_d(out, c->R, n);
    free(out);
    return s;
}

static AttentionDropout attention_dropout(double p, uint64_t sample0, uint64_t head0,
                                          uint64_t heads_total) {
    AttentionDropout d = {.seed = 42, .stream = 7, .sample0 = sample0, .head0 = head0,
                          .heads_total = heads_total, .threshold = threshold_of(p),
                          .scale = (float)(1.0 / (1.0 - p))};
    return d;
}

/* Documents (--reset-attention-mask) of a [2, T] micro-batch: sequence 0
 * ends documents after 0, 1, 40 and 66 (one-token documents, one across the
 * CPU's 64-row block edge), sequence 1 after 63 and 64; key_start[t] is the
 * first position of t's document. */
static void document_key_starts(int32_t *key_start, int T) {
    static const int ends[2][4] = {{0, 1, 40, 66}, {63, 64, -1, -1}};
    for (int b = 0; b < 2; b++) {
        int start = 0, e = 0;
        for (int t = 0; t < T; t++) {
            key_start[b * T + t] = start;
            if (e < 4 && t == ends[b][e]) start = t + 1, e++;
        }
    }
}

/* T = 70 crosses the CPU backend's 64-row causal blocks. */
static int check_group_attention(Backend *be, TestRng *rng, int NH, int NG, bool dropout,
                                 bool documents) {
    const int B = 2, T = 70, HS = 4;
    const size_t qn = (size_t)B * T * qkv_row(NH, NG, HS), on = (size_t)B * T * NH * HS;
    AttentionDropout drop = attention_dropout(0.25, 11, 0, (uint64_t)NH);
    float *qkv = rand_floats(rng, qn, -1.5f, 1.5f), *R = rand_floats(rng, on, -1, 1);
    int32_t key_start[2 * 70];
    document_key_starts(key_start, T);
    int32_t *d_key_start = documents ? upload(be, key_start, sizeof key_start) : NULL;
    GroupAttentionCtx ctx = {B,
                             T,
                             NH,
                             NG,
                             HS,
                             dropout ? &drop : NULL,
                             documents ? key_start : NULL,
                             to_double(qkv, qn),
                             to_double(R, on)};
    const size_t saved = be->ops->attention_saved_bytes(be, B, T, NH, NG, HS);
    CHECK(saved == (size_t)B * NH * T * sizeof(float)); /* a log-sum-exp per row, never T x T */
    float *d_qkv = upload(be, qkv, qn * 4), *d_R = upload(be, R, on * 4);
    float *d_out = be->ops->alloc(be, on * 4), *d_saved = be->ops->alloc(be, saved);
    float *d_dqkv = upload(be, qkv, qn * 4); /* stale content: must be overwritten */
    be->ops->attention_forward(be, d_out, d_saved, d_qkv, B, T, NH, NG, HS, d_key_start, ctx.drop);
    double *want = xmalloc(on * sizeof(double));
    group_attention_ref(want, &ctx);
    float *out = download(be, d_out, on);
    CHECK(!compare_verbose("group attention forward", out, want, on, FWD_TOL));
    if (documents) { /* the same comparison rejects attention across documents */
        ctx.key_start = NULL;
        group_attention_ref(want, &ctx);
        CHECK(rel_err(out, want, on) > 100 * FWD_TOL);
        ctx.key_start = key_start;
    }
    if (dropout) { /* the same comparison rejects the undropped attention */
        ctx.drop = NULL;
        group_attention_ref(want, &ctx);
        CHECK(rel_err(out, want, on) > 100 * FWD_TOL);
        ctx.drop = &drop;
    }

    be->ops->attention_backward(be, d_dqkv, d_R, d_qkv, d_out, d_saved, B, T, NH, NG, HS,
                                d_key_start, ctx.drop);
    float *dqkv = download(be, d_dqkv, qn);
    enum { SAMPLES = 300 };
    size_t idx[SAMPLES];
    for (size_t k = 0; k < SAMPLES; k++) idx[k] = (size_t)test_rng_below(rng, (int)qn);
    idx[0] = qn - 1; /* the last value element: seen only by the last query */
    idx[1] = qn - 1 - HS; /* the last key element */
    idx[2] = (size_t)T * qkv_row(NH, NG, HS) - 1; /* sequence 0's last value: a one-row document */
    double num[SAMPLES];
    float got[SAMPLES];
    for (size_t k = 0; k < SAMPLES; k++) got[k] = dqkv[idx[k]];
    numerical_grad(group_attention_objective, &ctx, ctx.qkv, idx, SAMPLES, num);
    CHECK(!check_close("group attention dqkv", got, num, SAMPLES, GRAD_TOL));

    free(qkv), free(R), free(ctx.qkv), free((void *)ctx.R), free(want), free(out), free(dqkv);
    be->ops->free(be, d_qkv), be->ops->free(be, d_R), be->ops->free(be, d_out);
    be->ops->free(be, d_saved), be->ops->free(be, d_dqkv);
    if (d_key_start) be->ops->free(be, d_key_start);
    return 0;
}

static int test_group_attention(Backend *be, TestRng *rng) {
    CHECK(!check_group_attention(be, rng, 4, 2, false, false));
    CHECK(!check_group_attention(be, rng, 4, 1, false, false));
    CHECK(!check_group_attention(be, rng, 3, 3, false, false));
    CHECK(!check_group_attention(be, rng, 4, 2, true, false));
    CHECK(!check_group_attention(be, rng, 6, 3, true, false));
    /* --reset-attention-mask: GQA, MHA, and with attention dropout */
    CHECK(!check_group_attention(be, rng, 4, 2, false, true));
    CHECK(!check_group_attention(be, rng, 3, 3, false, true));
    CHECK(!check_group_attention(be, rng, 4, 2, true, true));
    return 0;
}

/* Runs attention forward and backward of qkv [B, T, row] with dout R and
 * returns out and dqkv (malloc'd). */
static void attention_run(Backend *be, const float *qkv, const float *R, int B, int T, int NH,
                          int NG, int HS, const AttentionDropout *drop, float **out,
                          float **dqkv) {
    const size_t qn = (size_t)B * T * qkv_row(NH, NG, HS), on = (size_t)B * T * NH * HS;
    float *d_qkv = upload(be, qkv, qn * 4), *d_R = upload(be, R, on * 4);
    float *d_out = be->ops->alloc(be, on * 4), *d_dqkv = be->ops->alloc(be, qn * 4);
    void *d_saved = be->ops->alloc(be, be->ops->attention_saved_bytes(be, B, T, NH, NG, HS));
    be->ops->attention_forward(be, d_out, d_saved, d_qkv, B, T, NH, NG, HS, NULL, drop);
    be->ops->attention_backward(be, d_dqkv, d_R, d_qkv, d_out, d_saved, B, T, NH, NG, HS, NULL, drop);
    *out = download(be, d_out, on);
    *dqkv = download(be, d_dqkv, qn);
    be->ops->free(be, d_qkv), be->ops->free(be, d_R), be->ops->free(be, d_out);
    be->ops->free(be, d_dqkv), be->ops->free(be, d_saved);
}

/* Columns [c0, c0 + width) of every row of a [rows, ld] matrix. */
static float *columns(const float *x, size_t rows, size_t ld, size_t c0, size_t width) {
    float *o = xmalloc(rows * width * sizeof(float) + 1);
    for (size_t r = 0; r < rows; r++) memcpy(o + r * width, x + r * ld + c0, width * sizeof(float));
    return o;
}

static int compare_f(const char *what, const float *got, const float *want, size_t n, double tol) {
    double *w = to_double(want, n);
    int rc = compare_verbose(what, got, w, n, tol);
    free(w);
    return rc;
}

/* Attention dropout as the layouts cut the work: a tensor-parallel rank
 * holding the second half of the query groups (head0 = NH/2), and a
 * micro-batch holding only the second sample (sample0 + 1), reproduce the
 * whole computation's output and gradient; keying the rank's heads from 0,
 * as a per-rank generator would, does not. */
static int test_attention_dropout_split(Backend *be, TestRng *rng) {
    const int B = 2, T = 20, NH = 4, NG = 2, HS = 4;
    const size_t row = qkv_row(NH, NG, HS), rows = (size_t)B * T, C = (size_t)NH * HS;
    const size_t qn = rows * row, on = rows * C;
    float *qkv = rand_floats(rng, qn, -1.5f, 1.5f), *R = rand_floats(rng, on, -1, 1);
    AttentionDropout whole = attention_dropout(0.2, 30, 0, NH);
    float *out, *dqkv;
    attention_run(be, qkv, R, B, T, NH, NG, HS, &whole, &out, &dqkv);

    /* TP rank 1 of 2: groups [1, 2), heads [2, 4) */
    const size_t half_row = row / 2, half_c = C / 2;
    float *rank_qkv = columns(qkv, rows, row, half_row, half_row);
    float *rank_R = columns(R, rows, C, half_c, half_c);
    float *rank_out, *rank_dqkv;
    AttentionDropout rank = attention_dropout(0.2, 30, NH / 2, NH);
    attention_run(be, rank_qkv, rank_R, B, T, NH / 2, NG / 2, HS, &rank, &rank_out, &rank_dqkv);
    float *want_out = columns(out, rows, C, half_c, half_c);
    float *want_dqkv = columns(dqkv, rows, row, half_row, half_row);
    CHECK(!compare_f("TP rank's attention output", rank_out, want_out, rows * half_c, FWD_TOL));
    CHECK(!compare_f("TP rank's attention dqkv", rank_dqkv, want_dqkv, rows * half_row, FWD_TOL));
    float *bad_out, *bad_dqkv;
    AttentionDropout local = attention_dropout(0.2, 30, 0, NH);
    attention_run(be, rank_qkv, rank_R, B, T, NH / 2, NG / 2, HS, &local, &bad_out, &bad_dqkv);
    double *want_out_d = to_double(want_out, rows * half_c);
    const double bad_err = rel_err(bad_out, want_out_d, rows * half_c);
    free(want_out_d);
    CHECK(bad_err > 100 * FWD_TOL);

    /* the second sample alone, as the next micro-batch or DP rank holds it */
    float *one_out, *one_dqkv;
    AttentionDropout second = attention_dropout(0.2, 31, 0, NH);
    attention_run(be, qkv + (size_t)T * row, R + (size_t)T * C, 1, T, NH, NG, HS, &second,
                  &one_out, &one_dqkv);
    CHECK(!compare_f("second sample's output", one_out, out + (size_t)T * C, (size_t)T * C,
                     FWD_TOL));
    CHECK(!compare_f("second sample's dqkv", one_dqkv, dqkv + (size_t)T * row, (size_t)T * row,
                     FWD_TOL));

    free(qkv), free(R), free(out), free(dqkv), free(rank_qkv), free(rank_R), free(rank_out);
    free(rank_dqkv), free(want_out), free(want_dqkv), free(bad_out), free(bad_dqkv);
    free(one_out), free(one_dqkv);
    return 0;
}

/* ---- QK-norm: the query and key heads of a qkv buffer ----------------------- */

enum { QK_HS = 8 }; /* head dimension of the QK-norm checks */

typedef struct {
    QKNormShape s;
    double *qkv, *qw, *qb, *kw, *kb;
    const double *R;
} QKNormCtx;

static size_t qk_norm_numel(const QKNormShape *s) {
    return (size_t)s->N * qkv_row(s->NH, s->NG, s->HS);
}
static int qk_normed_heads(const QKNormShape *s) { return s->NG * (s->NH / s->NG + 1); }

/* Each query head (with qw, qb) and key head (kw, kb) of every row through
 * norm_ref as one row of HS features; value heads unchanged. */
static void qk_norm_ref(double *out, double *rstd, const QKNormCtx *c) {
    const QKNormShape *s = &c->s;
    const int Q = s->NH / s->NG;
    const size_t row = qkv_row(s->NH, s->NG, s->HS);
    memcpy(out, c->qkv, qk_norm_numel(s) * sizeof(double));
    for (int n = 0; n < s->N; n++)
        for (int g = 0; g < s->NG; g++)
            for (int h = 0; h <= Q; h++) {
                const size_t at = (size_t)n * row + ((size_t)g * (Q + 2) + h) * s->HS;
                const bool key = h == Q;
                const size_t stat = (size_t)n * qk_normed_heads(s) + (size_t)g * (Q + 1) + h;
                NormCtx head = {1, s->HS, s->rms, s->eps, s->weight_offset, c->qkv + at,
                                key ? c->kw : c->qw, key ? c->kb : c->qb, NULL};
                norm_ref(out + at, rstd ? rstd + stat : NULL, &head);
            }
}

static double qk_norm_objective(void *p) {
    QKNormCtx *c = p;
    const size_t n = qk_norm_numel(&c->s);
    double *out = xmalloc(n * sizeof(double));
    qk_norm_ref(out, NULL, c);
    double v = dot_d(out, c->R, n);
    free(out);
    return v;
}

/* The op's buffers: inputs uploaded, outputs allocated (the weight
 * gradients start from `prior`, since backward adds). */
typedef struct {
    float *qkv, *out, *mean, *rstd, *qw, *qb, *kw, *kb, *R, *dqkv;
    float *dqw, *dqb, *dkw, *dkb;
} QKNormBufs;

static QKNormBufs qk_norm_upload(Backend *be, const QKNormShape *s, const float *qkv,
                                 float *const params[4], const float *R, const float *prior) {
    const size_t n = qk_norm_numel(s), stats = (size_t)s->N * qk_normed_heads(s) * 4;
    const size_t hs = (size_t)s->HS * 4;
    QKNormBufs b = {upload(be, qkv, n * 4), be->ops->alloc(be, n * 4), be->ops->alloc(be, stats),
                    be->ops->alloc(be, stats), upload(be, params[0], hs), upload(be, params[1], hs),
                    upload(be, params[2], hs), upload(be, params[3], hs), upload(be, R, n * 4),
                    upload(be, qkv, n * 4) /* stale: must be overwritten */,
                    upload(be, prior, hs), upload(be, prior, hs), upload(be, prior, hs),
                    upload(be, prior, hs)};
    return b;
}

static void qk_norm_run(Backend *be, const QKNormShape *s, QKNormBufs *b) {
    be->ops->qk_norm_forward(be, b->out, b->mean, b->rstd, b->qkv, b->qw, b->qb, b->kw, b->kb, s);
    be->ops->qk_norm_backward(be, b->dqkv, b->dqw, b->dqb, b->dkw, b->dkb, b->R, b->qkv, b->qw,
                              b->kw, b->mean, b->rstd, s);
}

static void qk_norm_free(Backend *be, QKNormBufs *b) {
    float **all = (float **)b;
    for (size_t i = 0; i < sizeof *b / sizeof(float *); i++) be->ops->free(be, all[i]);
}

/* Downloads a weight gradient minus the prior it was added to. */
static float *added_grad(Backend *be, const float *dev, const float *prior, int HS) {
    float *g = download(be, dev, (size_t)HS);
    for (int i = 0; i < HS; i++) g[i] -= prior[i];
    return g;
}

/* Forward against the double reference (and not the reference with the
 * query and key weights swapped); value heads bitwise through; backward
 * against finite differences of every input and weight; in place (out ==
 * qkv, dqkv == dout) bitwise the same. */
static int check_qk_norm(Backend *be, TestRng *rng, bool rms, float offset, int NH, int NG) {
    const QKNormShape s = {.N = 5, .NH = NH, .NG = NG, .HS = QK_HS, .rms = rms, .eps = 0.05f,
                           .weight_offset = offset};
    const size_t n = qk_norm_numel(&s), HS = (size_t)s.HS;
    const size_t heads = (size_t)s.N * qk_normed_heads(&s);
    float *qkv = rand_floats(rng, n, -1.5f, 1.5f), *R = rand_floats(rng, n, -1, 1);
    float *params[4], *prior = rand_floats(rng, HS, -1, 1);
    for (int i = 0; i < 4; i++) /* weights, biases of q, k; 1p weights near zero */
        params[i] = i % 2 ? rand_floats(rng, HS, -0.5f, 0.5f)
                          : rand_floats(rng, HS, offset ? -0.3f : 0.5f, offset ? 0.3f : 1.5f);
    QKNormCtx ctx = {s, to_double(qkv, n), to_double(params[0], HS), to_double(params[1], HS),
                     to_double(params[2], HS), to_double(params[3], HS), to_double(R, n)};
    QKNormBufs b = qk_norm_upload(be, &s, qkv, params, R, prior);
    qk_norm_run(be, &s, &b);
    double *want = xmalloc(n * sizeof(double)), *want_rstd = xmalloc(heads * sizeof(double));
    qk_norm_ref(want, want_rstd, &ctx);
    float *out = download(be, b.out, n), *rstd = download(be, b.rstd, heads);
    CHECK(!compare_verbose("qk norm forward", out, want, n, FWD_TOL));
    CHECK(!compare_verbose("qk norm rstd", rstd, want_rstd, heads, FWD_TOL));
    for (size_t i = 0; i < n; i++)
        if (want[i] == ctx.qkv[i]) CHECK(out[i] == qkv[i]); /* value heads */
    QKNormCtx swapped = ctx;
    swapped.qw = ctx.kw, swapped.qb = ctx.kb, swapped.kw = ctx.qw, swapped.kb = ctx.qb;
    qk_norm_ref(want, NULL, &swapped);
    CHECK(rel_err(out, want, n) > 100 * FWD_TOL);

    float *dqkv = download(be, b.dqkv, n), *dw[4];
    float *const dev_grads[4] = {b.dqw, b.dqb, b.dkw, b.dkb};
    double *num = xmalloc(n * sizeof(double)), *num_w = xmalloc(HS * sizeof(double));
    numerical_grad(qk_norm_objective, &ctx, ctx.qkv, NULL, n, num);
    CHECK(!check_close("qk norm dqkv", dqkv, num, n, GRAD_TOL));
    double *const param_d[4] = {ctx.qw, ctx.qb, ctx.kw, ctx.kb};
    static const char *const names[4] = {"dq_weight", "dq_bias", "dk_weight", "dk_bias"};
    for (int i = 0; i < 4; i++) {
        dw[i] = added_grad(be, dev_grads[i], prior, s.HS);
        if (rms && i % 2) continue; /* RMSNorm has no bias */
        numerical_grad(qk_norm_objective, &ctx, param_d[i], NULL, HS, num_w);
        CHECK(!check_close(names[i], dw[i], num_w, HS, GRAD_TOL));
    }

    /* in place: out == qkv, then dqkv == dout */
    be->ops->qk_norm_forward(be, b.qkv, b.mean, b.rstd, b.qkv, b.qw, b.qb, b.kw, b.kb, &s);
    float *inplace = download(be, b.qkv, n);
    CHECK(!memcmp(inplace, out, n * 4));
    be->ops->copy_to_device(be, b.qkv, qkv, n * 4);
    be->ops->qk_norm_backward(be, b.R, b.dqw, b.dqb, b.dkw, b.dkb, b.R, b.qkv, b.qw, b.kw, b.mean,
                              b.rstd, &s);
    float *inplace_d = download(be, b.R, n);
    CHECK(!memcmp(inplace_d, dqkv, n * 4));

    free(qkv), free(R), free(prior), free(want), free(want_rstd), free(out), free(rstd);
    free(dqkv), free(num), free(num_w), free(inplace), free(inplace_d), free(ctx.qkv);
    free((void *)ctx.R);
    for (int i = 0; i < 4; i++) free(params[i]), free(dw[i]), free(param_d[i]);
    qk_norm_free(be, &b);
    return 0;
}

/* A tensor-parallel rank holds the qkv columns of its query groups: its
 * output and input gradient are the whole computation's slice, and the
 * weight gradients of the ranks sum to the whole's (each rank's is only a
 * part, which the model sums over the TP group). */
static int check_qk_norm_split(Backend *be, TestRng *rng, bool rms, int NH, int NG, int TP) {
    const QKNormShape whole = {.N = 6, .NH = NH, .NG = NG, .HS = QK_HS, .rms = rms, .eps = 1e-5f,
                               .weight_offset = 0.0f};
    QKNormShape part = whole;
    part.NH /= TP, part.NG /= TP;
    const size_t n = qk_norm_numel(&whole), rows = (size_t)whole.N, HS = (size_t)whole.HS;
    const size_t row = qkv_row(NH, NG, whole.HS), part_row = row / TP;
    float *qkv = rand_floats(rng, n, -1.5f, 1.5f), *R = rand_floats(rng, n, -1, 1);
    float *params[4], *zeros = xcalloc(HS, sizeof(float));
    for (int i = 0; i < 4; i++) params[i] = rand_floats(rng, HS, 0.5f, 1.5f);
    QKNormBufs b = qk_norm_upload(be, &whole, qkv, params, R, zeros);
    qk_norm_run(be, &whole, &b);
    float *out = download(be, b.out, n), *dqkv = download(be, b.dqkv, n);
    float *const whole_grads[4] = {b.dqw, b.dqb, b.dkw, b.dkb};
    double sums[4][QK_HS] = {{0}};
    for (int r = 0; r < TP; r++) {
        float *rq = columns(qkv, rows, row, r * part_row, part_row);
        float *rR = columns(R, rows, row, r * part_row, part_row);
        QKNormBufs pb = qk_norm_upload(be, &part, rq, params, rR, zeros);
        qk_norm_run(be, &part, &pb);
        float *got = download(be, pb.out, rows * part_row);
        float *got_d = download(be, pb.dqkv, rows * part_row);
        float *want = columns(out, rows, row, r * part_row, part_row);
        float *want_d = columns(dqkv, rows, row, r * part_row, part_row);
        CHECK(!compare_f("TP rank's qk norm output", got, want, rows * part_row, FWD_TOL));
        CHECK(!compare_f("TP rank's qk norm dqkv", got_d, want_d, rows * part_row, FWD_TOL));
        float *const part_grads[4] = {pb.dqw, pb.dqb, pb.dkw, pb.dkb};
        for (int i = 0; i < 4; i++) {
            float *g = download(be, part_grads[i], HS);
            for (size_t c = 0; c < HS; c++) sums[i][c] += g[c];
            free(g);
        }
        free(rq), free(rR), free(got), free(got_d), free(want), free(want_d);
        qk_norm_free(be, &pb);
    }
    for (int i = 0; i < 4; i++) {
        if (rms && i % 2) continue;
        float *g = download(be, whole_grads[i], HS);
        CHECK(!compare_verbose("TP ranks' qk norm weight gradients summed", g, sums[i], HS,
                               FWD_TOL));
        free(g);
    }
    free(qkv), free(R), free(zeros), free(out), free(dqkv);
    for (int i = 0; i < 4; i++) free(params[i]);
    qk_norm_free(be, &b);
    return 0;
}

static int test_qk_norm(Backend *be, TestRng *rng) {
    for (int rms = 0; rms < 2; rms++) {
        CHECK(!check_qk_norm(be, rng, rms, 0.0f, 4, 2)); /* GQA: 2 query heads per group */
        CHECK(!check_qk_norm(be, rng, rms, 1.0f, 4, 2));
        CHECK(!check_qk_norm(be, rng, rms, 0.0f, 3, 3)); /* one query head per group */
        CHECK(!check_qk_norm(be, rng, rms, 1.0f, 6, 1)); /* multi-query */
        CHECK(!check_qk_norm_split(be, rng, rms, 4, 2, 2));
        CHECK(!check_qk_norm_split(be, rng, rms, 4, 4, 2));
        CHECK(!check_qk_norm_split(be, rng, rms, 8, 4, 4));
    }
    return 0;
}

int main(void) {
    Backend *be = backend_create("cpu", 0, NULL, 0);
    if (!be) {
        fprintf(stderr, "backend_create(\"cpu\") failed\n");
        return 1;
    }
    TestRng rng = {20261203};
    int failures = 0;
    RUN(failures, test_norms(be, &rng));
    RUN(failures, test_activations(be, &rng));
    RUN(failures, test_dropout(be, &rng));
    RUN(failures, test_rope(be, &rng));
    RUN(failures, test_group_attention(be, &rng));
    RUN(failures, test_attention_dropout_split(be, &rng));
    RUN(failures, test_qk_norm(be, &rng));
    if (!failures && (be->bytes_in_use != 0 || be->num_allocations != 0)) {
        fprintf(stderr, "leak: %zu bytes in %zu buffers still allocated\n", be->bytes_in_use,
                be->num_allocations);
        failures++;
    }
    backend_destroy(be);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "all architecture op checks passed");
    return failures ? 1 : 0;
}
