/* tests/test_backend_cuda_loss.c — the CUDA backend's cross-entropy pieces,
 * AdamW and fp32 reductions against the CPU backend.
 *
 * Cross entropy on a vocabulary slice with padded columns, targets inside
 * and outside the slice, a slice with no valid column, and the in-place
 * backward (dlogits aliasing logits). AdamW with and without the bf16
 * parameter copy; sum of squares, the non-finite check and the zero count.
 * Exits 77 without a GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "test_backend_cuda_util.h"

typedef struct {
    int N, V, vocab_begin, vocab_size;
} SliceShape;

/* rowmax of a slice with no valid column is -inf on both sides; rel_err
 * cannot compare infinities, so they are matched exactly first. */
static int compare_rowmax(Pair *p, const float *g, const float *c, int N) {
    float *got = download(p->cu, g, (size_t)N), *want = download(p->cpu, c, (size_t)N);
    int rc = 0;
    for (int n = 0; n < N && !rc; n++) {
        if (isinf(want[n]) || isinf(got[n])) {
            rc = !(got[n] == want[n]);
            got[n] = want[n] = 0.0f;
        }
    }
    if (rc) fprintf(stderr, "  cross_entropy_max: infinities differ\n");
    /* Both take the max of the same values: exact. */
    if (!rc) rc = compare_f32("cross_entropy_max", got, want, (size_t)N, 0.0);
    free(got), free(want);
    return rc;
}

static int cross_entropy_case(Pair *p, TestRng *rng, SliceShape s) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  cross entropy N=%d V=%d slice at %d, vocab %d\n", s.N, s.V, s.vocab_begin,
            s.vocab_size);
    const size_t n = (size_t)s.N * s.V;
    float *logits = rand_bf16(rng, n, -4, 4);
    int32_t *targets = xmalloc((size_t)s.N * sizeof(int32_t));
    for (int i = 0; i < s.N; i++) targets[i] = test_rng_below(rng, s.vocab_size);
    targets[0] = s.vocab_begin;                                     /* first local column */
    if (s.N > 1) targets[1] = s.vocab_begin > 0 ? s.vocab_begin - 1 : s.vocab_size - 1;
    if (s.N > 2) targets[2] = LOSS_IGNORED_TARGET; /* --eod-mask-loss: a zero gradient row */

    float *c_logits = upload(cpu, logits, n * 4);
    int32_t *c_t = upload(cpu, targets, (size_t)s.N * 4), *g_t = upload(cu, targets, (size_t)s.N * 4);
    float *c_max = cpu->ops->alloc(cpu, s.N * 4), *c_sum = cpu->ops->alloc(cpu, s.N * 4);
    float *c_tl = cpu->ops->alloc(cpu, s.N * 4), *c_loss = cpu->ops->alloc(cpu, s.N * 4);
    float *c_dlogits = cpu->ops->alloc(cpu, n * 4);
    void *g_logits = act_upload(cu, logits, n), *g_dlogits = act_poisoned(cu, n);
    float *g_max = f32_poisoned(cu, s.N), *g_sum = f32_poisoned(cu, s.N);
    float *g_tl = f32_poisoned(cu, s.N), *g_loss = f32_poisoned(cu, s.N);

    cpu->ops->cross_entropy_max(cpu, c_max, c_logits, s.N, s.V, s.vocab_begin, s.vocab_size);
    cu->ops->cross_entropy_max(cu, g_max, g_logits, s.N, s.V, s.vocab_begin, s.vocab_size);
    CHECK(!compare_rowmax(p, g_max, c_max, s.N));
    cpu->ops->cross_entropy_sums(cpu, c_sum, c_tl, c_logits, c_max, c_t, s.N, s.V, s.vocab_begin,
                                 s.vocab_size);
    cu->ops->cross_entropy_sums(cu, g_sum, g_tl, g_logits, g_max, g_t, s.N, s.V, s.vocab_begin,
                                s.vocab_size);
    CHECK(!compare_f32_dev("cross_entropy_sums sumexp", p, g_sum, c_sum, (size_t)s.N, F32_TOL));
    CHECK(!compare_f32_dev("cross_entropy_sums target_logit", p, g_tl, c_tl, (size_t)s.N, 0.0));
    void *sum1 = bytes_download(cu, g_sum, s.N * 4);
    poison_f32(cu, g_sum, s.N);
    cu->ops->cross_entropy_sums(cu, g_sum, g_tl, g_logits, g_max, g_t, s.N, s.V, s.vocab_begin,
                                s.vocab_size);
    void *sum2 = bytes_download(cu, g_sum, s.N * 4);
    CHECK(!same_bytes("cross_entropy_sums", sum1, sum2, s.N * 4));
    free(sum1), free(sum2);

    const int valid = s.vocab_size - s.vocab_begin;
    if (valid > 0) { /* loss and backward need a row with something to normalise */
        cpu->ops->cross_entropy_loss(cpu, c_loss, c_max, c_sum, c_tl, s.N);
        cu->ops->cross_entropy_loss(cu, g_loss, g_max, g_sum, g_tl, s.N);
        CHECK(!compare_f32_dev("cross_entropy_loss", p, g_loss, c_loss, (size_t)s.N, F32_TOL));
        const float dloss = 0.37f;
        cpu->ops->cross_entropy_backward(cpu, c_dlogits, c_logits, c_max, c_sum, c_t, s.N, s.V,
                                         s.vocab_begin, s.vocab_size, dloss);
        cu->ops->cross_entropy_backward(cu, g_dlogits, g_logits, g_max, g_sum, g_t, s.N, s.V,
                                        s.vocab_begin, s.vocab_size, dloss);
        CHECK(!compare_act("cross_entropy_backward", p, g_dlogits, c_dlogits, n, BF16_TOL));
        float *got = act_download(cu, g_dlogits, n), *want = download(cpu, c_dlogits, n);
        for (int r = 0; r < s.N; r++)
            for (int j = valid; j < s.V; j++) CHECK(got[(size_t)r * s.V + j] == 0.0f); /* padding */
        if (s.N > 2)
            for (int j = 0; j < s.V; j++) CHECK(got[(size_t)2 * s.V + j] == 0.0f); /* ignored row */
        /* Without the target entries (about -dloss), the softmax part sets
         * the scale, so an error in the small probabilities cannot hide. */
        for (int r = 0; r < s.N; r++) {
            int local = targets[r] - s.vocab_begin;
            if (local >= 0 && local < valid) got[(size_t)r * s.V + local] = want[(size_t)r * s.V + local] = 0;
        }
        CHECK(!compare_f32("cross_entropy_backward, targets excluded", got, want, n, BF16_TOL));
        free(want);
        /* In place, as the model calls it: same bits as out of place. */
        void *first = bytes_download(cu, g_dlogits, backend_act_bytes(cu, n));
        cu->ops->cross_entropy_backward(cu, g_logits, g_logits, g_max, g_sum, g_t, s.N, s.V,
                                        s.vocab_begin, s.vocab_size, dloss);
        void *second = bytes_download(cu, g_logits, backend_act_bytes(cu, n));
        CHECK(!same_bytes("cross_entropy_backward in place", first, second,
                          backend_act_bytes(cu, n)));
        free(got), free(first), free(second);
    }
    free(logits), free(targets);
    void *c[] = {c_logits, c_t, c_max, c_sum, c_tl, c_loss, c_dlogits};
    void *g[] = {g_logits, g_t, g_max, g_sum, g_tl, g_loss, g_dlogits};
    for (int i = 0; i < 7; i++) cpu->ops->free(cpu, c[i]), cu->ops->free(cu, g[i]);
    return 0;
}

static int test_cross_entropy(Pair *p, TestRng *rng) {
    /* The last slice of a padded vocabulary: 122 valid columns, 38 padding. */
    CHECK(!cross_entropy_case(p, rng, (SliceShape){7, 160, 128, 250}));
    /* A whole vocabulary of GPT-2 size on one rank, padded to 50304. */
    CHECK(!cross_entropy_case(p, rng, (SliceShape){3, 50304, 0, 50257}));
    /* A slice that is all padding. */
    CHECK(!cross_entropy_case(p, rng, (SliceShape){4, 64, 256, 250}));
    return 0;
}

static int adamw_case(Pair *p, TestRng *rng, size_t n, bool with_param) {
    Backend *cpu = p->cpu, *cu = p->cu;
    float *master = rand_floats(rng, n, -1, 1), *grad = rand_floats(rng, n, -2, 2);
    float *m = rand_floats(rng, n, -0.1f, 0.1f), *v = rand_floats(rng, n, 1e-4f, 1e-2f);
    float *c_master = upload(cpu, master, n * 4), *c_grad = upload(cpu, grad, n * 4);
    float *c_m = upload(cpu, m, n * 4), *c_v = upload(cpu, v, n * 4);
    float *c_param = cpu->ops->alloc(cpu, n * 4);
    float *g_master = upload(cu, master, n * 4), *g_grad = upload(cu, grad, n * 4);
    float *g_m = upload(cu, m, n * 4), *g_v = upload(cu, v, n * 4);
    void *g_param = act_poisoned(cu, n);
    for (int step = 1; step <= 3; step++) {
        cpu->ops->adamw_update(cpu, c_param, c_master, c_grad, c_m, c_v, n, 1e-3f, 0.9f, 0.95f,
                               1e-8f, 0.1f, 0.5f, step);
        cu->ops->adamw_update(cu, with_param ? g_param : NULL, g_master, g_grad, g_m, g_v, n, 1e-3f,
                              0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, step);
    }
    /* The same float operations in the same order: expected to agree to the
     * last bit; the tolerance leaves room for a libm powf difference. */
    CHECK(!compare_f32_dev("adamw master", p, g_master, c_master, n, 1e-6));
    CHECK(!compare_f32_dev("adamw m", p, g_m, c_m, n, 1e-6));
    CHECK(!compare_f32_dev("adamw v", p, g_v, c_v, n, 1e-6));
    float *got_param = act_download(cu, g_param, n);
    if (with_param) { /* the bf16 copy is the final master rounded */
        float *got_master = download(cu, g_master, n);
        round_like_act(cu, got_master, n);
        CHECK(!compare_f32("adamw param", got_param, got_master, n, 0.0));
        free(got_master);
    } else {
        for (size_t i = 0; i < n; i++) CHECK(isnan(got_param[i])); /* untouched */
    }
    free(got_param), free(master), free(grad), free(m), free(v);
    void *c[] = {c_master, c_grad, c_m, c_v, c_param}, *g[] = {g_master, g_grad, g_m, g_v, g_param};
    for (int i = 0; i < 5; i++) cpu->ops->free(cpu, c[i]), cu->ops->free(cu, g[i]);
    return 0;
}

static int test_adamw(Pair *p, TestRng *rng) {
    CHECK(!adamw_case(p, rng, 1000, true));
    CHECK(!adamw_case(p, rng, 777, false));
    return 0;
}

static int test_reductions(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { N = 1000003 };
    float *x = rand_floats(rng, N, -3, 3);
    float *c_x = upload(cpu, x, (size_t)N * 4), *g_x = upload(cu, x, (size_t)N * 4);
    double want = cpu->ops->sum_squares_f32(cpu, c_x, N);
    double got = cu->ops->sum_squares_f32(cu, g_x, N);
    if (!(fabs(got - want) <= 1e-12 * want)) {
        fprintf(stderr, "  sum_squares_f32: got %.17g want %.17g\n", got, want);
        return 1;
    }
    CHECK(cu->ops->sum_squares_f32(cu, g_x, N) == got); /* deterministic */
    CHECK(cu->ops->sum_squares_f32(cu, g_x, 1) == (double)x[0] * x[0]);
    CHECK(cu->ops->sum_squares_f32(cu, g_x, 0) == 0.0);

    CHECK(!cu->ops->has_nonfinite_f32(cu, g_x, N));
    CHECK(!cu->ops->has_nonfinite_f32(cu, g_x, 0));
    const float bad[2] = {NAN, INFINITY};
    const size_t where[2] = {N - 1, 12345};
    for (int i = 0; i < 2; i++) {
        cu->ops->copy_to_device(cu, g_x + where[i], &bad[i], sizeof(float));
        CHECK(cu->ops->has_nonfinite_f32(cu, g_x, N));
        CHECK(!cu->ops->has_nonfinite_f32(cu, g_x, where[i])); /* just before it */
        cu->ops->copy_to_device(cu, g_x + where[i], &x[where[i]], sizeof(float));
    }

    /* Zeros of either sign, a NaN and a denormal that are not, across
     * blocks: the count equals the CPU backend's on the same buffer. */
    for (size_t i = 0; i < N; i += 3) x[i] = i % 2 ? 0.0f : -0.0f;
    x[1] = NAN, x[2] = 1e-45f;
    cu->ops->copy_to_device(cu, g_x, x, N * sizeof(float));
    cpu->ops->copy_to_device(cpu, c_x, x, N * sizeof(float));
    const uint64_t zeros = cpu->ops->count_zeros_f32(cpu, c_x, N);
    CHECK(zeros >= N / 3);
    CHECK(cu->ops->count_zeros_f32(cu, g_x, N) == zeros);
    CHECK(cu->ops->count_zeros_f32(cu, g_x, 3) == 1);
    CHECK(cu->ops->count_zeros_f32(cu, g_x, 0) == 0);
    free(x);
    cpu->ops->free(cpu, c_x);
    cu->ops->free(cu, g_x);
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0x5eed1e55};
    int failures = 0;
    RUN(failures, test_cross_entropy(&p, &rng));
    RUN(failures, test_adamw(&p, &rng));
    RUN(failures, test_reductions(&p, &rng));
    pair_destroy(&p);
    /* The stand-in compares the CPU backend with itself: say so, so a pass
     * here is never read as the CUDA ops passing. */
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
