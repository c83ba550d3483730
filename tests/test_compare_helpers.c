/* tests/test_compare_helpers.c — the comparison helpers themselves.
 *
 * Every numeric test trusts these, so each way they used to be fooled is
 * planted here: a NaN or inf at the first, a middle and the last element
 * of got or of want (and a NaN in both), 800 NaNs in a row, a 1e-5
 * difference in a typical element, and a wrong small element next to a large
 * one (which a comparison scaled by the largest magnitude lets through). */
#include "test_backend_cuda_util.h"
#include "test_compare.h"

enum { N = 1000 };

/* got == want: values of magnitude 0.5 .. 1.5 with alternating signs. */
static void fill(float *got, double *want, float *want_f) {
    for (int i = 0; i < N; i++) {
        const float v = (i % 2 ? -1.0f : 1.0f) * (0.5f + (float)(i % 97) / 97.0f);
        got[i] = v, want[i] = v, want_f[i] = v;
    }
}

/* Every helper must reject the arrays: 0 when all do, 1 naming the first
 * that accepts them. */
static int all_reject(const char *what, const float *got, const double *want, const float *want_f,
                      double tol) {
    const ElementReport r = compare_elements_fd(got, want, N, tol, tol);
    const ElementReport rf = compare_elements_ff(got, want_f, N, tol, tol);
    const struct {
        const char *name;
        bool accepts;
    } helpers[] = {
        {"compare_elements_fd", r.mismatches == 0},
        {"compare_elements_ff", rf.mismatches == 0},
        {"rel_err", rel_err(got, want, N) <= tol},
        {"elementwise_error_any", elementwise_error_any(got, NULL, want_f, NULL, N,
                                                        mean_abs_f(want_f, N)) <= tol},
        {"compare_verbose", compare_verbose(what, got, want, N, tol) == 0},
        {"compare_f32", compare_f32(what, got, want_f, N, tol) == 0},
        {"check_close", check_close(what, got, want, N, tol) == 0},
    };
    for (size_t h = 0; h < sizeof helpers / sizeof helpers[0]; h++) {
        if (helpers[h].accepts) {
            fprintf(stderr, "  %s accepts %s\n", helpers[h].name, what);
            return 1;
        }
    }
    return 0;
}

static int test_equal_arrays_pass(void) {
    float got[N], want_f[N];
    double want[N];
    fill(got, want, want_f);
    CHECK(compare_elements_fd(got, want, N, 0.0, 0.0).mismatches == 0);
    CHECK(compare_elements_ff(got, want_f, N, 0.0, 0.0).mismatches == 0);
    CHECK(rel_err(got, want, N) == 0.0);
    CHECK(compare_verbose("equal", got, want, N, 0.0) == 0);
    CHECK(compare_f32("equal", got, want_f, N, 0.0) == 0);
    /* A difference inside the tolerance passes: the helpers are not exact-only. */
    got[500] = want_f[500] * (1.0f + 4e-7f);
    CHECK(compare_verbose("within 1e-6", got, want, N, 1e-6) == 0);
    CHECK(compare_f32("within 1e-6", got, want_f, N, 1e-6) == 0);
    return 0;
}

static int test_non_finite_fails(void) {
    const size_t where[] = {0, N / 2, N - 1};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const char *bad_name[] = {"NaN", "inf", "-inf"};
    float got[N], want_f[N];
    double want[N];
    char what[96];
    for (size_t w = 0; w < 3; w++) {
        for (size_t b = 0; b < 3; b++) {
            fill(got, want, want_f);
            got[where[w]] = bad[b];
            snprintf(what, sizeof what, "got[%zu] = %s", where[w], bad_name[b]);
            CHECK(!all_reject(what, got, want, want_f, 1e-2));
            fill(got, want, want_f);
            want[where[w]] = bad[b], want_f[where[w]] = bad[b];
            snprintf(what, sizeof what, "want[%zu] = %s", where[w], bad_name[b]);
            CHECK(!all_reject(what, got, want, want_f, 1e-2));
        }
        /* NaN on both sides is not "equal": a NaN reference checks nothing. */
        fill(got, want, want_f);
        got[where[w]] = NAN, want[where[w]] = NAN, want_f[where[w]] = NAN;
        snprintf(what, sizeof what, "NaN in both at [%zu]", where[w]);
        CHECK(!all_reject(what, got, want, want_f, 1e-2));
        CHECK(compare_elements_fd(got, want, N, 0.0, 0.0).nonfinite == 1);
    }
    /* The old running-maximum bug: 800 NaNs followed by finite elements. */
    fill(got, want, want_f);
    for (int i = 100; i < 900; i++) got[i] = NAN;
    CHECK(!all_reject("800 NaNs in the middle", got, want, want_f, 0.0));
    const ElementReport r = compare_elements_fd(got, want, N, 0.0, 0.0);
    CHECK(r.mismatches == 800 && r.nonfinite == 800 && r.first == 100);
    return 0;
}

static int test_small_differences_fail(void) {
    float got[N], want_f[N];
    double want[N];
    char what[64];
    const size_t where[] = {0, N / 2, N - 1};
    for (size_t w = 0; w < 3; w++) {
        fill(got, want, want_f);
        got[where[w]] = (float)(want[where[w]] * (1.0 + 1e-5));
        snprintf(what, sizeof what, "1e-5 off at [%zu]", where[w]);
        CHECK(!all_reject(what, got, want, want_f, 1e-6));
    }
    /* A wrong small element next to a large one: relative to the largest
     * magnitude (1000) the error is 1e-5, under 1e-4; on its own scale it
     * is 100%. */
    fill(got, want, want_f);
    got[3] = want[3] = want_f[3] = 1000.0f;
    want[7] = want_f[7] = 0.01f, got[7] = 0.02f;
    CHECK(!all_reject("a small element 100% off", got, want, want_f, 1e-4));
    return 0;
}

static int test_report(void) {
    float got[N], want_f[N];
    double want[N];
    fill(got, want, want_f);
    got[10] = NAN;
    got[20] = (float)(want[20] * 1.5);
    got[30] = (float)(want[30] * 1.01);
    const ElementReport r = compare_elements_fd(got, want, N, 1e-3, 0.0);
    CHECK(r.mismatches == 3 && r.nonfinite == 1 && r.first == 10 && r.worst == 20);
    return 0;
}

int main(void) {
    int failures = 0;
    RUN(failures, test_equal_arrays_pass());
    RUN(failures, test_non_finite_fails());
    RUN(failures, test_small_differences_fail());
    RUN(failures, test_report());
    return failures ? 1 : 0;
}
