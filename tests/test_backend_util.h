/* tests/test_backend_util.h — helpers shared by the backend tests: a CHECK
 * macro, a small PRNG, device-buffer round trips, central finite differences
 * in double precision, and a gradient comparison that also proves it would
 * catch a wrong gradient. Header-only (static functions) so each test
 * program is a single source file. */
#ifndef GPT3D_TEST_BACKEND_UTIL_H
#define GPT3D_TEST_BACKEND_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "test_compare.h"

/* Fails the enclosing test function (which returns int, 0 = pass). */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* Runs one test function and counts its failure. */
#define RUN(failures, call)                                                                        \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        fprintf(stderr, "%s %s\n", rc_ ? "FAIL" : "ok  ", #call);                                  \
        (failures) += rc_ != 0;                                                                    \
    } while (0)

/* ---- PRNG (splitmix64): explicit state, reproducible across runs ---- */

typedef struct {
    uint64_t state;
} TestRng;

static inline uint64_t test_rng_next(TestRng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float test_rng_uniform(TestRng *r, float lo, float hi) {
    double u = (double)(test_rng_next(r) >> 11) * 0x1.0p-53;
    return (float)(lo + (hi - lo) * u);
}

static inline int test_rng_below(TestRng *r, int n) {
    return (int)(test_rng_next(r) % (uint64_t)n);
}

/* Host array of n floats uniform in [lo, hi), never exactly zero. */
static inline float *rand_floats(TestRng *r, size_t n, float lo, float hi) {
    float *x = xmalloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) {
        do x[i] = test_rng_uniform(r, lo, hi);
        while (x[i] == 0.0f);
    }
    return x;
}

static inline double *to_double(const float *x, size_t n) {
    double *d = xmalloc(n * sizeof(double) + 1);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static inline double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- device buffers ---- */

static inline void *upload(Backend *be, const void *host, size_t bytes) {
    void *d = be->ops->alloc(be, bytes);
    be->ops->copy_to_device(be, d, host, bytes);
    return d;
}

/* Returns a malloc'd host copy of n floats of a device buffer. */
static inline float *download(Backend *be, const void *dev, size_t n) {
    float *h = xmalloc(n * sizeof(float) + 1);
    be->ops->copy_to_host(be, h, dev, n * sizeof(float));
    return h;
}

/* ---- comparisons ---- */

/* The per-element error of got against a reference: the largest
 * |got[i] - want[i]| / (|want[i]| + mean|want|), and +inf when any element of
 * either is NaN or inf (tests/test_compare.h). The mean magnitude is the
 * absolute floor: an element that comes out near zero by cancellation
 * carries rounding of the size of the terms that cancelled, which for the
 * random O(1) inputs of these tests is the typical element, not itself. So
 * `rel_err <= tol` means |got - want| <= tol * |want| + tol * mean|want| for
 * every element: a wrong small element is judged on its own scale, never
 * against the largest one. */
static inline double rel_err(const float *a, const double *b, size_t n) {
    return elementwise_error_any(a, NULL, NULL, b, n, mean_abs_d(b, n));
}

/* 0 when every element is within tol (as rel_err), else 1 with a report of
 * the first and the worst element. tol 0 demands equal values. */
static inline int compare_verbose(const char *what, const float *got, const double *want, size_t n,
                                  double tol) {
    if (rel_err(got, want, n) <= tol) return 0;
    const double atol = tol * mean_abs_d(want, n);
    ElementReport r = compare_elements_fd(got, want, n, tol, atol);
    print_element_report(what, &r, got, NULL, NULL, want, tol, atol);
    return 1;
}

static inline int cmp_abs(const void *a, const void *b) {
    double x = fabs(*(const double *)a), y = fabs(*(const double *)b);
    return (x > y) - (x < y);
}

/* Index of the element whose magnitude is the median of the nonzero
 * reference magnitudes, or -1 if all are zero. */
static inline long median_nonzero_index(const double *want, size_t n) {
    double *mags = xmalloc(n * sizeof(double) + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (want[i] != 0.0) mags[k++] = fabs(want[i]);
    long index = -1;
    if (k > 0) {
        qsort(mags, k, sizeof(double), cmp_abs);
        double median = mags[k / 2];
        for (size_t i = 0; i < n && index < 0; i++)
            if (fabs(want[i]) == median) index = (long)i;
    }
    free(mags);
    return index;
}

/* Passes when got matches want within tol, AND the same comparison rejects
 * got with its median-magnitude element scaled by 1.1: proof that the
 * tolerance is tight enough to catch a wrong gradient of this op. */
static inline int check_close(const char *what, const float *got, const double *want, size_t n,
                              double tol) {
    if (compare_verbose(what, got, want, n, tol)) return 1;
    long i = median_nonzero_index(want, n);
    if (i < 0) return 0; /* an all-zero reference: exact zeros were required above */
    float *bad = xmalloc(n * sizeof(float) + 1);
    memcpy(bad, got, n * sizeof(float));
    bad[i] *= 1.1f;
    double e = rel_err(bad, want, n);
    free(bad);
    if (e > tol) return 0;
    fprintf(stderr, "  %s: a 10%% error in element %ld still passes (rel %.3e <= %.1e)\n", what, i,
            e, tol);
    return 1;
}

/* ---- finite differences ---- */

typedef double (*Objective)(void *ctx);

/* grad[i] = d objective / d x[i] for the indices idx[0..count) (all n when
 * idx is NULL), by central differences; x is one of ctx's inputs. */
static inline void numerical_grad(Objective f, void *ctx, double *x, const size_t *idx,
                                  size_t count, double *grad) {
    const double h = 1e-5;
    for (size_t k = 0; k < count; k++) {
        size_t i = idx ? idx[k] : k;
        double saved = x[i];
        x[i] = saved + h;
        double up = f(ctx);
        x[i] = saved - h;
        double down = f(ctx);
        x[i] = saved;
        grad[k] = (up - down) / (2.0 * h);
    }
}

#endif
