/* backend/cpu/cpu_arch.c — the ops of the modern architectures on the fp32
 * reference backend: RMSNorm, SwiGLU, squared ReLU, dropout, rotary
 * position embeddings and the query/key norm.
 *
 * Dropout masks are drawn here one Philox block per element, keyed by the
 * element's global counter (backend.h, DropoutKey), and compared as
 * integers: the CUDA backend draws the same words, so both backends, every
 * layout and a recomputation keep exactly the same elements. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "core/errors.h"
#include "core/rng.h"

void cpu_rmsnorm_forward(Backend *be, void *out_, float *rstd, const void *inp_,
                         const void *weight_, int N, int C, float eps, float weight_offset) {
    (void)be;
    float *out = out_;
    const float *inp = inp_, *weight = weight_;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double sq = 0.0;
        for (int c = 0; c < C; c++) sq += (double)x[c] * x[c];
        float rs = (float)(1.0 / sqrt(sq / C + (double)eps));
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * rs * (weight[c] + weight_offset);
        rstd[n] = rs;
    }
}

void cpu_rmsnorm_backward(Backend *be, void *dinp_, float *restrict dweight, const void *dout_,
                          const void *inp_, const void *weight_, const float *rstd, int N, int C,
                          float weight_offset) {
    (void)be;
    float *dinp = dinp_;
    const float *dout = dout_, *inp = inp_, *weight = weight_;
    for (int n = 0; n < N; n++) {
        const float *restrict x = inp + (size_t)n * C;
        const float *restrict g = dout + (size_t)n * C;
        float rs = rstd[n];
        /* dx = rstd * (dxhat - xhat * mean(dxhat * xhat)): LayerNorm's
         * gradient without the mean terms, since nothing is subtracted. */
        double sum_dxhat_xhat = 0.0;
        for (int c = 0; c < C; c++)
            sum_dxhat_xhat += (double)(g[c] * (weight[c] + weight_offset)) * (x[c] * rs);
        float mean_dxhat_xhat = (float)(sum_dxhat_xhat / C);
        float *restrict dx = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float xhat = x[c] * rs;
            float dxhat = g[c] * (weight[c] + weight_offset);
            dx[c] += (dxhat - xhat * mean_dxhat_xhat) * rs;
            dweight[c] += g[c] * xhat;
        }
    }
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + cpu_expf(-x)); }

void cpu_swiglu_forward(Backend *be, void *out_, const void *inp_, int N, int F) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
    size_t n = (size_t)N * F;
    for (size_t i = 0; i < n; i++) {
        float gate = inp[2 * i], up = inp[2 * i + 1];
        out[i] = gate * sigmoid(gate) * up;
    }
}

void cpu_swiglu_backward(Backend *be, void *dinp_, const void *inp_, const void *dout_, int N,
                         int F) {
    (void)be;
    float *dinp = dinp_;
    const float *inp = inp_, *dout = dout_;
    size_t n = (size_t)N * F;
    for (size_t i = 0; i < n; i++) {
        float gate = inp[2 * i], up = inp[2 * i + 1], g = dout[i];
        float s = sigmoid(gate);
        /* d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)). */
        dinp[2 * i] = g * up * s * (1.0f + gate * (1.0f - s));
        dinp[2 * i + 1] = g * gate * s;
    }
}

void cpu_squared_relu_forward(Backend *be, void *out_, const void *inp_, size_t n) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
    for (size_t i = 0; i < n; i++) {
        float r = inp[i] > 0.0f ? inp[i] : 0.0f;
        out[i] = r * r;
    }
}

void cpu_squared_relu_backward(Backend *be, void *dinp_, const void *inp_, const void *dout_,
                               size_t n) {
    (void)be;
    float *dinp = dinp_;
    const float *inp = inp_, *dout = dout_;
    for (size_t i = 0; i < n; i++) {
        float r = inp[i] > 0.0f ? inp[i] : 0.0f;
        dinp[i] = dout[i] * 2.0f * r;
    }
}

/* Shared by forward and backward: both scale the kept elements of src
 * and zero the rest, under the same mask. */
static void apply_dropout(float *dst, const float *src, int rows, int cols,
                          const DropoutKey *key) {
    for (int r = 0; r < rows; r++) {
        uint64_t base = (key->row0 + (uint64_t)r) * key->row_stride + key->col0;
        const float *s = src + (size_t)r * cols;
        float *d = dst + (size_t)r * cols;
        for (int c = 0; c < cols; c++) {
            bool keep = rng_block(key->seed, key->stream, base + (uint64_t)c).v[0] >= key->threshold;
            d[c] = keep ? s[c] * key->scale : 0.0f;
        }
    }
}

void cpu_dropout_forward(Backend *be, void *out, const void *inp, int rows, int cols,
                         const DropoutKey *key) {
    (void)be;
    apply_dropout(out, inp, rows, cols, key);
}

void cpu_dropout_backward(Backend *be, void *dinp, const void *dout, int rows, int cols,
                          const DropoutKey *key) {
    (void)be;
    apply_dropout(dinp, dout, rows, cols, key);
}

/* cos and sin of position t's angle for each rotated pair, [T, rot_dim/2]
 * each, computed in fp32 the way Hugging Face's rotary embedding does
 * (inv_freq = 1 / base^(2i / rot_dim), angle = t * inv_freq), so imported
 * Llama weights see the same rotation. */
static void rope_tables(float *cos_t, float *sin_t, int T, int rot_dim, float base) {
    int half = rot_dim / 2;
    for (int i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)rot_dim);
        for (int t = 0; t < T; t++) {
            float angle = (float)t * inv_freq;
            cos_t[(size_t)t * half + i] = cosf(angle);
            sin_t[(size_t)t * half + i] = sinf(angle);
        }
    }
}

/* Rotates the first rot_dim features of every query and key head of qkv
 * by the angle of its position; `direction` -1 applies the transpose
 * (the backward of a rotation is the rotation by minus the angle). */
static void rope_apply(Backend *be, float *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids,
                       float direction) {
    GPT3D_CHECK(NG > 0 && NH % NG == 0 && rot_dim >= 2 && rot_dim % 2 == 0 && rot_dim <= HS,
                "rope: bad shape NH=%d NG=%d HS=%d rot_dim=%d", NH, NG, HS, rot_dim);
    const int half = rot_dim / 2, per_group = NH / NG + 2;
    const int rotated_heads = per_group - 1; /* the group's query heads and its key */
    const size_t row = (size_t)NG * per_group * HS;
    /* Tables for every position a row has: ids may exceed the rows of a
     * sequence (a context-parallel rank's rows sit anywhere in it). */
    int positions = T;
    if (position_ids)
        for (size_t n = 0; n < (size_t)B * T; n++) {
            GPT3D_CHECK(position_ids[n] >= 0, "rope: position id %d", position_ids[n]);
            if (position_ids[n] >= positions) positions = position_ids[n] + 1;
        }
    float *cos_t = cpu_scratch(be, 2 * (size_t)positions * half);
    float *sin_t = cos_t + (size_t)positions * half;
    rope_tables(cos_t, sin_t, positions, rot_dim, base);
    /* Pair i: features (i, i + half) in rotate-half order, (2i, 2i + 1) interleaved. */
    const int stride_x = interleaved ? 2 : 1, offset_y = interleaved ? 1 : half;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *r = qkv + ((size_t)b * T + t) * row;
            const size_t pos = position_ids ? (size_t)position_ids[(size_t)b * T + t] : (size_t)t;
            const float *cs = cos_t + pos * half, *sn = sin_t + pos * half;
            for (int g = 0; g < NG; g++) {
                for (int h = 0; h < rotated_heads; h++) {
                    float *head = r + ((size_t)g * per_group + h) * HS;
                    for (int i = 0; i < half; i++) {
                        float *px = head + i * stride_x, *py = px + offset_y;
                        float x = *px, y = *py, c = cs[i], s = direction * sn[i];
                        *px = x * c - y * s;
                        *py = y * c + x * s;
                    }
                }
            }
        }
    }
}

void cpu_rope_forward(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                      float base, bool interleaved, const int32_t *position_ids) {
    rope_apply(be, qkv, B, T, NH, NG, HS, rot_dim, base, interleaved, position_ids, 1.0f);
}

void cpu_rope_backward(Backend *be, void *dqkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids) {
    rope_apply(be, dqkv, B, T, NH, NG, HS, rot_dim, base, interleaved, position_ids, -1.0f);
}

/* ---- QK-norm ----
 * Each query or key head is one norm row of HS features, strided inside its
 * qkv row: the row ops above (and cpu_nn.c's LayerNorm) run on it with
 * N = 1, so QK-norm computes exactly what the model's other norms do. */

/* Offset of normalised head j (in qkv order: a group's query heads, then
 * its key) of qkv row n; per_group = NH/NG + 2 heads per group. */
static size_t qk_head_offset(const QKNormShape *s, int n, int j) {
    const int normed = s->NH / s->NG + 1, per_group = normed + 1;
    const size_t row = (size_t)s->NG * per_group * s->HS;
    return (size_t)n * row + ((size_t)(j / normed) * per_group + j % normed) * s->HS;
}

static bool qk_is_key(const QKNormShape *s, int j) {
    const int normed = s->NH / s->NG + 1;
    return j % normed == normed - 1;
}

static void check_qk_shape(const QKNormShape *s, const char *op) {
    GPT3D_CHECK(s->N >= 0 && s->NG > 0 && s->NH % s->NG == 0 && s->HS > 0,
                "%s: bad shape N=%d NH=%d NG=%d HS=%d", op, s->N, s->NH, s->NG, s->HS);
}

/* Copies the value heads of every row (the norm leaves them alone). */
static void copy_value_heads(float *dst, const float *src, const QKNormShape *s) {
    if (dst == src) return;
    const int normed = s->NH / s->NG + 1;
    for (int n = 0; n < s->N; n++)
        for (int g = 0; g < s->NG; g++) {
            /* the value head follows the group's key head */
            size_t at = qk_head_offset(s, n, g * normed + normed - 1) + (size_t)s->HS;
            memcpy(dst + at, src + at, (size_t)s->HS * sizeof(float));
        }
}

void cpu_qk_norm_forward(Backend *be, void *out_, float *mean, float *rstd, const void *qkv_,
                         const void *q_weight, const void *q_bias, const void *k_weight,
                         const void *k_bias, const QKNormShape *s) {
    check_qk_shape(s, "qk_norm_forward");
    float *out = out_;
    const float *qkv = qkv_;
    const int heads = s->NG * (s->NH / s->NG + 1);
    for (int n = 0; n < s->N; n++)
        for (int j = 0; j < heads; j++) {
            const size_t at = qk_head_offset(s, n, j), stat = (size_t)n * heads + j;
            const bool key = qk_is_key(s, j);
            const void *w = key ? k_weight : q_weight, *b = key ? k_bias : q_bias;
            if (s->rms)
                cpu_rmsnorm_forward(be, out + at, rstd + stat, qkv + at, w, 1, s->HS, s->eps,
                                    s->weight_offset);
            else
                cpu_layernorm_forward(be, out + at, mean + stat, rstd + stat, qkv + at, w, b, 1,
                                      s->HS, s->eps, s->weight_offset);
        }
    copy_value_heads(out, qkv, s);
}

void cpu_qk_norm_backward(Backend *be, void *dqkv_, float *dq_weight, float *dq_bias,
                          float *dk_weight, float *dk_bias, const void *dout_, const void *qkv_,
                          const void *q_weight, const void *k_weight, const float *mean,
                          const float *rstd, const QKNormShape *s) {
    check_qk_shape(s, "qk_norm_backward");
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_;
    const int heads = s->NG * (s->NH / s->NG + 1);
    const size_t head_bytes = (size_t)s->HS * sizeof(float);
    /* The row ops add into dinp and read dout: the head's dout is copied
     * aside first, so dqkv may alias dout. */
    float *g = cpu_scratch(be, (size_t)s->HS);
    for (int n = 0; n < s->N; n++)
        for (int j = 0; j < heads; j++) {
            const size_t at = qk_head_offset(s, n, j), stat = (size_t)n * heads + j;
            const bool key = qk_is_key(s, j);
            const void *w = key ? k_weight : q_weight;
            float *dw = key ? dk_weight : dq_weight, *db = key ? dk_bias : dq_bias;
            memcpy(g, dout + at, head_bytes);
            memset(dqkv + at, 0, head_bytes);
            if (s->rms)
                cpu_rmsnorm_backward(be, dqkv + at, dw, g, qkv + at, w, rstd + stat, 1, s->HS,
                                     s->weight_offset);
            else
                cpu_layernorm_backward(be, dqkv + at, dw, db, g, qkv + at, w, mean + stat,
                                       rstd + stat, 1, s->HS, s->weight_offset);
        }
    copy_value_heads(dqkv, dout, s);
}
