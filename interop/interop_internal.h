/* interop/interop_internal.h — helpers shared by the interop C files. */
#ifndef GPT3D_INTEROP_INTERNAL_H
#define GPT3D_INTEROP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/errors.h"

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

/* Canonical parameter names. */
#define WORD_EMBEDDING "embedding.word_embeddings.weight"
#define POSITION_EMBEDDING "embedding.position_embeddings.weight"

#endif
