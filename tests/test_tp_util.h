/* Helpers shared by the tensor-parallel tests (run under mpirun): a TP
 * context built from a ParallelState, deterministic test values, device
 * buffers filled from host arrays, slices of canonical matrices and
 * tolerance checks that name the case that failed. A failed check aborts
 * every rank, so a bug on one rank never leaves the others hanging. */
#ifndef GPT3D_TEST_TP_UTIL_H
#define GPT3D_TEST_TP_UTIL_H

#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"
#include "tensor_parallel/tensor_parallel.h"
#include "test_compare.h"

#define TP_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* fp32 rounding of the short dot products these tests use, per element
 * (relative to the element, with the reference's mean magnitude as floor). */
#define TP_TOL 1e-5

/* One TP layout over MPI_COMM_WORLD. The struct must stay where it was
 * initialised: comm points at ps and tp at comm. */
typedef struct {
    ParallelState ps;
    Comm comm;
    TensorParallel tp;
    char label[64]; /* "TP=4 SP" etc., for failure messages */
} TPGroup;

static inline void tp_group_init(TPGroup *g, Backend *be, int tp_size, bool sequence_parallel) {
    char err[256];
    TP_CHECK(parallel_state_init(&g->ps, MPI_COMM_WORLD, tp_size, 1, err, sizeof err), "%s", err);
    comm_init(&g->comm, &g->ps, be);
    tensor_parallel_init(&g->tp, be, &g->comm, g->ps.tp_size, g->ps.tp_rank, sequence_parallel);
    snprintf(g->label, sizeof g->label, "TP=%d%s rank %d", tp_size,
             g->tp.sequence_parallel ? " SP" : "", g->ps.tp_rank);
}

static inline void tp_group_destroy(TPGroup *g) { parallel_state_destroy(&g->ps); }

/* ---- deterministic values ---- */

static inline uint64_t test_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A value in [-scale, -scale/8] U [scale/8, scale]: never zero, so a missing
 * term always shows. */
static inline float test_value(uint64_t seed, size_t i, float scale) {
    const uint64_t h = test_mix(seed * 0x100000001B3ull + i);
    const float mag = 0.125f + 0.875f * (float)((h >> 11) & 0xFFFF) / 65535.0f;
    return (h & 1) ? -scale * mag : scale * mag;
}

static inline float *host_values(uint64_t seed, size_t n, float scale) {
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = test_value(seed, i, scale);
    return v;
}

static inline float *host_filled(size_t n, float value) {
    float *v = xmalloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = value;
    return v;
}

/* ---- device buffers (fp32: the CPU backend's act type) ---- */

static inline void *dev_alloc(Backend *be, size_t n) {
    return be->ops->alloc(be, n * sizeof(float));
}

static inline void *dev_from_host(Backend *be, const float *host, size_t n) {
    void *d = dev_alloc(be, n);
    be->ops->copy_to_device(be, d, host, n * sizeof(float));
    return d;
}

static inline float *host_from_dev(Backend *be, const void *dev, size_t n) {
    float *h = xmalloc((n ? n : 1) * sizeof *h);
    be->ops->copy_to_host(be, h, dev, n * sizeof(float));
    return h;
}

/* A scratch of n elements followed by a guard band of n + 64 that must
 * survive: long enough that an overrun by a whole slice is caught rather
 * than corrupting the heap. */
static const float GUARD_VALUE = -12345.0f;

static inline size_t guard_len(size_t n) { return n + 64; }

static inline void *guarded_alloc(Backend *be, size_t n) {
    float *h = host_filled(n + guard_len(n), GUARD_VALUE);
    void *d = dev_from_host(be, h, n + guard_len(n));
    free(h);
    return d;
}

static inline void check_guard(const char *label, Backend *be, const void *d, size_t n) {
    float *h = host_from_dev(be, d, n + guard_len(n));
    for (size_t i = n; i < n + guard_len(n); i++)
        TP_CHECK(h[i] == GUARD_VALUE, "%s: write past the end of a %zu-element scratch", label, n);
    free(h);
}

/* ---- slices of row-major [rows, width] host matrices ---- */

static inline float *host_columns(const float *full, int rows, int width, int begin, int cols) {
    float *out = xmalloc((size_t)rows * cols * sizeof *out);
    for (int n = 0; n < rows; n++)
        memcpy(out + (size_t)n * cols, full + (size_t)n * width + begin,
               (size_t)cols * sizeof *out);
    return out;
}

/* ---- comparisons ---- */

static inline double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)x[i]) > m) m = fabs((double)x[i]);
    return m;
}

/* The per-element error of got against expect (tests/test_compare.h): the
 * largest |got - expect| / (|expect| + mean|expect|), +inf on any NaN or inf.
 * The mean magnitude is the absolute floor because an output that comes
 * out near zero by cancellation carries the rounding of its O(mean) terms. */
static inline double elementwise_error(const float *got, const float *expect, size_t n) {
    return elementwise_error_any(got, NULL, expect, NULL, n, mean_abs_f(expect, n));
}

/* got == expect to within TP_TOL, element by element (an all-zero
 * reference, e.g. the padded vocabulary's slice, demands exact zeros). */
#define CHECK_CLOSE(label, what, got, expect, n)                                                   \
    do {                                                                                           \
        const double err_ = elementwise_error((got), (expect), (n));                               \
        TP_CHECK(err_ <= TP_TOL,                                                                   \
                 "%s: %s differs by %.3g of its magnitude (limit %.3g)", (label), (what), err_,    \
                 TP_TOL);                                                                          \
    } while (0)

/* A wrong answer (e.g. a skipped reduction) must be far from the reference
 * in some element, or the comparison above would not catch it. */
#define CHECK_FAR(label, what, wrong, expect, n)                                                   \
    do {                                                                                           \
        const double err_ = elementwise_error((wrong), (expect), (n));                             \
        TP_CHECK(err_ > 1000.0 * TP_TOL,                                                           \
                 "%s: %s would pass for an unreduced result (error %.3g)", (label), (what), err_); \
    } while (0)

/* Bitwise-equal values (and no NaN: NaN != NaN). */
#define CHECK_EXACT(label, what, got, expect, n)                                                   \
    do {                                                                                           \
        const ElementReport r_ = compare_elements_ff((got), (expect), (n), 0.0, 0.0);              \
        TP_CHECK(r_.mismatches == 0, "%s: %s not exact: %zu of %zu elements differ, first [%zu]",  \
                 (label), (what), r_.mismatches, (size_t)(n), r_.first);                                \
    } while (0)

#endif
