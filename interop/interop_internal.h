/* interop/interop_internal.h — helpers shared by the interop C files. */
#ifndef GPT3D_INTEROP_INTERNAL_H
#define GPT3D_INTEROP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/errors.h"
#include "model/transformer_config.h"

/* snprintf into err (no-op when err is NULL); always returns false so a
 * failing check reads `return interop_fail(err, err_size, ...)`. */
bool interop_fail(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);

/* The converters read and write little-endian files with memcpy. */
bool interop_host_is_little_endian(void);

/* Exact widening of a bfloat16 bit pattern. */
float interop_bf16_to_float(uint16_t bits);

/* mkdir -p. */
bool interop_make_dirs(const char *path, char *err, size_t err_size);

/* Writes bytes to path.tmp, fsyncs, renames to path. */
bool interop_write_file_atomic(const char *path, const void *data, size_t size, char *err,
                               size_t err_size);

/* fsync + fclose; false with errno's message naming path. */
bool interop_close_synced(FILE *f, const char *path, char *err, size_t err_size);


/* Whether s is the GPT-2 block (learned positions, LayerNorm, GELU, tied,
 * biases, multi-head): the one model GPT2LMHeadModel and llm.c hold; when
 * not, why (the first field that differs, both values). */
bool interop_is_gpt2_block(const TransformerConfig *s, char *why, size_t why_size);

#endif
