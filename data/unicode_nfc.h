/* data/unicode_nfc.h — Unicode Normalization Form C (private to data/), for
 * tokenizer.json files whose normalizer is NFC (Qwen 2).
 *
 * Contract: unicode_nfc() returns NULL when s[0, len) is ASCII (NFC leaves
 * it as it is), else a malloc'd NFC form of it, *out_len bytes: each maximal
 * valid UTF-8 run normalised, invalid bytes kept as they are. Thread-safe
 * (ICU's NFC instance is shared and immutable). */
#ifndef GPT3D_DATA_UNICODE_NFC_H
#define GPT3D_DATA_UNICODE_NFC_H

#include <stddef.h>

#include "data/bpe_core.h"

unsigned char *unicode_nfc(const unsigned char *s, size_t len, size_t *out_len);

#endif
