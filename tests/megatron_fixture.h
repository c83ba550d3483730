/* Megatron indexed datasets written byte by byte from the published MMIDIDX
 * layout (megatron/core/datasets/indexed_dataset.py: magic, version <Q>,
 * dtype code <B>, sequence count <Q>, document-index count <Q>, int32
 * lengths, int64 byte pointers, int64 document indices), independently of
 * the reader under test, plus a patcher for damaging them. Shared by the
 * converter's test, the data module's tests and the end-to-end fixture. */
#ifndef GPT3D_TESTS_MEGATRON_FIXTURE_H
#define GPT3D_TESTS_MEGATRON_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A dataset: sequences of token values and the document boundaries. */
typedef struct {
    int num_sequences;
    const int64_t *tokens;  /* all sequences back to back */
    const int32_t *lengths; /* per sequence */
    int num_doc_indices;
    const int64_t *doc_indices;
} MegatronFixture;

static inline void megatron_put_le(FILE *f, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        fputc((int)((v >> (8 * i)) & 0xff), f);
}

/* Writes PREFIX.bin and PREFIX.idx. Megatron's writer lays the sequences out
 * in order; `reversed` stores them in the .bin last first instead (pointers
 * follow), the layout of a writer that does not append sequentially. */
static inline void megatron_fixture_write_layout(const char *prefix, const MegatronFixture *src,
                                                 int dtype_code, int elem_size, int reversed) {
    char path[1024];
    int64_t *start = calloc((size_t)src->num_sequences + 1, sizeof *start);
    for (int s = 0; s < src->num_sequences; s++)
        start[s + 1] = start[s] + src->lengths[s];
    int64_t *pointer = calloc((size_t)src->num_sequences + 1, sizeof *pointer);
    snprintf(path, sizeof path, "%s.bin", prefix);
    FILE *bin = fopen(path, "wb");
    int64_t at = 0;
    for (int k = 0; k < src->num_sequences; k++) {
        int s = reversed ? src->num_sequences - 1 - k : k;
        pointer[s] = at;
        for (int64_t i = start[s]; i < start[s + 1]; i++)
            megatron_put_le(bin, (uint64_t)src->tokens[i], elem_size);
        at += (int64_t)src->lengths[s] * elem_size;
    }
    fclose(bin);
    snprintf(path, sizeof path, "%s.idx", prefix);
    FILE *idx = fopen(path, "wb");
    fwrite("MMIDIDX\0\0", 1, 9, idx);
    megatron_put_le(idx, 1, 8);
    megatron_put_le(idx, (uint64_t)dtype_code, 1);
    megatron_put_le(idx, (uint64_t)src->num_sequences, 8);
    megatron_put_le(idx, (uint64_t)src->num_doc_indices, 8);
    for (int s = 0; s < src->num_sequences; s++)
        megatron_put_le(idx, (uint32_t)src->lengths[s], 4);
    for (int s = 0; s < src->num_sequences; s++)
        megatron_put_le(idx, (uint64_t)pointer[s], 8);
    for (int d = 0; d < src->num_doc_indices; d++)
        megatron_put_le(idx, (uint64_t)src->doc_indices[d], 8);
    fclose(idx);
    free(start);
    free(pointer);
}

static inline void megatron_fixture_write(const char *prefix, const MegatronFixture *src,
                                          int dtype_code, int elem_size) {
    megatron_fixture_write_layout(prefix, src, dtype_code, elem_size, 0);
}

/* Overwrites `bytes` bytes at `offset` of a file with the little-endian v. */
static inline void megatron_fixture_patch(const char *path, long offset, uint64_t v, int bytes) {
    FILE *f = fopen(path, "r+b");
    fseek(f, offset, SEEK_SET);
    megatron_put_le(f, v, bytes);
    fclose(f);
}

#endif
