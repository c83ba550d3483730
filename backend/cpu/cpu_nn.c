/* backend/cpu/cpu_nn.c — embeddings, layernorm, matrix products and pointwise
 * ops of the fp32 reference backend. Matrix products go to OpenBLAS sgemm;
 * the rest are plain loops over contiguous rows that the compiler can
 * vectorise (reductions into row statistics use double for accuracy). */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"

void cpu_embedding_forward(Backend *be, void *out_, const int32_t *tokens, const void *table_,
                           int N, int C, int vocab_begin, int vocab_end) {
    (void)be;
    float *out = out_;
    const float *table = table_;
    size_t row_bytes = (size_t)C * sizeof(float);
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        int id = tokens[n];
        if (id >= vocab_begin && id < vocab_end)
            memcpy(o, table + (size_t)(id - vocab_begin) * C, row_bytes);
        else
            memset(o, 0, row_bytes); /* another tensor-parallel rank owns this id */
    }
}

void cpu_embedding_backward(Backend *be, float *dtable, const void *dout_, const int32_t *tokens,
                            int N, int C, int vocab_begin, int vocab_end) {
    (void)be;
    const float *dout = dout_;
    for (int n = 0; n < N; n++) {
        int id = tokens[n];
        if (id < vocab_begin || id >= vocab_end) continue;
        float *restrict d = dtable + (size_t)(id - vocab_begin) * C;
        const float *restrict g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}

void cpu_position_embedding_add(Backend *be, void *out_, const void *pos_, int B, int T, int C) {
    (void)be;
    float *out = out_;
    const float *pos = pos_;
    size_t plane = (size_t)T * C;
    for (int b = 0; b < B; b++) {
        float *restrict o = out + (size_t)b * plane;
        const float *restrict p = pos;
        for (size_t i = 0; i < plane; i++) o[i] += p[i];
    }
}

void cpu_position_embedding_backward(Backend *be, float *dpos, const void *dout_, int B, int T,
                                     int C) {
    (void)be;
    const float *dout = dout_;
    size_t plane = (size_t)T * C;
    for (int b = 0; b < B; b++) {
        float *restrict d = dpos;
        const float *restrict g = dout + (size_t)b * plane;
        for (size_t i = 0; i < plane; i++) d[i] += g[i];
    }
}

void cpu_position_embedding_add_ids(Backend *be, void *out_, const void *pos_,
                                    const int32_t *position_ids, int N, int C) {
    (void)be;
    float *out = out_;
    const float *pos = pos_;
    for (int n = 0; n < N; n++) {
        float *restrict o = out + (size_t)n * C;
        const float *restrict p = pos + (size_t)position_ids[n] * C;
        for (int c = 0; c < C; c++) o[c] += p[c];
    }
}

void cpu_position_embedding_backward_ids(Backend *be, float *dpos, const void *dout_,
                                         const int32_t *position_ids, int N, int C) {
    (void)be;
    const float *dout = dout_;
    for (int n = 0; n < N; n++) {
        float *restrict d = dpos + (size_t)position_ids[n] * C;
        const float *restrict g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}

void cpu_layernorm_forward(Backend *be, void *out_, float *mean, float *rstd, const void *inp_,
                           const void *weight_, const void *bias_, int N, int C, float eps,
                           float weight_offset) {
    (void)be;
    float *out = out_;
    const float *inp = inp_, *weight = weight_, *bias = bias_;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += x[c];
        float mu = (float)(sum / C);
        /* Two passes (mean, then squared deviations) avoid the cancellation
         * of E[x^2] - E[x]^2 on rows with a large mean. */
        double sq = 0.0;
        for (int c = 0; c < C; c++) {
            double d = (double)x[c] - mu;
            sq += d * d;
        }
        float rs = (float)(1.0 / sqrt(sq / C + (double)eps));
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - mu) * rs * (weight[c] + weight_offset) + bias[c];
        mean[n] = mu;
        rstd[n] = rs;
    }
}

void cpu_layernorm_backward(Backend *be, void *dinp_, float *restrict dweight,
                            float *restrict dbias, const void *dout_, const void *inp_,
                            const void *weight_, const float *mean, const float *rstd, int N,
                            int C, float weight_offset) {
    (void)be;
    float *dinp = dinp_;
    const float *dout = dout_, *inp = inp_, *weight = weight_;
    for (int n = 0; n < N; n++) {
        const float *restrict x = inp + (size_t)n * C;
        const float *restrict g = dout + (size_t)n * C;
        float mu = mean[n], rs = rstd[n];
        /* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with
         * dxhat = g * (weight + weight_offset). */
        double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            float dxhat = g[c] * (weight[c] + weight_offset);
            sum_dxhat += dxhat;
            sum_dxhat_xhat += (double)dxhat * xhat;
        }
        float mean_dxhat = (float)(sum_dxhat / C);
        float mean_dxhat_xhat = (float)(sum_dxhat_xhat / C);
        float *restrict dx = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            float dxhat = g[c] * (weight[c] + weight_offset);
            dx[c] += (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * rs;
            dweight[c] += g[c] * xhat;
            dbias[c] += g[c];
        }
    }
}

void cpu_matmul_forward(Backend *be, void *out_, const void *inp_, const void *weight_,
                        const void *bias_, int N, int IC, int OC, bool weight_in_major) {
    GPT3D_CHECK(N > 0 && IC > 0 && OC > 0, "matmul_forward: bad shape N=%d IC=%d OC=%d", N, IC, OC);
    float *out = out_;
    const float *inp = inp_, *weight = weight_, *bias = bias_;
    float beta = 0.0f;
    if (bias) {
        /* Seed every output row with the bias and let sgemm accumulate onto
         * it: one pass over out instead of two. */
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    if (weight_in_major) /* W [IC, OC]: out = inp W */
        cpu_sgemm(be, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, inp, IC, weight, OC, beta, out,
                  OC);
    else /* W [OC, IC]: out = inp W^T */
        cpu_sgemm(be, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out,
                  OC);
}

void cpu_add_bias(Backend *be, void *out_, const void *bias_, int N, int OC) {
    (void)be;
    float *out = out_;
    const float *bias = bias_;
    for (int n = 0; n < N; n++) {
        float *restrict o = out + (size_t)n * OC;
        for (int c = 0; c < OC; c++) o[c] += bias[c];
    }
}

void cpu_matmul_backward(Backend *be, void *dinp_, float *dweight, float *dbias, const void *dout_,
                         const void *inp_, const void *weight_, int N, int IC, int OC,
                         bool weight_in_major) {
    GPT3D_CHECK(N > 0 && IC > 0 && OC > 0, "matmul_backward: bad shape N=%d IC=%d OC=%d", N, IC,
                OC);
    float *dinp = dinp_;
    const float *dout = dout_, *inp = inp_, *weight = weight_;
    if (dinp) {
        if (weight_in_major) /* dinp = dout W^T, W [IC, OC] */
            cpu_sgemm(be, CblasNoTrans, CblasTrans, N, IC, OC, 1.0f, dout, OC, weight, OC, 0.0f,
                      dinp, IC);
        else /* dinp = dout W, W [OC, IC] */
            cpu_sgemm(be, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, weight, IC, 0.0f,
                      dinp, IC);
    }
    if (dweight) {
        if (weight_in_major) /* dW [IC, OC] += inp^T dout */
            cpu_sgemm(be, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f,
                      dweight, OC);
        else /* dW [OC, IC] += dout^T inp */
            cpu_sgemm(be, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f,
                      dweight, IC);
    }
    if (dbias) {
        for (int n = 0; n < N; n++) {
            const float *restrict g = dout + (size_t)n * OC;
            float *restrict db = dbias;
            for (int o = 0; o < OC; o++) db[o] += g[o];
        }
    }
}

/* GPT-2's "gelu_new": 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
 * evaluated as x * sigmoid(2u) = x / (1 + exp(-2u)), the same function
 * written without tanh's cancellation near -1 and with an exp that
 * vectorises. With e = exp(-2u) and s = 1 / (1 + e), the derivative is
 * s + 2 x u'(x) s (1 - s), and 1 - s = e s. */
static const float GELU_SQRT_2_OVER_PI = 0.79788456080286535588f;
static const float GELU_CUBIC = 0.044715f;

void cpu_gelu_forward(Backend *be, void *out_, const void *inp_, size_t n) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        out[i] = x / (1.0f + cpu_expf(-2.0f * u));
    }
}

void cpu_gelu_backward(Backend *be, void *dinp_, const void *inp_, const void *dout_, size_t n) {
    (void)be;
    float *dinp = dinp_;
    const float *inp = inp_, *dout = dout_;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        float du_dx = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * x * x);
        float e = cpu_expf(-2.0f * u);
        float s = 1.0f / (1.0f + e);
        float local = s + 2.0f * x * du_dx * (s * s * e);
        dinp[i] = local * dout[i];
    }
}

void cpu_add(Backend *be, void *out_, const void *a_, const void *b_, size_t n) {
    (void)be;
    float *out = out_;
    const float *a = a_, *b = b_;
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_add_inplace(Backend *be, void *dst_, const void *src_, size_t n) {
    (void)be;
    float *dst = dst_;
    const float *src = src_;
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

void cpu_scale_f32(Backend *be, float *x, float s, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
