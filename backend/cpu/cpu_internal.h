/* backend/cpu/cpu_internal.h — what the files of the CPU backend share.
 *
 * The ops are split over several files by family; cpu_backend.c gathers them
 * into the BackendOps table. Every op takes the Backend first so that the
 * table entries need no casts. Activation buffers are fp32 on this backend,
 * so the `void *` activation arguments are read and written as `float *`. */
#ifndef GPT3D_BACKEND_CPU_INTERNAL_H
#define GPT3D_BACKEND_CPU_INTERNAL_H

#include <cblas.h>

#include "backend/backend.h"

/* Per-backend state behind Backend.impl. */
typedef struct {
    /* Work space for attention backward (one [T, T] block per call), grown on
     * demand and kept, so hot ops do not allocate per call. */
    float *scratch;
    size_t scratch_floats;
} CpuImpl;

/* Returns the backend's scratch with room for at least `floats` elements. */
float *cpu_scratch(Backend *be, size_t floats);

/* Row-major cblas_sgemm, C = alpha op(A) op(B) + beta C, counted in
 * be->gemm_calls and timed into be->gemm_seconds. */
void cpu_sgemm(Backend *be, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b, int M,
               int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
               float beta, float *C, int ldc);

/* ---- embeddings, layernorm, matmul, pointwise (cpu_nn.c) ---- */
void cpu_embedding_forward(Backend *be, void *out, const int32_t *tokens, const void *table, int N,
                           int C, int vocab_begin, int vocab_end);
void cpu_embedding_backward(Backend *be, float *dtable, const void *dout, const int32_t *tokens,
                            int N, int C, int vocab_begin, int vocab_end);
void cpu_position_embedding_add(Backend *be, void *out, const void *pos, int B, int T, int C);
void cpu_position_embedding_backward(Backend *be, float *dpos, const void *dout, int B, int T,
                                     int C);
void cpu_position_embedding_add_ids(Backend *be, void *out, const void *pos,
                                    const int32_t *position_ids, int N, int C);
void cpu_position_embedding_backward_ids(Backend *be, float *dpos, const void *dout,
                                         const int32_t *position_ids, int N, int C);
void cpu_layernorm_forward(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                           const void *weight, const void *bias, int N, int C, float eps,
                           float weight_offset);
void cpu_layernorm_backward(Backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                            const void *inp, const void *weight, const float *mean,
                            const float *rstd, int N, int C, float weight_offset);
void cpu_matmul_forward(Backend *be, void *out, const void *inp, const void *weight,
                        const void *bias, int N, int IC, int OC, bool weight_in_major);
void cpu_matmul_backward(Backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                         const void *inp, const void *weight, int N, int IC, int OC,
                         bool weight_in_major);
void cpu_gelu_forward(Backend *be, void *out, const void *inp, size_t n);
void cpu_gelu_backward(Backend *be, void *dinp, const void *inp, const void *dout, size_t n);
void cpu_add(Backend *be, void *out, const void *a, const void *b, size_t n);
void cpu_add_bias(Backend *be, void *out, const void *bias, int N, int OC);
void cpu_add_inplace(Backend *be, void *dst, const void *src, size_t n);
void cpu_scale_f32(Backend *be, float *x, float s, size_t n);

/* ---- causal self-attention (cpu_attention.c) ---- */
size_t cpu_attention_saved_bytes(Backend *be, int B, int T, int NH, int NG, int HS);
void cpu_attention_forward(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                           int NH, int NG, int HS, const int32_t *key_start,
                           const AttentionDropout *dropout);
void cpu_attention_backward(Backend *be, void *dqkv, const void *dout, const void *qkv,
                            const void *out, const void *saved, int B, int T, int NH, int NG,
                            int HS, const int32_t *key_start, const AttentionDropout *dropout);
void cpu_attention_block_forward(Backend *be, void *out, float *lse, const void *q_qkv,
                                 const void *kv_qkv, int B, int NH, int NG, int HS,
                                 const AttentionBlock *blk, const int32_t *key_start,
                                 const AttentionDropout *dropout, bool first);
void cpu_attention_block_backward(Backend *be, void *d_q_qkv, void *d_kv_qkv, const void *dout,
                                  const void *q_qkv, const void *kv_qkv, const void *out,
                                  const float *lse, int B, int NH, int NG, int HS,
                                  const AttentionBlock *blk, const int32_t *key_start,
                                  const AttentionDropout *dropout);

/* ---- RMSNorm, SwiGLU, squared ReLU, dropout, RoPE, QK-norm (cpu_arch.c) ---- */
void cpu_rmsnorm_forward(Backend *be, void *out, float *rstd, const void *inp, const void *weight,
                         int N, int C, float eps, float weight_offset);
void cpu_rmsnorm_backward(Backend *be, void *dinp, float *dweight, const void *dout,
                          const void *inp, const void *weight, const float *rstd, int N, int C,
                          float weight_offset);
void cpu_swiglu_forward(Backend *be, void *out, const void *inp, int N, int F);
void cpu_swiglu_backward(Backend *be, void *dinp, const void *inp, const void *dout, int N, int F);
void cpu_squared_relu_forward(Backend *be, void *out, const void *inp, size_t n);
void cpu_squared_relu_backward(Backend *be, void *dinp, const void *inp, const void *dout,
                               size_t n);
void cpu_dropout_forward(Backend *be, void *out, const void *inp, int rows, int cols,
                         const DropoutKey *key);
void cpu_dropout_backward(Backend *be, void *dinp, const void *dout, int rows, int cols,
                          const DropoutKey *key);
void cpu_rope_forward(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                      float base, bool interleaved, const int32_t *position_ids);
void cpu_rope_backward(Backend *be, void *dqkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                       float base, bool interleaved, const int32_t *position_ids);
void cpu_qk_norm_forward(Backend *be, void *out, float *mean, float *rstd, const void *qkv,
                         const void *q_weight, const void *q_bias, const void *k_weight,
                         const void *k_bias, const QKNormShape *shape);
void cpu_qk_norm_backward(Backend *be, void *dqkv, float *dq_weight, float *dq_bias,
                          float *dk_weight, float *dk_bias, const void *dout, const void *qkv,
                          const void *q_weight, const void *k_weight, const float *mean,
                          const float *rstd, const QKNormShape *shape);

/* ---- cross entropy, optimizer, reductions (cpu_loss_optim.c) ---- */
void cpu_cross_entropy_max(Backend *be, float *rowmax, const void *logits, int N, int V,
                           int vocab_begin, int vocab_size);
void cpu_cross_entropy_sums(Backend *be, float *sumexp, float *target_logit, const void *logits,
                            const float *rowmax, const int32_t *targets, int N, int V,
                            int vocab_begin, int vocab_size);
void cpu_cross_entropy_loss(Backend *be, float *losses, const float *rowmax, const float *sumexp,
                            const float *target_logit, int N);
void cpu_cross_entropy_backward(Backend *be, void *dlogits, const void *logits, const float *rowmax,
                                const float *sumexp, const int32_t *targets, int N, int V,
                                int vocab_begin, int vocab_size, float dloss);
void cpu_adamw_update(Backend *be, void *param, float *master, const float *grad, float *m,
                      float *v, size_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, float grad_scale, int step);
double cpu_sum_squares_f32(Backend *be, const float *x, size_t n);
bool cpu_has_nonfinite_f32(Backend *be, const float *x, size_t n);
uint64_t cpu_count_zeros_f32(Backend *be, const float *x, size_t n);

/* ---- mixture of experts (cpu_moe.c) ---- */
void cpu_moe_router_forward(Backend *be, int32_t *expert_ids, float *probs, float *stats,
                            const float *logits, int R, int E, int K, bool sigmoid,
                            bool pre_softmax);
void cpu_moe_router_backward(Backend *be, float *dlogits, const float *dprobs, const float *logits,
                             const int32_t *expert_ids, const float *probs, const float *aux_grad,
                             float z_grad, int R, int E, int K, bool sigmoid, bool pre_softmax);
void cpu_moe_gather_rows(Backend *be, void *out, const void *inp, const int32_t *rows, int P,
                         int C);
void cpu_moe_combine_forward(Backend *be, void *out, const void *expert_out, const float *probs,
                             const int32_t *slot, int N, int K, int C, bool accumulate);
void cpu_moe_combine_backward(Backend *be, void *d_expert_out, float *dprobs, const void *dout,
                              const void *expert_out, const float *probs, const int32_t *slot,
                              int N, int K, int P, int C);
void cpu_grouped_matmul_forward(Backend *be, void *out, const void *inp,
                                const void *const *weights, const int *row_begin, int groups,
                                int IC, int OC, bool weight_in_major);
void cpu_grouped_matmul_backward(Backend *be, void *dinp, float *const *dweights,
                                 const void *dout, const void *inp, const void *const *weights,
                                 const int *row_begin, int groups, int IC, int OC,
                                 bool weight_in_major);

#endif
