/* tests/test_backend_cuda.c — the CUDA backend's memory ops, casts,
 * pointwise ops, embeddings and layernorm against the CPU backend.
 *
 * Without a GPU (or without CUDA in the build) the program checks that
 * backend_create("cuda") fails cleanly, then exits 77 (skipped). With a GPU:
 * memory and accounting, then every op of this file on random bf16 inputs
 * against the fp32 CPU backend on the same (bf16-rounded) inputs, with every
 * overwritten output poisoned first and every op run twice for bitwise
 * determinism. Ops whose CUDA arithmetic is the CPU's order of fp32
 * operations (copies, adds, the embedding gradient sums) must match exactly;
 * the rest within bf16/fp32 tolerances (test_backend_cuda_util.h).
 * GEMMs and attention: test_backend_cuda_gemm.c; cross entropy and the
 * optimizer ops: test_backend_cuda_loss.c; the whole model:
 * test_backend_cuda_model.c. With --cpu-standin, a CPU backend takes the
 * CUDA backend's place (see test_backend_cuda_util.h): ctest runs those as
 * the harness self-tests test_harness_cuda*, which check no CUDA op. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "test_backend_cuda_util.h"

static int test_no_device(void) {
    char err[512] = "";
    Backend *be = backend_create("cuda", 0, err, sizeof err);
    CHECK(be == NULL);
    fprintf(stderr, "  message: %s\n", err);
    CHECK(strstr(err, "no CUDA device is visible") != NULL);
    CHECK(strstr(err, "--device cpu") != NULL);
    return 0;
}

static int test_memory(Backend *be) {
    CHECK(!strcmp(be->name, "cuda") && be->act_dtype == DTYPE_BF16);
    CHECK(be->bytes_in_use == 0 && be->num_allocations == 0);
    enum { N = 1000 };
    unsigned char *a = be->ops->alloc(be, N), *b = be->ops->alloc(be, 3 * N);
    CHECK(a && b && be->bytes_in_use == 4 * N && be->num_allocations == 2);
    unsigned char host[3 * N], back[3 * N];
    be->ops->copy_to_host(be, back, b, 3 * N);
    for (int i = 0; i < 3 * N; i++) CHECK(back[i] == 0); /* zero-filled */
    for (int i = 0; i < 3 * N; i++) host[i] = (unsigned char)(i * 13 + 5);
    be->ops->copy_to_device(be, b, host, 3 * N);
    be->ops->copy_device(be, a, b + 7, N);
    be->ops->memset_zero(be, b + N, N);
    be->ops->synchronize(be);
    be->ops->copy_to_host(be, back, a, N);
    CHECK(!memcmp(back, host + 7, N));
    be->ops->copy_to_host(be, back, b, 3 * N);
    CHECK(!memcmp(back, host, N) && !memcmp(back + 2 * N, host + 2 * N, N));
    for (int i = N; i < 2 * N; i++) CHECK(back[i] == 0);
    be->ops->free(be, a);
    CHECK(be->bytes_in_use == 3 * N && be->num_allocations == 1 && be->peak_bytes_in_use == 4 * N);
    be->ops->free(be, b);
    CHECK(be->bytes_in_use == 0 && be->num_allocations == 0);
    return 0;
}

/* f32_to_act rounds to nearest even exactly as the host rounding does
 * (ties, subnormals, overflow to inf, inf and NaN), and act_to_f32 is exact. */
static int test_casts(Pair *p, TestRng *rng) {
    Backend *cu = p->cu;
    enum { N = 1000 };
    float *x = rand_floats(rng, N, -100.0f, 100.0f);
    x[0] = 1.0f + 0x1.0p-8f;     /* halfway between 1 and 1 + 2^-7: to even, 1 */
    x[1] = 1.0f + 3 * 0x1.0p-8f; /* halfway: to even, 1 + 2^-6 */
    x[2] = INFINITY;
    x[3] = -INFINITY;
    x[4] = NAN;
    x[5] = -0.0f;
    x[6] = 1e-40f;  /* subnormal */
    x[7] = 3.4e38f; /* above the largest bf16: rounds to inf */
    x[8] = -1.00390625f;
    float *d_x = upload(cu, x, N * sizeof(float));
    void *act = act_poisoned(cu, N);
    float *back = f32_poisoned(cu, N);
    cu->ops->f32_to_act(cu, act, d_x, N);
    cu->ops->act_to_f32(cu, back, act, N);
    float *got = download(cu, back, N);
    CHECK(got[0] == 1.0f && got[1] == 1.0f + 0x1.0p-6f && isinf(got[7]));
    for (int i = 0; i < N; i++) {
        float want = round_bf16(x[i]);
        if (isnan(want)) {
            CHECK(isnan(got[i]));
        } else if (f32_bits(got[i]) != f32_bits(want)) {
            fprintf(stderr, "  cast of %.9g: got %.9g want %.9g\n", x[i], got[i], want);
            return 1;
        }
    }
    cu->ops->free(cu, d_x);
    cu->ops->free(cu, act);
    cu->ops->free(cu, back);
    free(x);
    free(got);
    return 0;
}

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

static int test_add_and_scale(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { N = 13, OC = 40, n = N * OC };
    float *a = rand_bf16(rng, n, -3, 3), *b = rand_bf16(rng, n, -3, 3);
    float *bias = rand_bf16(rng, OC, -1, 1);
    float *ca = upload(cpu, a, n * 4), *cb = upload(cpu, b, n * 4), *cbias = upload(cpu, bias, OC * 4);
    float *cout = cpu->ops->alloc(cpu, n * 4);
    void *ga = act_upload(cu, a, n), *gb = act_upload(cu, b, n), *gbias = act_upload(cu, bias, OC);
    void *gout = act_poisoned(cu, n);

    cpu->ops->add(cpu, cout, ca, cb, n);
    cu->ops->add(cu, gout, ga, gb, n);
    CHECK(!compare_rounded("add", p, gout, cout, n));
    /* In place (out aliases a) and add_inplace: a += b. */
    cu->ops->add(cu, ga, ga, gb, n);
    CHECK(!compare_rounded("add, out aliasing a", p, ga, cout, n));
    cpu->ops->add_inplace(cpu, ca, cb, n);
    cu->ops->add_inplace(cu, gb, ga, n);   /* b + (a + b) on CUDA */
    cpu->ops->add(cpu, cout, ca, cb, n);   /* (a + b) + b on CPU: same fp32 sum */
    float *got = act_download(cu, gb, n), *want = download(cpu, cout, n);
    /* Two bf16 roundings on CUDA (after a+b, then after +b) against one: close, not exact. */
    CHECK(!compare_f32("add_inplace", got, want, n, BF16_TOL));
    free(got);
    free(want);

    cpu->ops->add_bias(cpu, cout, cbias, N, OC); /* cout is (a + b) + b */
    cu->ops->copy_device(cu, gout, gb, backend_act_bytes(cu, n));
    cu->ops->add_bias(cu, gout, gbias, N, OC);
    CHECK(!compare_act("add_bias", p, gout, cout, n, BF16_TOL));

    /* scale_f32: fp32 in, fp32 out, one multiply: exact. */
    float *x = rand_floats(rng, n, -5, 5);
    float *cx = upload(cpu, x, n * 4), *gx = upload(cu, x, n * 4);
    cpu->ops->scale_f32(cpu, cx, 0.37f, n);
    cu->ops->scale_f32(cu, gx, 0.37f, n);
    CHECK(!compare_f32_dev("scale_f32", p, gx, cx, n, 0.0));

    float *all[] = {a, b, bias, x};
    for (int i = 0; i < 4; i++) free(all[i]);
    void *cbufs[] = {ca, cb, cbias, cout, cx}, *gbufs[] = {ga, gb, gbias, gout, gx};
    for (int i = 0; i < 5; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int test_gelu(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { n = 4099 };
    float *x = rand_bf16(rng, n, -6, 6), *g = rand_bf16(rng, n, -1, 1);
    /* Far tails: exp(-2u) overflows for x below about -9.4 unless capped. */
    x[0] = -12.0f, x[1] = -40.0f, x[2] = 12.0f, x[3] = 40.0f;
    float *cx = upload(cpu, x, n * 4), *cg = upload(cpu, g, n * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cdx = cpu->ops->alloc(cpu, n * 4);
    void *gx = act_upload(cu, x, n), *gg = act_upload(cu, g, n);
    void *gy = act_poisoned(cu, n), *gdx = act_poisoned(cu, n);
    cpu->ops->gelu_forward(cpu, cy, cx, n);
    cu->ops->gelu_forward(cu, gy, gx, n);
    CHECK(!compare_act("gelu_forward", p, gy, cy, n, BF16_TOL));
    cpu->ops->gelu_backward(cpu, cdx, cx, cg, n);
    cu->ops->gelu_backward(cu, gdx, gx, gg, n);
    CHECK(!compare_act("gelu_backward", p, gdx, cdx, n, BF16_TOL));
    void *first = bytes_download(cu, gdx, backend_act_bytes(cu, n));
    poison_act(cu, gdx, n);
    cu->ops->gelu_backward(cu, gdx, gx, gg, n);
    void *second = bytes_download(cu, gdx, backend_act_bytes(cu, n));
    CHECK(!same_bytes("gelu_backward", first, second, backend_act_bytes(cu, n)));
    free(first), free(second), free(x), free(g);
    void *cbufs[] = {cx, cg, cy, cdx}, *gbufs[] = {gx, gg, gy, gdx};
    for (int i = 0; i < 4; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

/* One word-embedding case: forward exact, backward (fp32 +=) exact (the
 * same additions in the same order as the CPU), and deterministic. */
static int embedding_case(Pair *p, TestRng *rng, const int32_t *tokens, int N, int C, int VB,
                          int VE) {
    Backend *cpu = p->cpu, *cu = p->cu;
    const size_t tn = (size_t)(VE - VB) * C, on = (size_t)N * C;
    float *table = rand_bf16(rng, tn, -1, 1), *dout = rand_bf16(rng, on, -1, 1);
    float *dtable0 = rand_floats(rng, tn, -1, 1);
    int32_t *ctok = upload(cpu, tokens, (size_t)N * 4), *gtok = upload(cu, tokens, (size_t)N * 4);
    float *ctable = upload(cpu, table, tn * 4), *cdout = upload(cpu, dout, on * 4);
    float *cout = cpu->ops->alloc(cpu, on * 4), *cdtable = upload(cpu, dtable0, tn * 4);
    void *gtable = act_upload(cu, table, tn), *gdout = act_upload(cu, dout, on);
    void *gout = act_poisoned(cu, on);
    float *gdtable = upload(cu, dtable0, tn * 4);

    cpu->ops->embedding_forward(cpu, cout, ctok, ctable, N, C, VB, VE);
    cu->ops->embedding_forward(cu, gout, gtok, gtable, N, C, VB, VE);
    CHECK(!compare_rounded("embedding_forward", p, gout, cout, on));

    cpu->ops->embedding_backward(cpu, cdtable, cdout, ctok, N, C, VB, VE);
    cu->ops->embedding_backward(cu, gdtable, gdout, gtok, N, C, VB, VE);
    CHECK(!compare_f32_dev("embedding_backward", p, gdtable, cdtable, tn, 0.0));
    void *first = bytes_download(cu, gdtable, tn * 4);
    cu->ops->copy_to_device(cu, gdtable, dtable0, tn * 4);
    cu->ops->embedding_backward(cu, gdtable, gdout, gtok, N, C, VB, VE);
    void *second = bytes_download(cu, gdtable, tn * 4);
    CHECK(!same_bytes("embedding_backward", first, second, tn * 4));

    free(first), free(second), free(table), free(dout), free(dtable0);
    void *cbufs[] = {ctok, ctable, cdout, cout, cdtable}, *gbufs[] = {gtok, gtable, gdout, gout, gdtable};
    for (int i = 0; i < 5; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int test_embedding(Pair *p, TestRng *rng) {
    /* A tensor-parallel slice [3, 11): ids below, above and at both edges,
     * and id 4 three times (its rows add, in token order). */
    const int32_t tokens[9] = {4, 0, 10, 4, 11, 3, 7, 4, 2};
    CHECK(!embedding_case(p, rng, tokens, 9, 40, 3, 11));
    /* Many tokens over few rows: long segments, several column blocks. */
    enum { N = 2000 };
    int32_t many[N];
    for (int n = 0; n < N; n++) many[n] = test_rng_below(rng, 70);
    CHECK(!embedding_case(p, rng, many, N, 300, 10, 60));
    /* No owned id at all. */
    const int32_t none[3] = {0, 1, 2};
    CHECK(!embedding_case(p, rng, none, 3, 8, 5, 9));
    return 0;
}

static int test_position_embedding(Pair *p, TestRng *rng) {
    Backend *cpu = p->cpu, *cu = p->cu;
    enum { B = 3, T = 5, C = 24, n = B * T * C, pn = T * C };
    float *x = rand_bf16(rng, n, -1, 1), *pos = rand_bf16(rng, pn, -1, 1);
    float *dout = rand_bf16(rng, n, -1, 1), *dpos0 = rand_floats(rng, pn, -1, 1);
    float *cx = upload(cpu, x, n * 4), *cpos = upload(cpu, pos, pn * 4);
    float *cdout = upload(cpu, dout, n * 4), *cdpos = upload(cpu, dpos0, pn * 4);
    void *gx = act_upload(cu, x, n), *gpos = act_upload(cu, pos, pn), *gdout = act_upload(cu, dout, n);
    float *gdpos = upload(cu, dpos0, pn * 4);
    cpu->ops->position_embedding_add(cpu, cx, cpos, B, T, C);
    cu->ops->position_embedding_add(cu, gx, gpos, B, T, C);
    CHECK(!compare_rounded("position_embedding_add", p, gx, cx, n));
    /* Sums over the batch in order b = 0, 1, 2 on both: exact. */
    cpu->ops->position_embedding_backward(cpu, cdpos, cdout, B, T, C);
    cu->ops->position_embedding_backward(cu, gdpos, gdout, B, T, C);
    CHECK(!compare_f32_dev("position_embedding_backward", p, gdpos, cdpos, pn, 0.0));
    /* --reset-position-ids: each row's own position; the backward adds a
     * position's rows in row order on both, so it is exact too. */
    int32_t ids[B * T];
    for (int r = 0, start = 0; r < B * T; r++) {
        ids[r] = r % T - start;
        start = (r % 3 == 1 || r % T == T - 1) ? (r + 1) % T : start;
    }
    int32_t *cids = upload(cpu, ids, sizeof ids), *gids = upload(cu, ids, sizeof ids);
    /* From x again: the CPU's fp32 sum above is not what the device kept
     * (bf16), so adding to both again would compare two roundings with one. */
    cpu->ops->copy_to_device(cpu, cx, x, n * 4);
    cu->ops->free(cu, gx);
    gx = act_upload(cu, x, n);
    cpu->ops->position_embedding_add_ids(cpu, cx, cpos, cids, B * T, C);
    cu->ops->position_embedding_add_ids(cu, gx, gpos, gids, B * T, C);
    CHECK(!compare_rounded("position_embedding_add_ids", p, gx, cx, n));
    cpu->ops->position_embedding_backward_ids(cpu, cdpos, cdout, cids, B * T, C);
    cu->ops->position_embedding_backward_ids(cu, gdpos, gdout, gids, B * T, C);
    CHECK(!compare_f32_dev("position_embedding_backward_ids", p, gdpos, cdpos, pn, 0.0));
    cpu->ops->free(cpu, cids), cu->ops->free(cu, gids);
    free(x), free(pos), free(dout), free(dpos0);
    void *cbufs[] = {cx, cpos, cdout, cdpos}, *gbufs[] = {gx, gpos, gdout, gdpos};
    for (int i = 0; i < 4; i++) cpu->ops->free(cpu, cbufs[i]), cu->ops->free(cu, gbufs[i]);
    return 0;
}

/* One LayerNorm case: eps and the 1p weight offset as the caller gives them
 * (with offset 1 the stored weight is the weight minus one, near zero). */
static int layernorm_case(Pair *p, TestRng *rng, float eps, float offset) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  layernorm eps=%g weight_offset=%g\n", (double)eps, (double)offset);
    /* C not a multiple of 32 (lane tails); N large enough for many
     * column-sum chunks. Inputs have a non-zero mean. */
    enum { N = 300, C = 100, n = N * C };
    float *x = rand_bf16(rng, n, 1, 3), *w = rand_bf16(rng, C, 0.5f - offset, 1.5f - offset);
    float *bias = rand_bf16(rng, C, -0.5f, 0.5f), *dout = rand_bf16(rng, n, -1, 1);
    float *dinp0 = rand_bf16(rng, n, -1, 1);
    float *dw0 = rand_floats(rng, C, -1, 1), *db0 = rand_floats(rng, C, -1, 1);

    float *cx = upload(cpu, x, n * 4), *cw = upload(cpu, w, C * 4), *cb = upload(cpu, bias, C * 4);
    float *cdout = upload(cpu, dout, n * 4), *cdinp = upload(cpu, dinp0, n * 4);
    float *cdw = upload(cpu, dw0, C * 4), *cdb = upload(cpu, db0, C * 4);
    float *cy = cpu->ops->alloc(cpu, n * 4), *cmean = cpu->ops->alloc(cpu, N * 4);
    float *crstd = cpu->ops->alloc(cpu, N * 4);
    void *gx = act_upload(cu, x, n), *gw = act_upload(cu, w, C), *gb = act_upload(cu, bias, C);
    void *gdout = act_upload(cu, dout, n), *gdinp = act_upload(cu, dinp0, n);
    float *gdw = upload(cu, dw0, C * 4), *gdb = upload(cu, db0, C * 4);
    void *gy = act_poisoned(cu, n);
    float *gmean = f32_poisoned(cu, N), *grstd = f32_poisoned(cu, N);

    cpu->ops->layernorm_forward(cpu, cy, cmean, crstd, cx, cw, cb, N, C, eps, offset);
    cu->ops->layernorm_forward(cu, gy, gmean, grstd, gx, gw, gb, N, C, eps, offset);
    CHECK(!compare_act("layernorm_forward out", p, gy, cy, n, BF16_TOL));
    CHECK(!compare_f32_dev("layernorm_forward mean", p, gmean, cmean, N, F32_TOL));
    CHECK(!compare_f32_dev("layernorm_forward rstd", p, grstd, crstd, N, F32_TOL));
    void *y1 = bytes_download(cu, gy, backend_act_bytes(cu, n));
    void *m1 = bytes_download(cu, gmean, N * 4), *r1 = bytes_download(cu, grstd, N * 4);
    poison_act(cu, gy, n), poison_f32(cu, gmean, N), poison_f32(cu, grstd, N);
    cu->ops->layernorm_forward(cu, gy, gmean, grstd, gx, gw, gb, N, C, eps, offset);
    void *y2 = bytes_download(cu, gy, backend_act_bytes(cu, n));
    void *m2 = bytes_download(cu, gmean, N * 4), *r2 = bytes_download(cu, grstd, N * 4);
    CHECK(!same_bytes("layernorm_forward out", y1, y2, backend_act_bytes(cu, n)));
    CHECK(!same_bytes("layernorm_forward mean", m1, m2, N * 4));
    CHECK(!same_bytes("layernorm_forward rstd", r1, r2, N * 4));
    free(y1), free(y2), free(m1), free(m2), free(r1), free(r2);

    /* dinp, dweight and dbias all start non-zero: every output adds. */
    cpu->ops->layernorm_backward(cpu, cdinp, cdw, cdb, cdout, cx, cw, cmean, crstd, N, C,
                                offset);
    cu->ops->layernorm_backward(cu, gdinp, gdw, gdb, gdout, gx, gw, gmean, grstd, N, C,
                               offset);
    CHECK(!compare_act("layernorm_backward dinp", p, gdinp, cdinp, n, BF16_TOL));
    CHECK(!compare_f32_dev("layernorm_backward dweight", p, gdw, cdw, C, F32_TOL));
    CHECK(!compare_f32_dev("layernorm_backward dbias", p, gdb, cdb, C, F32_TOL));

    /* Determinism of every output. */
    void *first_x = bytes_download(cu, gdinp, backend_act_bytes(cu, n));
    void *first_w = bytes_download(cu, gdw, C * 4), *first_b = bytes_download(cu, gdb, C * 4);
    void *reset = act_upload(cu, dinp0, n);
    cu->ops->copy_device(cu, gdinp, reset, backend_act_bytes(cu, n));
    cu->ops->copy_to_device(cu, gdw, dw0, C * 4);
    cu->ops->copy_to_device(cu, gdb, db0, C * 4);
    cu->ops->layernorm_backward(cu, gdinp, gdw, gdb, gdout, gx, gw, gmean, grstd, N, C,
                               offset);
    void *second_x = bytes_download(cu, gdinp, backend_act_bytes(cu, n));
    void *second_w = bytes_download(cu, gdw, C * 4), *second_b = bytes_download(cu, gdb, C * 4);
    CHECK(!same_bytes("layernorm_backward dinp", first_x, second_x, backend_act_bytes(cu, n)));
    CHECK(!same_bytes("layernorm_backward dweight", first_w, second_w, C * 4));
    CHECK(!same_bytes("layernorm_backward dbias", first_b, second_b, C * 4));

    void *host[] = {x, w, bias, dout, dinp0, dw0, db0, first_x, first_w, first_b,
                    second_x, second_w, second_b};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    void *cbufs[] = {cx, cw, cb, cdout, cdinp, cdw, cdb, cy, cmean, crstd};
    for (size_t i = 0; i < sizeof cbufs / sizeof *cbufs; i++) cpu->ops->free(cpu, cbufs[i]);
    void *gbufs[] = {gx, gw, gb, gdout, gdinp, gdw, gdb, gy, gmean, grstd, reset};
    for (size_t i = 0; i < sizeof gbufs / sizeof *gbufs; i++) cu->ops->free(cu, gbufs[i]);
    return 0;
}

static int test_layernorm(Pair *p, TestRng *rng) {
    CHECK(!layernorm_case(p, rng, 1e-5f, 0.0f)); /* GPT-2 */
    CHECK(!layernorm_case(p, rng, 1e-6f, 1.0f)); /* --norm-epsilon 1e-6 --apply-layernorm-1p */
    return 0;
}

/* init_normal gives the CPU backend's floats bit for bit (initial weights
 * are generated on the device, and every device must start from the same
 * model), over sizes that hit the near-midpoint patching many times. The
 * output is poisoned with NaN first, so an element left unwritten fails. */
static int test_init_normal(Pair *p) {
    const struct {
        size_t n;
        uint64_t seed, stream, index0;
        double std;
    } cases[] = {{1, 1, 2, 0, 0.02}, {1000, 1234, 0xfeedbeefcafe1234ull, 77, 0.02},
                 {3000017, 42, 0x0123456789abcdefull, 1ull << 33, 0.0036}};
    for (int c = 0; c < 3; c++) {
        const size_t n = cases[c].n, bytes = n * sizeof(float);
        float *want = xmalloc(bytes), *got = xmalloc(bytes);
        for (size_t i = 0; i < n; i++) got[i] = NAN;
        float *cpu = p->cpu->ops->alloc(p->cpu, bytes), *cu = p->cu->ops->alloc(p->cu, bytes);
        p->cu->ops->copy_to_device(p->cu, cu, got, bytes);
        p->cpu->ops->init_normal(p->cpu, cpu, n, cases[c].seed, cases[c].stream, cases[c].index0,
                                 cases[c].std);
        p->cu->ops->init_normal(p->cu, cu, n, cases[c].seed, cases[c].stream, cases[c].index0,
                                cases[c].std);
        p->cpu->ops->copy_to_host(p->cpu, want, cpu, bytes);
        p->cu->ops->copy_to_host(p->cu, got, cu, bytes);
        size_t differ = 0, first = n;
        for (size_t i = 0; i < n; i++)
            if (memcmp(&want[i], &got[i], sizeof(float)) && differ++ == 0) first = i;
        if (differ) {
            fprintf(stderr, "init_normal case %d: %zu of %zu floats differ from the CPU's (first "
                            "at %zu: %.9g, want %.9g)\n",
                    c, differ, n, first, (double)got[first], (double)want[first]);
            return 1;
        }
        p->cpu->ops->free(p->cpu, cpu);
        p->cu->ops->free(p->cu, cu);
        free(want);
        free(got);
    }
    return 0;
}

int main(int argc, char **argv) {
    const bool standin = cpu_standin(argc, argv);
    if (!standin && !backend_cuda_compiled()) {
        print_skip_reason("this build has no CUDA backend");
        return TEST_SKIPPED;
    }
    int failures = 0;
    int devices = backend_cuda_device_count();
    fprintf(stderr, "visible CUDA devices: %d\n", devices);
    if (!standin && devices == 0) {
        /* What can be checked without a GPU; the op tests are skipped. */
        RUN(failures, test_no_device());
        if (failures) return 1;
        print_skip_reason("no CUDA device visible, the ops were not compared");
        return TEST_SKIPPED;
    }
    Pair p;
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    TestRng rng = {0xc0dac0da};
    if (!standin) { /* properties of the CUDA backend itself */
        RUN(failures, test_memory(p.cu));
        RUN(failures, test_casts(&p, &rng));
    }
    RUN(failures, test_add_and_scale(&p, &rng));
    RUN(failures, test_gelu(&p, &rng));
    RUN(failures, test_embedding(&p, &rng));
    RUN(failures, test_position_embedding(&p, &rng));
    RUN(failures, test_layernorm(&p, &rng));
    RUN(failures, test_init_normal(&p));
    pair_destroy(&p);
    /* The stand-in compares the CPU backend with itself: say so, so a pass
     * here is never read as the CUDA ops passing. */
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
