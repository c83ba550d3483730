/* tests/test_backend_cpu_misc.c — the fp32 CPU backend's memory ops and
 * accounting, casts, AdamW against a double-precision reference, the fp32
 * reductions, overwrite semantics on poisoned outputs, and determinism
 * (bitwise equal results for equal inputs, across calls and instances), and
 * the document-masking ops (explicit position ids, ignored targets). */
#include <cblas.h>
#include <float.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_math.h"
#include "test_backend_util.h"

static bool all_zero(const void *p, size_t bytes) {
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++)
        if (c[i]) return false;
    return true;
}

static int test_identity(Backend *be) {
    CHECK(!strcmp(be->name, "cpu"));
    CHECK(be->act_dtype == DTYPE_F32);
    CHECK(backend_act_bytes(be, 10) == 40);
    return 0;
}

static int test_memory(Backend *be) {
    CHECK(be->bytes_in_use == 0 && be->num_allocations == 0 && be->peak_bytes_in_use == 0);
    unsigned char *a = be->ops->alloc(be, 100);
    unsigned char *b = be->ops->alloc(be, 1000);
    CHECK(a && b && a != b);
    CHECK((uintptr_t)a % 64 == 0 && (uintptr_t)b % 64 == 0);
    CHECK(be->bytes_in_use == 1100 && be->num_allocations == 2 && be->peak_bytes_in_use == 1100);
    CHECK(all_zero(a, 100) && all_zero(b, 1000));

    unsigned char host[1000], back[1000];
    for (int i = 0; i < 1000; i++) host[i] = (unsigned char)(i * 7 + 1);
    be->ops->copy_to_device(be, b, host, 1000);
    be->ops->copy_device(be, a, b + 10, 100);
    be->ops->synchronize(be);
    be->ops->copy_to_host(be, back, a, 100);
    CHECK(!memcmp(back, host + 10, 100));
    be->ops->memset_zero(be, b + 200, 300);
    be->ops->copy_to_host(be, back, b, 1000);
    CHECK(!memcmp(back, host, 200) && all_zero(back + 200, 300) &&
          !memcmp(back + 500, host + 500, 500));

    be->ops->free(be, b);
    CHECK(be->bytes_in_use == 100 && be->num_allocations == 1 && be->peak_bytes_in_use == 1100);
    unsigned char *c = be->ops->alloc(be, 1000);
    CHECK(all_zero(c, 1000));
    /* Recycled host memory must come back zeroed too: dirty and free a few
     * buffers of one size, then take that size again. */
    unsigned char *dirty[8];
    for (int i = 0; i < 8; i++) {
        dirty[i] = be->ops->alloc(be, 3000);
        memset(dirty[i], 0xab, 3000);
    }
    for (int i = 0; i < 8; i++) be->ops->free(be, dirty[i]);
    for (int i = 0; i < 8; i++) {
        dirty[i] = be->ops->alloc(be, 3000);
        CHECK(all_zero(dirty[i], 3000));
    }
    for (int i = 0; i < 8; i++) be->ops->free(be, dirty[i]);
    CHECK(be->bytes_in_use == 1100 && be->peak_bytes_in_use == 100 + 1000 + 8 * 3000);
    void *empty = be->ops->alloc(be, 0);
    CHECK(empty != NULL && (uintptr_t)empty % 64 == 0);
    CHECK(be->bytes_in_use == 1100 && be->num_allocations == 3);
    be->ops->free(be, NULL); /* no-op */
    be->ops->free(be, empty), be->ops->free(be, c), be->ops->free(be, a);
    CHECK(be->bytes_in_use == 0 && be->num_allocations == 0);
    return 0;
}

/* gemm_calls / gemm_seconds count the library matrix products, one per
 * product, and nothing else. */
static int test_gemm_accounting(Backend *be, TestRng *rng) {
    enum { N = 16, IC = 24, OC = 20 };
    float *x = rand_floats(rng, N * IC, -1, 1), *w = rand_floats(rng, IC * OC, -1, 1);
    float *d_x = upload(be, x, sizeof(float) * N * IC),
          *d_w = upload(be, w, sizeof(float) * IC * OC);
    float *d_y = be->ops->alloc(be, sizeof(float) * N * OC);
    float *d_dx = be->ops->alloc(be, sizeof(float) * N * IC);
    float *d_dw = be->ops->alloc(be, sizeof(float) * IC * OC);
    uint64_t calls = be->gemm_calls;
    double seconds = be->gemm_seconds;
    be->ops->gelu_forward(be, d_dx, d_x, N * IC);
    CHECK(be->gemm_calls == calls && be->gemm_seconds == seconds);
    be->ops->matmul_forward(be, d_y, d_x, d_w, NULL, N, IC, OC, true);
    CHECK(be->gemm_calls == calls + 1);
    be->ops->matmul_backward(be, d_dx, d_dw, NULL, d_y, d_x, d_w, N, IC, OC, true);
    CHECK(be->gemm_calls == calls + 3);
    be->ops->matmul_backward(be, NULL, d_dw, NULL, d_y, d_x, d_w, N, IC, OC, true);
    CHECK(be->gemm_calls == calls + 4);
    CHECK(be->gemm_seconds > seconds);
    free(x), free(w);
    be->ops->free(be, d_x), be->ops->free(be, d_w), be->ops->free(be, d_y);
    be->ops->free(be, d_dx), be->ops->free(be, d_dw);
    return 0;
}

static int test_casts(Backend *be) {
    enum { N = 8 };
    float src[N] = {1.0f,       -0.0f,   1e-40f /* subnormal */, FLT_MAX, -INFINITY, NAN,
                    3.1415926f, -2.5e-8f};
    float *d_act = be->ops->alloc(be, backend_act_bytes(be, N));
    float *d_f32 = be->ops->alloc(be, N * sizeof(float));
    float *d_src = upload(be, src, sizeof src);
    be->ops->f32_to_act(be, d_act, d_src, N);
    be->ops->act_to_f32(be, d_f32, d_act, N);
    float back[N];
    be->ops->copy_to_host(be, back, d_f32, sizeof back);
    CHECK(!memcmp(back, src, sizeof src)); /* fp32 activations: the round trip is exact */
    be->ops->free(be, d_act), be->ops->free(be, d_f32), be->ops->free(be, d_src);
    return 0;
}

/* ---- AdamW ---------------------------------------------------------------- */

typedef struct {
    double lr, beta1, beta2, eps, weight_decay, grad_scale;
    bool bias_correction, decoupled; /* false only to prove the test notices */
} AdamRef;

static void adamw_ref(const AdamRef *a, double *master, double *m, double *v, const float *grad,
                      size_t n, int step) {
    double bc1 = a->bias_correction ? 1.0 - pow(a->beta1, step) : 1.0;
    double bc2 = a->bias_correction ? 1.0 - pow(a->beta2, step) : 1.0;
    for (size_t i = 0; i < n; i++) {
        double g = grad[i] * a->grad_scale;
        if (!a->decoupled) g += a->weight_decay * master[i]; /* Adam with L2, not AdamW */
        m[i] = a->beta1 * m[i] + (1.0 - a->beta1) * g;
        v[i] = a->beta2 * v[i] + (1.0 - a->beta2) * g * g;
        double update = (m[i] / bc1) / (sqrt(v[i] / bc2) + a->eps);
        if (a->decoupled) update += a->weight_decay * master[i];
        master[i] -= a->lr * update;
    }
}

/* Runs `steps` AdamW steps on the backend and on the double reference
 * `ref`; returns the relative error of the total parameter change. */
static double adamw_error(Backend *be, TestRng *rng, const AdamRef *exact, bool with_param,
                          int steps, int *rc) {
    enum { N = 37 };
    /* The backend receives fp32 hyperparameters: 1 - (float)0.999 is off by
     * 1.3e-5 relative, which is not the backend's error. */
    AdamRef rounded = *exact;
    rounded.lr = (float)rounded.lr;
    rounded.beta1 = (float)rounded.beta1;
    rounded.beta2 = (float)rounded.beta2;
    rounded.eps = (float)rounded.eps;
    rounded.weight_decay = (float)rounded.weight_decay;
    rounded.grad_scale = (float)rounded.grad_scale;
    const AdamRef *ref = &rounded;
    float *master0 = rand_floats(rng, N, -1, 1);
    double master[N], m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++) master[i] = master0[i];
    float *d_master = upload(be, master0, N * 4), *d_m = be->ops->alloc(be, N * 4);
    float *d_v = be->ops->alloc(be, N * 4), *d_grad = be->ops->alloc(be, N * 4);
    float *d_param = with_param ? be->ops->alloc(be, backend_act_bytes(be, N)) : NULL;
    for (int step = 1; step <= steps; step++) {
        float *grad = rand_floats(rng, N, -1, 1);
        be->ops->copy_to_device(be, d_grad, grad, sizeof(float) * N);
        be->ops->adamw_update(be, d_param, d_master, d_grad, d_m, d_v, N, (float)ref->lr,
                              (float)ref->beta1, (float)ref->beta2, (float)ref->eps,
                              (float)ref->weight_decay, (float)ref->grad_scale, step);
        adamw_ref(ref, master, m, v, grad, N, step);
        free(grad);
    }
    float *got = download(be, d_master, N);
    float delta[N];
    double want_delta[N];
    for (int i = 0; i < N; i++)
        delta[i] = got[i] - master0[i], want_delta[i] = master[i] - master0[i];
    double e = rel_err(delta, want_delta, N);
    *rc = 0;
    if (with_param) {
        float *param = download(be, d_param, N);
        if (memcmp(param, got, sizeof(float) * N)) *rc = 1; /* param = act(master) */
        free(param);
    }
    float *gm = download(be, d_m, N), *gv = download(be, d_v, N);
    /* The moments are only comparable when the reference is the real AdamW. */
    if (ref->bias_correction && ref->decoupled &&
        (rel_err(gm, m, N) > 1e-5 || rel_err(gv, v, N) > 1e-5))
        *rc = 1;
    free(master0), free(got), free(gm), free(gv);
    be->ops->free(be, d_master), be->ops->free(be, d_m), be->ops->free(be, d_v);
    be->ops->free(be, d_grad), be->ops->free(be, d_param);
    return e;
}

static int test_adamw(Backend *be) {
    const double tol = 3e-5; /* on the parameter change, ~1e-2 per step */
    AdamRef ref = {1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, true, true};
    int rc = 0;
    TestRng rng = {7};
    double e = adamw_error(be, &rng, &ref, true, 4, &rc);
    fprintf(stderr, "  adamw (weight decay, grad scale) rel error %.2e\n", e);
    CHECK(rc == 0 && e <= tol);
    AdamRef plain = {3e-3, 0.8, 0.999, 1e-6, 0.0, 1.0, true, true};
    CHECK(adamw_error(be, &rng, &plain, false, 3, &rc) <= tol && rc == 0);
    /* The same comparison rejects Adam without bias correction and Adam
     * with coupled (L2) weight decay: replaying the same seed gives the
     * backend the same data as the first run. */
    AdamRef no_bc = ref, coupled = ref;
    no_bc.bias_correction = false;
    coupled.decoupled = false;
    rng.state = 7;
    CHECK(adamw_error(be, &rng, &no_bc, true, 4, &rc) > 100 * tol);
    rng.state = 7;
    CHECK(adamw_error(be, &rng, &coupled, true, 4, &rc) > 10 * tol);
    return 0;
}

/* ---- reductions ----------------------------------------------------------- */

static int test_sum_squares(Backend *be, TestRng *rng) {
    enum { N = 10001 };
    float x[N];
    double want = 0.0;
    /* One 1.0 and 10000 values of 1e-4: an fp32 accumulator would lose
     * every small square (1e-8 < half an ulp of 1), a double one keeps them. */
    x[0] = 1.0f;
    for (int i = 1; i < N; i++) x[i] = (i % 2 ? 1e-4f : -1e-4f);
    for (int i = 0; i < N; i++) want += (double)x[i] * x[i];
    float *d = upload(be, x, sizeof x);
    double got = be->ops->sum_squares_f32(be, d, N);
    CHECK(fabs(got - want) <= 1e-12 * want);
    CHECK(got > 1.00009);
    for (int i = 0; i < N; i++) x[i] = test_rng_uniform(rng, -3, 3);
    want = 0.0;
    for (int i = 0; i < N; i++) want += (double)x[i] * x[i];
    be->ops->copy_to_device(be, d, x, sizeof x);
    got = be->ops->sum_squares_f32(be, d, N);
    CHECK(fabs(got - want) <= 1e-12 * want);
    CHECK(be->ops->sum_squares_f32(be, d, 3) ==
          (double)x[0] * x[0] + (double)x[1] * x[1] + (double)x[2] * x[2]);
    CHECK(be->ops->sum_squares_f32(be, d, 0) == 0.0);
    be->ops->free(be, d);
    return 0;
}

/* --log-num-zeros-in-grad's count: both signs of zero, not NaN or the
 * smallest denormals, over prefixes, an offset and the whole buffer. */
static int test_count_zeros(Backend *be) {
    enum { N = 10000 };
    float *x = xcalloc(N, sizeof(float));
    for (int i = 0; i < N; i++) x[i] = i % 3 ? (float)(i % 7) : -0.0f; /* +0 at 7, 14, ... */
    x[1] = NAN, x[2] = 1e-45f, x[4] = -1e-45f;
    uint64_t want = 0;
    for (int i = 0; i < N; i++) want += x[i] == 0.0f;
    float *d = upload(be, x, N * sizeof(float));
    CHECK(be->ops->count_zeros_f32(be, d, N) == want);
    CHECK(want > N / 3);
    CHECK(be->ops->count_zeros_f32(be, d, 1) == 1);     /* x[0] = -0 */
    CHECK(be->ops->count_zeros_f32(be, d, 6) == 2);     /* -0 at 0 and 3; NaN, denormals not */
    CHECK(be->ops->count_zeros_f32(be, d + 1, 7) == 3); /* -0 at 3 and 6, +0 at 7 */
    CHECK(be->ops->count_zeros_f32(be, d, 0) == 0);
    free(x);
    be->ops->free(be, d);
    return 0;
}

static int test_nonfinite(Backend *be) {
    enum { N = 10000 };
    float *x = xcalloc(N, sizeof(float));
    for (int i = 0; i < N; i++) x[i] = (float)(i % 17) - 8.0f;
    x[3] = FLT_MAX, x[4] = -FLT_MAX, x[5] = 1e-42f;
    float *d = upload(be, x, N * sizeof(float));
    CHECK(!be->ops->has_nonfinite_f32(be, d, N));
    CHECK(!be->ops->has_nonfinite_f32(be, d, 0));
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const int where[3] = {5000, 0, N - 1}; /* beyond the first chunk, first, last */
    for (int k = 0; k < 3; k++) {
        be->ops->copy_to_device(be, d + where[k], &bad[k], sizeof(float));
        CHECK(be->ops->has_nonfinite_f32(be, d, N));
        CHECK(!be->ops->has_nonfinite_f32(be, d, (size_t)where[k])); /* just before it */
        be->ops->copy_to_device(be, d + where[k], &x[where[k]], sizeof(float));
    }
    CHECK(!be->ops->has_nonfinite_f32(be, d, N));
    free(x);
    be->ops->free(be, d);
    return 0;
}

/* ---- the vectorisable exp and the GELU tails ------------------------------ */

/* cpu_expf is internal to the backend but carries the accuracy of softmax,
 * cross entropy and GELU: at most 2 ulp from exp over its whole range
 * (an exhaustive sweep of every float in [-87, 88] measured 1.22 ulp). */
static int test_expf(TestRng *rng) {
    double worst = 0.0;
    for (int i = 0; i < 2000000; i++) {
        float x =
            i < 1000000 ? test_rng_uniform(rng, -87.0f, 88.0f) : test_rng_uniform(rng, -1.0f, 1.0f);
        double want = exp((double)x);
        double ulp = ldexp(1.0, ilogb(want) - 23);
        double e = fabs(cpu_expf(x) - want) / ulp;
        if (!(e <= worst)) worst = e; /* a NaN sticks: later finite errors cannot hide it */
        if (isnan(worst)) break;
    }
    fprintf(stderr, "  cpu_expf: worst %.2f ulp on 2e6 samples\n", worst);
    CHECK(worst <= 2.0);
    CHECK(cpu_expf(0.0f) == 1.0f && cpu_expf(-INFINITY) == 0.0f && cpu_expf(-100.0f) == 0.0f);
    CHECK(isnan(cpu_expf(NAN)));
    const float z[19] = {3, -1, 7, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9.5f, NAN};
    CHECK(cpu_max_f32(z, 19) == 9.5f && cpu_max_f32(z, 17) == 7.0f &&
          cpu_max_f32(z, 0) == -INFINITY);
    return 0;
}

static int test_gelu_tails(Backend *be) {
    enum { N = 6 };
    const float x[N] = {-100.0f, -30.0f, -10.0f, 10.0f, 30.0f, 100.0f};
    const float ones[N] = {1, 1, 1, 1, 1, 1};
    float *d_x = upload(be, x, sizeof x), *d_one = upload(be, ones, sizeof ones);
    float *d_y = be->ops->alloc(be, sizeof x), *d_dx = be->ops->alloc(be, sizeof x);
    be->ops->gelu_forward(be, d_y, d_x, N);
    be->ops->gelu_backward(be, d_dx, d_x, d_one, N);
    float *y = download(be, d_y, N), *dx = download(be, d_dx, N);
    for (int i = 0; i < N; i++) {
        bool positive = x[i] > 0;
        /* GELU(x) -> x and GELU'(x) -> 1 far right; both -> 0 far left */
        CHECK(positive ? y[i] == x[i] : fabsf(y[i]) < 1e-20f);
        CHECK(positive ? dx[i] == 1.0f : fabsf(dx[i]) < 1e-20f);
    }
    free(y), free(dx);
    be->ops->free(be, d_x), be->ops->free(be, d_one), be->ops->free(be, d_y);
    be->ops->free(be, d_dx);
    return 0;
}

/* ---- overwrite semantics on NaN-poisoned outputs --------------------------- */

static float *poisoned(Backend *be, size_t n) {
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = upload(be, h, n * sizeof(float));
    free(h);
    return d;
}

/* Outputs that the contract says are overwritten must not read their old
 * content (sgemm with beta = 0 included): a NaN left there must vanish. */
static int test_overwrite(Backend *be, TestRng *rng) {
    enum { N = 9, IC = 12, OC = 10, B = 1, T = 9, NH = 2, HS = 6 };
    float *x = rand_floats(rng, N * IC, -1, 1), *w = rand_floats(rng, IC * OC, -1, 1);
    float *g = rand_floats(rng, N * OC, -1, 1), *qkv = rand_floats(rng, B * T * 3 * NH * HS, -1, 1);
    float *d_x = upload(be, x, sizeof(float) * N * IC),
          *d_w = upload(be, w, sizeof(float) * IC * OC);
    float *d_g = upload(be, g, sizeof(float) * N * OC),
          *d_qkv = upload(be, qkv, sizeof(float) * B * T * 3 * NH * HS);
    for (int layout = 0; layout < 2; layout++) {
        float *d_dx = poisoned(be, N * IC), *d_out = poisoned(be, N * OC);
        be->ops->matmul_forward(be, d_out, d_x, d_w, NULL, N, IC, OC, layout);
        be->ops->matmul_backward(be, d_dx, NULL, NULL, d_g, d_x, d_w, N, IC, OC, layout);
        CHECK(!be->ops->has_nonfinite_f32(be, d_out, N * OC));
        CHECK(!be->ops->has_nonfinite_f32(be, d_dx, N * IC));
        be->ops->free(be, d_dx), be->ops->free(be, d_out);
    }
    size_t qn = (size_t)B * T * 3 * NH * HS, on = (size_t)B * T * NH * HS;
    const size_t sn = be->ops->attention_saved_bytes(be, B, T, NH, NH, HS) / sizeof(float);
    float *d_out = poisoned(be, on), *d_saved = poisoned(be, sn);
    float *d_dqkv = poisoned(be, qn);
    be->ops->attention_forward(be, d_out, d_saved, d_qkv, B, T, NH, NH, HS, NULL, NULL);
    be->ops->attention_backward(be, d_dqkv, d_out, d_qkv, d_out, d_saved, B, T, NH, NH, HS, NULL, NULL);
    CHECK(!be->ops->has_nonfinite_f32(be, d_out, on));
    CHECK(!be->ops->has_nonfinite_f32(be, d_saved, sn));
    CHECK(!be->ops->has_nonfinite_f32(be, d_dqkv, qn));
    float *d_gelu = poisoned(be, N * IC), *d_dgelu = poisoned(be, N * IC);
    be->ops->gelu_forward(be, d_gelu, d_x, N * IC);
    be->ops->gelu_backward(be, d_dgelu, d_x, d_gelu, N * IC);
    CHECK(!be->ops->has_nonfinite_f32(be, d_gelu, N * IC));
    CHECK(!be->ops->has_nonfinite_f32(be, d_dgelu, N * IC));
    /* layernorm over rows of IC, reusing w's first IC floats as weight and bias */
    float *d_ln = poisoned(be, N * IC), *d_mean = poisoned(be, N), *d_rstd = poisoned(be, N);
    be->ops->layernorm_forward(be, d_ln, d_mean, d_rstd, d_x, d_w, d_w, N, IC, 1e-5f, 0.0f);
    CHECK(!be->ops->has_nonfinite_f32(be, d_ln, N * IC));
    CHECK(!be->ops->has_nonfinite_f32(be, d_mean, N) && !be->ops->has_nonfinite_f32(be, d_rstd, N));
    /* embedding rows of ids this slice does not own are written as zeros */
    const int32_t tokens[N] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    int32_t *d_tokens = upload(be, tokens, sizeof tokens);
    float *d_emb = poisoned(be, N * IC);
    be->ops->embedding_forward(be, d_emb, d_tokens, d_x, N, IC, 2, 5);
    float *emb = download(be, d_emb, N * IC);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < IC; c++)
            CHECK(emb[n * IC + c] == (n >= 2 && n < 5 ? x[(n - 2) * IC + c] : 0.0f));
    /* cross entropy over rows of OC logits: every output piece is written */
    float *d_max = poisoned(be, N), *d_sum = poisoned(be, N), *d_tl = poisoned(be, N);
    float *d_loss = poisoned(be, N), *d_dlogits = poisoned(be, N * OC);
    be->ops->cross_entropy_max(be, d_max, d_g, N, OC, 0, OC - 1);
    be->ops->cross_entropy_sums(be, d_sum, d_tl, d_g, d_max, d_tokens, N, OC, 0, OC - 1);
    be->ops->cross_entropy_loss(be, d_loss, d_max, d_sum, d_tl, N);
    be->ops->cross_entropy_backward(be, d_dlogits, d_g, d_max, d_sum, d_tokens, N, OC, 0, OC - 1,
                                    1.0f);
    CHECK(!be->ops->has_nonfinite_f32(be, d_max, N) && !be->ops->has_nonfinite_f32(be, d_sum, N));
    CHECK(!be->ops->has_nonfinite_f32(be, d_tl, N) && !be->ops->has_nonfinite_f32(be, d_loss, N));
    CHECK(!be->ops->has_nonfinite_f32(be, d_dlogits, N * OC));
    be->ops->copy_device(be, d_gelu, d_dqkv, 0); /* zero bytes: no-op */
    free(x), free(w), free(g), free(qkv), free(emb);
    void *bufs[] = {d_x,    d_w,    d_g,      d_qkv, d_out, d_saved, d_dqkv, d_gelu, d_dgelu,  d_ln,
                    d_mean, d_rstd, d_tokens, d_emb, d_max, d_sum,   d_tl,   d_loss, d_dlogits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->ops->free(be, bufs[i]);
    return 0;
}

/* ---- determinism ---------------------------------------------------------- */

/* One pass of a transformer-like chain at sizes that exercise OpenBLAS's
 * blocking; returns a host copy of every output, concatenated. */
static float *run_chain(Backend *be, uint64_t seed, size_t *n_out) {
    enum { B = 2, T = 70, NH = 3, HS = 16, C = NH * HS, N = B * T, V = 50 };
    enum {
        X,
        LN,
        MEAN,
        RSTD,
        QKV,
        GQKV,
        ATT,
        SAVED,
        LOGITS,
        MAX,
        SUM,
        TGT,
        DLOGITS,
        DATT,
        DWV,
        DGQKV,
        DQKV,
        DLN,
        DW,
        DB,
        DLNW,
        DLNB,
        DX,
        NBUF
    };
    const size_t sizes[NBUF] = {
        [X] = N * C,        [LN] = N * C,       [MEAN] = N,       [RSTD] = N,
        [QKV] = N * 3 * C,  [GQKV] = N * 3 * C, [ATT] = N * C,    [SAVED] = (size_t)B * NH * T, /* one log-sum-exp per row */
        [LOGITS] = N * V,   [MAX] = N,          [SUM] = N,        [TGT] = N,
        [DLOGITS] = N * V,  [DATT] = N * C,     [DWV] = V * C,    [DGQKV] = N * 3 * C,
        [DQKV] = N * 3 * C, [DLN] = N * C,      [DW] = 3 * C * C, [DB] = 3 * C,
        [DLNW] = C,         [DLNB] = C,         [DX] = N * C};
    TestRng rng = {seed};
    float *x = rand_floats(&rng, N * C, -1, 1), *w = rand_floats(&rng, 3 * C * C, -0.2f, 0.2f);
    float *wv = rand_floats(&rng, V * C, -0.2f, 0.2f), *lnw = rand_floats(&rng, C, 0.5f, 1.5f);
    int32_t targets[N];
    for (int n = 0; n < N; n++) targets[n] = test_rng_below(&rng, V - 3);
    float *d[NBUF];
    size_t total = 0;
    for (int i = 0; i < NBUF; i++) d[i] = be->ops->alloc(be, sizes[i] * 4), total += sizes[i];
    float *d_w = upload(be, w, sizeof(float) * 3 * C * C);
    float *d_wv = upload(be, wv, sizeof(float) * V * C),
          *d_lnw = upload(be, lnw, sizeof(float) * C);
    int32_t *d_t = upload(be, targets, sizeof targets);
    const float *bias = d_lnw; /* any C floats do; the qkv bias reuses them 3 times */
    float *d_bias = be->ops->alloc(be, sizeof(float) * 3 * C);
    for (int k = 0; k < 3; k++) be->ops->copy_device(be, d_bias + k * C, bias, sizeof(float) * C);
    be->ops->copy_to_device(be, d[X], x, sizeof(float) * N * C);

    be->ops->layernorm_forward(be, d[LN], d[MEAN], d[RSTD], d[X], d_lnw, d_lnw, N, C, 1e-5f, 0.0f);
    be->ops->matmul_forward(be, d[QKV], d[LN], d_w, d_bias, N, C, 3 * C, false);
    be->ops->gelu_forward(be, d[GQKV], d[QKV], N * 3 * C);
    be->ops->attention_forward(be, d[ATT], d[SAVED], d[GQKV], B, T, NH, NH, HS, NULL, NULL);
    be->ops->matmul_forward(be, d[LOGITS], d[ATT], d_wv, NULL, N, C, V, false);
    be->ops->cross_entropy_max(be, d[MAX], d[LOGITS], N, V, 0, V - 3);
    be->ops->cross_entropy_sums(be, d[SUM], d[TGT], d[LOGITS], d[MAX], d_t, N, V, 0, V - 3);
    be->ops->cross_entropy_backward(be, d[DLOGITS], d[LOGITS], d[MAX], d[SUM], d_t, N, V, 0, V - 3,
                                    1.0f / N);
    be->ops->matmul_backward(be, d[DATT], d[DWV], NULL, d[DLOGITS], d[ATT], d_wv, N, C, V, false);
    be->ops->attention_backward(be, d[DGQKV], d[DATT], d[GQKV], d[ATT], d[SAVED], B, T, NH, NH, HS, NULL, NULL);
    be->ops->gelu_backward(be, d[DQKV], d[QKV], d[DGQKV], N * 3 * C);
    be->ops->matmul_backward(be, d[DLN], d[DW], d[DB], d[DQKV], d[LN], d_w, N, C, 3 * C, false);
    be->ops->layernorm_backward(be, d[DX], d[DLNW], d[DLNB], d[DLN], d[X], d_lnw, d[MEAN], d[RSTD],
                                N, C, 0.0f);

    float *all = xmalloc(total * sizeof(float));
    size_t at = 0;
    for (int i = 0; i < NBUF; i++) {
        be->ops->copy_to_host(be, all + at, d[i], sizes[i] * 4);
        at += sizes[i];
        be->ops->free(be, d[i]);
    }
    be->ops->free(be, d_w), be->ops->free(be, d_wv), be->ops->free(be, d_lnw);
    be->ops->free(be, d_t), be->ops->free(be, d_bias);
    free(x), free(w), free(wv), free(lnw);
    *n_out = total;
    return all;
}

static int test_determinism(Backend *be) {
    size_t n1, n2, n3;
    float *first = run_chain(be, 99, &n1);
    float *again = run_chain(be, 99, &n2);
    Backend *other = backend_create("cpu", 0, NULL, 0); /* fresh scratch */
    float *fresh = run_chain(other, 99, &n3);
    backend_destroy(other);
    CHECK(n1 == n2 && n1 == n3);
    CHECK(!memcmp(first, again, n1 * sizeof(float)));
    CHECK(!memcmp(first, fresh, n1 * sizeof(float)));
    float *different = run_chain(be, 100, &n2); /* the comparison can fail */
    CHECK(memcmp(first, different, n1 * sizeof(float)) != 0);
    free(first), free(again), free(fresh), free(different);
    return 0;
}

/* ---- document masking: explicit position ids, ignored targets ---- */

/* With ids n mod T the id ops are the plain position ops, bitwise (the same
 * adds in the same order); with restarting ids they add the row's own
 * position row, and the backward sums each position's rows in row order. */
static int test_position_ids(Backend *be, TestRng *rng) {
    enum { B = 2, T = 9, C = 5, N = B * T };
    static const int32_t restarting[N] = {0, 1, 2, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2};
    int32_t plain[N];
    for (int n = 0; n < N; n++) plain[n] = n % T;
    float *out0 = rand_floats(rng, (size_t)N * C, -1, 1), *pos = rand_floats(rng, (size_t)T * C, -1, 1);
    float *dout = rand_floats(rng, (size_t)N * C, -1, 1), *dpos0 = rand_floats(rng, (size_t)T * C, -1, 1);
    float *d_pos = upload(be, pos, sizeof(float) * T * C), *d_dout = upload(be, dout, sizeof(float) * N * C);
    for (int k = 0; k < 2; k++) {
        const int32_t *ids = k ? restarting : plain;
        int32_t *d_ids = upload(be, ids, sizeof(int32_t) * N);
        float *d_a = upload(be, out0, sizeof(float) * N * C), *d_b = upload(be, out0, sizeof(float) * N * C);
        float *d_ga = upload(be, dpos0, sizeof(float) * T * C), *d_gb = upload(be, dpos0, sizeof(float) * T * C);
        be->ops->position_embedding_add_ids(be, d_a, d_pos, d_ids, N, C);
        be->ops->position_embedding_backward_ids(be, d_ga, d_dout, d_ids, N, C);
        float *a = download(be, d_a, (size_t)N * C), *ga = download(be, d_ga, (size_t)T * C);
        float *want = xmalloc(sizeof(float) * N * C), *gwant = xmalloc(sizeof(float) * T * C);
        memcpy(want, out0, sizeof(float) * N * C);
        memcpy(gwant, dpos0, sizeof(float) * T * C);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                want[n * C + c] += pos[ids[n] * C + c];
                gwant[ids[n] * C + c] += dout[n * C + c];
            }
        CHECK(memcmp(a, want, sizeof(float) * N * C) == 0);
        CHECK(memcmp(ga, gwant, sizeof(float) * T * C) == 0);
        if (!k) {
            be->ops->position_embedding_add(be, d_b, d_pos, B, T, C);
            be->ops->position_embedding_backward(be, d_gb, d_dout, B, T, C);
            float *b = download(be, d_b, (size_t)N * C), *gb = download(be, d_gb, (size_t)T * C);
            CHECK(memcmp(a, b, sizeof(float) * N * C) == 0);
            CHECK(memcmp(ga, gb, sizeof(float) * T * C) == 0);
            free(b), free(gb);
        } else { /* restarting ids must differ from the plain positions */
            be->ops->position_embedding_add(be, d_b, d_pos, B, T, C);
            float *b = download(be, d_b, (size_t)N * C);
            CHECK(memcmp(a, b, sizeof(float) * N * C) != 0);
            free(b);
        }
        free(a), free(ga), free(want), free(gwant);
        be->ops->free(be, d_ids), be->ops->free(be, d_a), be->ops->free(be, d_b);
        be->ops->free(be, d_ga), be->ops->free(be, d_gb);
    }
    free(out0), free(pos), free(dout), free(dpos0);
    be->ops->free(be, d_pos), be->ops->free(be, d_dout);
    return 0;
}

/* A row whose target is LOSS_IGNORED_TARGET gets a zero gradient row; the
 * other rows are bitwise what they are when every target counts. */
static int test_ignored_targets(Backend *be, TestRng *rng) {
    enum { N = 6, V = 11, VS = 10 }; /* one padded column */
    const int32_t targets[N] = {3, 0, 9, 4, 7, 2};
    int32_t masked[N];
    memcpy(masked, targets, sizeof masked);
    masked[1] = masked[4] = LOSS_IGNORED_TARGET;
    float *logits = rand_floats(rng, (size_t)N * V, -3, 3);
    float *d_logits = upload(be, logits, sizeof(float) * N * V);
    float *d_max = be->ops->alloc(be, sizeof(float) * N), *d_sums = be->ops->alloc(be, 2 * sizeof(float) * N);
    float *grads[2];
    for (int k = 0; k < 2; k++) {
        int32_t *d_t = upload(be, k ? masked : targets, sizeof(int32_t) * N);
        float *d_g = be->ops->alloc(be, sizeof(float) * N * V);
        be->ops->cross_entropy_max(be, d_max, d_logits, N, V, 0, VS);
        be->ops->cross_entropy_sums(be, d_sums, d_sums + N, d_logits, d_max, d_t, N, V, 0, VS);
        be->ops->cross_entropy_backward(be, d_g, d_logits, d_max, d_sums, d_t, N, V, 0, VS, 0.25f);
        grads[k] = download(be, d_g, (size_t)N * V);
        be->ops->free(be, d_t), be->ops->free(be, d_g);
    }
    for (int n = 0; n < N; n++) {
        const float *full = grads[0] + n * V, *got = grads[1] + n * V;
        if (masked[n] < 0) {
            CHECK(!all_zero(full, sizeof(float) * V)); /* it was a real gradient row */
            CHECK(all_zero(got, sizeof(float) * V));
        } else {
            CHECK(memcmp(full, got, sizeof(float) * V) == 0);
        }
    }
    free(logits), free(grads[0]), free(grads[1]);
    be->ops->free(be, d_logits), be->ops->free(be, d_max), be->ops->free(be, d_sums);
    return 0;
}

int main(void) {
    Backend *be = backend_create("cpu", 0, NULL, 0);
    if (!be) {
        fprintf(stderr, "backend_create(\"cpu\") failed\n");
        return 1;
    }
    TestRng rng = {31337};
    int failures = 0;
    RUN(failures, test_identity(be));
    RUN(failures, test_memory(be));
    RUN(failures, test_casts(be));
    RUN(failures, test_gemm_accounting(be, &rng));
    RUN(failures, test_adamw(be));
    RUN(failures, test_sum_squares(be, &rng));
    RUN(failures, test_nonfinite(be));
    RUN(failures, test_count_zeros(be));
    RUN(failures, test_expf(&rng));
    RUN(failures, test_gelu_tails(be));
    RUN(failures, test_overwrite(be, &rng));
    RUN(failures, test_position_ids(be, &rng));
    RUN(failures, test_ignored_targets(be, &rng));
    RUN(failures, test_determinism(be));
    /* OpenBLAS is deterministic for a fixed thread count; check with two. */
    openblas_set_num_threads(2);
    RUN(failures, test_determinism(be));
    if (!failures && (be->bytes_in_use != 0 || be->num_allocations != 0)) {
        fprintf(stderr, "leak: %zu bytes in %zu buffers\n", be->bytes_in_use, be->num_allocations);
        failures++;
    }
    backend_destroy(be);
    fprintf(stderr, "%s\n", failures ? "FAILED" : "all backend checks passed");
    return failures ? 1 : 0;
}
