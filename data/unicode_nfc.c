/* data/unicode_nfc.c — Unicode NFC for tokenizer.json normalizers, by ICU
 * (contract in data/unicode_nfc.h). */
#include "data/unicode_nfc.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "core/errors.h"

/* ASCII is its own NFC, and the common case. */
static bool all_ascii(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80) return false;
    return true;
}

/* NFC of one valid UTF-8 run appended to out; false when ICU fails. */
static bool nfc_run(const UNormalizer2 *nfc, const unsigned char *s, size_t n, char **out,
                    size_t *used, size_t *cap) {
    UErrorCode e = U_ZERO_ERROR;
    int32_t units = 0;
    u_strFromUTF8(NULL, 0, &units, (const char *)s, (int32_t)n, &e);
    if (e != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(e)) return false;
    UChar *in = xmalloc(((size_t)units + 1) * sizeof *in);
    e = U_ZERO_ERROR;
    u_strFromUTF8(in, units + 1, NULL, (const char *)s, (int32_t)n, &e);
    int32_t room = units + 16;
    UChar *norm = xmalloc((size_t)room * sizeof *norm);
    int32_t got = U_SUCCESS(e) ? unorm2_normalize(nfc, in, units, norm, room, &e) : 0;
    if (e == U_BUFFER_OVERFLOW_ERROR) { /* NFC grew the text: got is the length it needs */
        e = U_ZERO_ERROR;
        norm = xrealloc(norm, ((size_t)got + 1) * sizeof *norm);
        got = unorm2_normalize(nfc, in, units, norm, got + 1, &e);
    }
    bool ok = U_SUCCESS(e);
    int32_t bytes = 0;
    if (ok) {
        u_strToUTF8(NULL, 0, &bytes, norm, got, &e);
        if (e == U_BUFFER_OVERFLOW_ERROR) e = U_ZERO_ERROR;
        ok = U_SUCCESS(e);
    }
    if (ok) {
        if (*used + (size_t)bytes + 1 > *cap) *out = xrealloc(*out, *cap = *used + (size_t)bytes + 1);
        u_strToUTF8(*out + *used, bytes + 1, NULL, norm, got, &e);
        *used += (size_t)bytes;
        ok = U_SUCCESS(e);
    }
    free(in);
    free(norm);
    return ok;
}

unsigned char *unicode_nfc(const unsigned char *s, size_t len, size_t *out_len) {
    if (all_ascii(s, len)) return NULL;
    UErrorCode e = U_ZERO_ERROR;
    const UNormalizer2 *nfc = unorm2_getNFCInstance(&e);
    GPT3D_CHECK(U_SUCCESS(e), "ICU has no NFC data (%s)", u_errorName(e));
    char *out = xmalloc(len + 1);
    size_t used = 0, cap = len + 1;
    for (size_t at = 0; at < len;) {
        size_t valid = bpe_valid_utf8_prefix(s + at, len - at);
        if (valid == 0) { /* an invalid byte passes as it is */
            if (used + 2 > cap) out = xrealloc(out, cap *= 2);
            out[used++] = (char)s[at++];
            continue;
        }
        GPT3D_CHECK(nfc_run(nfc, s + at, valid, &out, &used, &cap), "ICU could not normalise text");
        at += valid;
    }
    *out_len = used;
    return (unsigned char *)out;
}
