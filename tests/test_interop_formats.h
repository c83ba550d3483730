/* Test-side safetensors and llm.c file handling, written independently of
 * interop/ so the tests do not check the converters with their own code. */
#ifndef GPT3D_TEST_INTEROP_FORMATS_H
#define GPT3D_TEST_INTEROP_FORMATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_MAX_TENSORS 512

typedef struct {
    char name[160];
    char dtype[16];
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
    unsigned char *data; /* points into the file image (read) or owned (write) */
} TfTensor;

typedef struct {
    unsigned char *image; /* the whole file */
    size_t size;
    uint64_t header_len;
    char *header_text;
    TfTensor tensors[TF_MAX_TENSORS];
    int count;
    char metadata_format[32];
} TfFile;

/* Reads and parses a safetensors file; exits with a message on any defect. */
void tf_read(TfFile *f, const char *path);
void tf_free(TfFile *f);
TfTensor *tf_find(TfFile *f, const char *name);
int64_t tf_numel(const TfTensor *t);
float tf_f32(const TfTensor *t, int64_t i);

/* Writes tensors (their data pointers, dtype sizes implied) as safetensors. */
void tf_write(const char *path, const TfTensor *tensors, int count);

/* Reference widening, written again here. */
float tf_bf16_to_f32(uint16_t b);
float tf_f16_to_f32(uint16_t h);
uint16_t tf_f32_to_bf16_truncate(float f);
uint16_t tf_f32_to_f16_truncate(float f);

/* Whole file into memory (exits on failure). */
unsigned char *tf_slurp(const char *path, size_t *size);
void tf_spit(const char *path, const void *data, size_t size);

/* Builds a malformed or alternative copy of the HF directory src in dst. */
void tf_make_variant(const char *src_dir, const char *dst_dir, const char *kind);
/* Every tensor of the low-precision file equals the f32 file's, widened. */
void tf_check_widened(const char *low_dir, const char *f32_dir);

#endif
