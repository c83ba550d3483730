/* tests/test_backend_cpu.c — the fp32 CPU backend's forward ops against
 * double-precision reference forwards written here, and every backward
 * against central finite differences of those references.
 *
 * For an op f with inputs x the test draws a random projection R and checks
 * d/dx sum(f(x) * R), computed by the backend's backward with dout = R,
 * against (L(x + h e_i) - L(x - h e_i)) / 2h in double. check_close() also
 * verifies that a 10% error in one gradient element would fail, so the
 * tolerances are known to be tight enough. Accumulation semantics (parameter
 * gradients add, activation gradients overwrite, layernorm adds into dinp)
 * are checked along the way. Memory, casts, AdamW, reductions and
 * determinism are in test_backend_cpu_misc.c. */
#include <stdbool.h>

#include "backend/backend.h"
#include "test_backend_util.h"

static const double FWD_TOL = 5e-6;
static const double GRAD_TOL = 1e-5;

/* sum(out * R) for a reference forward that writes `n_out` doubles. */
static double projected(const double *out, const double *R, size_t n_out) {
    return dot_d(out, R, n_out);
}

/* Two calls of a parameter-gradient backward must give twice one call. */
static int check_doubled(const char *what, const float *once, const float *twice, size_t n) {
    double *want = xmalloc(n * sizeof(double) + 1);
    for (size_t i = 0; i < n; i++) want[i] = 2.0 * once[i];
    int rc = compare_verbose(what, twice, want, n, 1e-6);
    free(want);
    return rc;
}

/* ---- embedding ------------------------------------------------------------ */

typedef struct {
    int N, C, vocab_begin, vocab_end;
    const int32_t *tokens;
    double *table;
    const double *R;
} EmbeddingCtx;

static void embedding_ref(double *out, const EmbeddingCtx *c) {
    for (int n = 0; n < c->N; n++) {
        int id = c->tokens[n];
        bool owned = id >= c->vocab_begin && id < c->vocab_end;
        for (int j = 0; j < c->C; j++)
            out[n * c->C + j] = owned ? c->table[(id - c->vocab_begin) * c->C + j] : 0.0;
    }
}

static double embedding_objective(void *p) {
    EmbeddingCtx *c = p;
    size_t n = (size_t)c->N * c->C;
    double *out = xmalloc(n * sizeof(double));
    embedding_ref(out, c);
    double s = projected(out, c->R, n);
    free(out);
    return s;
}

static int test_embedding(Backend *be, TestRng *rng) {
    enum { N = 6, C = 8, VB = 3, VE = 9 };
    /* A tensor-parallel slice [3, 9) of an 11-token vocabulary: ids below,
     * above and at both edges, and one id twice (its rows must add). */
    const int32_t tokens[N] = {4, 0, 8, 4, 9, 3};
    const size_t rows = VE - VB, tn = rows * C, on = (size_t)N * C;
    float *table = rand_floats(rng, tn, -1, 1), *R = rand_floats(rng, on, -1, 1);
    EmbeddingCtx ctx = {N, C, VB, VE, tokens, to_double(table, tn), to_double(R, on)};

    int32_t *d_tok = upload(be, tokens, sizeof tokens);
    float *d_table = upload(be, table, tn * 4), *d_R = upload(be, R, on * 4);
    float *d_out = be->ops->alloc(be, on * 4), *d_dtable = be->ops->alloc(be, tn * 4);
    be->ops->embedding_forward(be, d_out, d_tok, d_table, N, C, VB, VE);
    double *want = xmalloc(on * sizeof(double));
    embedding_ref(want, &ctx);
    float *out = download(be, d_out, on);
    CHECK(!compare_verbose("embedding forward", out, want, on, 0.0));

    be->ops->embedding_backward(be, d_dtable, d_R, d_tok, N, C, VB, VE);
    float *grad = download(be, d_dtable, tn);
    double *num = xmalloc(tn * sizeof(double));
    numerical_grad(embedding_objective, &ctx, ctx.table, NULL, tn, num);
    CHECK(!check_close("embedding dtable", grad, num, tn, GRAD_TOL));
    be->ops->embedding_backward(be, d_dtable, d_R, d_tok, N, C, VB, VE);
    float *grad2 = download(be, d_dtable, tn);
    CHECK(!check_doubled("embedding dtable accumulates", grad, grad2, tn));

    free(table), free(R), free(ctx.table), free((void *)ctx.R), free(want), free(out);
    free(grad), free(grad2), free(num);
    be->ops->free(be, d_tok), be->ops->free(be, d_table), be->ops->free(be, d_R);
    be->ops->free(be, d_out), be->ops->free(be, d_dtable);
    return 0;
}

/* ---- position embedding --------------------------------------------------- */

typedef struct {
    int B, T, C;
    const double *x;
    double *pos;
    const double *R;
} PositionCtx;

static double position_objective(void *p) {
    PositionCtx *c = p;
    double s = 0.0;
    for (int b = 0; b < c->B; b++)
        for (int i = 0; i < c->T * c->C; i++) {
            size_t k = (size_t)b * c->T * c->C + i;
            s += (c->x[k] + c->pos[i]) * c->R[k];
        }
    return s;
}

static int test_position_embedding(Backend *be, TestRng *rng) {
    enum { B = 2, T = 3, C = 8 };
    const size_t on = (size_t)B * T * C, pn = (size_t)T * C;
    float *x = rand_floats(rng, on, -1, 1), *pos = rand_floats(rng, pn, -1, 1);
    float *R = rand_floats(rng, on, -1, 1);
    PositionCtx ctx = {B, T, C, to_double(x, on), to_double(pos, pn), to_double(R, on)};

    float *d_out = upload(be, x, on * 4), *d_pos = upload(be, pos, pn * 4);
    float *d_R = upload(be, R, on * 4), *d_dpos = be->ops->alloc(be, pn * 4);
    be->ops->position_embedding_add(be, d_out, d_pos, B, T, C);
    float *out = download(be, d_out, on);
    double *want = xmalloc(on * sizeof(double));
    for (size_t k = 0; k < on; k++) want[k] = ctx.x[k] + ctx.pos[k % pn];
    CHECK(!compare_verbose("position_embedding_add", out, want, on, FWD_TOL));

    be->ops->position_embedding_backward(be, d_dpos, d_R, B, T, C);
    float *grad = download(be, d_dpos, pn);
    double *num = xmalloc(pn * sizeof(double));
    numerical_grad(position_objective, &ctx, ctx.pos, NULL, pn, num);
    CHECK(!check_close("position dpos", grad, num, pn, GRAD_TOL));
    be->ops->position_embedding_backward(be, d_dpos, d_R, B, T, C);
    float *grad2 = download(be, d_dpos, pn);
    CHECK(!check_doubled("position dpos accumulates", grad, grad2, pn));

    free(x), free(pos), free(R), free((void *)ctx.x), free(ctx.pos), free((void *)ctx.R);
    free(out), free(want), free(grad), free(grad2), free(num);
    be->ops->free(be, d_out), be->ops->free(be, d_pos), be->ops->free(be, d_R);
    be->ops->free(be, d_dpos);
    return 0;
}

/* ---- layernorm ------------------------------------------------------------ */

typedef struct {
    int N, C;
    double *x, *w, *b;
    const double *R;
} LayernormCtx;

static void layernorm_ref(double *out, double *mean, double *rstd, const LayernormCtx *c) {
    for (int n = 0; n < c->N; n++) {
        const double *x = c->x + (size_t)n * c->C;
        double mu = 0.0, var = 0.0;
        for (int j = 0; j < c->C; j++) mu += x[j];
        mu /= c->C;
        for (int j = 0; j < c->C; j++) var += (x[j] - mu) * (x[j] - mu);
        var /= c->C;
        double rs = 1.0 / sqrt(var + 1e-5);
        for (int j = 0; j < c->C; j++) out[n * c->C + j] = (x[j] - mu) * rs * c->w[j] + c->b[j];
        if (mean) mean[n] = mu, rstd[n] = rs;
    }
}

static double layernorm_objective(void *p) {
    LayernormCtx *c = p;
    size_t n = (size_t)c->N * c->C;
    double *out = xmalloc(n * sizeof(double));
    layernorm_ref(out, NULL, NULL, c);
    double s = projected(out, c->R, n);
    free(out);
    return s;
}

static int test_layernorm(Backend *be, TestRng *rng) {
    enum { N = 6, C = 8 };
    const size_t xn = (size_t)N * C;
    float *x = rand_floats(rng, xn, -2, 2), *w = rand_floats(rng, C, 0.5f, 1.5f);
    float *b = rand_floats(rng, C, -0.5f, 0.5f), *R = rand_floats(rng, xn, -1, 1);
    float *prior = rand_floats(rng, xn, -1, 1); /* dinp's content before backward */
    for (int j = 0; j < C; j++) x[j] += 3.0f;   /* one row with a large mean */
    LayernormCtx ctx = {N, C, to_double(x, xn), to_double(w, C), to_double(b, C), to_double(R, xn)};

    float *d_x = upload(be, x, xn * 4), *d_w = upload(be, w, C * 4), *d_b = upload(be, b, C * 4);
    float *d_R = upload(be, R, xn * 4), *d_dx = upload(be, prior, xn * 4);
    float *d_out = be->ops->alloc(be, xn * 4), *d_mean = be->ops->alloc(be, N * 4);
    float *d_rstd = be->ops->alloc(be, N * 4), *d_dw = be->ops->alloc(be, C * 4);
    float *d_db = be->ops->alloc(be, C * 4);
    be->ops->layernorm_forward(be, d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C, 1e-5f, 0.0f);
    double want[N * C], want_mean[N], want_rstd[N];
    layernorm_ref(want, want_mean, want_rstd, &ctx);
    float *out = download(be, d_out, xn), *mean = download(be, d_mean, N);
    float *rstd = download(be, d_rstd, N);
    CHECK(!compare_verbose("layernorm forward", out, want, xn, FWD_TOL));
    CHECK(!compare_verbose("layernorm mean", mean, want_mean, N, FWD_TOL));
    CHECK(!compare_verbose("layernorm rstd", rstd, want_rstd, N, FWD_TOL));

    be->ops->layernorm_backward(be, d_dx, d_dw, d_db, d_R, d_x, d_w, d_mean, d_rstd, N, C, 0.0f);
    float *dx = download(be, d_dx, xn), *dw = download(be, d_dw, C), *db = download(be, d_db, C);
    for (size_t i = 0; i < xn; i++) dx[i] -= prior[i]; /* backward adds into dinp */
    double num_x[N * C], num_w[C], num_b[C];
    numerical_grad(layernorm_objective, &ctx, ctx.x, NULL, xn, num_x);
    numerical_grad(layernorm_objective, &ctx, ctx.w, NULL, C, num_w);
    numerical_grad(layernorm_objective, &ctx, ctx.b, NULL, C, num_b);
    CHECK(!check_close("layernorm dinp (added)", dx, num_x, xn, GRAD_TOL));
    CHECK(!check_close("layernorm dweight", dw, num_w, C, GRAD_TOL));
    CHECK(!check_close("layernorm dbias", db, num_b, C, GRAD_TOL));
    be->ops->layernorm_backward(be, d_dx, d_dw, d_db, d_R, d_x, d_w, d_mean, d_rstd, N, C, 0.0f);
    float *dw2 = download(be, d_dw, C), *db2 = download(be, d_db, C);
    CHECK(!check_doubled("layernorm dweight accumulates", dw, dw2, C));
    CHECK(!check_doubled("layernorm dbias accumulates", db, db2, C));

    free(x), free(w), free(b), free(R), free(prior), free(ctx.x), free(ctx.w), free(ctx.b);
    free((void *)ctx.R), free(out), free(mean), free(rstd), free(dx), free(dw), free(db);
    free(dw2), free(db2);
    void *bufs[] = {d_x, d_w, d_b, d_R, d_dx, d_out, d_mean, d_rstd, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->ops->free(be, bufs[i]);
    return 0;
}

/* ---- matmul --------------------------------------------------------------- */

typedef struct {
    int N, IC, OC;
    bool in_major;
    double *x, *w, *bias; /* bias may be NULL */
    const double *R;
} MatmulCtx;

static void matmul_ref(double *out, const MatmulCtx *c) {
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++) {
            double s = c->bias ? c->bias[o] : 0.0;
            for (int i = 0; i < c->IC; i++) {
                double w = c->in_major ? c->w[i * c->OC + o] : c->w[o * c->IC + i];
                s += c->x[n * c->IC + i] * w;
            }
            out[n * c->OC + o] = s;
        }
}

static double matmul_objective(void *p) {
    MatmulCtx *c = p;
    size_t n = (size_t)c->N * c->OC;
    double *out = xmalloc(n * sizeof(double));
    matmul_ref(out, c);
    double s = projected(out, c->R, n);
    free(out);
    return s;
}

static int test_matmul(Backend *be, TestRng *rng, bool in_major, bool with_bias) {
    enum { N = 6, IC = 8, OC = 7 };
    const size_t xn = (size_t)N * IC, wn = (size_t)IC * OC, on = (size_t)N * OC;
    float *x = rand_floats(rng, xn, -1, 1), *w = rand_floats(rng, wn, -1, 1);
    float *bias = rand_floats(rng, OC, -1, 1), *R = rand_floats(rng, on, -1, 1);
    MatmulCtx ctx = {N,
                     IC,
                     OC,
                     in_major,
                     to_double(x, xn),
                     to_double(w, wn),
                     with_bias ? to_double(bias, OC) : NULL,
                     to_double(R, on)};

    float *d_x = upload(be, x, xn * 4), *d_w = upload(be, w, wn * 4);
    float *d_bias = with_bias ? upload(be, bias, OC * 4) : NULL, *d_R = upload(be, R, on * 4);
    float *d_out = be->ops->alloc(be, on * 4), *d_dx = be->ops->alloc(be, xn * 4);
    float *d_dw = be->ops->alloc(be, wn * 4), *d_db = be->ops->alloc(be, OC * 4);
    be->ops->matmul_forward(be, d_out, d_x, d_w, d_bias, N, IC, OC, in_major);
    double want[N * OC];
    matmul_ref(want, &ctx);
    float *out = download(be, d_out, on);
    CHECK(!compare_verbose("matmul forward", out, want, on, FWD_TOL));

    float garbage[N * IC];
    for (size_t i = 0; i < xn; i++) garbage[i] = 1e3f;
    be->ops->copy_to_device(be, d_dx, garbage, sizeof garbage); /* dinp is overwritten */
    be->ops->matmul_backward(be, d_dx, d_dw, with_bias ? d_db : NULL, d_R, d_x, d_w, N, IC, OC,
                             in_major);
    float *dx = download(be, d_dx, xn), *dw = download(be, d_dw, wn), *db = download(be, d_db, OC);
    double num_x[N * IC], num_w[IC * OC], num_b[OC];
    numerical_grad(matmul_objective, &ctx, ctx.x, NULL, xn, num_x);
    numerical_grad(matmul_objective, &ctx, ctx.w, NULL, wn, num_w);
    CHECK(!check_close("matmul dinp", dx, num_x, xn, GRAD_TOL));
    CHECK(!check_close("matmul dweight", dw, num_w, wn, GRAD_TOL));
    if (with_bias) {
        numerical_grad(matmul_objective, &ctx, ctx.bias, NULL, OC, num_b);
        CHECK(!check_close("matmul dbias", db, num_b, OC, GRAD_TOL));
    } else {
        for (int o = 0; o < OC; o++) CHECK(db[o] == 0.0f); /* dbias NULL: untouched */
    }
    /* dinp == NULL skips the input gradient; the parameter gradients add. */
    be->ops->matmul_backward(be, NULL, d_dw, with_bias ? d_db : NULL, d_R, d_x, d_w, N, IC, OC,
                             in_major);
    float *dw2 = download(be, d_dw, wn), *db2 = download(be, d_db, OC);
    CHECK(!check_doubled("matmul dweight accumulates", dw, dw2, wn));
    if (with_bias) CHECK(!check_doubled("matmul dbias accumulates", db, db2, OC));

    free(x), free(w), free(bias), free(R), free(ctx.x), free(ctx.w), free(ctx.bias);
    free((void *)ctx.R), free(out), free(dx), free(dw), free(db), free(dw2), free(db2);
    void *bufs[] = {d_x, d_w, d_bias, d_R, d_out, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->ops->free(be, bufs[i]);
    return 0;
}

/* ---- GELU and the elementwise ops ----------------------------------------- */

typedef struct {
    size_t n;
    double *x;
    const double *R;
} GeluCtx;

static double gelu_ref(double x) {
    const double pi = 3.14159265358979323846;
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}

static double gelu_objective(void *p) {
    GeluCtx *c = p;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++) s += gelu_ref(c->x[i]) * c->R[i];
    return s;
}

static int test_gelu(Backend *be, TestRng *rng) {
    enum { N = 48 };
    float *x = rand_floats(rng, N, -4, 4), *R = rand_floats(rng, N, -1, 1);
    GeluCtx ctx = {N, to_double(x, N), to_double(R, N)};
    float *d_x = upload(be, x, N * 4), *d_R = upload(be, R, N * 4);
    float *d_out = be->ops->alloc(be, N * 4), *d_dx = upload(be, R, N * 4);
    be->ops->gelu_forward(be, d_out, d_x, N);
    double want[N];
    for (int i = 0; i < N; i++) want[i] = gelu_ref(ctx.x[i]);
    float *out = download(be, d_out, N);
    CHECK(!compare_verbose("gelu forward", out, want, N, FWD_TOL));
    be->ops->gelu_backward(be, d_dx, d_x, d_R, N); /* d_dx held R: must be overwritten */
    float *dx = download(be, d_dx, N);
    double num[N];
    numerical_grad(gelu_objective, &ctx, ctx.x, NULL, N, num);
    CHECK(!check_close("gelu dinp", dx, num, N, GRAD_TOL));
    free(x), free(R), free(ctx.x), free((void *)ctx.R), free(out), free(dx);
    be->ops->free(be, d_x), be->ops->free(be, d_R), be->ops->free(be, d_out);
    be->ops->free(be, d_dx);
    return 0;
}

static int test_elementwise(Backend *be, TestRng *rng) {
    enum { N = 37 };
    float *a = rand_floats(rng, N, -1, 1), *b = rand_floats(rng, N, -1, 1);
    float *d_a = upload(be, a, N * 4), *d_b = upload(be, b, N * 4);
    float *d_out = be->ops->alloc(be, N * 4);
    double want[N];
    be->ops->add(be, d_out, d_a, d_b, N);
    for (int i = 0; i < N; i++) want[i] = (double)a[i] + b[i];
    float *out = download(be, d_out, N);
    CHECK(!compare_verbose("add", out, want, N, FWD_TOL));
    be->ops->add(be, d_a, d_a, d_b, N); /* out aliases a */
    float *aliased = download(be, d_a, N);
    CHECK(!memcmp(aliased, out, sizeof(float) * N));
    be->ops->add_inplace(be, d_a, d_b, N);
    float *twice = download(be, d_a, N);
    for (int i = 0; i < N; i++) want[i] = (double)a[i] + 2.0 * b[i];
    CHECK(!compare_verbose("add_inplace", twice, want, N, FWD_TOL));
    be->ops->scale_f32(be, d_b, -0.25f, N);
    float *scaled = download(be, d_b, N);
    for (int i = 0; i < N; i++) want[i] = -0.25 * b[i];
    CHECK(!compare_verbose("scale_f32", scaled, want, N, 0.0));
    free(a), free(b), free(out), free(aliased), free(twice), free(scaled);
    be->ops->free(be, d_a), be->ops->free(be, d_b), be->ops->free(be, d_out);
    return 0;
}

/* ---- attention ------------------------------------------------------------ */

typedef struct {
    int B, T, NH, HS;
    bool causal; /* false only to prove the test notices a dropped mask */
    double *qkv;
    const double *R;
} AttentionCtx;

/* out [B, T, NH, HS] and (when P != NULL) the probabilities [B, NH, T, T]. */
static void attention_ref(double *out, double *lse, const AttentionCtx *c) {
    const int T = c->T, HS = c->HS, C = c->NH * HS, C3 = 3 * C;
    const double scale = 1.0 / sqrt((double)HS);
    double *p = xmalloc((size_t)T * sizeof(double));
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++)
            for (int t = 0; t < T; t++) {
                const double *q = c->qkv + (size_t)(b * T + t) * C3 + h * 3 * HS;
                int last = c->causal ? t : T - 1;
                double maxval = -INFINITY, sum = 0.0;
                for (int j = 0; j <= last; j++) {
                    const double *k = c->qkv + (size_t)(b * T + j) * C3 + h * 3 * HS + HS;
                    p[j] = scale * dot_d(q, k, HS);
                    if (p[j] > maxval) maxval = p[j];
                }
                for (int j = 0; j <= last; j++) sum += (p[j] = exp(p[j] - maxval));
                if (lse) lse[((size_t)b * c->NH + h) * T + t] = maxval + log(sum);
                for (int j = 0; j <= last; j++) p[j] /= sum;
                for (int d = 0; d < HS; d++) {
                    double o = 0.0;
                    for (int j = 0; j <= last; j++)
                        o += p[j] * c->qkv[(size_t)(b * T + j) * C3 + h * 3 * HS + 2 * HS + d];
                    out[(size_t)(b * T + t) * C + h * HS + d] = o;
                }
            }
    free(p);
}

static double attention_objective(void *p) {
    AttentionCtx *c = p;
    size_t n = (size_t)c->B * c->T * c->NH * c->HS;
    double *out = xmalloc(n * sizeof(double));
    attention_ref(out, NULL, c);
    double s = projected(out, c->R, n);
    free(out);
    return s;
}

/* Checks forward, the saved row log-sum-exps and backward at one shape; with
 * fd_samples > 0 only that many random qkv elements are differentiated
 * numerically (long sequences), else all of them. */
static int check_attention(Backend *be, TestRng *rng, int B, int T, int NH, int HS,
                           size_t fd_samples) {
    const size_t qn = (size_t)B * T * NH * 3 * HS, on = (size_t)B * T * NH * HS;
    const size_t pn = (size_t)B * NH * T; /* saved: one log-sum-exp per row, O(T) */
    float *qkv = rand_floats(rng, qn, -1.5f, 1.5f), *R = rand_floats(rng, on, -1, 1);
    AttentionCtx ctx = {B, T, NH, HS, true, to_double(qkv, qn), to_double(R, on)};
    CHECK(be->ops->attention_saved_bytes(be, B, T, NH, NH, HS) == pn * sizeof(float));

    float *d_qkv = upload(be, qkv, qn * 4), *d_R = upload(be, R, on * 4);
    float *d_out = be->ops->alloc(be, on * 4), *d_saved = be->ops->alloc(be, pn * 4);
    float *d_dqkv = upload(be, qkv, qn * 4); /* stale content: must be overwritten */
    be->ops->attention_forward(be, d_out, d_saved, d_qkv, B, T, NH, NH, HS, NULL, NULL);
    double *want = xmalloc(on * sizeof(double)), *want_lse = xmalloc(pn * sizeof(double));
    attention_ref(want, want_lse, &ctx);
    float *out = download(be, d_out, on), *lse = download(be, d_saved, pn);
    CHECK(!compare_verbose("attention forward", out, want, on, FWD_TOL));
    CHECK(!compare_verbose("attention saved log-sum-exp", lse, want_lse, pn, FWD_TOL));
    ctx.causal = false; /* the same comparison must reject a non-causal forward */
    attention_ref(want, NULL, &ctx);
    if (T > 1) CHECK(rel_err(out, want, on) > 100 * FWD_TOL); /* one row: nothing to mask */
    ctx.causal = true;

    be->ops->attention_backward(be, d_dqkv, d_R, d_qkv, d_out, d_saved, B, T, NH, NH, HS, NULL, NULL);
    float *dqkv = download(be, d_dqkv, qn);
    size_t count = fd_samples ? fd_samples : qn;
    size_t *idx = NULL;
    if (fd_samples) {
        idx = xmalloc(count * sizeof(size_t));
        for (size_t k = 0; k < count; k++) idx[k] = (size_t)test_rng_below(rng, (int)qn);
        idx[0] = qn - 1; /* the last key/value element: seen only by the last query */
    }
    double *num = xmalloc(count * sizeof(double));
    float *got = xmalloc(count * sizeof(float));
    for (size_t k = 0; k < count; k++) got[k] = dqkv[idx ? idx[k] : k];
    numerical_grad(attention_objective, &ctx, ctx.qkv, idx, count, num);
    CHECK(!check_close("attention dqkv", got, num, count, GRAD_TOL));
    ctx.causal = false; /* gradients of a mask-free reference must not match */
    numerical_grad(attention_objective, &ctx, ctx.qkv, idx, count, num);
    if (T > 1) CHECK(rel_err(got, num, count) > 100 * GRAD_TOL);

    free(qkv), free(R), free(ctx.qkv), free((void *)ctx.R), free(want), free(want_lse);
    free(out), free(lse), free(dqkv), free(idx), free(num), free(got);
    be->ops->free(be, d_qkv), be->ops->free(be, d_R), be->ops->free(be, d_out);
    be->ops->free(be, d_saved), be->ops->free(be, d_dqkv);
    return 0;
}

static int test_attention(Backend *be, TestRng *rng) {
    CHECK(!check_attention(be, rng, 2, 5, 2, 4, 0));
    /* Longer than the backend's 64-row blocks, with a partial last block. */
    CHECK(!check_attention(be, rng, 1, 150, 2, 3, 120));
    /* Every edge of the blocked (flash) form: one row, one block exactly,
     * one row past it, two blocks exactly and one row past. */
    static const int lengths[] = {1, 2, 63, 64, 65, 128, 129};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        CHECK(!check_attention(be, rng, 1, lengths[i], 2, 4, lengths[i] < 8 ? 0 : 60));
    return 0;
}

/* ---- cross entropy -------------------------------------------------------- */

typedef struct {
    int N, V_pad, vocab_size;
    const int32_t *targets;
    double *logits;
    double dloss;
} CrossEntropyCtx;

static void cross_entropy_ref(double *losses, const CrossEntropyCtx *c) {
    for (int n = 0; n < c->N; n++) {
        const double *z = c->logits + (size_t)n * c->V_pad;
        double m = -INFINITY, s = 0.0;
        for (int j = 0; j < c->vocab_size; j++) m = z[j] > m ? z[j] : m;
        for (int j = 0; j < c->vocab_size; j++) s += exp(z[j] - m);
        losses[n] = log(s) + m - z[c->targets[n]];
    }
}

static double cross_entropy_objective(void *p) {
    CrossEntropyCtx *c = p;
    double *losses = xmalloc((size_t)c->N * sizeof(double));
    cross_entropy_ref(losses, c);
    double s = 0.0;
    for (int n = 0; n < c->N; n++) s += c->dloss * losses[n];
    free(losses);
    return s;
}

/* The loss composed from its pieces over `tp` vocabulary slices of V_pad
 * columns, combining the slices on the host as the all-reduces would. */
static int check_cross_entropy(Backend *be, TestRng *rng, int N, int V_pad, int tp, int vocab_size,
                               bool in_place) {
    const int V = V_pad / tp;
    const size_t ln = (size_t)N * V_pad;
    float *logits = rand_floats(rng, ln, -3, 3);
    int32_t *targets = xmalloc((size_t)N * sizeof(int32_t));
    for (int n = 0; n < N; n++) targets[n] = test_rng_below(rng, vocab_size);
    targets[0] = vocab_size - 1, targets[1] = 0;
    CrossEntropyCtx ctx = {N, V_pad, vocab_size, targets, to_double(logits, ln), 0.37};
    int32_t *d_targets = upload(be, targets, (size_t)N * sizeof(int32_t));
    float *d_rowmax = be->ops->alloc(be, N * 4), *d_sumexp = be->ops->alloc(be, N * 4);
    float *d_target_logit = be->ops->alloc(be, N * 4), *d_losses = be->ops->alloc(be, N * 4);
    float **d_slice = xmalloc((size_t)tp * sizeof(float *));
    float *slice = xmalloc((size_t)N * V * sizeof(float));
    float *gmax = xmalloc(N * 4), *gsum = xcalloc(N, 4), *gtarget = xcalloc(N, 4);
    for (int n = 0; n < N; n++) gmax[n] = -INFINITY;
    for (int s = 0; s < tp; s++) {
        for (int n = 0; n < N; n++) memcpy(slice + n * V, logits + n * V_pad + s * V, V * 4);
        d_slice[s] = upload(be, slice, (size_t)N * V * 4);
        be->ops->cross_entropy_max(be, d_rowmax, d_slice[s], N, V, s * V, vocab_size);
        float *m = download(be, d_rowmax, N);
        for (int n = 0; n < N; n++) {
            if (s * V >= vocab_size) CHECK(m[n] == -INFINITY); /* an all-padding slice */
            gmax[n] = m[n] > gmax[n] ? m[n] : gmax[n];
        }
        free(m);
    }
    be->ops->copy_to_device(be, d_rowmax, gmax, N * 4);
    for (int s = 0; s < tp; s++) {
        be->ops->cross_entropy_sums(be, d_sumexp, d_target_logit, d_slice[s], d_rowmax, d_targets,
                                    N, V, s * V, vocab_size);
        float *se = download(be, d_sumexp, N), *tl = download(be, d_target_logit, N);
        for (int n = 0; n < N; n++) gsum[n] += se[n], gtarget[n] += tl[n];
        free(se), free(tl);
    }
    be->ops->copy_to_device(be, d_sumexp, gsum, N * 4);
    be->ops->copy_to_device(be, d_target_logit, gtarget, N * 4);
    be->ops->cross_entropy_loss(be, d_losses, d_rowmax, d_sumexp, d_target_logit, N);
    float *losses = download(be, d_losses, N);
    double *want = xmalloc((size_t)N * sizeof(double));
    cross_entropy_ref(want, &ctx);
    CHECK(!compare_verbose("cross entropy loss", losses, want, N, FWD_TOL));

    float *dlogits = xmalloc(ln * sizeof(float));
    float *d_dslice = in_place ? NULL : be->ops->alloc(be, (size_t)N * V * 4);
    for (int s = 0; s < tp; s++) {
        float *dst = in_place ? d_slice[s] : d_dslice;
        be->ops->cross_entropy_backward(be, dst, d_slice[s], d_rowmax, d_sumexp, d_targets, N, V,
                                        s * V, vocab_size, (float)ctx.dloss);
        float *d = download(be, dst, (size_t)N * V);
        for (int n = 0; n < N; n++) memcpy(dlogits + n * V_pad + s * V, d + n * V, V * 4);
        free(d);
    }
    for (int n = 0; n < N; n++)
        for (int j = vocab_size; j < V_pad; j++) CHECK(dlogits[n * V_pad + j] == 0.0f);
    double *num = xmalloc(ln * sizeof(double));
    numerical_grad(cross_entropy_objective, &ctx, ctx.logits, NULL, ln, num);
    CHECK(!check_close("cross entropy dlogits", dlogits, num, ln, GRAD_TOL));

    for (int s = 0; s < tp; s++) be->ops->free(be, d_slice[s]);
    be->ops->free(be, d_dslice), be->ops->free(be, d_targets), be->ops->free(be, d_rowmax);
    be->ops->free(be, d_sumexp), be->ops->free(be, d_target_logit), be->ops->free(be, d_losses);
    free(logits), free(targets), free(ctx.logits), free(d_slice), free(slice), free(gmax);
    free(gsum), free(gtarget), free(losses), free(want), free(dlogits), free(num);
    return 0;
}

static int test_cross_entropy(Backend *be, TestRng *rng) {
    /* One slice with 2 padded columns; two slices, the second starting at
     * 6 with 3 padded; four slices, one with a single valid column and one
     * that is all padding; dlogits written in place over the logits. */
    CHECK(!check_cross_entropy(be, rng, 6, 11, 1, 9, false));
    CHECK(!check_cross_entropy(be, rng, 6, 12, 2, 9, false));
    CHECK(!check_cross_entropy(be, rng, 6, 16, 4, 9, false));
    CHECK(!check_cross_entropy(be, rng, 6, 12, 2, 9, true));
    /* Slices of 550 columns: longer than the backend's internal blocks. */
    CHECK(!check_cross_entropy(be, rng, 2, 1100, 2, 1000, false));
    return 0;
}

int main(void) {
    Backend *be = backend_create("cpu", 0, NULL, 0);
    if (!be) {
        fprintf(stderr, "backend_create(\"cpu\") failed\n");
        return 1;
    }
    TestRng rng = {20240611};
    int failures = 0;
    RUN(failures, test_embedding(be, &rng));
    RUN(failures, test_position_embedding(be, &rng));
    RUN(failures, test_layernorm(be, &rng));
    RUN(failures, test_matmul(be, &rng, false, true));
    RUN(failures, test_matmul(be, &rng, true, true));
    RUN(failures, test_matmul(be, &rng, false, false));
    RUN(failures, test_matmul(be, &rng, true, false));
    RUN(failures, test_gelu(be, &rng));
    RUN(failures, test_elementwise(be, &rng));
    RUN(failures, test_attention(be, &rng));
    RUN(failures, test_cross_entropy(be, &rng));
    if (!failures) {
        if (be->bytes_in_use != 0 || be->num_allocations != 0) {
            fprintf(stderr, "leak: %zu bytes in %zu buffers still allocated\n", be->bytes_in_use,
                    be->num_allocations);
            failures++;
        }
    }
    backend_destroy(be);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "all backend gradient checks passed");
    return failures ? 1 : 0;
}
