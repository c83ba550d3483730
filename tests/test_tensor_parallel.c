/* tensor_parallel layers at TP = 1, 2 and 4, with and without sequence
 * parallelism, under mpirun with 4 ranks (TP = 2 runs as two independent
 * DP copies). Every rank builds the canonical full weights and inputs from a
 * deterministic formula, computes the TP = 1 answer itself with the plain
 * backend ops (or a host loop), runs the parallel layer on its canonical
 * shard (split dimension first: one contiguous slice) and compares. Each
 * comparison is paired with a check that the unreduced per-rank partial
 * result is far from the reference, so a missing collective would fail.
 * The mappings and the sequence-parallel position embedding are tested in
 * test_tp_mappings.c. */
#include "test_tp_mappings.h"
#include "test_tp_util.h"

enum { LIN_N = 12, LIN_SMALL = 16, LIN_WIDE = 24 };

/* y = x W (+ b) and its gradients for dy, with the backend's plain ops on
 * the full weight: the TP = 1 layer. */
typedef struct {
    float *y, *dx, *dw, *db;
} LinearRef;

static LinearRef reference_linear(Backend *be, const float *x, const float *w, const float *b,
                                  const float *dy, int N, int IC, int OC, bool in_major) {
    void *dx_ = dev_from_host(be, x, (size_t)N * IC), *dw_ = dev_from_host(be, w, (size_t)OC * IC);
    void *db_ = dev_from_host(be, b, (size_t)OC), *ddy = dev_from_host(be, dy, (size_t)N * OC);
    void *y = dev_alloc(be, (size_t)N * OC), *dx = dev_alloc(be, (size_t)N * IC);
    float *dw = dev_alloc(be, (size_t)OC * IC), *db = dev_alloc(be, (size_t)OC);
    be->ops->matmul_forward(be, y, dx_, dw_, db_, N, IC, OC, in_major);
    be->ops->matmul_backward(be, dx, dw, db, ddy, dx_, dw_, N, IC, OC, in_major);
    LinearRef r = {host_from_dev(be, y, (size_t)N * OC), host_from_dev(be, dx, (size_t)N * IC),
                   host_from_dev(be, dw, (size_t)OC * IC), host_from_dev(be, db, (size_t)OC)};
    void *bufs[] = {dx_, dw_, db_, ddy, y, dx, dw, db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    return r;
}

static void free_linear_ref(LinearRef *r) {
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
}

/* Sum over the TP group of a host fp32 vector, in place. */
static void sum_over_tp(TPGroup *g, float *x, size_t n) {
    MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, g->ps.tp_comm);
}

static void subtract_constant(float *x, size_t n, float c) {
    for (size_t i = 0; i < n; i++)
        x[i] -= c;
}

/* ---------------------------------------------------- ColumnParallelLinear */

static void test_column_parallel(Backend *be, TPGroup *g, bool gather_output) {
    TensorParallel *tp = &g->tp;
    const int N = LIN_N, IC = LIN_SMALL, OC = LIN_WIDE, OCl = OC / tp->tp_size, r = tp->tp_rank;
    const int rows = tp_local_rows(tp, N), first = tp_first_row(tp, N);
    const bool sp = tp->sequence_parallel;
    char label[128];
    snprintf(label, sizeof label, "%s column-parallel%s", g->label,
             gather_output ? " gather_output" : "");

    float *x = host_values(11, (size_t)N * IC, 1.0f), *w = host_values(12, (size_t)OC * IC, 0.5f);
    float *b = host_values(13, (size_t)OC, 1.0f), *dy = host_values(14, (size_t)N * OC, 1.0f);
    LinearRef ref = reference_linear(be, x, w, b, dy, N, IC, OC, false);

    /* Forward on this rank's shard: rows [r*OCl, (r+1)*OCl) of W. */
    void *d_x = dev_from_host(be, x + (size_t)first * IC, (size_t)rows * IC);
    void *d_xfull = sp ? dev_alloc(be, (size_t)N * IC) : d_x;
    void *d_w = dev_from_host(be, w + (size_t)r * OCl * IC, (size_t)OCl * IC);
    void *d_b = dev_from_host(be, b + (size_t)r * OCl, (size_t)OCl);
    const size_t y_n = (size_t)N * (gather_output ? OC : OCl);
    void *d_y = dev_alloc(be, y_n);
    void *scratch = gather_output ? guarded_alloc(be, (size_t)N * OC) : NULL;
    column_parallel_linear_forward(tp, d_y, d_xfull, d_x, d_w, d_b, N, IC, OCl, gather_output,
                                   scratch);
    if (scratch) check_guard(label, be, scratch, (size_t)N * OC);

    float *y = host_from_dev(be, d_y, y_n);
    float *y_expect = gather_output ? host_columns(ref.y, N, OC, 0, OC)
                                    : host_columns(ref.y, N, OC, r * OCl, OCl);
    CHECK_CLOSE(label, "output", y, y_expect, y_n);
    float *xfull = host_from_dev(be, d_xfull, (size_t)N * IC);
    CHECK_EXACT(label, "gathered input kept for backward", xfull, x, (size_t)N * IC);

    /* Backward: dy is this rank's column slice (the dual of gather_output is
     * the split). Gradients accumulate onto a non-zero buffer. */
    float *dy_local = host_columns(dy, N, OC, r * OCl, OCl);
    void *d_dy = dev_from_host(be, dy_local, (size_t)N * OCl);
    void *d_dx = dev_alloc(be, (size_t)rows * IC);
    void *d_dxs = sp ? dev_alloc(be, (size_t)N * IC) : d_dx;
    float *prefill = host_filled((size_t)OCl * IC, 0.5f);
    float *d_dw = dev_from_host(be, prefill, (size_t)OCl * IC);
    float *d_db = dev_from_host(be, prefill, (size_t)OCl);
    column_parallel_linear_backward(tp, d_dx, d_dxs, d_dw, d_db, d_dy, d_xfull, d_w, N, IC, OCl);

    float *dx = host_from_dev(be, d_dx, (size_t)rows * IC);
    const float *dx_expect = ref.dx + (size_t)first * IC;
    CHECK_CLOSE(label, "input gradient", dx, dx_expect, (size_t)rows * IC);
    float *dw = host_from_dev(be, d_dw, (size_t)OCl * IC),
          *db = host_from_dev(be, d_db, (size_t)OCl);
    subtract_constant(dw, (size_t)OCl * IC, 0.5f);
    subtract_constant(db, (size_t)OCl, 0.5f);
    CHECK_CLOSE(label, "weight gradient shard", dw, ref.dw + (size_t)r * OCl * IC, (size_t)OCl * IC);
    CHECK_CLOSE(label, "bias gradient shard", db, ref.db + (size_t)r * OCl, (size_t)OCl);

    if (tp->tp_size > 1) {
        /* Before the reduction, dx is only this shard's dy . W_local. */
        void *d_partial = dev_alloc(be, (size_t)N * IC);
        be->ops->matmul_backward(be, d_partial, NULL, NULL, d_dy, NULL, d_w, N, IC, OCl, false);
        float *partial = host_from_dev(be, d_partial, (size_t)N * IC);
        CHECK_FAR(label, "input gradient", partial + (size_t)first * IC, dx_expect,
                  (size_t)rows * IC);
        free(partial);
        be->ops->free(be, d_partial);
    }

    void *bufs[] = {d_x, d_w, d_b, d_y, d_dy, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    if (sp) {
        be->ops->free(be, d_xfull);
        be->ops->free(be, d_dxs);
    }
    if (scratch) be->ops->free(be, scratch);
    free_linear_ref(&ref);
    void *host[] = {x, w, b, dy, y, y_expect, xfull, dy_local, prefill, dx, dw, db};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

/* ------------------------------------------------------- RowParallelLinear */

static void test_row_parallel(Backend *be, TPGroup *g, bool input_is_parallel) {
    TensorParallel *tp = &g->tp;
    const int N = LIN_N, IC = LIN_WIDE, OC = LIN_SMALL, ICl = IC / tp->tp_size, r = tp->tp_rank;
    const int rows = tp_local_rows(tp, N), first = tp_first_row(tp, N);
    const bool sp = tp->sequence_parallel;
    char label[128];
    snprintf(label, sizeof label, "%s row-parallel%s", g->label,
             input_is_parallel ? "" : " full input");

    /* W is stored input-major [IC, OC]: the shard is rows [r*ICl, (r+1)*ICl). */
    float *x = host_values(21, (size_t)N * IC, 1.0f), *w = host_values(22, (size_t)IC * OC, 0.5f);
    float *b = host_values(23, (size_t)OC, 1.0f), *dy = host_values(24, (size_t)N * OC, 1.0f);
    LinearRef ref = reference_linear(be, x, w, b, dy, N, IC, OC, true);

    float *x_local = host_columns(x, N, IC, r * ICl, ICl);
    void *d_xin = input_is_parallel ? dev_from_host(be, x_local, (size_t)N * ICl)
                                    : dev_from_host(be, x, (size_t)N * IC);
    void *d_xslice = input_is_parallel ? NULL : dev_alloc(be, (size_t)N * ICl);
    void *d_w = dev_from_host(be, w + (size_t)r * ICl * OC, (size_t)ICl * OC);
    void *d_b = dev_from_host(be, b, (size_t)OC);
    void *d_y = dev_alloc(be, (size_t)rows * OC);
    void *d_partial = sp ? dev_alloc(be, (size_t)N * OC) : NULL;
    row_parallel_linear_forward(tp, d_y, d_partial, d_xin, d_w, d_b, N, ICl, OC, input_is_parallel,
                                d_xslice);

    float *y = host_from_dev(be, d_y, (size_t)rows * OC);
    const float *y_expect = ref.y + (size_t)first * OC;
    CHECK_CLOSE(label, "output", y, y_expect, (size_t)rows * OC);
    const void *d_xlocal = input_is_parallel ? d_xin : d_xslice;
    if (!input_is_parallel) {
        float *slice = host_from_dev(be, d_xslice, (size_t)N * ICl);
        CHECK_EXACT(label, "local input slice", slice, x_local, (size_t)N * ICl);
        free(slice);
    }
    if (tp->tp_size > 1) {
        /* This shard's x_local . W_local + b, without the reduction. */
        void *d_unreduced = dev_alloc(be, (size_t)N * OC);
        be->ops->matmul_forward(be, d_unreduced, d_xlocal, d_w, d_b, N, ICl, OC, true);
        float *unreduced = host_from_dev(be, d_unreduced, (size_t)N * OC);
        CHECK_FAR(label, "output", unreduced + (size_t)first * OC, y_expect, (size_t)rows * OC);
        free(unreduced);
        be->ops->free(be, d_unreduced);
    }

    /* Backward from this rank's rows of dy; gradients accumulate onto 0.5. */
    void *d_dy = dev_from_host(be, dy + (size_t)first * OC, (size_t)rows * OC);
    void *d_dyfull = sp ? dev_alloc(be, (size_t)N * OC) : NULL;
    void *d_dx = dev_alloc(be, (size_t)N * ICl);
    float *prefill = host_filled((size_t)ICl * OC, 0.5f);
    float *d_dw = dev_from_host(be, prefill, (size_t)ICl * OC);
    float *d_db = dev_from_host(be, prefill, (size_t)OC);
    row_parallel_linear_backward(tp, d_dx, d_dw, d_db, d_dy, d_dyfull, d_xlocal, d_w, N, ICl, OC);

    float *dx = host_from_dev(be, d_dx, (size_t)N * ICl);
    float *dx_expect = host_columns(ref.dx, N, IC, r * ICl, ICl);
    CHECK_CLOSE(label, "input gradient slice", dx, dx_expect, (size_t)N * ICl);
    float *dw = host_from_dev(be, d_dw, (size_t)ICl * OC),
          *db = host_from_dev(be, d_db, (size_t)OC);
    subtract_constant(dw, (size_t)ICl * OC, 0.5f);
    subtract_constant(db, (size_t)OC, 0.5f);
    CHECK_CLOSE(label, "weight gradient shard", dw, ref.dw + (size_t)r * ICl * OC, (size_t)ICl * OC);
    if (sp) {
        /* A partial over this rank's tokens; the TP sum is the full gradient. */
        CHECK_FAR(label, "bias gradient (partial)", db, ref.db, (size_t)OC);
        sum_over_tp(g, db, (size_t)OC);
    }
    CHECK_CLOSE(label, "bias gradient", db, ref.db, (size_t)OC);

    void *bufs[] = {d_xin, d_w, d_b, d_y, d_dy, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    void *maybe[] = {d_xslice, d_partial, d_dyfull};
    for (size_t i = 0; i < sizeof maybe / sizeof *maybe; i++)
        if (maybe[i]) be->ops->free(be, maybe[i]);
    free_linear_ref(&ref);
    void *host[] = {x, w, b, dy, x_local, y, prefill, dx, dx_expect, dw, db};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

/* -------------------------------------------------- VocabParallelEmbedding */

enum { EMB_V = 40, EMB_C = 8, EMB_N = 12 };
/* Ids in every quarter of the vocabulary, with repeats (0, 10 and 39). */
static const int32_t EMB_TOKENS[EMB_N] = {0, 39, 10, 10, 25, 5, 39, 20, 31, 0, 15, 29};

static void test_vocab_embedding(Backend *be, TPGroup *g) {
    TensorParallel *tp = &g->tp;
    const int V = EMB_V, C = EMB_C, N = EMB_N, Vl = V / tp->tp_size, vb = tp->tp_rank * Vl;
    const int rows = tp_local_rows(tp, N), first = tp_first_row(tp, N);
    const bool sp = tp->sequence_parallel;
    char label[128];
    snprintf(label, sizeof label, "%s vocab-parallel embedding", g->label);

    float *table = host_values(31, (size_t)V * C, 1.0f),
          *dout = host_values(32, (size_t)N * C, 1.0f);
    /* The full-table embedding, by hand. */
    float *out_ref = xmalloc((size_t)N * C * sizeof *out_ref);
    float *dtable_ref = host_filled((size_t)V * C, 0.25f);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            out_ref[(size_t)n * C + c] = table[(size_t)EMB_TOKENS[n] * C + c];
            dtable_ref[(size_t)EMB_TOKENS[n] * C + c] += dout[(size_t)n * C + c];
        }

    int32_t *d_tokens = be->ops->alloc(be, sizeof EMB_TOKENS);
    be->ops->copy_to_device(be, d_tokens, EMB_TOKENS, sizeof EMB_TOKENS);
    void *d_table = dev_from_host(be, table + (size_t)vb * C, (size_t)Vl * C);
    void *d_out = dev_alloc(be, (size_t)rows * C);
    void *d_full = sp ? dev_alloc(be, (size_t)N * C) : NULL;
    vocab_parallel_embedding_forward(tp, d_out, d_full, d_tokens, d_table, N, C, vb, vb + Vl);
    float *out = host_from_dev(be, d_out, (size_t)rows * C);
    /* Each row is one table row plus zeros: exact. */
    CHECK_EXACT(label, "output", out, out_ref + (size_t)first * C, (size_t)rows * C);
    if (tp->tp_size > 1) {
        void *d_local = dev_alloc(be, (size_t)N * C);
        be->ops->embedding_forward(be, d_local, d_tokens, d_table, N, C, vb, vb + Vl);
        float *local = host_from_dev(be, d_local, (size_t)N * C);
        CHECK_FAR(label, "output", local + (size_t)first * C, out_ref + (size_t)first * C,
                  (size_t)rows * C);
        free(local);
        be->ops->free(be, d_local);
    }

    void *d_dout = dev_from_host(be, dout + (size_t)first * C, (size_t)rows * C);
    float *prefill = host_filled((size_t)Vl * C, 0.25f);
    float *d_dtable = dev_from_host(be, prefill, (size_t)Vl * C);
    vocab_parallel_embedding_backward(tp, d_dtable, d_dout, d_full, d_tokens, N, C, vb, vb + Vl);
    float *dtable = host_from_dev(be, d_dtable, (size_t)Vl * C);
    CHECK_CLOSE(label, "table gradient slice", dtable, dtable_ref + (size_t)vb * C, (size_t)Vl * C);

    void *bufs[] = {d_tokens, d_table, d_out, d_dout, d_dtable};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    if (d_full) be->ops->free(be, d_full);
    void *host[] = {table, dout, out_ref, dtable_ref, out, prefill, dtable};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

/* ------------------------------------------------ vocab-parallel cross entropy */

/* 21 real tokens padded to 32: at TP = 4 the third slice is part padding
 * and the fourth all padding. */
enum { CE_VOCAB = 21, CE_VPAD = 32, CE_N = 12 };
static const int32_t CE_TARGETS[CE_N] = {0, 20, 7, 8, 15, 16, 3, 20, 12, 0, 19, 5};
static const float CE_DLOSS = 0.7f;

/* Softmax cross entropy over the real columns, in double. */
static void reference_cross_entropy(const float *logits, float *losses, float *dlogits) {
    for (int n = 0; n < CE_N; n++) {
        const float *z = logits + (size_t)n * CE_VPAD;
        double m = -INFINITY, s = 0.0;
        for (int v = 0; v < CE_VOCAB; v++)
            m = z[v] > m ? z[v] : m;
        for (int v = 0; v < CE_VOCAB; v++)
            s += exp(z[v] - m);
        losses[n] = (float)(log(s) + m - z[CE_TARGETS[n]]);
        for (int v = 0; v < CE_VPAD; v++) {
            double p = v < CE_VOCAB ? exp(z[v] - m) / s : 0.0;
            double onehot = v == CE_TARGETS[n] ? 1.0 : 0.0;
            dlogits[(size_t)n * CE_VPAD + v] = (float)(CE_DLOSS * (p - onehot));
        }
    }
}

static void test_vocab_cross_entropy(Backend *be, TPGroup *g) {
    TensorParallel *tp = &g->tp;
    const int N = CE_N, Vl = CE_VPAD / tp->tp_size, vb = tp->tp_rank * Vl;
    char label[128];
    snprintf(label, sizeof label, "%s vocab-parallel cross entropy", g->label);

    /* Padding columns hold the largest logits: unmasked, they would dominate. */
    float *logits = host_values(41, (size_t)N * CE_VPAD, 3.0f);
    for (int n = 0; n < N; n++)
        for (int v = CE_VOCAB; v < CE_VPAD; v++)
            logits[(size_t)n * CE_VPAD + v] = 40.0f + (float)v;
    float *loss_ref = xmalloc((size_t)N * sizeof *loss_ref);
    float *dlogits_ref = xmalloc((size_t)N * CE_VPAD * sizeof *dlogits_ref);
    reference_cross_entropy(logits, loss_ref, dlogits_ref);

    float *local = host_columns(logits, N, CE_VPAD, vb, Vl);
    int32_t *d_targets = be->ops->alloc(be, sizeof CE_TARGETS);
    be->ops->copy_to_device(be, d_targets, CE_TARGETS, sizeof CE_TARGETS);
    void *d_logits = dev_from_host(be, local, (size_t)N * Vl);
    float *d_loss = dev_alloc(be, (size_t)N), *d_max = dev_alloc(be, (size_t)N);
    float *d_sums = dev_alloc(be, 2 * (size_t)N);
    vocab_parallel_cross_entropy_forward(tp, d_loss, d_max, d_sums, d_logits, d_targets, N, Vl, vb,
                                         CE_VOCAB);
    float *loss = host_from_dev(be, d_loss, (size_t)N),
          *rowmax = host_from_dev(be, d_max, (size_t)N);
    float *sums = host_from_dev(be, d_sums, 2 * (size_t)N);
    CHECK_CLOSE(label, "losses", loss, loss_ref, (size_t)N);
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * CE_VPAD;
        float m = z[0];
        for (int v = 1; v < CE_VOCAB; v++)
            m = z[v] > m ? z[v] : m;
        TP_CHECK(rowmax[n] == m, "%s: row %d max %g, want the real columns' %g", label, n,
                 rowmax[n], m);
        TP_CHECK(sums[N + n] == z[CE_TARGETS[n]], "%s: row %d target logit %g, want %g", label, n,
                 sums[N + n], z[CE_TARGETS[n]]);
    }
    if (tp->tp_size > 1) {
        /* The slice's own loss, without the all-reduces. */
        float *d_wrong = dev_alloc(be, (size_t)N);
        be->ops->cross_entropy_max(be, d_max, d_logits, N, Vl, vb, CE_VOCAB);
        be->ops->cross_entropy_sums(be, d_sums, d_sums + N, d_logits, d_max, d_targets, N, Vl, vb,
                                    CE_VOCAB);
        be->ops->cross_entropy_loss(be, d_wrong, d_max, d_sums, d_sums + N, N);
        float *wrong = host_from_dev(be, d_wrong, (size_t)N);
        CHECK_FAR(label, "losses", wrong, loss_ref, (size_t)N);
        free(wrong);
        be->ops->free(be, d_wrong);
        /* Restore the reduced pieces for backward. */
        be->ops->copy_to_device(be, d_max, rowmax, (size_t)N * sizeof(float));
        be->ops->copy_to_device(be, d_sums, sums, 2 * (size_t)N * sizeof(float));
    }

    void *d_dlogits = dev_alloc(be, (size_t)N * Vl);
    vocab_parallel_cross_entropy_backward(tp, d_dlogits, d_logits, d_max, d_sums, d_targets, N, Vl,
                                          vb, CE_VOCAB, CE_DLOSS);
    float *dlogits = host_from_dev(be, d_dlogits, (size_t)N * Vl);
    float *dlogits_expect = host_columns(dlogits_ref, N, CE_VPAD, vb, Vl);
    CHECK_CLOSE(label, "logit gradient slice", dlogits, dlogits_expect, (size_t)N * Vl);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < Vl; j++)
            if (vb + j >= CE_VOCAB)
                TP_CHECK(dlogits[(size_t)n * Vl + j] == 0.0f, "%s: padded column %d has gradient",
                         label, vb + j);

    void *bufs[] = {d_targets, d_logits, d_loss, d_max, d_sums, d_dlogits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    void *host[] = {logits, loss_ref, dlogits_ref, local,         loss,
                    rowmax, sums,     dlogits,     dlogits_expect};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

static void test_layout(Backend *be, int tp_size, bool sequence_parallel) {
    TPGroup g;
    tp_group_init(&g, be, tp_size, sequence_parallel);
    for (int gather = 0; gather < 2; gather++)
        test_column_parallel(be, &g, gather);
    for (int parallel = 0; parallel < 2; parallel++)
        test_row_parallel(be, &g, parallel);
    test_vocab_embedding(be, &g);
    test_vocab_cross_entropy(be, &g);
    test_tp_mappings(be, &g);
    test_tp_position_embedding(be, &g);
    tp_group_destroy(&g);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const double t0 = MPI_Wtime();
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    TP_CHECK(world == 4, "run with 4 ranks (got %d)", world);
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    TP_CHECK(be != NULL, "%s", err);

    const int sizes[] = {1, 2, 4};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (int sp = 0; sp < (sizes[i] > 1 ? 2 : 1); sp++)
            test_layout(be, sizes[i], sp);

    backend_destroy(be);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_tensor_parallel: TP=1,2,4 x SP off/on: all checks passed (%.2f s)\n",
               MPI_Wtime() - t0);
    MPI_Finalize();
    return 0;
}
