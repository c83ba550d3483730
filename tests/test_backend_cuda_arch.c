/* tests/test_backend_cuda_arch.c — the CUDA backend's ops of the modern
 * architectures against the CPU backend: RMSNorm (weight offset 0 and 1),
 * SwiGLU, squared ReLU, counter-keyed dropout, rotary embeddings (both
 * pairings, a rotary dimension below the head size, query groups) and the
 * query/key norm of --qk-layernorm (both norms, query groups).
 *
 * Same scheme as test_backend_cuda.c: bf16-rounded inputs on both sides,
 * overwritten outputs poisoned with NaN, every op twice for bitwise
 * determinism. Dropout must keep exactly the elements the CPU keeps (and
 * that core/rng.h's rng_block says to keep, drawn here on the host), and
 * its kept values are one fp32 multiply, so they match exactly; squared
 * ReLU's arithmetic is the CPU's too. Exits 77 without a GPU; with
 * --cpu-standin a CPU backend takes the CUDA backend's place (a harness
 * self-test, see test_backend_cuda_util.h). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "core/rng.h"
#include "test_backend_cuda_util.h"

/* The CUDA bf16 output must be the CPU's fp32 result rounded once to bf16. */
static int compare_rounded(const char *what, Pair *p, const void *cu_act, const float *cpu_dev,
                           size_t n) {
    float *got = act_download(p->cu, cu_act, n);
    float *want = download(p->cpu, cpu_dev, n);
    round_like_act(p->cu, want, n);
    int rc = compare_f32(what, got, want, n, 0.0);
    free(got);
    free(want);
    return rc;
}

/* Bitwise equality of two downloads of the same activation buffer. */
static int act_bytes_equal(const char *what, Backend *cu, const void *first_host, const void *dev,
                           size_t n) {
    void *second = bytes_download(cu, dev, backend_act_bytes(cu, n));
    int rc = same_bytes(what, first_host, second, backend_act_bytes(cu, n));
    free(second);
    return rc;
}

/* ---- RMSNorm ---------------------------------------------------------------- */

static int rmsnorm_case(Pair *p, TestRng *rng, float eps, float offset) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  rmsnorm eps=%g weight_offset=%g\n", (double)eps, (double)offset);
    /* C not a multiple of 32 (lane tails); N large enough for many
     * column-sum chunks. With offset 1 the stored weight is near zero. */
    enum { N = 300, C = 100, n = N * C };
    float *x = rand_bf16(rng, n, -2, 3), *w = rand_bf16(rng, C, 0.5f - offset, 1.5f - offset);
    float *dout = rand_bf16(rng, n, -1, 1), *dinp0 = rand_bf16(rng, n, -1, 1);
    float *dw0 = rand_floats(rng, C, -1, 1);

    float *cx = upload(cpu, x, n * 4), *cw = upload(cpu, w, C * 4);
    float *cdout = upload(cpu, dout, n * 4), *cdinp = upload(cpu, dinp0, n * 4);
    float *cdw = upload(cpu, dw0, C * 4), *cy = cpu->ops->alloc(cpu, n * 4);
    float *crstd = cpu->ops->alloc(cpu, N * 4);
    void *gx = act_upload(cu, x, n), *gw = act_upload(cu, w, C), *gdout = act_upload(cu, dout, n);
    void *gdinp = act_upload(cu, dinp0, n), *gy = act_poisoned(cu, n);
    float *gdw = upload(cu, dw0, C * 4), *grstd = f32_poisoned(cu, N);

    cpu->ops->rmsnorm_forward(cpu, cy, crstd, cx, cw, N, C, eps, offset);
    cu->ops->rmsnorm_forward(cu, gy, grstd, gx, gw, N, C, eps, offset);
    CHECK(!compare_act("rmsnorm_forward out", p, gy, cy, n, BF16_TOL));
    CHECK(!compare_f32_dev("rmsnorm_forward rstd", p, grstd, crstd, N, F32_TOL));
    void *y1 = bytes_download(cu, gy, backend_act_bytes(cu, n)), *r1 = bytes_download(cu, grstd, N * 4);
    poison_act(cu, gy, n), poison_f32(cu, grstd, N);
    cu->ops->rmsnorm_forward(cu, gy, grstd, gx, gw, N, C, eps, offset);
    CHECK(!act_bytes_equal("rmsnorm_forward out", cu, y1, gy, n));
    void *r2 = bytes_download(cu, grstd, N * 4);
    CHECK(!same_bytes("rmsnorm_forward rstd", r1, r2, N * 4));

    /* dinp and dweight start non-zero: both add. */
    cpu->ops->rmsnorm_backward(cpu, cdinp, cdw, cdout, cx, cw, crstd, N, C, offset);
    cu->ops->rmsnorm_backward(cu, gdinp, gdw, gdout, gx, gw, grstd, N, C, offset);
    CHECK(!compare_act("rmsnorm_backward dinp", p, gdinp, cdinp, n, BF16_TOL));
    CHECK(!compare_f32_dev("rmsnorm_backward dweight", p, gdw, cdw, C, F32_TOL));
    void *dx1 = bytes_download(cu, gdinp, backend_act_bytes(cu, n));
    void *dw1 = bytes_download(cu, gdw, C * 4);
    void *reset = act_upload(cu, dinp0, n);
    cu->ops->copy_device(cu, gdinp, reset, backend_act_bytes(cu, n));
    cu->ops->copy_to_device(cu, gdw, dw0, C * 4);
    cu->ops->rmsnorm_backward(cu, gdinp, gdw, gdout, gx, gw, grstd, N, C, offset);
    CHECK(!act_bytes_equal("rmsnorm_backward dinp", cu, dx1, gdinp, n));
    void *dw2 = bytes_download(cu, gdw, C * 4);
    CHECK(!same_bytes("rmsnorm_backward dweight", dw1, dw2, C * 4));

    void *host[] = {x, w, dout, dinp0, dw0, y1, r1, r2, dx1, dw1, dw2};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    void *cbufs[] = {cx, cw, cdout, cdinp, cdw, cy, crstd};
    for (size_t i = 0; i < sizeof cbufs / sizeof *cbufs; i++) cpu->ops->free(cpu, cbufs[i]);
    void *gbufs[] = {gx, gw, gdout, gdinp, gy, gdw, grstd, reset};
    for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++) cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int test_rmsnorm(Pair *p, TestRng *rng) {
    CHECK(!rmsnorm_case(p, rng, 1e-5f, 0.0f));
    CHECK(!rmsnorm_case(p, rng, 1e-6f, 1.0f)); /* --apply-layernorm-1p */
    return 0;
}

/* ---- activations ------------------------------------------------------------ */

static int test_swiglu(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { N = 37, F = 300, n = N * F };
    float *x = rand_bf16(rng, 2 * (size_t)n, -6, 6), *g = rand_bf16(rng, n, -1, 1);
    /* Far tails of the gate: exp(-x) overflows to inf, the sigmoid is 0. */
    x[0] = -100.0f, x[2] = -40.0f, x[4] = 40.0f, x[6] = 100.0f;
    float *cx = upload(cpu, x, 2 * (size_t)n * 4), *cg = upload(cpu, g, n * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cdx = cpu->ops->alloc(cpu, 2 * (size_t)n * 4);
    void *gx = act_upload(cu, x, 2 * (size_t)n), *gg = act_upload(cu, g, n);
    void *gy = act_poisoned(cu, n), *gdx = act_poisoned(cu, 2 * (size_t)n);
    cpu->ops->swiglu_forward(cpu, cy, cx, N, F);
    cu->ops->swiglu_forward(cu, gy, gx, N, F);
    CHECK(!compare_act("swiglu_forward", p, gy, cy, n, BF16_TOL));
    cpu->ops->swiglu_backward(cpu, cdx, cx, cg, N, F);
    cu->ops->swiglu_backward(cu, gdx, gx, gg, N, F);
    CHECK(!compare_act("swiglu_backward", p, gdx, cdx, 2 * (size_t)n, BF16_TOL));
    void *first = bytes_download(cu, gdx, backend_act_bytes(cu, 2 * (size_t)n));
    poison_act(cu, gdx, 2 * (size_t)n);
    cu->ops->swiglu_backward(cu, gdx, gx, gg, N, F);
    CHECK(!act_bytes_equal("swiglu_backward", cu, first, gdx, 2 * (size_t)n));
    free(first), free(x), free(g);
    void *cbufs[] = {cx, cg, cy, cdx}, *gbufs[] = {gx, gg, gy, gdx};
    for (int i = 0; i < 4; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int test_squared_relu(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { n = 4099 };
    float *x = rand_bf16(rng, n, -4, 4), *g = rand_bf16(rng, n, -1, 1);
    x[0] = 0.0f, x[1] = -0.0f; /* the kink: gradient 0 on both sides */
    float *cx = upload(cpu, x, n * 4), *cg = upload(cpu, g, n * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cdx = cpu->ops->alloc(cpu, n * 4);
    void *gx = act_upload(cu, x, n), *gg = act_upload(cu, g, n);
    void *gy = act_poisoned(cu, n), *gdx = act_poisoned(cu, n);
    cpu->ops->squared_relu_forward(cpu, cy, cx, n);
    cu->ops->squared_relu_forward(cu, gy, gx, n);
    CHECK(!compare_rounded("squared_relu_forward", p, gy, cy, n));
    cpu->ops->squared_relu_backward(cpu, cdx, cx, cg, n);
    cu->ops->squared_relu_backward(cu, gdx, gx, gg, n);
    CHECK(!compare_rounded("squared_relu_backward", p, gdx, cdx, n));
    free(x), free(g);
    void *cbufs[] = {cx, cg, cy, cdx}, *gbufs[] = {gx, gg, gy, gdx};
    for (int i = 0; i < 4; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

/* ---- dropout ------------------------------------------------------------------ */

/* The mask of backend.h's rule, drawn here on the host: 1 = kept. */
static unsigned char *host_mask(int rows, int cols, const DropoutKey *k) {
    unsigned char *m = xmalloc((size_t)rows * cols + 1);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint64_t counter = (k->row0 + (uint64_t)r) * k->row_stride + k->col0 + (uint64_t)c;
            m[(size_t)r * cols + c] = rng_block(k->seed, k->stream, counter).v[0] >= k->threshold;
        }
    return m;
}

/* got (never-zero inputs, so zero means dropped) keeps exactly `mask`. */
static int check_mask(const char *what, const float *got, const unsigned char *mask, size_t n) {
    size_t wrong = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        kept += mask[i];
        if ((got[i] != 0.0f) != (mask[i] != 0) && wrong++ == 0)
            fprintf(stderr, "  %s: element %zu %s, the mask says %s\n", what, i,
                    got[i] != 0.0f ? "kept" : "dropped", mask[i] ? "keep" : "drop");
    }
    if (wrong) fprintf(stderr, "  %s: %zu of %zu elements disagree with the mask\n", what, wrong, n);
    fprintf(stderr, "  %s: kept %zu of %zu\n", what, kept, n);
    return wrong != 0;
}

/* One block of a dropout site: forward out of place and in place, backward
 * with dinp aliasing dout; every output against the CPU's (exact) and the
 * host mask (exact). */
static int dropout_case(Pair *p, TestRng *rng, int rows, int cols, const DropoutKey *key) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  dropout %d x %d, row0 %llu row_stride %llu col0 %llu threshold %u\n", rows,
            cols, (unsigned long long)key->row0, (unsigned long long)key->row_stride,
            (unsigned long long)key->col0, key->threshold);
    const size_t n = (size_t)rows * cols;
    float *x = rand_bf16(rng, n, -2, 2), *g = rand_bf16(rng, n, -1, 1);
    unsigned char *mask = host_mask(rows, cols, key);
    float *cx = upload(cpu, x, n * 4), *cg = upload(cpu, g, n * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cdx = cpu->ops->alloc(cpu, n * 4);
    void *gx = act_upload(cu, x, n), *gg = act_upload(cu, g, n), *gy = act_poisoned(cu, n);

    cpu->ops->dropout_forward(cpu, cy, cx, rows, cols, key);
    cu->ops->dropout_forward(cu, gy, gx, rows, cols, key);
    CHECK(!compare_rounded("dropout_forward", p, gy, cy, n));
    float *got = act_download(cu, gy, n);
    CHECK(!check_mask("dropout_forward", got, mask, n));
    free(got);
    void *first = bytes_download(cu, gy, backend_act_bytes(cu, n));
    cu->ops->dropout_forward(cu, gx, gx, rows, cols, key); /* in place */
    CHECK(!act_bytes_equal("dropout_forward in place", cu, first, gx, n));

    cpu->ops->dropout_backward(cpu, cdx, cg, rows, cols, key);
    cu->ops->dropout_backward(cu, gg, gg, rows, cols, key); /* dinp aliasing dout */
    CHECK(!compare_rounded("dropout_backward", p, gg, cdx, n));
    got = act_download(cu, gg, n);
    CHECK(!check_mask("dropout_backward", got, mask, n));
    free(got);

    free(first), free(x), free(g), free(mask);
    void *cbufs[] = {cx, cg, cy, cdx}, *gbufs[] = {gx, gg, gy};
    for (int i = 0; i < 4; i++) cpu->ops->free(cpu, cbufs[i]);
    for (int i = 0; i < 3; i++) cu->ops->free(cu, gbufs[i]);
    return 0;
}

static DropoutKey dropout_key(double prob, uint64_t row0, uint64_t row_stride, uint64_t col0) {
    DropoutKey k = {.seed = 1234,
                    .stream = rng_stream_from_name("dropout/iteration 7/layer 1/site 2"),
                    .row0 = row0,
                    .row_stride = row_stride,
                    .col0 = col0,
                    .threshold = (uint32_t)nearbyint(prob * 4294967296.0),
                    .scale = (float)(1.0 / (1.0 - prob))};
    return k;
}

static int test_dropout(Pair *p, TestRng *rng) {
    /* A whole [rows, hidden] block. */
    DropoutKey k = dropout_key(0.1, 0, 100, 0);
    CHECK(!dropout_case(p, rng, 37, 100, &k));
    /* A rank's share: rows from 64 on, its columns [96, 192) of 384, a
     * large p; counters past 2^32 (the high word of the index). */
    k = dropout_key(0.6, 64 + (1ull << 32) / 384, 384, 96);
    CHECK(!dropout_case(p, rng, 40, 96, &k));
    /* More elements than one grid of the grid-stride loop covers. */
    k = dropout_key(0.25, 3, 1024, 0);
    CHECK(!dropout_case(p, rng, 2500, 1024, &k));
    /* p = 0: threshold 0 keeps everything, scale 1. */
    k = dropout_key(0.0, 0, 64, 0);
    CHECK(!dropout_case(p, rng, 5, 64, &k));
    return 0;
}

/* ---- rotary embeddings ---------------------------------------------------------- */

typedef struct {
    int B, T, NH, NG, HS, rot_dim;
    bool interleaved;
    bool position_ids; /* --reset-position-ids: positions restart at documents */
} RopeShape;

/* The elements RoPE must leave alone (value heads, features >= rot_dim of
 * the others) are bitwise the input's. */
static int check_rope_untouched(const float *got, const float *x, RopeShape s) {
    const int per_group = s.NH / s.NG + 2;
    const size_t rows = (size_t)s.B * s.T;
    for (size_t r = 0; r < rows; r++)
        for (int g = 0; g < s.NG; g++)
            for (int h = 0; h < per_group; h++)
                for (int e = 0; e < s.HS; e++) {
                    if (h < per_group - 1 && e < s.rot_dim) continue;
                    const size_t i = (r * s.NG * per_group + (size_t)g * per_group + h) * s.HS + e;
                    if (f32_bits(got[i]) != f32_bits(x[i])) {
                        fprintf(stderr, "  rope changed element %zu (row %zu group %d head %d "
                                        "feature %d)\n", i, r, g, h, e);
                        return 1;
                    }
                }
    return 0;
}

static int rope_case(Pair *p, TestRng *rng, RopeShape s, float base) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  rope B=%d T=%d NH=%d NG=%d HS=%d rot_dim=%d %s\n", s.B, s.T, s.NH, s.NG,
            s.HS, s.rot_dim, s.interleaved ? "interleaved" : "rotate-half");
    const size_t n = (size_t)s.B * s.T * s.NG * (s.NH / s.NG + 2) * s.HS;
    float *x = rand_bf16(rng, n, -2, 2);
    float *cx = upload(cpu, x, n * 4);
    void *gx = act_upload(cu, x, n);
    /* Documents of 1 to 13 rows: position t - (its document's start). */
    int32_t *ids = NULL, *c_ids = NULL, *g_ids = NULL;
    if (s.position_ids) {
        const size_t rows = (size_t)s.B * s.T;
        ids = xmalloc(rows * sizeof(int32_t));
        for (int b = 0; b < s.B; b++)
            for (int t = 0, start = 0; t < s.T; t++) {
                ids[b * s.T + t] = t - start;
                if ((t * 7 + b) % 13 == 0) start = t + 1;
            }
        c_ids = upload(cpu, ids, rows * sizeof(int32_t));
        g_ids = upload(cu, ids, rows * sizeof(int32_t));
    }
    for (int backward = 0; backward < 2; backward++) {
        const char *what = backward ? "rope_backward" : "rope_forward";
        cpu->ops->copy_to_device(cpu, cx, x, n * 4);
        void *fresh = act_upload(cu, x, n);
        cu->ops->copy_device(cu, gx, fresh, backend_act_bytes(cu, n));
        if (backward) {
            cpu->ops->rope_backward(cpu, cx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                    s.interleaved, c_ids);
            cu->ops->rope_backward(cu, gx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                   s.interleaved, g_ids);
        } else {
            cpu->ops->rope_forward(cpu, cx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                   s.interleaved, c_ids);
            cu->ops->rope_forward(cu, gx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                  s.interleaved, g_ids);
        }
        CHECK(!compare_act(what, p, gx, cx, n, BF16_TOL));
        float *got = act_download(cu, gx, n);
        CHECK(!check_rope_untouched(got, x, s));
        free(got);
        /* Determinism: the same rotation of the same input again. */
        void *first = bytes_download(cu, gx, backend_act_bytes(cu, n));
        cu->ops->copy_device(cu, gx, fresh, backend_act_bytes(cu, n));
        if (backward)
            cu->ops->rope_backward(cu, gx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                   s.interleaved, g_ids);
        else
            cu->ops->rope_forward(cu, gx, s.B, s.T, s.NH, s.NG, s.HS, s.rot_dim, base,
                                  s.interleaved, g_ids);
        CHECK(!act_bytes_equal(what, cu, first, gx, n));
        free(first);
        cu->ops->free(cu, fresh);
    }
    free(x);
    cpu->ops->free(cpu, cx);
    cu->ops->free(cu, gx);
    if (ids) free(ids), cpu->ops->free(cpu, c_ids), cu->ops->free(cu, g_ids);
    return 0;
}

static int test_rope(Pair *p, TestRng *rng) {
    const RopeShape shapes[] = {
        {2, 50, 4, 2, 32, 16, false, false}, /* query groups, half the head rotated */
        {2, 50, 4, 2, 32, 16, true, false},
        {1, 300, 2, 2, 64, 64, false, false}, /* whole head, large angles */
        {1, 300, 2, 2, 64, 64, true, false},
        {3, 7, 3, 1, 16, 6, false, false}, /* one key head; rot_dim/2 odd */
        {2, 50, 4, 2, 32, 16, false, true}, /* --reset-position-ids */
        {2, 50, 4, 2, 32, 32, true, true},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        CHECK(!rope_case(p, rng, shapes[i], i == 4 ? 500000.0f : 10000.0f));
    return 0;
}

/* ---- QK-norm ------------------------------------------------------------------ */

typedef struct {
    QKNormShape s;
    const char *what;
} QKNormCase;

/* The value heads of got are bitwise x's (the norm copies them). */
static int check_value_heads_copied(const float *got, const float *x, const QKNormShape *s) {
    const int Q = s->NH / s->NG;
    for (int n = 0; n < s->N; n++)
        for (int g = 0; g < s->NG; g++)
            for (int e = 0; e < s->HS; e++) {
                const size_t i = (((size_t)n * s->NG + g) * (Q + 2) + Q + 1) * s->HS + e;
                if (f32_bits(got[i]) != f32_bits(x[i])) {
                    fprintf(stderr, "  qk norm changed value element %zu (row %d group %d)\n", i,
                            n, g);
                    return 1;
                }
            }
    return 0;
}

/* The four parameter gradients (two for RMSNorm), CUDA against CPU. */
static int compare_qk_param_grads(Pair *p, float *const gpu[4], float *const cpu[4], int HS,
                                  bool rms) {
    static const char *const names[4] = {"qk_norm dq_weight", "qk_norm dq_bias",
                                          "qk_norm dk_weight", "qk_norm dk_bias"};
    for (int i = 0; i < 4; i++)
        if (!rms || i % 2 == 0) CHECK(!compare_f32_dev(names[i], p, gpu[i], cpu[i], HS, F32_TOL));
    return 0;
}

/* Forward and backward against the CPU backend (dqkv and the output
 * overwritten, so poisoned first; the weight gradients start non-zero and
 * add), value heads bitwise copied, each twice for determinism, and in
 * place (out == qkv, dqkv == dout) bitwise the same as out of place. */
static int qk_norm_case(Pair *p, TestRng *rng, const QKNormCase *c) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const QKNormShape *s = &c->s;
    fprintf(stderr, "  qk_norm %s N=%d NH=%d NG=%d HS=%d offset=%g\n", c->what, s->N, s->NH, s->NG,
            s->HS, (double)s->weight_offset);
    const size_t n = (size_t)s->N * s->NG * (s->NH / s->NG + 2) * s->HS, HS = (size_t)s->HS;
    const size_t heads = (size_t)s->N * (s->NH + s->NG);
    const float lo = 0.5f - s->weight_offset, hi = 1.5f - s->weight_offset;
    float *x = rand_bf16(rng, n, -2, 3), *dout = rand_bf16(rng, n, -1, 1);
    float *prm[4] = {rand_bf16(rng, HS, lo, hi), rand_bf16(rng, HS, -0.5f, 0.5f),
                     rand_bf16(rng, HS, lo, hi), rand_bf16(rng, HS, -0.5f, 0.5f)};
    float *dw0 = rand_floats(rng, HS, -1, 1);
    float *cx = upload(cpu, x, n * 4), *cdout = upload(cpu, dout, n * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cdx = cpu->ops->alloc(cpu, n * 4);
    float *cmean = cpu->ops->alloc(cpu, heads * 4), *crstd = cpu->ops->alloc(cpu, heads * 4);
    void *gx = act_upload(cu, x, n), *gdout = act_upload(cu, dout, n);
    void *gy = act_poisoned(cu, n), *gdx = act_poisoned(cu, n);
    float *gmean = f32_poisoned(cu, heads), *grstd = f32_poisoned(cu, heads);
    float *cp[4], *cgrad[4], *ggrad[4];
    void *gp[4];
    for (int i = 0; i < 4; i++) {
        cp[i] = upload(cpu, prm[i], HS * 4), gp[i] = act_upload(cu, prm[i], HS);
        cgrad[i] = upload(cpu, dw0, HS * 4), ggrad[i] = upload(cu, dw0, HS * 4);
    }

    cpu->ops->qk_norm_forward(cpu, cy, cmean, crstd, cx, cp[0], cp[1], cp[2], cp[3], s);
    cu->ops->qk_norm_forward(cu, gy, gmean, grstd, gx, gp[0], gp[1], gp[2], gp[3], s);
    CHECK(!compare_act("qk_norm_forward out", p, gy, cy, n, BF16_TOL));
    CHECK(!compare_f32_dev("qk_norm_forward rstd", p, grstd, crstd, heads, F32_TOL));
    if (!s->rms) CHECK(!compare_f32_dev("qk_norm_forward mean", p, gmean, cmean, heads, F32_TOL));
    float *got = act_download(cu, gy, n);
    CHECK(!check_value_heads_copied(got, x, s));
    void *y1 = bytes_download(cu, gy, backend_act_bytes(cu, n));
    poison_act(cu, gy, n);
    cu->ops->qk_norm_forward(cu, gy, gmean, grstd, gx, gp[0], gp[1], gp[2], gp[3], s);
    CHECK(!act_bytes_equal("qk_norm_forward out", cu, y1, gy, n));
    void *inplace = act_upload(cu, x, n);
    cu->ops->qk_norm_forward(cu, inplace, gmean, grstd, inplace, gp[0], gp[1], gp[2], gp[3], s);
    CHECK(!act_bytes_equal("qk_norm_forward in place", cu, y1, inplace, n));

    cpu->ops->qk_norm_backward(cpu, cdx, cgrad[0], cgrad[1], cgrad[2], cgrad[3], cdout, cx, cp[0],
                               cp[2], cmean, crstd, s);
    cu->ops->qk_norm_backward(cu, gdx, ggrad[0], ggrad[1], ggrad[2], ggrad[3], gdout, gx, gp[0],
                              gp[2], gmean, grstd, s);
    CHECK(!compare_act("qk_norm_backward dqkv", p, gdx, cdx, n, BF16_TOL));
    CHECK(!compare_qk_param_grads(p, ggrad, cgrad, s->HS, s->rms));
    float *got_dx = act_download(cu, gdx, n);
    CHECK(!check_value_heads_copied(got_dx, dout, s));
    void *dx1 = bytes_download(cu, gdx, backend_act_bytes(cu, n));
    void *dq1 = bytes_download(cu, ggrad[0], HS * 4);
    cu->ops->copy_to_device(cu, ggrad[0], dw0, HS * 4);
    cu->ops->copy_device(cu, inplace, gdout, backend_act_bytes(cu, n));
    cu->ops->qk_norm_backward(cu, inplace, ggrad[0], ggrad[1], ggrad[2], ggrad[3], inplace, gx,
                              gp[0], gp[2], gmean, grstd, s);
    CHECK(!act_bytes_equal("qk_norm_backward in place", cu, dx1, inplace, n));
    void *dq2 = bytes_download(cu, ggrad[0], HS * 4);
    CHECK(!same_bytes("qk_norm_backward dq_weight", dq1, dq2, HS * 4));

    void *host[] = {x, dout, dw0, got, y1, got_dx, dx1, dq1, dq2};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    void *cbufs[] = {cx, cdout, cy, cdx, cmean, crstd};
    for (size_t i = 0; i < sizeof cbufs / sizeof *cbufs; i++) cpu->ops->free(cpu, cbufs[i]);
    void *gbufs[] = {gx, gdout, gy, gdx, gmean, grstd, inplace};
    for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++) cu->ops->free(cu, gbufs[i]);
    for (int i = 0; i < 4; i++) {
        free(prm[i]);
        cpu->ops->free(cpu, cp[i]), cpu->ops->free(cpu, cgrad[i]);
        cu->ops->free(cu, gp[i]), cu->ops->free(cu, ggrad[i]);
    }
    return 0;
}

static int test_qk_norm(Pair *p, TestRng *rng) {
    const QKNormCase cases[] = {
        /* GQA, 2 query heads per group; many column-sum chunks */
        {{.N = 300, .NH = 4, .NG = 2, .HS = 64, .rms = false, .eps = 1e-5f}, "LayerNorm"},
        {{.N = 300, .NH = 4, .NG = 2, .HS = 64, .rms = true, .eps = 1e-6f}, "RMSNorm"},
        /* one query head per group, HS not a multiple of 32 (lane tails), 1p */
        {{.N = 77, .NH = 3, .NG = 3, .HS = 100, .rms = false, .eps = 1e-5f, .weight_offset = 1},
         "LayerNorm"},
        {{.N = 77, .NH = 3, .NG = 3, .HS = 100, .rms = true, .eps = 1e-5f, .weight_offset = 1},
         "RMSNorm"},
        /* multi-query: one key head for 8 query heads */
        {{.N = 40, .NH = 8, .NG = 1, .HS = 32, .rms = false, .eps = 1e-5f}, "LayerNorm"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(!qk_norm_case(p, rng, &cases[i]));
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0xa5c4ee11};
    int failures = 0;
    RUN(failures, test_rmsnorm(&p, &rng));
    RUN(failures, test_swiglu(&p, &rng));
    RUN(failures, test_squared_relu(&p, &rng));
    RUN(failures, test_dropout(&p, &rng));
    RUN(failures, test_rope(&p, &rng));
    RUN(failures, test_qk_norm(&p, &rng));
    pair_destroy(&p);
    /* The stand-in compares the CPU backend with itself: say so, so a pass
     * here is never read as the CUDA ops passing. */
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
