// backend/cuda/cuda_embedding.cu — word and position embeddings, forward and
// backward.
//
// The word-embedding backward adds many token rows into few table rows, in
// an order that must not depend on timing. It groups the tokens by table row
// on the host (a sort of N ids, microseconds for a micro-batch) and then runs
// one thread per (table row, column) that adds that row's tokens in
// increasing token order, the CPU backend's order: no atomics, and each table
// element gets bitwise the same sum as on the CPU when the inputs are equal.
// The price is one device-to-host copy of the ids and a wait per call; a
// device-side sort can replace it when it shows in profiles.
#include <cstdlib>

#include "backend/cuda/cuda_internal.cuh"

static __global__ void embedding_forward_kernel(bf16 *out, const int32_t *tokens, const bf16 *table,
                                                int N, int C, int vocab_begin, int vocab_end) {
    const size_t n_elems = (size_t)N * (size_t)C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_elems;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (size_t)C, c = i % (size_t)C;
        int id = tokens[n];
        bool owned = id >= vocab_begin && id < vocab_end;
        // Zero for ids another tensor-parallel rank owns.
        out[i] = owned ? table[(size_t)(id - vocab_begin) * C + c] : to_bf16(0.0f);
    }
}

void cuda_embedding_forward(Backend *be, void *out, const int32_t *tokens, const void *table, int N,
                            int C, int vocab_begin, int vocab_end) {
    GPT3D_CHECK(N >= 0 && C > 0 && vocab_begin <= vocab_end,
                "embedding_forward: bad shape N=%d C=%d vocab [%d, %d)", N, C, vocab_begin,
                vocab_end);
    size_t n = (size_t)N * (size_t)C;
    if (!n) return;
    embedding_forward_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, tokens, (const bf16 *)table, N, C, vocab_begin, vocab_end);
    CUDA_CHECK_LAUNCH();
}

// Table rows touched by a micro-batch, as segments of a token list:
// segment u adds tokens order[seg_start[u] .. seg_start[u+1]) into table row
// seg_row[u]; within a segment the tokens are in increasing position.
typedef struct {
    int32_t *seg_start; // [segments + 1]
    int32_t *seg_row;   // [segments]
    int32_t *order;     // [tokens owned]
    int segments;
} RowSegments;

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Groups the owned tokens of host_tokens[0, N) by table row. `keys` has room
// for N int64; the segments are written into `out` (room for 3N + 1 int32).
static RowSegments group_by_row(const int32_t *host_tokens, int N, int vocab_begin, int vocab_end,
                                int64_t *keys, int32_t *out) {
    int owned = 0;
    for (int n = 0; n < N; n++) {
        int id = host_tokens[n];
        if (id < vocab_begin || id >= vocab_end) continue;
        // (row, position) pairs are unique, so sorting the packed keys is a
        // stable sort by row.
        keys[owned++] = ((int64_t)(id - vocab_begin) << 32) | (int64_t)n;
    }
    qsort(keys, (size_t)owned, sizeof(int64_t), compare_i64);
    RowSegments s;
    s.seg_start = out;
    s.seg_row = out + owned + 1;
    s.order = out + 2 * owned + 1;
    s.segments = 0;
    for (int k = 0; k < owned; k++) {
        int32_t row = (int32_t)(keys[k] >> 32);
        s.order[k] = (int32_t)(keys[k] & 0xffffffff);
        if (k == 0 || row != s.seg_row[s.segments - 1]) {
            s.seg_start[s.segments] = k;
            s.seg_row[s.segments] = row;
            s.segments++;
        }
    }
    s.seg_start[s.segments] = owned;
    return s;
}

// grid (segments, column blocks): one thread per (table row, column).
static __global__ void embedding_backward_kernel(float *dtable, const bf16 *dout,
                                                 const int32_t *seg_start, const int32_t *seg_row,
                                                 const int32_t *order, int C) {
    const int u = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *d = dtable + (size_t)seg_row[u] * C + c;
    float acc = *d;
    for (int k = seg_start[u]; k < seg_start[u + 1]; k++)
        acc += to_f32(dout[(size_t)order[k] * C + c]);
    *d = acc;
}

void cuda_embedding_backward(Backend *be, float *dtable, const void *dout, const int32_t *tokens,
                             int N, int C, int vocab_begin, int vocab_end) {
    GPT3D_CHECK(N >= 0 && C > 0 && vocab_begin <= vocab_end,
                "embedding_backward: bad shape N=%d C=%d vocab [%d, %d)", N, C, vocab_begin,
                vocab_end);
    if (N == 0) return;
    cudaStream_t stream = stream_of(be);
    // Host scratch: ids [N] int32 | keys [N] int64 | segments [3N + 1] int32.
    const size_t ids_bytes = align256((size_t)N * sizeof(int32_t));
    const size_t keys_bytes = align256((size_t)N * sizeof(int64_t));
    const size_t seg_bytes = (3 * (size_t)N + 1) * sizeof(int32_t);
    char *host = (char *)cuda_host_scratch(be, ids_bytes + keys_bytes + seg_bytes);
    int32_t *host_tokens = (int32_t *)host;
    CUDA_CHECK(cudaMemcpyAsync(host_tokens, tokens, (size_t)N * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    int32_t *host_segments = (int32_t *)(host + ids_bytes + keys_bytes);
    RowSegments s = group_by_row(host_tokens, N, vocab_begin, vocab_end,
                                 (int64_t *)(host + ids_bytes), host_segments);
    if (s.segments == 0) return; // this rank owns none of the ids
    // The three arrays sit back to back: one upload, same offsets on the device.
    const int owned = s.seg_start[s.segments];
    const size_t used = (2 * (size_t)owned + 1 + (size_t)owned) * sizeof(int32_t);
    int32_t *dev = (int32_t *)cuda_scratch(be, used);
    CUDA_CHECK(cudaMemcpyAsync(dev, host_segments, used, cudaMemcpyHostToDevice, stream));
    const int32_t *d_seg_start = dev + (s.seg_start - host_segments);
    const int32_t *d_seg_row = dev + (s.seg_row - host_segments);
    const int32_t *d_order = dev + (s.order - host_segments);
    dim3 grid((unsigned)s.segments, ceil_div_u((size_t)C, THREADS));
    embedding_backward_kernel<<<grid, THREADS, 0, stream>>>(dtable, (const bf16 *)dout, d_seg_start,
                                                            d_seg_row, d_order, C);
    CUDA_CHECK_LAUNCH();
    // The upload reads the host scratch: keep it untouched until it is done.
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

// ---- position embedding -------------------------------------------------------------

static __global__ void position_add_kernel(bf16 *out, const bf16 *pos, size_t n, size_t plane) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = to_bf16(to_f32(out[i]) + to_f32(pos[i % plane]));
}

// One thread per (t, c): adds the B sequences in order b = 0, 1, ...
static __global__ void position_backward_kernel(float *dpos, const bf16 *dout, int B, size_t plane) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < plane;
         j += (size_t)gridDim.x * blockDim.x) {
        float acc = dpos[j];
        for (int b = 0; b < B; b++) acc += to_f32(dout[(size_t)b * plane + j]);
        dpos[j] = acc;
    }
}

void cuda_position_embedding_add(Backend *be, void *out, const void *pos, int B, int T, int C) {
    GPT3D_CHECK(B >= 0 && T >= 0 && C > 0, "position_embedding_add: bad shape B=%d T=%d C=%d", B,
                T, C);
    size_t plane = (size_t)T * (size_t)C, n = (size_t)B * plane;
    if (!n) return;
    position_add_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>((bf16 *)out, (const bf16 *)pos,
                                                                     n, plane);
    CUDA_CHECK_LAUNCH();
}

void cuda_position_embedding_backward(Backend *be, float *dpos, const void *dout, int B, int T,
                                      int C) {
    GPT3D_CHECK(B >= 0 && T >= 0 && C > 0,
                "position_embedding_backward: bad shape B=%d T=%d C=%d", B, T, C);
    size_t plane = (size_t)T * (size_t)C;
    if (!plane || !B) return;
    position_backward_kernel<<<grid_for(plane), THREADS, 0, stream_of(be)>>>(
        dpos, (const bf16 *)dout, B, plane);
    CUDA_CHECK_LAUNCH();
}

// ---- position embedding with explicit positions (--reset-position-ids) ---------------

static __global__ void position_add_ids_kernel(bf16 *out, const bf16 *pos, const int32_t *ids,
                                               size_t n, int C) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / (size_t)C, c = i % (size_t)C;
        out[i] = to_bf16(to_f32(out[i]) + to_f32(pos[(size_t)ids[row] * C + c]));
    }
}

// One thread per column c walks the rows in order, so every position's sum
// is added in row order (the CPU backend's) without atomics. Only C threads
// work: fine for a gradient taken once per micro-batch; a per-position
// segmented sum can replace it if it shows in profiles.
static __global__ void position_backward_ids_kernel(float *dpos, const bf16 *dout,
                                                    const int32_t *ids, int N, int C) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
        for (int n = 0; n < N; n++)
            dpos[(size_t)ids[n] * C + c] += to_f32(dout[(size_t)n * C + c]);
}

void cuda_position_embedding_add_ids(Backend *be, void *out, const void *pos,
                                     const int32_t *position_ids, int N, int C) {
    GPT3D_CHECK(N >= 0 && C > 0, "position_embedding_add_ids: bad shape N=%d C=%d", N, C);
    const size_t n = (size_t)N * (size_t)C;
    if (!n) return;
    position_add_ids_kernel<<<grid_for(n), THREADS, 0, stream_of(be)>>>(
        (bf16 *)out, (const bf16 *)pos, position_ids, n, C);
    CUDA_CHECK_LAUNCH();
}

void cuda_position_embedding_backward_ids(Backend *be, float *dpos, const void *dout,
                                          const int32_t *position_ids, int N, int C) {
    GPT3D_CHECK(N >= 0 && C > 0, "position_embedding_backward_ids: bad shape N=%d C=%d", N, C);
    if (!N) return;
    position_backward_ids_kernel<<<ceil_div_u((size_t)C, THREADS), THREADS, 0, stream_of(be)>>>(
        dpos, (const bf16 *)dout, position_ids, N, C);
    CUDA_CHECK_LAUNCH();
}
