/* The tensor-parallel mappings (all-reduce, token gather / reduce-scatter /
 * scatter, column gather / scatter) and the sequence-parallel position
 * embedding, against host-built expectations. Values are small integers,
 * so every sum is exact and the mappings are checked bit for bit. */
#include "test_tp_mappings.h"

enum { MAP_N = 12, MAP_C = 5, MAP_COLS = 3 };

/* Entry (row, col) of a canonical test matrix: a distinct integer. */
static float cell(int row, int col, int width) { return (float)(row * width + col + 1); }

static float *host_matrix(int rows, int width) {
    float *m = xmalloc((size_t)rows * width * sizeof *m);
    for (int n = 0; n < rows; n++)
        for (int c = 0; c < width; c++)
            m[(size_t)n * width + c] = cell(n, c, width);
    return m;
}

static void test_all_reduce(Backend *be, TPGroup *g, const char *label) {
    const size_t n = (size_t)MAP_N * MAP_C;
    const int S = g->tp.tp_size;
    float *h = host_matrix(MAP_N, MAP_C), *want = host_matrix(MAP_N, MAP_C);
    for (size_t i = 0; i < n; i++) {
        h[i] *= (float)(g->tp.tp_rank + 1);
        want[i] *= (float)(S * (S + 1) / 2);
    }
    void *d = dev_from_host(be, h, n);
    tp_all_reduce(&g->tp, d, n);
    float *got = host_from_dev(be, d, n);
    CHECK_EXACT(label, "all-reduce", got, want, n);
    be->ops->free(be, d);
    free(h);
    free(want);
    free(got);
}

/* Gather, scatter and reduce-scatter along tokens, and their round trip. */
static void test_token_mappings(Backend *be, TPGroup *g, const char *label) {
    TensorParallel *tp = &g->tp;
    const int N = MAP_N, C = MAP_C, S = tp->tp_size, r = tp->tp_rank, rows = N / S;
    const size_t full_n = (size_t)N * C, shard_n = (size_t)rows * C;
    float *full = host_matrix(N, C);
    const float *mine = full + (size_t)r * shard_n;

    void *d_shard = dev_from_host(be, mine, shard_n), *d_full = dev_alloc(be, full_n);
    tp_gather_tokens(tp, d_full, d_shard, N, C);
    float *gathered = host_from_dev(be, d_full, full_n);
    CHECK_EXACT(label, "gather of token shards", gathered, full, full_n);

    void *d_back = dev_alloc(be, shard_n);
    tp_scatter_tokens(tp, d_back, d_full, N, C);
    float *scattered = host_from_dev(be, d_back, shard_n);
    CHECK_EXACT(label, "scatter of the gathered tokens", scattered, mine, shard_n);

    /* Rank q contributes (q + 1) x full; my shard is the sum of my rows. */
    float *contrib = host_matrix(N, C), *want = xmalloc(shard_n * sizeof *want);
    for (size_t i = 0; i < full_n; i++)
        contrib[i] *= (float)(r + 1);
    for (size_t i = 0; i < shard_n; i++)
        want[i] = mine[i] * (float)(S * (S + 1) / 2);
    void *d_contrib = dev_from_host(be, contrib, full_n);
    tp_reduce_scatter_tokens(tp, d_back, d_contrib, N, C);
    float *reduced = host_from_dev(be, d_back, shard_n);
    CHECK_EXACT(label, "reduce-scatter along tokens", reduced, want, shard_n);

    void *bufs[] = {d_shard, d_full, d_back, d_contrib};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    void *host[] = {full, gathered, scattered, contrib, want, reduced};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

/* Column gather from a separate local buffer and from one that already sits
 * at this rank's chunk of the scratch, then scatter back. */
static void test_column_mappings(Backend *be, TPGroup *g, const char *label) {
    TensorParallel *tp = &g->tp;
    const int N = MAP_N, cols = MAP_COLS, S = tp->tp_size, r = tp->tp_rank, width = cols * S;
    const size_t full_n = (size_t)N * width, local_n = (size_t)N * cols;
    float *full = host_matrix(N, width);
    float *mine = host_columns(full, N, width, r * cols, cols);

    void *d_local = dev_from_host(be, mine, local_n), *d_full = dev_alloc(be, full_n);
    void *scratch = guarded_alloc(be, full_n);
    tp_gather_columns(tp, d_full, scratch, d_local, N, cols);
    check_guard(label, be, scratch, full_n);
    float *gathered = host_from_dev(be, d_full, full_n);
    CHECK_EXACT(label, "gather of column slices", gathered, full, full_n);

    void *in_scratch = (char *)scratch + (size_t)r * local_n * sizeof(float);
    be->ops->copy_to_device(be, in_scratch, mine, local_n * sizeof(float));
    be->ops->memset_zero(be, d_full, full_n * sizeof(float));
    tp_gather_columns(tp, d_full, scratch, in_scratch, N, cols);
    float *gathered2 = host_from_dev(be, d_full, full_n);
    CHECK_EXACT(label, "gather of column slices in place", gathered2, full, full_n);

    be->ops->memset_zero(be, d_local, local_n * sizeof(float));
    tp_scatter_columns(tp, d_local, d_full, N, cols);
    float *scattered = host_from_dev(be, d_local, local_n);
    CHECK_EXACT(label, "scatter of the gathered columns", scattered, mine, local_n);

    void *bufs[] = {d_local, d_full, scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    void *host[] = {full, mine, gathered, gathered2, scattered};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}

void test_tp_mappings(Backend *be, TPGroup *g) {
    char label[128];
    snprintf(label, sizeof label, "%s mappings", g->label);
    test_all_reduce(be, g, label);
    test_token_mappings(be, g, label);
    test_column_mappings(be, g, label);
}

/* B = 3 sequences of T = 4: at TP = 4 each rank holds 3 rows, so rank 1's
 * shard starts at t = 3 and crosses into the next sequence; at TP = 2 the
 * shards are 6 rows. The table has more rows (T_max) than T. */
enum { POS_B = 3, POS_T = 4, POS_TMAX = 6, POS_C = 5 };

void test_tp_position_embedding(Backend *be, TPGroup *g) {
    TensorParallel *tp = &g->tp;
    const int N = POS_B * POS_T, T = POS_T, C = POS_C;
    const int rows = tp_local_rows(tp, N), first = tp_first_row(tp, N);
    const size_t pos_n = (size_t)POS_TMAX * C;
    char label[128];
    snprintf(label, sizeof label, "%s position embedding", g->label);

    float *base = host_values(51, (size_t)N * C, 1.0f), *pos = host_values(52, pos_n, 1.0f);
    float *dout = host_values(53, (size_t)N * C, 1.0f);
    float *out_ref = xmalloc((size_t)N * C * sizeof *out_ref);
    float *dpos_ref = host_filled(pos_n, 0.0f), *dpos_mine = host_filled(pos_n, 0.0f);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const size_t i = (size_t)n * C + c, t = (size_t)(n % T) * C + c;
            out_ref[i] = base[i] + pos[t];
            dpos_ref[t] += dout[i];
            if (n >= first && n < first + rows) dpos_mine[t] += dout[i];
        }

    void *d_out = dev_from_host(be, base + (size_t)first * C, (size_t)rows * C);
    void *d_pos = dev_from_host(be, pos, pos_n);
    tp_position_embedding_add(tp, d_out, d_pos, NULL, N, T, C);
    float *out = host_from_dev(be, d_out, (size_t)rows * C);
    CHECK_EXACT(label, "rows plus positions", out, out_ref + (size_t)first * C, (size_t)rows * C);

    /* Gradients accumulate onto 0.5; rows t >= T must keep it exactly. */
    float *prefill = host_filled(pos_n, 0.5f);
    float *d_dpos = dev_from_host(be, prefill, pos_n);
    void *d_dout = dev_from_host(be, dout + (size_t)first * C, (size_t)rows * C);
    tp_position_embedding_backward(tp, d_dpos, d_dout, NULL, N, T, C);
    float *dpos = host_from_dev(be, d_dpos, pos_n);
    for (size_t i = (size_t)T * C; i < pos_n; i++)
        TP_CHECK(dpos[i] == 0.5f, "%s: row %zu beyond the sequence got a gradient", label, i / C);
    for (size_t i = 0; i < pos_n; i++)
        dpos[i] -= 0.5f;
    /* Under sequence parallelism each rank holds the sum over its own rows;
     * the TP sum is the full gradient. */
    CHECK_CLOSE(label, "this rank's position gradient", dpos, dpos_mine, pos_n);
    if (tp->sequence_parallel)
        MPI_Allreduce(MPI_IN_PLACE, dpos, (int)pos_n, MPI_FLOAT, MPI_SUM, g->ps.tp_comm);
    CHECK_CLOSE(label, "position gradient", dpos, dpos_ref, pos_n);

    void *bufs[] = {d_out, d_pos, d_dpos, d_dout};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->free(be, bufs[i]);
    void *host[] = {base, pos, dout, out_ref, dpos_ref, dpos_mine, out, prefill, dpos};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++)
        free(host[i]);
}
