/* tensor_parallel/tensor_parallel.h — Megatron's tensor-parallel layers.
 *
 * Contract. A TensorParallel context names this rank's slice of a TP group
 * and whether sequence parallelism is on. Activations are row-major
 * [N, features] with N = micro-batch x sequence tokens.
 * - Without sequence parallelism, activations outside the parallel layers
 *   are replicated [N, C] on every TP rank.
 * - With it (--sequence-parallel), those activations are sharded by tokens:
 *   TP rank r holds rows [r*N/TP, (r+1)*N/TP) of the [N, C] matrix (for one
 *   sequence per micro-batch, exactly Megatron's sequence shard).
 * ColumnParallelLinear holds W rows [OC/TP slice] of a [OC, IC] weight and
 * produces its output columns; RowParallelLinear holds the matching input
 * slice and produces partial sums that are all-reduced (reduce-scattered
 * with sequence parallelism), adding the bias once after the reduction.
 * The mappings are Megatron's: copy-to (identity; all-reduce in backward),
 * reduce-from (all-reduce; identity), scatter-to / gather-from along the
 * last dimension, and their sequence-parallel counterparts along tokens.
 * With comm == NULL (one rank) every mapping is the identity and no
 * communication happens. */
#ifndef GPT3D_TENSOR_PARALLEL_H
#define GPT3D_TENSOR_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "parallel_state/collectives.h"

typedef struct {
    Backend *be;
    Comm *comm; /* NULL when tp_size == 1 */
    int tp_size, tp_rank;
    bool sequence_parallel;
} TensorParallel;

void tensor_parallel_init(TensorParallel *tp, Backend *be, Comm *comm, int tp_size, int tp_rank,
                          bool sequence_parallel);

/* Rows of the residual stream this rank holds: N, or N/TP with sequence
 * parallelism. */
int tp_local_rows(const TensorParallel *tp, int N);
/* First global token row of this rank's sequence-parallel shard (0 without). */
int tp_first_row(const TensorParallel *tp, int N);

/* ---- mappings on [rows, width] act-dtype buffers ---- */
/* Backward of copy-to-region / forward of reduce-from-region: all-reduce. */
void tp_all_reduce(TensorParallel *tp, void *buf, size_t n);
/* gather_from_sequence_parallel_region: shard [N/TP, C] -> full [N, C]. */
void tp_gather_tokens(TensorParallel *tp, void *full, const void *shard, int N, int C);
/* reduce_scatter_to_sequence_parallel_region: partial [N, C] -> summed shard. */
void tp_reduce_scatter_tokens(TensorParallel *tp, void *shard, const void *full, int N, int C);
/* scatter_to_sequence_parallel_region: this rank's rows of a replicated [N, C]. */
void tp_scatter_tokens(TensorParallel *tp, void *shard, const void *full, int N, int C);
/* gather_from_tensor_model_parallel_region: [N, C/TP] column slices -> [N, C]. */
void tp_gather_columns(TensorParallel *tp, void *full, void *scratch, const void *local, int N,
                       int local_cols);
/* scatter_to_tensor_model_parallel_region: this rank's column slice of [N, C]. */
void tp_scatter_columns(TensorParallel *tp, void *local, const void *full, int N, int local_cols);

/* ---- ColumnParallelLinear ----
 * y[N, OC_local] = x_full . W_local^T (+ b_local). x is this rank's input:
 * [N, IC] replicated, or its [N/TP, IC] token shard under sequence
 * parallelism, all-gathered into x_full (kept for backward; x_full may equal
 * x without sequence parallelism). With gather_output, y is [N, OC] (all
 * columns; needs `scratch` of N*OC elements) instead of the local slice. */
void column_parallel_linear_forward(TensorParallel *tp, void *y, void *x_full, const void *x,
                                    const void *w, const void *b, int N, int IC, int OC_local,
                                    bool gather_output, void *scratch);
/* dx (this rank's rows, like x) = reduction over TP of dy . W_local;
 * dw += dy^T x_full; db += column sums of dy. dx_full_scratch is an [N, IC]
 * scratch (may equal dx without sequence parallelism). */
void column_parallel_linear_backward(TensorParallel *tp, void *dx, void *dx_full_scratch, float *dw,
                                     float *db, const void *dy, const void *x_full, const void *w,
                                     int N, int IC, int OC_local);

/* ---- RowParallelLinear ----
 * y (this rank's rows: [N, OC], or [N/TP, OC] with sequence parallelism)
 * = reduction over TP of x_local . W_local, plus b once. W_local is the
 * input-major [IC_local, OC] slice. partial_scratch is [N, OC] (unused, may
 * be NULL, without sequence parallelism). With input_is_parallel false, x is
 * the full [N, IC] input and this rank takes its column slice into
 * x_slice_scratch ([N, IC_local]) first. */
void row_parallel_linear_forward(TensorParallel *tp, void *y, void *partial_scratch, const void *x,
                                 const void *w, const void *b, int N, int IC_local, int OC,
                                 bool input_is_parallel, void *x_slice_scratch);
/* dx_local = dy_full . W_local^T; dw += x_local^T dy_full; db += column sums
 * of this rank's dy rows (a partial sum under sequence parallelism, reduced
 * later with the other sequence-parallel gradients). dy_full_scratch is an
 * [N, OC] scratch for the all-gathered dy (unused without sequence
 * parallelism). */
void row_parallel_linear_backward(TensorParallel *tp, void *dx_local, float *dw, float *db,
                                  const void *dy, void *dy_full_scratch, const void *x_local,
                                  const void *w, int N, int IC_local, int OC);

/* ---- VocabParallelEmbedding ----
 * out (this rank's rows) = rows of the [V_local, C] table slice for owned
 * ids, zero for foreign ones, reduced over TP; full_scratch is [N, C]
 * (unused without sequence parallelism). */
void vocab_parallel_embedding_forward(TensorParallel *tp, void *out, void *full_scratch,
                                      const int32_t *tokens, const void *table, int N, int C,
                                      int vocab_begin, int vocab_end);
/* dtable += for owned ids; dout is this rank's rows, dout_full_scratch [N, C]. */
void vocab_parallel_embedding_backward(TensorParallel *tp, float *dtable, const void *dout,
                                       void *dout_full_scratch, const int32_t *tokens, int N,
                                       int C, int vocab_begin, int vocab_end);

/* ---- vocab-parallel cross entropy ----
 * losses[N] from logits [N, V_local] of the vocabulary slice starting at
 * vocab_begin; rowmax [N] and sums [2N] (sum of exps, then target logits)
 * are kept for backward, which needs no communication. */
void vocab_parallel_cross_entropy_forward(TensorParallel *tp, float *losses, float *rowmax,
                                          float *sums, const void *logits,
                                          const int32_t *targets, int N, int V_local,
                                          int vocab_begin, int vocab_size);
void vocab_parallel_cross_entropy_backward(TensorParallel *tp, void *dlogits, const void *logits,
                                           const float *rowmax, const float *sums,
                                           const int32_t *targets, int N, int V_local,
                                           int vocab_begin, int vocab_size, float dloss);

/* Adds the position embedding rows to this rank's rows of the residual stream
 * (sequence length T), and the backward dual (dpos +=). Row n of the N rows
 * has position n mod T, or position_ids[n] when position_ids (a device array
 * of all N rows' ids, --reset-position-ids) is not NULL. */
void tp_position_embedding_add(TensorParallel *tp, void *out, const void *pos,
                               const int32_t *position_ids, int N, int T, int C);
void tp_position_embedding_backward(TensorParallel *tp, float *dpos, const void *dout,
                                    const int32_t *position_ids, int N, int T, int C);

#endif
