/* tests/test_backend_cuda_gemm.c — the CUDA backend's matrix products and
 * causal attention against the CPU backend, on the same bf16-rounded inputs.
 *
 * matmul: both weight layouts, with and without bias, every backward output
 * (dinp overwritten, dweight and dbias added into non-zero fp32 buffers), the
 * partial calls the tensor-parallel layers make (no dinp; dbias only), and a
 * shape whose leading dimensions are not multiples of 8 (least-aligned
 * cuBLASLt path, run last because a missing algorithm stops the program).
 * attention: multi-head, with query groups (NH/NG query heads per key and
 * value head, down to one key/value head) and with attention dropout; out,
 * the saved fp32 probabilities, and dq, dk, dv compared separately (their
 * scales differ). Every op twice for bitwise determinism.
 * Exits 77 without a GPU. */
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "test_backend_cuda_util.h"

typedef struct {
    int N, IC, OC;
    bool in_major, with_bias;
} MatmulShape;

/* Device inputs of one matmul case, on both backends. */
typedef struct {
    float *c_x, *c_w, *c_b, *c_dout, *c_out, *c_dx, *c_dw, *c_db;
    void *g_x, *g_w, *g_b, *g_dout, *g_out, *g_dx;
    float *g_dw, *g_db;
    float *dw0, *db0; /* host initial gradient buffers */
} MatmulBuffers;

static void matmul_buffers(MatmulBuffers *m, Pair *p, TestRng *rng, MatmulShape s) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const size_t xn = (size_t)s.N * s.IC, wn = (size_t)s.IC * s.OC, yn = (size_t)s.N * s.OC;
    float *x = rand_bf16(rng, xn, -1, 1), *w = rand_bf16(rng, wn, -1, 1);
    float *b = rand_bf16(rng, (size_t)s.OC, -1, 1), *dout = rand_bf16(rng, yn, -1, 1);
    m->dw0 = rand_floats(rng, wn, -1, 1);
    m->db0 = rand_floats(rng, (size_t)s.OC, -1, 1);
    m->c_x = upload(cpu, x, xn * 4), m->c_w = upload(cpu, w, wn * 4);
    m->c_b = upload(cpu, b, (size_t)s.OC * 4), m->c_dout = upload(cpu, dout, yn * 4);
    m->c_out = cpu->ops->alloc(cpu, yn * 4), m->c_dx = cpu->ops->alloc(cpu, xn * 4);
    m->c_dw = upload(cpu, m->dw0, wn * 4), m->c_db = upload(cpu, m->db0, (size_t)s.OC * 4);
    m->g_x = act_upload(p->cu, x, xn), m->g_w = act_upload(cu, w, wn);
    m->g_b = act_upload(cu, b, (size_t)s.OC), m->g_dout = act_upload(cu, dout, yn);
    m->g_out = act_poisoned(cu, yn), m->g_dx = act_poisoned(cu, xn);
    m->g_dw = upload(cu, m->dw0, wn * 4), m->g_db = upload(cu, m->db0, (size_t)s.OC * 4);
    free(x), free(w), free(b), free(dout);
}

static void matmul_buffers_free(MatmulBuffers *m, Pair *p) {
    void *c[] = {m->c_x, m->c_w, m->c_b, m->c_dout, m->c_out, m->c_dx, m->c_dw, m->c_db};
    void *g[] = {m->g_x, m->g_w, m->g_b, m->g_dout, m->g_out, m->g_dx, m->g_dw, m->g_db};
    for (int i = 0; i < 8; i++) p->cpu->ops->free(p->cpu, c[i]), p->cu->ops->free(p->cu, g[i]);
    free(m->dw0), free(m->db0);
}

static int matmul_case(Pair *p, TestRng *rng, MatmulShape s) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  matmul N=%d IC=%d OC=%d %s%s\n", s.N, s.IC, s.OC,
            s.in_major ? "in-major" : "out-major", s.with_bias ? " +bias" : "");
    const size_t xn = (size_t)s.N * s.IC, wn = (size_t)s.IC * s.OC, yn = (size_t)s.N * s.OC;
    MatmulBuffers m;
    matmul_buffers(&m, p, rng, s);
    const void *cb = s.with_bias ? m.c_b : NULL, *gb = s.with_bias ? m.g_b : NULL;

    cpu->ops->matmul_forward(cpu, m.c_out, m.c_x, m.c_w, cb, s.N, s.IC, s.OC, s.in_major);
    cu->ops->matmul_forward(cu, m.g_out, m.g_x, m.g_w, gb, s.N, s.IC, s.OC, s.in_major);
    CHECK(!compare_act("matmul_forward", p, m.g_out, m.c_out, yn, BF16_TOL));
    void *y1 = bytes_download(cu, m.g_out, backend_act_bytes(cu, yn));
    poison_act(cu, m.g_out, yn);
    cu->ops->matmul_forward(cu, m.g_out, m.g_x, m.g_w, gb, s.N, s.IC, s.OC, s.in_major);
    void *y2 = bytes_download(cu, m.g_out, backend_act_bytes(cu, yn));
    CHECK(!same_bytes("matmul_forward", y1, y2, backend_act_bytes(cu, yn)));

    cpu->ops->matmul_backward(cpu, m.c_dx, m.c_dw, m.c_db, m.c_dout, m.c_x, m.c_w, s.N, s.IC, s.OC,
                              s.in_major);
    cu->ops->matmul_backward(cu, m.g_dx, m.g_dw, m.g_db, m.g_dout, m.g_x, m.g_w, s.N, s.IC, s.OC,
                             s.in_major);
    CHECK(!compare_act("matmul_backward dinp", p, m.g_dx, m.c_dx, xn, BF16_TOL));
    CHECK(!compare_f32_dev("matmul_backward dweight", p, m.g_dw, m.c_dw, wn, F32_TOL));
    CHECK(!compare_f32_dev("matmul_backward dbias", p, m.g_db, m.c_db, (size_t)s.OC, F32_TOL));
    void *dw1 = bytes_download(cu, m.g_dw, wn * 4), *db1 = bytes_download(cu, m.g_db, s.OC * 4);
    void *dx1 = bytes_download(cu, m.g_dx, backend_act_bytes(cu, xn));

    /* The same backward again from the same starting buffers: bitwise equal. */
    cu->ops->copy_to_device(cu, m.g_dw, m.dw0, wn * 4);
    cu->ops->copy_to_device(cu, m.g_db, m.db0, (size_t)s.OC * 4);
    poison_act(cu, m.g_dx, xn);
    cu->ops->matmul_backward(cu, m.g_dx, m.g_dw, m.g_db, m.g_dout, m.g_x, m.g_w, s.N, s.IC, s.OC,
                             s.in_major);
    void *dw2 = bytes_download(cu, m.g_dw, wn * 4), *db2 = bytes_download(cu, m.g_db, s.OC * 4);
    void *dx2 = bytes_download(cu, m.g_dx, backend_act_bytes(cu, xn));
    CHECK(!same_bytes("matmul_backward dinp", dx1, dx2, backend_act_bytes(cu, xn)));
    CHECK(!same_bytes("matmul_backward dweight", dw1, dw2, wn * 4));
    CHECK(!same_bytes("matmul_backward dbias", db1, db2, s.OC * 4));

    /* A second accumulation without dinp (dweight += again), then the
     * dbias-only call of a row-parallel bias (inp and weight NULL). */
    cpu->ops->matmul_backward(cpu, NULL, m.c_dw, NULL, m.c_dout, m.c_x, m.c_w, s.N, s.IC, s.OC,
                              s.in_major);
    cu->ops->matmul_backward(cu, NULL, m.g_dw, NULL, m.g_dout, m.g_x, m.g_w, s.N, s.IC, s.OC,
                             s.in_major);
    CHECK(!compare_f32_dev("matmul_backward dweight, accumulated twice", p, m.g_dw, m.c_dw, wn,
                           F32_TOL));
    cpu->ops->matmul_backward(cpu, NULL, NULL, m.c_db, m.c_dout, NULL, NULL, s.N, s.IC, s.OC, true);
    cu->ops->matmul_backward(cu, NULL, NULL, m.g_db, m.g_dout, NULL, NULL, s.N, s.IC, s.OC, true);
    CHECK(!compare_f32_dev("matmul_backward dbias only", p, m.g_db, m.c_db, (size_t)s.OC, F32_TOL));

    void *h[] = {y1, y2, dw1, db1, dx1, dw2, db2, dx2};
    for (int i = 0; i < 8; i++) free(h[i]);
    matmul_buffers_free(&m, p);
    return 0;
}

static int test_matmul(Pair *p, TestRng *rng) {
    const uint64_t calls = p->cu->gemm_calls;
    const MatmulShape shapes[] = {
        {64, 96, 160, false, true},  {64, 96, 160, true, true}, {64, 96, 160, false, false},
        {128, 64, 256, true, false}, {200, 48, 40, false, true},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        CHECK(!matmul_case(p, rng, shapes[i]));
    CHECK(p->cu->gemm_calls > calls); /* the GEMMs are counted */
    p->cu->ops->synchronize(p->cu);
    CHECK(p->cu->gemm_seconds > 0.0); /* and timed, once the stream was synchronised */
    return 0;
}

/* Unaligned leading dimensions (21, 13, 63 elements of 2 bytes). */
static int test_matmul_unaligned(Pair *p, TestRng *rng) {
    CHECK(!matmul_case(p, rng, (MatmulShape){37, 21, 13, false, true}));
    CHECK(!matmul_case(p, rng, (MatmulShape){37, 21, 63, true, true}));
    return 0;
}

/* ---- attention ---- */

typedef struct {
    int B, T, NH, NG, HS;
    bool dropout;
    bool documents; /* --reset-attention-mask: key starts at document boundaries */
} AttnShape;

/* Key starts of documents ending every 9th position of sequence b (offset
 * by b, so the sequences differ; one-token documents where they meet). */
static int32_t *document_key_starts(int B, int T) {
    int32_t *ks = xmalloc((size_t)B * T * sizeof(int32_t));
    for (int b = 0; b < B; b++)
        for (int t = 0, start = 0; t < T; t++) {
            ks[b * T + t] = start;
            if ((t + b) % 9 == 8 || t == 3) start = t + 1;
        }
    return ks;
}

/* The heads of one kind (0 = query, 1 = key, 2 = value) of a
 * [rows, NG, NH/NG + 2, HS] qkv array, as [rows, heads, HS]: NH query heads
 * (h = g * NH/NG + j), or NG key or value heads. */
static float *qkv_part(const float *qkv, int rows, AttnShape s, int which, size_t *count) {
    const int Q = s.NH / s.NG, heads = which == 0 ? s.NH : s.NG;
    const size_t row = (size_t)s.NG * (Q + 2) * s.HS;
    float *out = xmalloc((size_t)rows * heads * s.HS * sizeof(float));
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            const int g = which == 0 ? h / Q : h;
            const int slot = which == 0 ? h % Q : Q + which - 1;
            memcpy(out + ((size_t)r * heads + h) * s.HS,
                   qkv + r * row + ((size_t)g * (Q + 2) + slot) * s.HS, (size_t)s.HS * sizeof(float));
        }
    *count = (size_t)rows * heads * s.HS;
    return out;
}

/* dq, dk and dv compared separately: their scales differ, and dk, dv of a
 * group sum over its query heads. */
static int compare_dqkv(Pair *p, const void *g_dqkv, const float *c_dqkv, int rows, AttnShape s) {
    const size_t n = (size_t)rows * s.NG * (s.NH / s.NG + 2) * s.HS;
    float *got = act_download(p->cu, g_dqkv, n), *want = download(p->cpu, c_dqkv, n);
    static const char *names[3] = {"attention_backward dq", "attention_backward dk",
                                   "attention_backward dv"};
    int rc = 0;
    for (int which = 0; which < 3 && !rc; which++) {
        size_t count = 0;
        float *g = qkv_part(got, rows, s, which, &count), *w = qkv_part(want, rows, s, which, &count);
        /* dS is rounded to bf16 before dq = dS K and dk = dS^T Q (as flash
         * attention rounds it), and dS = P (dP - D) cancels: a few small
         * elements of dq carry more than one rounding of their own size
         * (1.22 x BF16_TOL at worst in the first GPU run). */
        rc = compare_chain(names[which], g, w, count, BF16_TOL, 2.5 * BF16_TOL);
        free(g), free(w);
    }
    free(got), free(want);
    return rc;
}

/* Attention dropout p = 0.25 of a rank whose heads start at global head 2
 * of NH + 5, in a micro-batch starting at sample 3: every term of the
 * counter is exercised. */
static AttentionDropout attn_dropout_key(AttnShape s) {
    const double prob = 0.25;
    AttentionDropout d = {.seed = 20240607, .stream = 0x5eedf00dull, .sample0 = 3, .head0 = 2,
                          .heads_total = (uint64_t)s.NH + 5,
                          .threshold = (uint32_t)(prob * 4294967296.0),
                          .scale = (float)(1.0 / (1.0 - prob))};
    return d;
}

static int attention_case(Pair *p, TestRng *rng, AttnShape s) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const int B = s.B, T = s.T, NH = s.NH, NG = s.NG, HS = s.HS;
    fprintf(stderr, "  attention B=%d T=%d NH=%d NG=%d HS=%d%s%s\n", B, T, NH, NG, HS,
            s.dropout ? " dropout 0.25" : "", s.documents ? " documents" : "");
    int32_t *key_start = s.documents ? document_key_starts(B, T) : NULL;
    const size_t ks_bytes = (size_t)B * T * sizeof(int32_t);
    int32_t *c_ks = key_start ? upload(cpu, key_start, ks_bytes) : NULL;
    int32_t *g_ks = key_start ? upload(cu, key_start, ks_bytes) : NULL;
    const int rows = B * T;
    const size_t qn = (size_t)rows * NG * (NH / NG + 2) * HS, on = (size_t)rows * NH * HS;
    const AttentionDropout key = attn_dropout_key(s);
    const AttentionDropout *drop = s.dropout ? &key : NULL;
    float *qkv = rand_bf16(rng, qn, -2, 2), *dout = rand_bf16(rng, on, -1, 1);
    float *c_qkv = upload(cpu, qkv, qn * 4), *c_dout = upload(cpu, dout, on * 4);
    float *c_out = cpu->ops->alloc(cpu, on * 4), *c_dqkv = cpu->ops->alloc(cpu, qn * 4);
    float *c_saved = cpu->ops->alloc(cpu, cpu->ops->attention_saved_bytes(cpu, B, T, NH, NG, HS));
    void *g_qkv = act_upload(cu, qkv, qn), *g_dout = act_upload(cu, dout, on);
    void *g_out = act_poisoned(cu, on), *g_dqkv = act_poisoned(cu, qn);
    /* What `saved` holds is the backend's own: poisoned whole, it must be
     * all written by the forward before the backward reads it. */
    const size_t saved_bytes = cu->ops->attention_saved_bytes(cu, B, T, NH, NG, HS);
    float *g_saved = cu->ops->alloc(cu, saved_bytes);
    poison_f32(cu, g_saved, saved_bytes / sizeof(float));

    cpu->ops->attention_forward(cpu, c_out, c_saved, c_qkv, B, T, NH, NG, HS, c_ks, drop);
    cu->ops->attention_forward(cu, g_out, g_saved, g_qkv, B, T, NH, NG, HS, g_ks, drop);
    /* Only the outputs compare: the CPU saves a log-sum-exp per row, this
     * backend (until its flash kernel) P [B, NH, T, T]. */
    CHECK(!compare_act("attention_forward out", p, g_out, c_out, on, BF16_TOL));

    cpu->ops->attention_backward(cpu, c_dqkv, c_dout, c_qkv, c_out, c_saved, B, T, NH, NG, HS, c_ks,
                                 drop);
    cu->ops->attention_backward(cu, g_dqkv, g_dout, g_qkv, g_out, g_saved, B, T, NH, NG, HS, g_ks, drop);
    CHECK(!compare_dqkv(p, g_dqkv, c_dqkv, rows, s));

    void *o1 = bytes_download(cu, g_out, backend_act_bytes(cu, on));
    void *d1 = bytes_download(cu, g_dqkv, backend_act_bytes(cu, qn));
    poison_act(cu, g_out, on), poison_act(cu, g_dqkv, qn);
    cu->ops->attention_forward(cu, g_out, g_saved, g_qkv, B, T, NH, NG, HS, g_ks, drop);
    cu->ops->attention_backward(cu, g_dqkv, g_dout, g_qkv, g_out, g_saved, B, T, NH, NG, HS, g_ks, drop);
    void *o2 = bytes_download(cu, g_out, backend_act_bytes(cu, on));
    void *d2 = bytes_download(cu, g_dqkv, backend_act_bytes(cu, qn));
    CHECK(!same_bytes("attention_forward", o1, o2, backend_act_bytes(cu, on)));
    CHECK(!same_bytes("attention_backward", d1, d2, backend_act_bytes(cu, qn)));

    void *h[] = {qkv, dout, o1, o2, d1, d2};
    for (int i = 0; i < 6; i++) free(h[i]);
    void *c[] = {c_qkv, c_dout, c_out, c_dqkv, c_saved}, *g[] = {g_qkv, g_dout, g_out, g_dqkv, g_saved};
    for (int i = 0; i < 5; i++) cpu->ops->free(cpu, c[i]), cu->ops->free(cu, g[i]);
    if (key_start) cpu->ops->free(cpu, c_ks), cu->ops->free(cu, g_ks), free(key_start);
    return 0;
}

static int test_attention(Pair *p, TestRng *rng) {
    const AttnShape shapes[] = {
        {2, 37, 3, 3, 16, false, false},  /* T not a multiple of a warp */
        {1, 128, 2, 2, 64, false, false}, /* GPT-2 head size */
        {3, 1, 1, 1, 8, false, false},    /* one token */
        {2, 37, 4, 2, 16, false, false},  /* query groups: two heads per key/value head */
        {2, 37, 4, 1, 16, false, false},  /* one key/value head for all (multi-query) */
        {2, 37, 3, 3, 16, true, false},   /* attention dropout */
        {2, 37, 4, 2, 16, true, false},   /* both */
        {1, 70, 4, 1, 32, true, false},
        {2, 37, 4, 2, 16, false, true}, /* --reset-attention-mask */
        {2, 70, 4, 2, 16, true, true},  /* with dropout */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        CHECK(!attention_case(p, rng, shapes[i]));
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0x9e3779b9};
    int failures = 0;
    RUN(failures, test_matmul(&p, &rng));
    RUN(failures, test_attention(&p, &rng));
    RUN(failures, test_matmul_unaligned(&p, &rng));
    pair_destroy(&p);
    /* The stand-in compares the CPU backend with itself: say so, so a pass
     * here is never read as the CUDA ops passing. */
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
