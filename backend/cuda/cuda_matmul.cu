// backend/cuda/cuda_matmul.cu — matrix products through cuBLASLt (bf16
// inputs, fp32 accumulation), bias and bias gradients, and the deterministic
// column sums the backward passes share.
//
// Row-major tensors as cuBLAS (column-major) sees them: a row-major [r, c]
// matrix with row stride ld is the column-major [c, r] matrix X^T with the
// same ld. So a row-major product Y = A B is computed as the column-major
// product Y^T = B^T A^T, and every mapping below is that identity written out.
//
// Type combinations: activations are bf16 in and out (A, B, C, D = bf16);
// weight gradients are accumulated into the fp32 gradient buffer in the same
// call (A, B = bf16, C = D = fp32, beta = 1). Both are listed in cuBLASLt's
// table of supported combinations for CUBLAS_COMPUTE_32F with an fp32 scale
// type (and the second is what Megatron/apex's fused weight-gradient
// accumulation uses through cublasGemmEx).
//
// Bias in the forward is a separate add_bias kernel after the GEMM (the
// cuBLASLt BIAS epilogue is a later speed step). Descriptors are created per
// call; caching them per shape is another.
#include <cstring>

#include "backend/cuda/cuda_internal.cuh"

// ---- the cuBLASLt call ---------------------------------------------------------

// Largest power of two (at most 256) dividing the address of every matrix of
// the operand: its base, each column (ld) and each batch entry.
static uint32_t operand_alignment(const void *ptr, int64_t ld, int64_t batch_stride,
                                  size_t elem_bytes, int batch) {
    uint64_t bits = (uint64_t)(uintptr_t)ptr | 256u | (uint64_t)ld * elem_bytes;
    if (batch > 1) bits |= (uint64_t)batch_stride * elem_bytes;
    return (uint32_t)(bits & (~bits + 1));
}

static size_t type_bytes(cudaDataType_t t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF: return 2;
    default: GPT3D_FAIL("cuda_gemm: unexpected data type %d", (int)t);
    }
}

static cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols,
                                          int64_t ld, int64_t batch_stride, int batch) {
    cublasLtMatrixLayout_t layout = NULL;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t count = batch;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &count, sizeof count));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride, sizeof batch_stride));
    }
    return layout;
}

static void set_pref_u32(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t a,
                         uint32_t value) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, a, &value, sizeof value));
}

// Records the start of a timed GEMM; returns its timer slot.
static int gemm_timer_start(Backend *be) {
    CudaImpl *impl = impl_of(be);
    GemmTimers *t = &impl->timers;
    if (t->pending == GEMM_TIMER_CAPACITY) { // rare: no synchronising call for a long time
        CUDA_CHECK(cudaStreamSynchronize(impl->stream));
        cuda_read_gemm_timers(be);
    }
    int i = t->pending;
    if (i == t->created) {
        CUDA_CHECK(cudaEventCreate(&t->start[i]));
        CUDA_CHECK(cudaEventCreate(&t->stop[i]));
        t->created++;
    }
    CUDA_CHECK(cudaEventRecord(t->start[i], impl->stream));
    return i;
}

static void gemm_timer_stop(Backend *be, int i) {
    CudaImpl *impl = impl_of(be);
    CUDA_CHECK(cudaEventRecord(impl->timers.stop[i], impl->stream));
    impl->timers.pending = i + 1;
    be->gemm_calls++;
}

// One cuBLASLt call; false when the heuristic offers no algorithm.
static bool gemm_once(Backend *be, int64_t m, int64_t n, int64_t k, float alpha, GemmOperand A,
                      GemmOperand B, float beta, void *D, cudaDataType_t dtype, int64_t ldd,
                      int64_t d_batch_stride, int batch) {
    CudaImpl *impl = impl_of(be);
    cublasLtMatmulDesc_t op = NULL;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t trans_a = A.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
    int32_t trans_b = B.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                sizeof trans_a));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                sizeof trans_b));
    // Layouts describe the stored matrices: op(A) is [m, k], so A is stored
    // [k, m] when transposed; op(B) is [k, n].
    cublasLtMatrixLayout_t a = make_layout(A.type, A.transpose ? k : m, A.transpose ? m : k, A.ld,
                                           A.batch_stride, batch);
    cublasLtMatrixLayout_t b = make_layout(B.type, B.transpose ? n : k, B.transpose ? k : n, B.ld,
                                           B.batch_stride, batch);
    cublasLtMatrixLayout_t d = make_layout(dtype, m, n, ldd, d_batch_stride, batch);

    cublasLtMatmulPreference_t pref = NULL;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t workspace = CUBLASLT_WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace, sizeof workspace));
    // The default assumes 256-byte aligned buffers; sub-buffers (a head's
    // columns inside qkv, a TP slice) can be less aligned.
    const uint32_t align_d = operand_alignment(D, ldd, d_batch_stride, type_bytes(dtype), batch);
    set_pref_u32(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                 operand_alignment(A.ptr, A.ld, A.batch_stride, type_bytes(A.type), batch));
    set_pref_u32(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                 operand_alignment(B.ptr, B.ld, B.batch_stride, type_bytes(B.type), batch));
    set_pref_u32(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
    set_pref_u32(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);

    cublasLtMatmulHeuristicResult_t heuristic;
    memset(&heuristic, 0, sizeof heuristic);
    int found = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(impl->lt, op, a, b, d, d, pref, 1,
                                                           &heuristic, &found);
    // NOT_SUPPORTED means "no algorithm for this problem", like found == 0.
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(status);
    if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
        // C = D (in place): with beta = 1 the product accumulates into D;
        // with beta = 0 cuBLAS does not read C.
        const int timer = gemm_timer_start(be);
        CUBLAS_CHECK(cublasLtMatmul(impl->lt, op, &alpha, A.ptr, a, B.ptr, b, &beta, D, d, D, d,
                                    &heuristic.algo, impl->lt_workspace, CUBLASLT_WORKSPACE_BYTES,
                                    impl->stream));
        gemm_timer_stop(be, timer);
    }
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(d));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(b));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(a));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
    return status == CUBLAS_STATUS_SUCCESS && found > 0;
}

static const void *batch_entry(const void *ptr, int64_t stride, size_t elem_bytes, int i) {
    return (const char *)ptr + (size_t)i * (size_t)stride * elem_bytes;
}

void cuda_gemm(Backend *be, int64_t m, int64_t n, int64_t k, float alpha, GemmOperand A,
               GemmOperand B, float beta, void *D, cudaDataType_t dtype, int64_t ldd,
               int64_t d_batch_stride, int batch) {
    GPT3D_CHECK(m > 0 && n > 0 && k > 0 && batch >= 1, "cuda_gemm: bad shape m=%lld n=%lld k=%lld",
                (long long)m, (long long)n, (long long)k);
    if (gemm_once(be, m, n, k, alpha, A, B, beta, D, dtype, ldd, d_batch_stride, batch)) return;
    // A batch whose matrices interleave (heads inside qkv rows) may have no
    // batched algorithm on some cuBLAS version: run its products one by one.
    bool done = batch > 1;
    for (int i = 0; done && i < batch; i++) {
        GemmOperand Ai = A, Bi = B;
        Ai.ptr = batch_entry(A.ptr, A.batch_stride, type_bytes(A.type), i);
        Bi.ptr = batch_entry(B.ptr, B.batch_stride, type_bytes(B.type), i);
        void *Di = (void *)batch_entry(D, d_batch_stride, type_bytes(dtype), i);
        done = gemm_once(be, m, n, k, alpha, Ai, Bi, beta, Di, dtype, ldd, 0, 1);
    }
    if (!done)
        GPT3D_FAIL("cuBLASLt has no algorithm for a GEMM m=%lld n=%lld k=%lld batch=%d "
                   "(A %s ld %lld, B %s ld %lld, D %s ld %lld); hint: check the CUDA/cuBLAS "
                   "installation against the one gpt3d was built with, or report this shape",
                   (long long)m, (long long)n, (long long)k, batch,
                   A.type == CUDA_R_16BF ? "bf16" : "fp32", (long long)A.ld,
                   B.type == CUDA_R_16BF ? "bf16" : "fp32", (long long)B.ld,
                   dtype == CUDA_R_16BF ? "bf16" : "fp32", (long long)ldd);
}

static GemmOperand bf16_operand(const void *ptr, bool transpose, int64_t ld) {
    GemmOperand o = {ptr, CUDA_R_16BF, transpose, ld, 0};
    return o;
}

// ---- deterministic column sums ---------------------------------------------------

ColumnChunks column_chunks(int rows) {
    // Enough chunks to fill a GPU for hidden sizes in the hundreds, few
    // enough that the second phase is cheap. Depends on `rows` only.
    const int target = 128;
    ColumnChunks ch;
    int chunks = rows < target ? rows : target;
    if (chunks < 1) chunks = 1;
    ch.rows_per_chunk = (rows + chunks - 1) / chunks;
    if (ch.rows_per_chunk < 1) ch.rows_per_chunk = 1;
    ch.chunks = (rows + ch.rows_per_chunk - 1) / ch.rows_per_chunk; // no empty chunk
    if (ch.chunks < 1) ch.chunks = 1;
    return ch;
}

// grid (column blocks, chunks): partial[k, c] = sum of src[r, c] over chunk
// k's rows, in row order.
static __global__ void column_partials_kernel(float *partial, const bf16 *src, int rows, int cols,
                                              int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int k = blockIdx.y;
    if (c >= cols) return;
    const int r0 = k * rows_per_chunk;
    const int r1 = min(rows, r0 + rows_per_chunk);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += to_f32(src[(size_t)r * cols + c]);
    partial[(size_t)k * cols + c] = s;
}

static __global__ void add_chunk_partials_kernel(float *dst, const float *partial, int chunks,
                                                 int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++) s += partial[(size_t)k * cols + c];
    dst[c] += s;
}

void cuda_add_chunk_partials(Backend *be, float *dst, const float *partial, ColumnChunks ch,
                             int cols) {
    add_chunk_partials_kernel<<<ceil_div_u((size_t)cols, THREADS), THREADS, 0, stream_of(be)>>>(
        dst, partial, ch.chunks, cols);
    CUDA_CHECK_LAUNCH();
}

void cuda_column_sums_add(Backend *be, float *dst, const bf16 *src, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    ColumnChunks ch = column_chunks(rows);
    float *partial = (float *)cuda_scratch(be, (size_t)ch.chunks * cols * sizeof(float));
    dim3 grid(ceil_div_u((size_t)cols, THREADS), (unsigned)ch.chunks);
    column_partials_kernel<<<grid, THREADS, 0, stream_of(be)>>>(partial, src, rows, cols,
                                                                ch.rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    cuda_add_chunk_partials(be, dst, partial, ch, cols);
}

// ---- matmul forward / backward ------------------------------------------------------
// Notation: x = inp [N, IC], y = out [N, OC], g = dout [N, OC], all row-major;
// W is [OC, IC] (out-major) or [IC, OC] (in-major). Column-major views (cm):
// x_cm = x^T [IC, N] ld IC; y_cm, g_cm = [OC, N] ld OC; out-major
// W_cm = W^T [IC, OC] ld IC; in-major W_cm = W^T [OC, IC] ld OC.

void cuda_matmul_forward(Backend *be, void *out, const void *inp, const void *weight,
                         const void *bias, int N, int IC, int OC, bool weight_in_major) {
    GPT3D_CHECK(N > 0 && IC > 0 && OC > 0, "matmul_forward: bad shape N=%d IC=%d OC=%d", N, IC, OC);
    GemmOperand x = bf16_operand(inp, false, IC); // x_cm [IC, N]
    if (weight_in_major)
        // y = x W, W [IC, OC]:  y_cm [OC, N] = W_cm [OC, IC] . x_cm [IC, N]
        cuda_gemm(be, OC, N, IC, 1.0f, bf16_operand(weight, false, OC), x, 0.0f, out, CUDA_R_16BF,
                  OC, 0, 1);
    else
        // y = x W^T, W [OC, IC]:  y_cm [OC, N] = (W_cm [IC, OC])^T . x_cm [IC, N]
        cuda_gemm(be, OC, N, IC, 1.0f, bf16_operand(weight, true, IC), x, 0.0f, out, CUDA_R_16BF,
                  OC, 0, 1);
    if (bias) cuda_add_bias(be, out, bias, N, OC);
}

void cuda_matmul_backward(Backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                          const void *inp, const void *weight, int N, int IC, int OC,
                          bool weight_in_major) {
    GPT3D_CHECK(N > 0 && IC > 0 && OC > 0, "matmul_backward: bad shape N=%d IC=%d OC=%d", N, IC,
                OC);
    GemmOperand g = bf16_operand(dout, false, OC); // g_cm [OC, N]
    if (dinp) {
        if (weight_in_major)
            // dx = g W^T, W [IC, OC]:  dx_cm [IC, N] = (W_cm [OC, IC])^T . g_cm [OC, N]
            cuda_gemm(be, IC, N, OC, 1.0f, bf16_operand(weight, true, OC), g, 0.0f, dinp,
                      CUDA_R_16BF, IC, 0, 1);
        else
            // dx = g W, W [OC, IC]:  dx_cm [IC, N] = W_cm [IC, OC] . g_cm [OC, N]
            cuda_gemm(be, IC, N, OC, 1.0f, bf16_operand(weight, false, IC), g, 0.0f, dinp,
                      CUDA_R_16BF, IC, 0, 1);
    }
    if (dweight) {
        if (weight_in_major)
            // dW [IC, OC] += x^T g:  dW_cm [OC, IC] += g_cm [OC, N] . (x_cm [IC, N])^T
            cuda_gemm(be, OC, IC, N, 1.0f, g, bf16_operand(inp, true, IC), 1.0f, dweight,
                      CUDA_R_32F, OC, 0, 1);
        else
            // dW [OC, IC] += g^T x:  dW_cm [IC, OC] += x_cm [IC, N] . (g_cm [OC, N])^T
            cuda_gemm(be, IC, OC, N, 1.0f, bf16_operand(inp, false, IC),
                      bf16_operand(dout, true, OC), 1.0f, dweight, CUDA_R_32F, IC, 0, 1);
    }
    if (dbias) cuda_column_sums_add(be, dbias, (const bf16 *)dout, N, OC);
}

// ---- the experts' grouped GEMM ---------------------------------------------------
// Every non-empty group's product y_g = op(W_g) x_g goes into one
// cublasGemmGroupedBatchedEx call (bf16 in and out, fp32 compute: a
// combination its table lists). The per-problem pointers are written on the
// device by a one-thread-per-problem kernel whose argument carries the rows
// and weights, so the call needs no upload and no synchronisation. Weight
// gradients accumulate bf16 products into fp32, which the grouped API does
// not offer, so they stay one cuBLASLt product per group, in group order;
// that order also fixes how groups sharing an expert add into its gradient.
// When cuBLAS refuses a grouped call (a library older than 12.5 at run
// time, or operands it cannot align), its products run one by one through
// cuda_gemm, and Backend.gemm_calls shows it (one count per product instead
// of one per call).

// Problems per grouped call: their first rows and weights travel in the
// kernel argument, well under the 4 KiB every architecture accepts.
enum { GROUPED_CALL_MAX = 128 };

typedef struct {
    int count;
    int first_row[GROUPED_CALL_MAX];
    const void *weight[GROUPED_CALL_MAX];
} GroupedProblems;

static __global__ void grouped_pointers_kernel(const void **a, const void **b, void **c,
                                               GroupedProblems gp, const char *in,
                                               size_t in_row_bytes, char *out,
                                               size_t out_row_bytes) {
    const int i = threadIdx.x;
    if (i >= gp.count) return;
    a[i] = gp.weight[i];
    b[i] = in + (size_t)gp.first_row[i] * in_row_bytes;
    c[i] = out + (size_t)gp.first_row[i] * out_row_bytes;
}

// The shape every problem shares, column-major: out_g [M, rows_g] (ld M) =
// op(W_g) [M, K] (W_g stored with leading dimension lda) . in_g [K, rows_g]
// (ld K), where in_g and out_g are the group's rows of row-major [P, K] and
// [P, M] matrices.
typedef struct {
    bool transpose_w;
    int lda, M, K;
} GroupedShape;

static bool grouped_call(Backend *be, const GroupedShape *sh, const GroupedProblems *gp,
                         const int *rows, void *out, const void *in) {
    CudaImpl *impl = impl_of(be);
    const void **dev = (const void **)cuda_scratch(be, 3 * GROUPED_CALL_MAX * sizeof(void *));
    const void **dev_a = dev, **dev_b = dev + GROUPED_CALL_MAX;
    void **dev_c = (void **)(dev + 2 * GROUPED_CALL_MAX);
    grouped_pointers_kernel<<<1, GROUPED_CALL_MAX, 0, impl->stream>>>(
        dev_a, dev_b, dev_c, *gp, (const char *)in, (size_t)sh->K * sizeof(bf16), (char *)out,
        (size_t)sh->M * sizeof(bf16));
    CUDA_CHECK_LAUNCH();
    cublasOperation_t ta[GROUPED_CALL_MAX], tb[GROUPED_CALL_MAX];
    int m[GROUPED_CALL_MAX], n[GROUPED_CALL_MAX], k[GROUPED_CALL_MAX];
    int lda[GROUPED_CALL_MAX], ldb[GROUPED_CALL_MAX], ldc[GROUPED_CALL_MAX];
    int size[GROUPED_CALL_MAX];
    float alpha[GROUPED_CALL_MAX], beta[GROUPED_CALL_MAX];
    for (int i = 0; i < gp->count; i++) {
        ta[i] = sh->transpose_w ? CUBLAS_OP_T : CUBLAS_OP_N;
        tb[i] = CUBLAS_OP_N;
        m[i] = sh->M, n[i] = rows[i], k[i] = sh->K;
        lda[i] = sh->lda, ldb[i] = sh->K, ldc[i] = sh->M;
        size[i] = 1; // each problem its own group: their row counts differ
        alpha[i] = 1.0f, beta[i] = 0.0f;
    }
    const int t = gemm_timer_start(be);
    const cublasStatus_t s = cublasGemmGroupedBatchedEx(
        impl->blas, ta, tb, m, n, k, alpha, (const void *const *)dev_a, CUDA_R_16BF, lda,
        (const void *const *)dev_b, CUDA_R_16BF, ldb, beta, dev_c, CUDA_R_16BF, ldc, gp->count, size,
        CUBLAS_COMPUTE_32F);
    gemm_timer_stop(be, t);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH) return false;
    CUBLAS_CHECK(s);
    return true;
}

static void grouped_one_by_one(Backend *be, const GroupedShape *sh, const GroupedProblems *gp,
                               const int *rows, void *out, const void *in) {
    for (int i = 0; i < gp->count; i++) {
        const size_t r = (size_t)gp->first_row[i];
        GemmOperand w = {gp->weight[i], CUDA_R_16BF, sh->transpose_w, sh->lda, 0};
        cuda_gemm(be, sh->M, rows[i], sh->K, 1.0f, w,
                  bf16_operand((const bf16 *)in + r * sh->K, false, sh->K), 0.0f,
                  (bf16 *)out + r * sh->M, CUDA_R_16BF, sh->M, 0, 1);
    }
}

static void grouped_products(Backend *be, const GroupedShape *sh, void *out, const void *in,
                             const void *const *weights, const int *row_begin, int groups) {
    GroupedProblems gp;
    int rows[GROUPED_CALL_MAX];
    gp.count = 0;
    for (int g = 0; g <= groups; g++) {
        const bool full = gp.count == GROUPED_CALL_MAX;
        if ((g == groups || full) && gp.count > 0) {
            if (!grouped_call(be, sh, &gp, rows, out, in))
                grouped_one_by_one(be, sh, &gp, rows, out, in);
            gp.count = 0;
        }
        if (g == groups) break;
        const int r = row_begin[g + 1] - row_begin[g];
        if (r <= 0) continue;
        gp.first_row[gp.count] = row_begin[g];
        gp.weight[gp.count] = weights[g];
        rows[gp.count++] = r;
    }
}

static void check_groups(const char *op, const int *row_begin, int groups, int IC, int OC) {
    GPT3D_CHECK(groups >= 0 && IC > 0 && OC > 0 && (groups == 0 || row_begin[0] >= 0),
                "%s: bad shape groups=%d IC=%d OC=%d", op, groups, IC, OC);
    for (int g = 0; g < groups; g++)
        GPT3D_CHECK(row_begin[g + 1] >= row_begin[g], "%s: group %d ends before it begins", op, g);
}

void cuda_grouped_matmul_forward(Backend *be, void *out, const void *inp,
                                 const void *const *weights, const int *row_begin, int groups,
                                 int IC, int OC, bool weight_in_major) {
    check_groups("grouped_matmul_forward", row_begin, groups, IC, OC);
    // y_cm [OC, n] = W_cm . x_cm: in-major W_cm is [OC, IC] (ld OC) as it is;
    // out-major W_cm is [IC, OC] (ld IC), transposed.
    const GroupedShape sh = {!weight_in_major, weight_in_major ? OC : IC, OC, IC};
    grouped_products(be, &sh, out, inp, weights, row_begin, groups);
}

void cuda_grouped_matmul_backward(Backend *be, void *dinp, float *const *dweights,
                                  const void *dout, const void *inp, const void *const *weights,
                                  const int *row_begin, int groups, int IC, int OC,
                                  bool weight_in_major) {
    check_groups("grouped_matmul_backward", row_begin, groups, IC, OC);
    if (dinp) {
        // dx_cm [IC, n] = W_cm' . g_cm: out-major W_cm [IC, OC] (ld IC) as it is;
        // in-major W_cm [OC, IC] (ld OC), transposed.
        const GroupedShape sh = {weight_in_major, weight_in_major ? OC : IC, IC, OC};
        grouped_products(be, &sh, dinp, dout, weights, row_begin, groups);
    }
    if (!dweights) return;
    for (int g = 0; g < groups; g++) {
        const int first = row_begin[g], rows = row_begin[g + 1] - first;
        if (rows > 0)
            cuda_matmul_backward(be, NULL, dweights[g], NULL, (const bf16 *)dout + (size_t)first * OC,
                                 (const bf16 *)inp + (size_t)first * IC, weights[g], rows, IC, OC,
                                 weight_in_major);
    }
}
