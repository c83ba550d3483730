/* tests/test_compare.h — the element-by-element comparison every numeric
 * test helper is built on.
 *
 * Element i matches when got[i] and want[i] are both finite and
 *     |got[i] - want[i]| <= atol + rtol * |want[i]|.
 * A NaN or inf in either array is a mismatch, a NaN in both included: a
 * test whose reference is not finite checks nothing. The classic bug this
 * replaces kept a running maximum with `if (!(d <= m)) m = d;`, where a NaN
 * difference is overwritten by the next finite one; here every element is
 * judged on its own and counted, so no later element can hide it.
 *
 * Tolerances are per element, never relative to the largest magnitude of
 * the reference (which lets a wrong small element pass next to a large
 * one). Where rounding error genuinely is absolute — an element that comes
 * out near zero by cancellation carries the rounding of the terms that
 * cancelled — callers give that as atol, sized from the terms, and say why. */
#ifndef GPT3D_TEST_COMPARE_H
#define GPT3D_TEST_COMPARE_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    size_t n;
    size_t mismatches; /* elements outside the tolerance, non-finite ones included */
    size_t nonfinite;  /* elements where got or want is NaN or inf */
    size_t first;      /* index of the first mismatch (n when there is none) */
    size_t worst;      /* index of the finite mismatch furthest past its limit */
    double worst_excess; /* |got - want| / limit at `worst` (inf when the limit is 0) */
} ElementReport;

/* got may be float or double, want float or double: one of want_f/want_d
 * (and got_f/got_d) is NULL. Kept in one function so there is one rule. */
static inline ElementReport compare_elements_any(const float *got_f, const double *got_d,
                                                 const float *want_f, const double *want_d,
                                                 size_t n, double rtol, double atol) {
    ElementReport r = {.n = n, .first = n, .worst = n, .worst_excess = 0.0};
    for (size_t i = 0; i < n; i++) {
        const double g = got_f ? (double)got_f[i] : got_d[i];
        const double w = want_f ? (double)want_f[i] : want_d[i];
        bool bad;
        if (!isfinite(g) || !isfinite(w)) {
            r.nonfinite++;
            bad = true;
        } else {
            const double diff = fabs(g - w), limit = atol + rtol * fabs(w);
            bad = !(diff <= limit);
            if (bad) {
                const double excess = limit > 0.0 ? diff / limit : INFINITY;
                if (r.worst == n || excess > r.worst_excess) r.worst = i, r.worst_excess = excess;
            }
        }
        if (bad) {
            if (r.mismatches == 0) r.first = i;
            r.mismatches++;
        }
    }
    return r;
}

static inline ElementReport compare_elements_fd(const float *got, const double *want, size_t n,
                                                double rtol, double atol) {
    return compare_elements_any(got, NULL, NULL, want, n, rtol, atol);
}

static inline ElementReport compare_elements_ff(const float *got, const float *want, size_t n,
                                                double rtol, double atol) {
    return compare_elements_any(got, NULL, want, NULL, n, rtol, atol);
}

/* Prints what failed: counts, the first mismatch and the worst finite one. */
static inline void print_element_report(const char *what, const ElementReport *r,
                                        const float *got_f, const double *got_d,
                                        const float *want_f, const double *want_d, double rtol,
                                        double atol) {
#define TEST_COMPARE_AT(i)                                                                         \
    (got_f ? (double)got_f[i] : got_d[i]), (want_f ? (double)want_f[i] : want_d[i])
    fprintf(stderr, "  %s: %zu of %zu elements outside |got - want| <= %.1e + %.1e|want|",
            what, r->mismatches, r->n, atol, rtol);
    if (r->nonfinite) fprintf(stderr, " (%zu not finite)", r->nonfinite);
    fputc('\n', stderr);
    if (r->first < r->n)
        fprintf(stderr, "    first [%zu] got %.9g want %.9g\n", r->first, TEST_COMPARE_AT(r->first));
    if (r->worst < r->n && r->worst != r->first)
        fprintf(stderr, "    worst [%zu] got %.9g want %.9g (%.3g x its limit)\n", r->worst,
                TEST_COMPARE_AT(r->worst), r->worst_excess);
#undef TEST_COMPARE_AT
}

/* Mean |want|: the typical magnitude of a reference, used by callers as
 * the scale of absolute rounding error (see the header comment). Unlike
 * the largest magnitude it is not set by one outlier. NaN propagates. */
static inline double mean_abs_d(const double *want, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabs(want[i]);
    return n ? s / (double)n : 0.0;
}

static inline double mean_abs_f(const float *want, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabs((double)want[i]);
    return n ? s / (double)n : 0.0;
}

/* The largest |got[i] - want[i]| / (|want[i]| + floor) over the elements, and
 * +inf when any element of either is NaN or inf, or a difference has a zero
 * scale. `error <= tol` is the element-by-element rule with rtol = tol and
 * atol = tol * floor. */
static inline double elementwise_error_any(const float *got_f, const double *got_d,
                                           const float *want_f, const double *want_d, size_t n,
                                           double floor) {
    if (!isfinite(floor)) return INFINITY;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double g = got_f ? (double)got_f[i] : got_d[i];
        const double w = want_f ? (double)want_f[i] : want_d[i];
        if (!isfinite(g) || !isfinite(w)) return INFINITY;
        const double d = fabs(g - w), scale = fabs(w) + floor;
        const double e = scale > 0.0 ? d / scale : (d == 0.0 ? 0.0 : INFINITY);
        if (e > worst) worst = e;
    }
    return worst;
}

#endif
