#include "tensor_parallel/tensor_parallel.h"

#include "core/errors.h"

void tensor_parallel_init(TensorParallel *tp, Backend *be, Comm *comm, int tp_size, int tp_rank,
                          bool sequence_parallel) {
    GPT3D_CHECK(tp_size == 1 || comm, "tensor parallelism over %d ranks needs a Comm", tp_size);
    tp->be = be;
    tp->comm = tp_size > 1 ? comm : NULL;
    tp->tp_size = tp_size;
    tp->tp_rank = tp_rank;
    tp->sequence_parallel = sequence_parallel && tp_size > 1;
}

int tp_local_rows(const TensorParallel *tp, int N) {
    return tp->sequence_parallel ? N / tp->tp_size : N;
}

int tp_first_row(const TensorParallel *tp, int N) {
    return tp->sequence_parallel ? tp->tp_rank * (N / tp->tp_size) : 0;
}

static void *rows_at(const TensorParallel *tp, const void *base, size_t row, size_t width) {
    return (char *)base + backend_act_bytes(tp->be, row * width);
}

/* ------------------------------------------------------------- mappings */

void tp_all_reduce(TensorParallel *tp, void *buf, size_t n) {
    if (tp->comm) comm_all_reduce(tp->comm, GROUP_TENSOR, buf, n, tp->be->act_dtype, REDUCE_SUM);
}

void tp_gather_tokens(TensorParallel *tp, void *full, const void *shard, int N, int C) {
    const size_t chunk = (size_t)(N / tp->tp_size) * C;
    if (tp->comm)
        comm_all_gather(tp->comm, GROUP_TENSOR, full, shard, chunk, tp->be->act_dtype);
    else if (full != shard)
        tp->be->ops->copy_device(tp->be, full, shard, backend_act_bytes(tp->be, chunk));
}

void tp_reduce_scatter_tokens(TensorParallel *tp, void *shard, const void *full, int N, int C) {
    const size_t chunk = (size_t)(N / tp->tp_size) * C;
    if (tp->comm)
        comm_reduce_scatter(tp->comm, GROUP_TENSOR, shard, full, chunk, tp->be->act_dtype);
    else if (full != shard)
        tp->be->ops->copy_device(tp->be, shard, full, backend_act_bytes(tp->be, chunk));
}

void tp_scatter_tokens(TensorParallel *tp, void *shard, const void *full, int N, int C) {
    const size_t rows = (size_t)(N / tp->tp_size);
    tp->be->ops->copy_device(tp->be, shard, rows_at(tp, full, rows * tp->tp_rank, (size_t)C),
                             backend_act_bytes(tp->be, rows * C));
}

void tp_gather_columns(TensorParallel *tp, void *full, void *scratch, const void *local, int N,
                       int local_cols) {
    Backend *be = tp->be;
    const size_t chunk = (size_t)N * local_cols, width = (size_t)local_cols * tp->tp_size;
    if (tp->comm)
        comm_all_gather(tp->comm, GROUP_TENSOR, scratch, local, chunk, be->act_dtype);
    else if (scratch != local)
        be->ops->copy_device(be, scratch, local, backend_act_bytes(be, chunk));
    /* scratch is [TP][N][cols]; full wants [N][TP * cols]. */
    for (int r = 0; r < tp->tp_size; r++)
        for (int n = 0; n < N; n++)
            be->ops->copy_device(be, (char *)rows_at(tp, full, (size_t)n, width) +
                                         backend_act_bytes(be, (size_t)r * local_cols),
                                 rows_at(tp, scratch, (size_t)r * N + n, (size_t)local_cols),
                                 backend_act_bytes(be, (size_t)local_cols));
}

void tp_scatter_columns(TensorParallel *tp, void *local, const void *full, int N, int local_cols) {
    Backend *be = tp->be;
    const size_t width = (size_t)local_cols * tp->tp_size;
    for (int n = 0; n < N; n++)
        be->ops->copy_device(be, rows_at(tp, local, (size_t)n, (size_t)local_cols),
                             (const char *)rows_at(tp, full, (size_t)n, width) +
                                 backend_act_bytes(be, (size_t)tp->tp_rank * local_cols),
                             backend_act_bytes(be, (size_t)local_cols));
}

/* ------------------------------------------------------- parallel linears */

void column_parallel_linear_forward(TensorParallel *tp, void *y, void *x_full, const void *x,
                                    const void *w, const void *b, int N, int IC, int OC_local,
                                    bool gather_output, void *scratch) {
    Backend *be = tp->be;
    if (tp->sequence_parallel) tp_gather_tokens(tp, x_full, x, N, IC);
    else GPT3D_CHECK(x_full == x, "column_parallel_linear_forward: x_full must be x without SP");
    if (!gather_output) {
        be->ops->matmul_forward(be, y, x_full, w, b, N, IC, OC_local, false);
        return;
    }
    /* The local columns go straight into this rank's chunk of the gather
     * scratch ([TP][N][OC_local], N*OC elements): an in-place all-gather. */
    void *local = rows_at(tp, scratch, (size_t)N * tp->tp_rank, (size_t)OC_local);
    be->ops->matmul_forward(be, local, x_full, w, b, N, IC, OC_local, false);
    tp_gather_columns(tp, y, scratch, local, N, OC_local);
}

void column_parallel_linear_backward(TensorParallel *tp, void *dx, void *dx_full_scratch, float *dw,
                                     float *db, const void *dy, const void *x_full, const void *w,
                                     int N, int IC, int OC_local) {
    Backend *be = tp->be;
    void *dx_full = tp->sequence_parallel ? dx_full_scratch : dx;
    be->ops->matmul_backward(be, dx_full, dw, db, dy, x_full, w, N, IC, OC_local, false);
    if (tp->sequence_parallel) tp_reduce_scatter_tokens(tp, dx, dx_full, N, IC);
    else tp_all_reduce(tp, dx, (size_t)N * IC);
}

void row_parallel_linear_forward(TensorParallel *tp, void *y, void *partial_scratch, const void *x,
                                 const void *w, const void *b, int N, int IC_local, int OC,
                                 bool input_is_parallel, void *x_slice_scratch) {
    Backend *be = tp->be;
    if (!input_is_parallel) {
        tp_scatter_columns(tp, x_slice_scratch, x, N, IC_local);
        x = x_slice_scratch;
    }
    void *partial = tp->sequence_parallel ? partial_scratch : y;
    be->ops->matmul_forward(be, partial, x, w, NULL, N, IC_local, OC, true);
    if (tp->sequence_parallel) tp_reduce_scatter_tokens(tp, y, partial, N, OC);
    else tp_all_reduce(tp, y, (size_t)N * OC);
    if (b) be->ops->add_bias(be, y, b, tp_local_rows(tp, N), OC);
}

void row_parallel_linear_backward(TensorParallel *tp, void *dx_local, float *dw, float *db,
                                  const void *dy, void *dy_full_scratch, const void *x_local,
                                  const void *w, int N, int IC_local, int OC) {
    Backend *be = tp->be;
    const int rows = tp_local_rows(tp, N);
    if (db) be->ops->matmul_backward(be, NULL, NULL, db, dy, NULL, NULL, rows, IC_local, OC, true);
    const void *dy_full = dy;
    if (tp->sequence_parallel) {
        tp_gather_tokens(tp, dy_full_scratch, dy, N, OC);
        dy_full = dy_full_scratch;
    }
    be->ops->matmul_backward(be, dx_local, dw, NULL, dy_full, x_local, w, N, IC_local, OC, true);
}

/* ------------------------------------------------------------ embedding */

void vocab_parallel_embedding_forward(TensorParallel *tp, void *out, void *full_scratch,
                                      const int32_t *tokens, const void *table, int N, int C,
                                      int vocab_begin, int vocab_end) {
    Backend *be = tp->be;
    void *full = tp->sequence_parallel ? full_scratch : out;
    be->ops->embedding_forward(be, full, tokens, table, N, C, vocab_begin, vocab_end);
    if (tp->sequence_parallel) tp_reduce_scatter_tokens(tp, out, full, N, C);
    else tp_all_reduce(tp, out, (size_t)N * C);
}

void vocab_parallel_embedding_backward(TensorParallel *tp, float *dtable, const void *dout,
                                       void *dout_full_scratch, const int32_t *tokens, int N,
                                       int C, int vocab_begin, int vocab_end) {
    const void *full = dout;
    if (tp->sequence_parallel) {
        tp_gather_tokens(tp, dout_full_scratch, dout, N, C);
        full = dout_full_scratch;
    }
    tp->be->ops->embedding_backward(tp->be, dtable, full, tokens, N, C, vocab_begin, vocab_end);
}

/* The rank's rows [first, first + rows) cut into pieces that each lie inside
 * one sequence, so the backend's [B, T] position ops apply to each piece. */
typedef void (*PositionPieceFn)(TensorParallel *tp, void *rows, void *pos, int count, int C);

static void for_each_sequence_piece(TensorParallel *tp, void *rows_base, const void *pos, int N,
                                    int T, int C, PositionPieceFn fn, size_t pos_elem_bytes) {
    const int first = tp_first_row(tp, N), rows = tp_local_rows(tp, N);
    for (int done = 0; done < rows;) {
        const int t0 = (first + done) % T;
        int count = T - t0;
        if (count > rows - done) count = rows - done;
        fn(tp, rows_at(tp, rows_base, (size_t)done, (size_t)C),
           (char *)pos + pos_elem_bytes * (size_t)t0 * C, count, C);
        done += count;
    }
}

static void add_piece(TensorParallel *tp, void *rows, void *pos, int count, int C) {
    tp->be->ops->position_embedding_add(tp->be, rows, pos, 1, count, C);
}

static void backward_piece(TensorParallel *tp, void *rows, void *dpos, int count, int C) {
    tp->be->ops->position_embedding_backward(tp->be, dpos, rows, 1, count, C);
}

void tp_position_embedding_add(TensorParallel *tp, void *out, const void *pos,
                               const int32_t *position_ids, int N, int T, int C) {
    if (position_ids) { /* this rank's rows, with their own ids */
        tp->be->ops->position_embedding_add_ids(tp->be, out, pos, position_ids + tp_first_row(tp, N),
                                                tp_local_rows(tp, N), C);
        return;
    }
    if (!tp->sequence_parallel) {
        tp->be->ops->position_embedding_add(tp->be, out, pos, N / T, T, C);
        return;
    }
    for_each_sequence_piece(tp, out, pos, N, T, C, add_piece, dtype_size(tp->be->act_dtype));
}

void tp_position_embedding_backward(TensorParallel *tp, float *dpos, const void *dout,
                                    const int32_t *position_ids, int N, int T, int C) {
    if (position_ids) {
        tp->be->ops->position_embedding_backward_ids(tp->be, dpos, dout,
                                                     position_ids + tp_first_row(tp, N),
                                                     tp_local_rows(tp, N), C);
        return;
    }
    if (!tp->sequence_parallel) {
        tp->be->ops->position_embedding_backward(tp->be, dpos, dout, N / T, T, C);
        return;
    }
    for_each_sequence_piece(tp, (void *)dout, dpos, N, T, C, backward_piece, sizeof(float));
}

/* -------------------------------------------------------- cross entropy */

void vocab_parallel_cross_entropy_forward(TensorParallel *tp, float *losses, float *rowmax,
                                          float *sums, const void *logits,
                                          const int32_t *targets, int N, int V_local,
                                          int vocab_begin, int vocab_size) {
    Backend *be = tp->be;
    be->ops->cross_entropy_max(be, rowmax, logits, N, V_local, vocab_begin, vocab_size);
    if (tp->comm) comm_all_reduce(tp->comm, GROUP_TENSOR, rowmax, (size_t)N, DTYPE_F32, REDUCE_MAX);
    be->ops->cross_entropy_sums(be, sums, sums + N, logits, rowmax, targets, N, V_local, vocab_begin,
                                vocab_size);
    /* Sum of exps and target logits travel in one all-reduce. */
    if (tp->comm)
        comm_all_reduce(tp->comm, GROUP_TENSOR, sums, 2 * (size_t)N, DTYPE_F32, REDUCE_SUM);
    be->ops->cross_entropy_loss(be, losses, rowmax, sums, sums + N, N);
}

void vocab_parallel_cross_entropy_backward(TensorParallel *tp, void *dlogits, const void *logits,
                                           const float *rowmax, const float *sums,
                                           const int32_t *targets, int N, int V_local,
                                           int vocab_begin, int vocab_size, float dloss) {
    tp->be->ops->cross_entropy_backward(tp->be, dlogits, logits, rowmax, sums, targets, N, V_local,
                                        vocab_begin, vocab_size, dloss);
}
