/* tests/test_backend_cuda_util.h — what the CUDA-against-CPU tests share.
 *
 * The CPU backend (fp32) is the reference. Inputs are drawn in fp32, rounded
 * to bf16 on the host (round to nearest even, written here independently of
 * the backend), and the CPU runs on those rounded values; the CUDA backend
 * gets the same values through f32_to_act, which is exact for them. So the
 * two sides see identical inputs and differ only by the CUDA backend's own
 * arithmetic and its bf16 outputs.
 *
 * Outputs the op overwrites are poisoned with NaN first, so an element the
 * op forgot to write fails the comparison (every helper fails on a NaN or
 * inf, element by element: tests/test_compare.h).
 *
 * With the argument --cpu-standin a second CPU backend takes the CUDA
 * backend's place: the comparisons then run on any machine and check the
 * test programs themselves (shapes, buffers, the order of calls), not the
 * CUDA code. The helpers below work for either activation type. */
#ifndef GPT3D_TEST_BACKEND_CUDA_UTIL_H
#define GPT3D_TEST_BACKEND_CUDA_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "test_backend_util.h"

/* Per-element tolerances (rel_err in test_backend_util.h: relative to the
 * element, with the reference's mean magnitude as the absolute floor). */
static const double BF16_TOL = 1e-2; /* bf16 outputs: one rounding (2^-9) plus fp32 order */
static const double F32_TOL = 1e-4;  /* fp32 outputs from bf16 inputs, fp32 math */

typedef struct {
    Backend *cpu, *cu;
} Pair;

/* Exit code of a test program that has nothing to run here. */
enum { TEST_SKIPPED = 77 };

/* True when the program was started with --cpu-standin. */
static inline bool cpu_standin(int argc, char **argv) {
    return argc > 1 && !strcmp(argv[1], "--cpu-standin");
}

/* Prints why the test is skipped: what the driver said, and whether the
 * CUDA backend library would load (with dlerror()'s reason when not), so a
 * skip on a machine that has a GPU is never a mystery. */
static inline void print_skip_reason(const char *what) {
    if (!backend_cuda_compiled()) {
        fprintf(stderr, "skipped: %s\n", what);
        return;
    }
    char reason[512], lib[4096];
    backend_cuda_probe(reason, sizeof reason);
    fprintf(stderr, "skipped: %s: %s\n", what, reason);
    if (backend_cuda_library(lib, sizeof lib))
        fprintf(stderr, "  (the CUDA backend library loads: %s)\n", lib);
    else
        fprintf(stderr, "  (the CUDA backend library does not load either: %s)\n", lib);
}

/* Returns 0 with both backends created, TEST_SKIPPED when this build or
 * machine has no GPU, 1 when the CUDA backend fails although a GPU is there. */
static inline int pair_create(Pair *p, bool standin) {
    char err[512] = "";
    if (standin) {
        fprintf(stderr, "note: --cpu-standin: a CPU backend stands in for CUDA; this checks the "
                        "test program, not the CUDA backend\n");
        p->cu = backend_create("cpu", 0, err, sizeof err);
        p->cpu = backend_create("cpu", 0, err, sizeof err);
        return p->cu && p->cpu ? 0 : 1;
    }
    if (!backend_cuda_compiled()) {
        print_skip_reason("this build has no CUDA backend");
        return TEST_SKIPPED;
    }
    if (backend_cuda_device_count() == 0) {
        print_skip_reason("no CUDA device visible");
        return TEST_SKIPPED;
    }
    p->cu = backend_create("cuda", 0, err, sizeof err);
    if (!p->cu) {
        fprintf(stderr, "backend_create(\"cuda\") failed with a GPU present: %s\n", err);
        return 1;
    }
    p->cpu = backend_create("cpu", 0, err, sizeof err);
    if (!p->cpu) {
        fprintf(stderr, "backend_create(\"cpu\") failed: %s\n", err);
        return 1;
    }
    return 0;
}

static inline void pair_destroy(Pair *p) {
    backend_destroy(p->cu);
    backend_destroy(p->cpu);
}

/* ---- bf16 on the host ---- */

static inline uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x rounded to the nearest bf16 (ties to even), as an fp32 value. */
static inline float round_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* inf and NaN stay */
    u += 0x7fffu + ((u >> 16) & 1u);
    return f32_from_bits(u & 0xffff0000u);
}

static inline void round_bf16_array(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = round_bf16(x[i]);
}

/* Host array of n bf16-representable floats uniform in [lo, hi), never zero. */
static inline float *rand_bf16(TestRng *r, size_t n, float lo, float hi) {
    float *x = rand_floats(r, n, lo, hi);
    for (size_t i = 0; i < n; i++) {
        x[i] = round_bf16(x[i]);
        if (x[i] == 0.0f) x[i] = hi > 0 ? 0.0078125f : -0.0078125f;
    }
    return x;
}

/* ---- device buffers of the CUDA backend ---- */

/* A new bf16 device buffer holding host[0, n). */
static inline void *act_upload(Backend *cu, const float *host, size_t n) {
    float *staging = upload(cu, host, n * sizeof(float));
    void *act = cu->ops->alloc(cu, backend_act_bytes(cu, n));
    cu->ops->f32_to_act(cu, act, staging, n);
    cu->ops->free(cu, staging);
    return act;
}

/* Host fp32 copy of n elements of a bf16 device buffer (malloc'd). */
static inline float *act_download(Backend *cu, const void *act, size_t n) {
    float *staging = cu->ops->alloc(cu, n * sizeof(float) + 1);
    cu->ops->act_to_f32(cu, staging, act, n);
    float *host = download(cu, staging, n);
    cu->ops->free(cu, staging);
    return host;
}

/* Raw bytes of a device buffer (for bitwise determinism checks). */
static inline void *bytes_download(Backend *be, const void *dev, size_t bytes) {
    void *h = xmalloc(bytes + 1);
    be->ops->copy_to_host(be, h, dev, bytes);
    return h;
}

/* Fills an fp32 buffer (either backend) with a NaN pattern. */
static inline void poison_f32(Backend *be, float *dev, size_t n) {
    float *h = xmalloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) h[i] = f32_from_bits(0x7fc00001u);
    be->ops->copy_to_device(be, dev, h, n * sizeof(float));
    free(h);
}

/* Fills an activation buffer with a NaN pattern. */
static inline void poison_act(Backend *cu, void *act, size_t n) {
    if (cu->act_dtype == DTYPE_F32) {
        poison_f32(cu, act, n);
        return;
    }
    uint16_t *h = xmalloc(n * sizeof(uint16_t) + 1);
    for (size_t i = 0; i < n; i++) h[i] = 0x7fc1u; /* a bf16 NaN */
    cu->ops->copy_to_device(cu, act, h, n * sizeof(uint16_t));
    free(h);
}

/* The reference for an output the device stores in its activation type:
 * rounded to bf16 on the CUDA backend, unchanged on an fp32 stand-in. */
static inline void round_like_act(const Backend *cu, float *x, size_t n) {
    if (cu->act_dtype == DTYPE_BF16) round_bf16_array(x, n);
}

/* A new bf16 device buffer of n elements, poisoned. */
static inline void *act_poisoned(Backend *cu, size_t n) {
    void *act = cu->ops->alloc(cu, backend_act_bytes(cu, n));
    poison_act(cu, act, n);
    return act;
}

/* A new fp32 device buffer of n elements, poisoned. */
static inline float *f32_poisoned(Backend *be, size_t n) {
    float *x = be->ops->alloc(be, n * sizeof(float) + 1);
    poison_f32(be, x, n);
    return x;
}

/* ---- comparisons ---- */

/* got vs. an fp32 reference, element by element:
 * |got - want| <= tol * (|want| + mean|want|), NaN and inf failing. */
static inline int compare_f32(const char *what, const float *got, const float *want, size_t n,
                              double tol) {
    double *w = to_double(want, n);
    int rc = compare_verbose(what, got, w, n, tol);
    free(w);
    return rc;
}

/* got (a CUDA bf16 output) against the CPU's fp32 output, both downloaded. */
static inline int compare_act(const char *what, Pair *p, const void *cu_act, const float *cpu_dev,
                              size_t n, double tol) {
    float *got = act_download(p->cu, cu_act, n);
    float *want = download(p->cpu, cpu_dev, n);
    int rc = compare_f32(what, got, want, n, tol);
    free(got);
    free(want);
    return rc;
}

/* Two fp32 device buffers, one per backend. */
static inline int compare_f32_dev(const char *what, Pair *p, const float *cu_dev,
                                  const float *cpu_dev, size_t n, double tol) {
    float *got = download(p->cu, cu_dev, n);
    float *want = download(p->cpu, cpu_dev, n);
    int rc = compare_f32(what, got, want, n, tol);
    free(got);
    free(want);
    return rc;
}

/* Euclidean norms for the whole-tensor comparisons below. */
static inline double l2_norm(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static inline double l2_distance(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

/* An output at the end of a chain of bf16 roundings (a whole model's logits,
 * attention gradients through bf16 P and dS) against the fp32 reference.
 * Such errors add up in norm, while single elements that cancel to near
 * zero carry the rounding of the terms they came from, so a per-element
 * bound alone either fails on a few of those or must be loose everywhere.
 * Two bounds: the relative L2 error of the whole tensor (tight; a wrong op
 * anywhere moves it) and a per-element bound as compare_f32 (loose; a
 * localized error such as one wrong row still trips it). NaN fails both. */
static inline int compare_chain(const char *what, const float *got, const float *want, size_t n,
                                double l2_tol, double elem_tol) {
    const double rel_l2 = l2_distance(got, want, n) / (l2_norm(want, n) + 1e-30);
    fprintf(stderr, "  %s: relative L2 error %.3e (bound %.1e)\n", what, rel_l2, l2_tol);
    if (!(rel_l2 <= l2_tol)) return 1;
    return compare_f32(what, got, want, n, elem_tol);
}

static inline int same_bytes(const char *what, const void *a, const void *b, size_t bytes) {
    if (!memcmp(a, b, bytes)) return 0;
    fprintf(stderr, "  %s: two runs on the same inputs differ (not deterministic)\n", what);
    return 1;
}

#endif
