/* backend/cpu/cpu_loss_optim.c — vocab-parallel cross-entropy pieces, AdamW
 * and the reductions over fp32 buffers of the fp32 reference backend. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"

/* Local columns [0, valid) of a slice starting at global id vocab_begin are
 * real tokens; the rest are padding up to V_pad. */
static int valid_columns(int V, int vocab_begin, int vocab_size) {
    int valid = vocab_size - vocab_begin;
    if (valid < 0) return 0;
    return valid < V ? valid : V;
}

void cpu_cross_entropy_max(Backend *be, float *rowmax, const void *logits_, int N, int V,
                           int vocab_begin, int vocab_size) {
    (void)be;
    const float *logits = logits_;
    int valid = valid_columns(V, vocab_begin, vocab_size);
    for (int n = 0; n < N; n++) rowmax[n] = cpu_max_f32(logits + (size_t)n * V, valid);
}

/* sum_j exp(z[j] - m) in double, so a 50k-token sum stays as exact as the
 * fp32 terms allow whatever the tensor-parallel slicing. The exps go through
 * a small block that vectorises; four partial sums in a fixed assignment
 * keep the adds off one dependency chain and the result deterministic. */
static double sum_exp_shifted(const float *z, int n, float m) {
    enum { BLOCK = 256 };
    float e[BLOCK];
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    for (int begin = 0; begin < n; begin += BLOCK) {
        int len = n - begin < BLOCK ? n - begin : BLOCK;
        for (int j = 0; j < len; j++) e[j] = cpu_expf(z[begin + j] - m);
        int j = 0;
        for (; j + 4 <= len; j += 4)
            for (int l = 0; l < 4; l++) acc[l] += e[j + l];
        for (; j < len; j++) acc[0] += e[j];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

void cpu_cross_entropy_sums(Backend *be, float *sumexp, float *target_logit, const void *logits_,
                            const float *rowmax, const int32_t *targets, int N, int V,
                            int vocab_begin, int vocab_size) {
    (void)be;
    const float *logits = logits_;
    int valid = valid_columns(V, vocab_begin, vocab_size);
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        sumexp[n] = (float)sum_exp_shifted(z, valid, rowmax[n]);
        int local = targets[n] - vocab_begin;
        target_logit[n] = (local >= 0 && local < valid) ? z[local] : 0.0f;
    }
}

void cpu_cross_entropy_loss(Backend *be, float *losses, const float *rowmax, const float *sumexp,
                            const float *target_logit, int N) {
    (void)be;
    for (int n = 0; n < N; n++) losses[n] = logf(sumexp[n]) + rowmax[n] - target_logit[n];
}

void cpu_cross_entropy_backward(Backend *be, void *dlogits_, const void *logits_,
                                const float *rowmax, const float *sumexp, const int32_t *targets,
                                int N, int V, int vocab_begin, int vocab_size, float dloss) {
    (void)be;
    /* No restrict: dlogits may alias logits; each element is read before it
     * is written. */
    float *dlogits = dlogits_;
    const float *logits = logits_;
    int valid = valid_columns(V, vocab_begin, vocab_size);
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        if (targets[n] < 0) { /* not in the loss */
            memset(d, 0, (size_t)V * sizeof *d);
            continue;
        }
        float m = rowmax[n];
        float scale = dloss / sumexp[n];
        for (int j = 0; j < valid; j++) d[j] = cpu_expf(z[j] - m) * scale;
        for (int j = valid; j < V; j++) d[j] = 0.0f;
        int local = targets[n] - vocab_begin;
        if (local >= 0 && local < valid) d[local] -= dloss;
    }
}

void cpu_adamw_update(Backend *be, void *param_, float *master, const float *grad, float *m,
                      float *v, size_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, float grad_scale, int step) {
    (void)be;
    GPT3D_CHECK(step >= 1, "adamw_update: step must start at 1, got %d", step);
    float *param = param_;
    /* Plain float arithmetic in the header's order. (The loop stays scalar
     * while the build lets sqrtf set errno; -fno-math-errno makes it about
     * 7x faster without changing a result.) */
    const float bias_correction1 = 1.0f - powf(beta1, (float)step);
    const float bias_correction2 = 1.0f - powf(beta2, (float)step);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        float mhat = mi / bias_correction1;
        float vhat = vi / bias_correction2;
        float w = master[i];
        w -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * w);
        m[i] = mi;
        v[i] = vi;
        master[i] = w;
    }
    if (param) memcpy(param, master, n * sizeof(float));
}

double cpu_sum_squares_f32(Backend *be, const float *x, size_t n) {
    (void)be;
    /* Four independent partial sums in a fixed assignment: deterministic,
     * and not bound by the latency of one dependent add chain. */
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int l = 0; l < 4; l++) acc[l] += (double)x[i + l] * x[i + l];
    }
    for (; i < n; i++) acc[0] += (double)x[i] * x[i];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

bool cpu_has_nonfinite_f32(Backend *be, const float *x, size_t n) {
    (void)be;
    /* An all-ones exponent marks inf and NaN; an integer OR over a chunk
     * vectorises, and the check between chunks stops early on a bad buffer. */
    enum { CHUNK = 4096 };
    for (size_t begin = 0; begin < n; begin += CHUNK) {
        size_t end = n - begin < CHUNK ? n : begin + CHUNK;
        uint32_t bad = 0;
        for (size_t i = begin; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad) return true;
    }
    return false;
}

uint64_t cpu_count_zeros_f32(Backend *be, const float *x, size_t n) {
    (void)be;
    uint64_t zeros = 0;
    for (size_t i = 0; i < n; i++) zeros += x[i] == 0.0f;
    return zeros;
}
