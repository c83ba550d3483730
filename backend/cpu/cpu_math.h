/* backend/cpu/cpu_math.h — an exp and a max the compiler can vectorise.
 *
 * glibc's expf and tanhf are scalar calls, and a loop that calls them is
 * never vectorised: in GELU, softmax and cross entropy they cost as much as
 * the matrix products around them. cpu_expf uses only arithmetic, compares
 * and bit moves, so loops over it become SIMD code; it is deterministic
 * (no FMA contraction in ISO C mode, no lookup tables) and accurate to about
 * 2 ulp, which test_backend_cpu_misc checks against double-precision exp. */
#ifndef GPT3D_BACKEND_CPU_MATH_H
#define GPT3D_BACKEND_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 88 (larger x is clamped to 88, where exp is 1.65e38:
 * callers only pass x <= 0 or feed the result into 1/(1+e)), 0 for
 * x < -87 (where exp is subnormal) and for -inf, NaN for NaN.
 *
 * x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2; exp(r) by its Taylor
 * polynomial of degree 7 (truncation error < 6e-9 relative); 2^n written
 * straight into the exponent field. */
static inline float cpu_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;             /* 9 significant bits: n * ln2_hi is exact */
    const float ln2_lo = -2.12194440054690583e-4f; /* ln2 - ln2_hi */
    const float round_magic = 12582912.0f;         /* 1.5 * 2^23: adding it rounds to an integer */
    const uint32_t round_magic_bits = 0x4b400000u;
    x = x > 88.0f ? 88.0f : x; /* NaN fails both compares and stays NaN */
    int underflow = x < -87.0f;
    x = underflow ? -87.0f : x;
    float shifted = x * log2e + round_magic;
    float n = shifted - round_magic;
    float r = (x - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* n sits in the low mantissa bits of `shifted`: reading it from there
     * avoids a float-to-int conversion (undefined for NaN in C). */
    uint32_t shifted_bits;
    memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    uint32_t scale_bits = (shifted_bits - round_magic_bits + 127u) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return underflow ? 0.0f : p * scale;
}

/* max(z[0..n)), -inf for n == 0; NaN elements are skipped (the exps that
 * follow still turn them into NaN). Sixteen running maxima, merged in a
 * fixed order, let the compiler use vector max instructions, which a single
 * ordered running maximum does not allow. */
static inline float cpu_max_f32(const float *z, int n) {
    enum { LANES = 16 };
    float lane[LANES];
    for (int l = 0; l < LANES; l++) lane[l] = -INFINITY;
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) lane[l] = z[j + l] > lane[l] ? z[j + l] : lane[l];
    float m = -INFINITY;
    for (; j < n; j++) m = z[j] > m ? z[j] : m;
    for (int l = 0; l < LANES; l++) m = lane[l] > m ? lane[l] : m;
    return m;
}

#endif
