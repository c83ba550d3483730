/* backend/backend.h — the compute interface.
 *
 * Contract: model, tensor-parallel and optimizer code call only these
 * operations, on opaque device buffers, and never touch element memory. Two
 * implementations exist: "cpu" (fp32 everywhere, the reference) and "cuda"
 * (bf16 activations and parameters, fp32 gradients and optimizer state).
 *
 * Element types. `act` buffers (activations, their gradients, model
 * parameters) hold backend->act_dtype elements: fp32 on the CPU, bf16 on CUDA.
 * `float *` arguments always hold fp32 (gradient buffer, master weights, Adam
 * moments, layernorm statistics, loss pieces). `int32_t *` hold token ids.
 * All pointers are device pointers of this backend.
 *
 * Shapes use N = rows (batch*sequence), C = hidden, OC/IC = output/input
 * features. Matrices are row-major. A weight is stored either "out-major"
 * [OC, IC] (y = x W^T, e.g. linear_qkv, linear_fc1, the LM head) or
 * "in-major" [IC, OC] (y = x W, e.g. linear_proj, linear_fc2), matching the
 * canonical layout in which the tensor-parallel split dimension comes first.
 *
 * Accumulation. Every parameter-gradient output (dweight, dbias, dtable, dw,
 * db) is ADDED into the fp32 gradient buffer, so gradients accumulate over
 * micro-batches. Activation-gradient outputs are OVERWRITTEN unless the op's
 * comment says "adds". All ops are deterministic: the same inputs give
 * bitwise the same outputs on the same backend. */
#ifndef GPT3D_BACKEND_H
#define GPT3D_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DTYPE_F32 = 0, DTYPE_BF16 = 1, DTYPE_F16 = 2 } DType;

size_t dtype_size(DType t);
const char *dtype_name(DType t);

typedef struct Backend Backend;

/* A target id that no loss counts (a masked token, --eod-mask-loss). */
#define LOSS_IGNORED_TARGET (-1)

/* Dropout masks come from core/rng.h's counter-based generator keyed by
 * global coordinates, so every layout and a recomputation draw the same
 * mask. Element (r, c) of a [rows, cols] block has the counter
 * (row0 + r) * row_stride + col0 + c; it is kept when word 0 of
 * rng_block(seed, stream, counter) is >= threshold (p * 2^32, rounded), an
 * integer comparison that every backend makes bitwise alike. */
typedef struct {
    uint64_t seed, stream;
    uint64_t row0, row_stride, col0;
    uint32_t threshold;
    float scale; /* 1 / (1 - p) */
} DropoutKey;

typedef struct {
    uint64_t seed, stream;
    uint64_t sample0;     /* global index of the micro-batch's first sample */
    uint64_t head0;       /* global index of this rank's first query head */
    uint64_t heads_total; /* query heads of the whole model */
    uint32_t threshold;
    float scale;
} AttentionDropout;

/* Where the rows of one block of ring attention (context parallelism) lie
 * in the whole sequence: query row i of a sequence is at q_coord[i], key j
 * at k_coord[j] (int32 device arrays, strictly increasing, the same for
 * every sequence of the batch); seq_length is the whole sequence's length. */
typedef struct {
    int Tq, Tk, seq_length;
    const int32_t *q_coord, *k_coord;
} AttentionBlock;

/* The shape and norm of a QK-norm call (qk_norm_forward): N qkv rows of
 * NG query groups with NH query heads in all and head dimension HS;
 * RMSNorm or LayerNorm, with its epsilon and weight offset. */
typedef struct {
    int N, NH, NG, HS;
    bool rms;
    float eps, weight_offset;
} QKNormShape;

typedef struct {
    /* ---- memory ---- */
    void *(*alloc)(Backend *be, size_t bytes); /* zero-filled; never NULL */
    void (*free)(Backend *be, void *ptr);
    void (*memset_zero)(Backend *be, void *ptr, size_t bytes);
    void (*copy_to_device)(Backend *be, void *dst, const void *host_src, size_t bytes);
    void (*copy_to_host)(Backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy_device)(Backend *be, void *dst, const void *src, size_t bytes);
    void (*synchronize)(Backend *be);

    /* ---- casts between fp32 and the activation type ---- */
    void (*f32_to_act)(Backend *be, void *dst, const float *src, size_t n);
    void (*act_to_f32)(Backend *be, float *dst, const void *src, size_t n);

    /* ---- embeddings ----
     * out[n, :] = table[tokens[n] - vocab_begin, :] when vocab_begin <= tokens[n] < vocab_end,
     * else 0 (a tensor-parallel rank owns rows [vocab_begin, vocab_end)). table is
     * [vocab_end - vocab_begin, C]. */
    void (*embedding_forward)(Backend *be, void *out, const int32_t *tokens, const void *table,
                              int N, int C, int vocab_begin, int vocab_end);
    /* dtable[tokens[n] - vocab_begin, :] += dout[n, :] for owned ids. */
    void (*embedding_backward)(Backend *be, float *dtable, const void *dout, const int32_t *tokens,
                               int N, int C, int vocab_begin, int vocab_end);
    /* out[b, t, :] += pos[t, :] for B sequences of T rows. */
    void (*position_embedding_add)(Backend *be, void *out, const void *pos, int B, int T, int C);
    /* dpos[t, :] += sum_b dout[b, t, :]. */
    void (*position_embedding_backward)(Backend *be, float *dpos, const void *dout, int B, int T,
                                        int C);
    /* The same with explicit positions (--reset-position-ids): out[n, :] +=
     * pos[position_ids[n], :] for N rows; position_ids is an int32 device
     * array of N ids in [0, T). */
    void (*position_embedding_add_ids)(Backend *be, void *out, const void *pos,
                                       const int32_t *position_ids, int N, int C);
    /* dpos[position_ids[n], :] += dout[n, :], added row after row in n order
     * (so a position's sum has a fixed order on every backend). */
    void (*position_embedding_backward_ids)(Backend *be, float *dpos, const void *dout,
                                            const int32_t *position_ids, int N, int C);

    /* ---- normalisation ----
     * LayerNorm: out = (x - mean) * rstd * (weight + weight_offset) + bias, with
     * rstd = 1/sqrt(biased variance + eps). RMSNorm: out = x * rstd * (weight +
     * weight_offset), rstd = 1/sqrt(mean(x^2) + eps), no bias. weight_offset is
     * 0, or 1 with --apply-layernorm-1p (the stored weight is then the weight
     * minus one, initialised to zero). mean and rstd are [N] fp32, saved for
     * backward. */
    void (*layernorm_forward)(Backend *be, void *out, float *mean, float *rstd, const void *inp,
                              const void *weight, const void *bias, int N, int C, float eps,
                              float weight_offset);
    /* Adds into dinp; adds into dweight/dbias. */
    void (*layernorm_backward)(Backend *be, void *dinp, float *dweight, float *dbias,
                               const void *dout, const void *inp, const void *weight,
                               const float *mean, const float *rstd, int N, int C,
                               float weight_offset);
    void (*rmsnorm_forward)(Backend *be, void *out, float *rstd, const void *inp,
                            const void *weight, int N, int C, float eps, float weight_offset);
    /* Adds into dinp; adds into dweight. */
    void (*rmsnorm_backward)(Backend *be, void *dinp, float *dweight, const void *dout,
                             const void *inp, const void *weight, const float *rstd, int N, int C,
                             float weight_offset);

    /* ---- matrix products ----
     * out[N, OC] = inp[N, IC] . W (+ bias[OC] when bias != NULL);
     * W is [OC, IC] when weight_in_major is false, [IC, OC] when true. */
    void (*matmul_forward)(Backend *be, void *out, const void *inp, const void *weight,
                           const void *bias, int N, int IC, int OC, bool weight_in_major);
    /* dinp = dout . W^T (overwritten; skipped when dinp == NULL);
     * dweight += the weight gradient in the weight's own layout (skipped when NULL);
     * dbias += column sums of dout (skipped when NULL). */
    void (*matmul_backward)(Backend *be, void *dinp, float *dweight, float *dbias,
                            const void *dout, const void *inp, const void *weight, int N, int IC,
                            int OC, bool weight_in_major);

    /* ---- pointwise ----
     * GELU, tanh approximation (GPT-2's "gelu_new"). */
    void (*gelu_forward)(Backend *be, void *out, const void *inp, size_t n);
    void (*gelu_backward)(Backend *be, void *dinp, const void *inp, const void *dout, size_t n);
    /* SwiGLU: inp is [N, F, 2], per feature its gate then its up value (the
     * canonical linear_fc1 order, so a TP shard of features is contiguous);
     * out[n, f] = silu(gate) * up, silu(x) = x / (1 + exp(-x)). */
    void (*swiglu_forward)(Backend *be, void *out, const void *inp, int N, int F);
    /* dinp [N, F, 2] overwritten. */
    void (*swiglu_backward)(Backend *be, void *dinp, const void *inp, const void *dout, int N,
                            int F);
    /* Squared ReLU: out = max(x, 0)^2. */
    void (*squared_relu_forward)(Backend *be, void *out, const void *inp, size_t n);
    void (*squared_relu_backward)(Backend *be, void *dinp, const void *inp, const void *dout,
                                  size_t n);
    /* Dropout whose mask is a pure function of global coordinates (see
     * DropoutKey): out = keep ? inp * scale : 0. out may alias inp. */
    void (*dropout_forward)(Backend *be, void *out, const void *inp, int rows, int cols,
                            const DropoutKey *key);
    /* dinp = keep ? dout * scale : 0, the same mask. dinp may alias dout. */
    void (*dropout_backward)(Backend *be, void *dinp, const void *dout, int rows, int cols,
                             const DropoutKey *key);
    /* out = a + b (out may alias a or b). */
    void (*add)(Backend *be, void *out, const void *a, const void *b, size_t n);
    /* dst += src. */
    void (*add_inplace)(Backend *be, void *dst, const void *src, size_t n);
    /* out[n, :] += bias[:] for N rows of OC (row-parallel layers add their
     * bias once, after the tensor-parallel reduction). */
    void (*add_bias)(Backend *be, void *out, const void *bias, int N, int OC);
    /* x *= s, fp32 buffer. */
    void (*scale_f32)(Backend *be, float *x, float s, size_t n);

    /* ---- causal self-attention with query groups ----
     * qkv rows are [NG, NH/NG + 2, HS]: for each of the NG query groups its
     * NH/NG query heads, then its key head and its value head (Megatron's
     * linear_qkv order; NG == NH is multi-head attention, [NH, 3, HS]). Query
     * head h = g * (NH/NG) + j attends with group g's key and value. qkv is
     * [B, T, NG * (NH/NG + 2) * HS]; out is [B, T, NH, HS]. Scale 1/sqrt(HS).
     * `saved` holds what backward needs, attention_saved_bytes() bytes.
     * `dropout` (NULL: none) drops attention probabilities after the softmax:
     * probability (b, h, i, j) (query i, key j) uses the counter
     * ((sample0 + b) * heads_total + head0 + h) * T * T + i * T + j with the
     * key's seed, stream, threshold and scale (AttentionDropout).
     * `key_start` (NULL: all zero) keeps attention inside documents
     * (--reset-attention-mask): query i of sequence b attends to keys
     * key_start[b * T + i] .. i only; an int32 device array of B * T starts,
     * each <= its own position. */
    size_t (*attention_saved_bytes)(Backend *be, int B, int T, int NH, int NG, int HS);
    void (*attention_forward)(Backend *be, void *out, void *saved, const void *qkv, int B, int T,
                              int NH, int NG, int HS, const int32_t *key_start,
                              const AttentionDropout *dropout);
    /* dqkv overwritten; the same key_start and dropout as the forward. */
    void (*attention_backward)(Backend *be, void *dqkv, const void *dout, const void *qkv,
                               const void *out, const void *saved, int B, int T, int NH, int NG,
                               int HS, const int32_t *key_start, const AttentionDropout *dropout);
    /* ---- one block of ring attention (context parallelism) ----
     * The queries of q_qkv ([B, Tq] rows in the qkv layout above) against
     * the keys and values of kv_qkv ([B, Tk] rows, the same layout; its
     * query heads unused), placed in the sequence by `blk`: key j is
     * visible to query i when k_coord[j] <= q_coord[i] and, with key_start
     * ([B * Tq] starts in sequence coordinates; NULL: 0), k_coord[j] >=
     * key_start[b * Tq + i]. Dropout counters are those of the whole
     * sequence's attention (i, j and T above are sequence coordinates and
     * seq_length), so the blocks of a sequence draw the mask one rank would.
     * attention_block_forward merges the block into the running output
     * (out [B, Tq, NH, HS]) and log-sum-exp (lse [B, NH, Tq] fp32) by the
     * online softmax; `first` overwrites them instead. A row that has seen
     * no key yet has lse -inf and out 0. attention_block_backward ADDS the
     * block's part of dq to d_q_qkv's query heads and of dk, dv to
     * d_kv_qkv's key and value heads (the other heads untouched, so the two
     * may be one buffer), from the final out and lse of the forward. */
    void (*attention_block_forward)(Backend *be, void *out, float *lse, const void *q_qkv,
                                    const void *kv_qkv, int B, int NH, int NG, int HS,
                                    const AttentionBlock *blk, const int32_t *key_start,
                                    const AttentionDropout *dropout, bool first);
    void (*attention_block_backward)(Backend *be, void *d_q_qkv, void *d_kv_qkv, const void *dout,
                                     const void *q_qkv, const void *kv_qkv, const void *out,
                                     const float *lse, int B, int NH, int NG, int HS,
                                     const AttentionBlock *blk, const int32_t *key_start,
                                     const AttentionDropout *dropout);
    /* Rotary position embedding, in place on the query and key heads of a
     * qkv buffer laid out as above (value heads untouched). Row (b, t) has
     * position t, or position_ids[b * T + t] when position_ids (an int32
     * device array of B * T ids in [0, T), --reset-position-ids) is not
     * NULL. The first rot_dim features of each head (rot_dim even,
     * <= HS) rotate in pairs: rotate-half pairs feature i with i + rot_dim/2
     * (Hugging Face and Megatron), interleaved pairs 2i with 2i + 1. Pair i
     * has inv_freq = 1 / base^(2i / rot_dim) and angle t * inv_freq, both
     * fp32 as Hugging Face computes them; (x, y) -> (x cos - y sin,
     * y cos + x sin). */
    void (*rope_forward)(Backend *be, void *qkv, int B, int T, int NH, int NG, int HS, int rot_dim,
                         float base, bool interleaved, const int32_t *position_ids);
    /* The transposed rotation, in place on dqkv's query and key heads. */
    void (*rope_backward)(Backend *be, void *dqkv, int B, int T, int NH, int NG, int HS,
                          int rot_dim, float base, bool interleaved, const int32_t *position_ids);
    /* QK-norm (--qk-layernorm): every query head and every key head of N
     * qkv rows laid out as above is normalised over its HS features by
     * LayerNorm or RMSNorm (see the normalisation ops; eps, weight_offset
     * alike), query heads with q_weight/q_bias, key heads with
     * k_weight/k_bias ([HS] each; the biases unused for RMSNorm). Value
     * heads are copied. The statistics are [N, NG, NH/NG + 1] fp32, one per
     * normalised head in qkv order (a group's query heads, then its key);
     * mean is unused (may be NULL) for RMSNorm. out may alias qkv. */
    void (*qk_norm_forward)(Backend *be, void *out, float *mean, float *rstd, const void *qkv,
                            const void *q_weight, const void *q_bias, const void *k_weight,
                            const void *k_bias, const QKNormShape *shape);
    /* dqkv (overwritten; may alias dout) = the gradient of qk_norm_forward's
     * input from dout, value heads copied; adds into dq_weight, dk_weight
     * and, for LayerNorm, dq_bias, dk_bias (sums over this call's heads
     * only: a tensor-parallel rank's are partial). qkv is the forward's
     * input. */
    void (*qk_norm_backward)(Backend *be, void *dqkv, float *dq_weight, float *dq_bias,
                             float *dk_weight, float *dk_bias, const void *dout, const void *qkv,
                             const void *q_weight, const void *k_weight, const float *mean,
                             const float *rstd, const QKNormShape *shape);

    /* ---- vocab-parallel softmax cross entropy, in pieces ----
     * logits are [N, V] for this rank's vocabulary slice [vocab_begin, vocab_begin + V);
     * columns whose global id is >= vocab_size (padding) are masked out: they
     * count as -inf logits and get zero gradient. Between the pieces the caller
     * all-reduces over tensor-parallel ranks (max, then sums). */
    /* rowmax[n] = max over valid local columns (-INFINITY when this slice has none). */
    void (*cross_entropy_max)(Backend *be, float *rowmax, const void *logits, int N, int V,
                              int vocab_begin, int vocab_size);
    /* sumexp[n] = sum over valid local columns exp(logit - rowmax[n]);
     * target_logit[n] = logit of targets[n] if this slice owns it, else 0. */
    void (*cross_entropy_sums)(Backend *be, float *sumexp, float *target_logit,
                               const void *logits, const float *rowmax, const int32_t *targets,
                               int N, int V, int vocab_begin, int vocab_size);
    /* losses[n] = log(sumexp[n]) + rowmax[n] - target_logit[n]. */
    void (*cross_entropy_loss)(Backend *be, float *losses, const float *rowmax,
                               const float *sumexp, const float *target_logit, int N);
    /* dlogits = dloss * (softmax - onehot(target)), padded columns 0. A row
     * whose target is negative (LOSS_IGNORED_TARGET: --eod-mask-loss) is not
     * in the loss: its gradient row is 0 (its loss piece above is computed
     * but not counted). dlogits may alias logits (in place). */
    void (*cross_entropy_backward)(Backend *be, void *dlogits, const void *logits,
                                   const float *rowmax, const float *sumexp,
                                   const int32_t *targets, int N, int V, int vocab_begin,
                                   int vocab_size, float dloss);

    /* ---- mixture of experts ----
     * A router scores R tokens against E experts (logits [R, E] fp32) and
     * sends each to K of them (--moe-router-topk). Selection is the top K
     * logits of the row, a tie going to the lower expert index, so every
     * backend and layout routes alike. */
    /* expert_ids [R, K] (int32, best first) and probs [R, K] (fp32) from the
     * logits. softmax: probs = softmax over the K selected logits, or with
     * `pre_softmax` the selected entries of softmax over all E; sigmoid:
     * sigmoid of the selected logits, divided by their sum (+ 1e-20) when
     * K > 1. stats [E + 1] fp32 is overwritten with the sums over the R rows
     * of the load-balancing scores (softmax over all E; for sigmoid, sigmoid
     * normalised over all E by its sum + 1e-20), then of lse^2 (lse: the
     * row's log-sum-exp, for the z-loss); sums run in row order. */
    void (*moe_router_forward)(Backend *be, int32_t *expert_ids, float *probs, float *stats,
                               const float *logits, int R, int E, int K, bool sigmoid,
                               bool pre_softmax);
    /* dlogits [R, E] (overwritten) = the gradient through probs (dprobs
     * [R, K]) + through the load-balancing scores, whose gradient is
     * aux_grad[e] for every row ([E]; NULL: none) + through the z-loss term
     * z_grad * lse^2 of every row (z_grad 0: none). */
    void (*moe_router_backward)(Backend *be, float *dlogits, const float *dprobs,
                                const float *logits, const int32_t *expert_ids, const float *probs,
                                const float *aux_grad, float z_grad, int R, int E, int K,
                                bool sigmoid, bool pre_softmax);
    /* out [P, C] row p = inp row rows[p], or zeros where rows[p] < 0 (an
     * expert's padding) — the dispatch of tokens to expert order. */
    void (*moe_gather_rows)(Backend *be, void *out, const void *inp, const int32_t *rows, int P,
                            int C);
    /* out [N, C] row n = sum over k in order of w(n, k) * expert_out row
     * slot[n * K + k], skipping slots < 0 (a dropped token), with w = probs
     * [N, K] (fp32), or 1 when probs is NULL (the dispatch's backward).
     * Overwritten, or added to when `accumulate`. */
    void (*moe_combine_forward)(Backend *be, void *out, const void *expert_out, const float *probs,
                                const int32_t *slot, int N, int K, int C, bool accumulate);
    /* d_expert_out [P, C] (overwritten, rows named by no slot zero):
     * row slot[n, k] = probs[n, k] * dout row n; dprobs [N, K] (overwritten)
     * = dot(dout row n, expert_out row slot[n, k]), 0 for a dropped slot.
     * Each expert row is named by at most one slot. */
    void (*moe_combine_backward)(Backend *be, void *d_expert_out, float *dprobs, const void *dout,
                                 const void *expert_out, const float *probs, const int32_t *slot,
                                 int N, int K, int P, int C);
    /* The experts' grouped GEMM: group g is rows [row_begin[g], row_begin[g + 1])
     * of inp [P, IC] and out [P, OC], multiplied by weights[g] as
     * matmul_forward without a bias. row_begin (groups + 1 ints, nondecreasing)
     * and weights (groups device pointers, entries may repeat) are host
     * arrays; empty groups are skipped, rows outside every group untouched. */
    void (*grouped_matmul_forward)(Backend *be, void *out, const void *inp,
                                   const void *const *weights, const int *row_begin, int groups,
                                   int IC, int OC, bool weight_in_major);
    /* Per group as matmul_backward without a bias: its dinp rows overwritten
     * (all skipped when dinp == NULL), dweights[g] += its part (skipped when
     * dweights == NULL); groups sharing a gradient add into it in group order. */
    void (*grouped_matmul_backward)(Backend *be, void *dinp, float *const *dweights,
                                    const void *dout, const void *inp, const void *const *weights,
                                    const int *row_begin, int groups, int IC, int OC,
                                    bool weight_in_major);

    /* ---- optimizer ----
     * AdamW on n elements of an fp32 shard: m = b1 m + (1-b1) g;
     * v = b2 v + (1-b2) g^2; master -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)
     * + weight_decay * master); then param = act(master). `grad_scale`
     * multiplies g first (clipping). param may be NULL. */
    void (*adamw_update)(Backend *be, void *param, float *master, const float *grad, float *m,
                         float *v, size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int step);
    /* Sum of squares of an fp32 buffer, accumulated in double, returned to host. */
    double (*sum_squares_f32)(Backend *be, const float *x, size_t n);
    /* True when any element of the fp32 buffer is NaN or inf. */
    bool (*has_nonfinite_f32)(Backend *be, const float *x, size_t n);
    /* Elements of the fp32 buffer equal to zero (either sign; NaN is not),
     * counted where the buffer lives and returned to host. */
    uint64_t (*count_zeros_f32)(Backend *be, const float *x, size_t n);

    /* Bytes this rank could still allocate on its device (host memory for
     * the CPU backend); SIZE_MAX when the backend cannot tell. Start-up
     * compares the memory plan with it before allocating anything. */
    size_t (*memory_available)(Backend *be);

    /* ---- initialisation ----
     * dst[i] = (float)(std * rng_normal(seed, stream, index0 + i)) for i < n
     * (core/rng.h), bitwise the same on every backend: initial weights are
     * generated where they live, in parallel, and every layout and device
     * still starts from the same model. */
    void (*init_normal)(Backend *be, float *dst, size_t n, uint64_t seed, uint64_t stream,
                        uint64_t index0, double std);

    void (*destroy)(Backend *be);
} BackendOps;

struct Backend {
    const BackendOps *ops;
    const char *name; /* "cpu" or "cuda" */
    DType act_dtype;
    void *impl;
    /* Device pointers are host pointers (the CPU backend): host code may
     * read and write buffers directly, and checkpoint I/O skips the staging
     * copy that a GPU needs. */
    bool host_visible;
    /* Device-memory accounting, maintained by alloc/free. */
    size_t bytes_in_use;
    size_t peak_bytes_in_use;
    size_t num_allocations;
    /* Time spent inside matrix-product library calls (sgemm / cuBLASLt), for
     * benchmarks that report the share of a step spent in GEMMs. */
    double gemm_seconds;
    uint64_t gemm_calls;
};

/* Creates the backend named `device` ("cpu" or "cuda"). On failure returns
 * NULL and writes a user-facing reason (e.g. "this build has no CUDA; rebuild
 * with nvcc on PATH or use --device cpu") into err. */
Backend *backend_create(const char *device, int local_rank, char *err, size_t err_size);
void backend_destroy(Backend *be);

/* True when the build includes the CUDA backend. */
bool backend_cuda_compiled(void);
/* True when the CUDA backend implements every op (false while it is a stub). */
bool backend_cuda_complete(void);
/* Number of visible CUDA devices (0 in a CPU-only build or with no GPU),
 * asked of the driver (libcuda) without loading the CUDA backend. */
int backend_cuda_device_count(void);
/* The same, writing a one-line reason (why 0, or what was found). */
int backend_cuda_probe(char *reason, size_t reason_size);
/* Loads the CUDA backend library (cuBLAS and NCCL with it): true with the
 * path it came from in msg, or false with every path tried and dlerror()'s
 * reason for each. The search: $GPT3D_CUDA_LIBRARY alone when set; else
 * libgpt3d_cuda.so beside the program (or the shared object holding
 * libgpt3d) and in ../lib from there, then the build tree's copy. */
bool backend_cuda_library(char *msg, size_t msg_size);

/* A function exported by the CUDA backend library (loading it on first
 * use), e.g. the NCCL table of parallel_state/nccl_ops.h; NULL with a
 * reason naming the library (or the CPU-only build) when it cannot be had. */
void *backend_cuda_symbol(const char *name, char *err, size_t err_size);

/* Bytes of a buffer of n activation-type elements. */
static inline size_t backend_act_bytes(const Backend *be, size_t n) {
    return n * dtype_size(be->act_dtype);
}

#endif
