/* data/data_util.h — small helpers the data module's files share (internal
 * to data/).
 *
 * Contract. data_set_err formats a message into a caller's err buffer (the
 * data module reports errors that way, never by exiting); data_appendf
 * grows a heap string; data_last_not_above finds, in a non-decreasing array,
 * the last entry not above a value (a token's document, a sample's first
 * document), skipping runs of equal entries (empty documents). */
#ifndef GPT3D_DATA_UTIL_H
#define GPT3D_DATA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

void data_set_err(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);

/* Appends to *s (NULL: starts a string); the caller frees. */
void data_appendf(char **s, const char *fmt, ...) GPT3D_PRINTF(2, 3);

/* The last i in [0, n) with sorted[i] <= v; 0 when none is (n >= 1). */
int64_t data_last_not_above(const uint64_t *sorted, int64_t n, uint64_t v);

#endif
