/* Small file-system and error helpers of the interop module. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interop/interop_internal.h"

bool interop_fail(char *err, size_t err_size, const char *fmt, ...) {
    if (err && err_size) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, err_size, fmt, args);
        va_end(args);
    }
    return false;
}

bool interop_host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

float interop_bf16_to_float(uint16_t bits) {
    const uint32_t wide = (uint32_t)bits << 16; /* bf16 is fp32's upper half */
    float f;
    memcpy(&f, &wide, sizeof f);
    return f;
}

bool interop_make_dirs(const char *path, char *err, size_t err_size) {
    char *p = xstrdup(path);
    bool ok = true;
    for (char *s = p + 1; ok; s++) {
        const bool end = *s == '\0';
        if (*s != '/' && !end) continue;
        *s = '\0';
        struct stat st;
        if (stat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                ok = interop_fail(err, err_size, "'%s' exists and is not a directory", p);
        } else if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            ok = interop_fail(err, err_size, "cannot create directory '%s': %s", p,
                              strerror(errno));
        }
        if (end) break;
        *s = '/';
    }
    free(p);
    return ok;
}

bool interop_close_synced(FILE *f, const char *path, char *err, size_t err_size) {
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) return interop_fail(err, err_size, "cannot write '%s': %s", path, strerror(saved));
    return true;
}

bool interop_write_file_atomic(const char *path, const void *data, size_t size, char *err,
                               size_t err_size) {
    size_t n = strlen(path) + 8;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    bool ok = f != NULL;
    if (!ok) interop_fail(err, err_size, "cannot create '%s': %s", tmp, strerror(errno));
    if (ok && size && fwrite(data, 1, size, f) != size) {
        interop_fail(err, err_size, "cannot write '%s': %s", tmp, strerror(errno));
        fclose(f);
        ok = false;
    } else if (ok) {
        ok = interop_close_synced(f, tmp, err, err_size);
    }
    if (ok && rename(tmp, path) != 0)
        ok = interop_fail(err, err_size, "cannot rename '%s' to '%s': %s", tmp, path,
                          strerror(errno));
    if (!ok) remove(tmp);
    free(tmp);
    return ok;
}

bool interop_is_gpt2_block(const TransformerConfig *s, char *why, size_t why_size) {
    TransformerConfig gpt2 = *s;
    transformer_config_set_gpt2_variant(&gpt2);
    char ours[TRANSFORMER_FIELD_TEXT_MAX], theirs[TRANSFORMER_FIELD_TEXT_MAX];
    const char *what = transformer_config_difference(s, &gpt2, ours, theirs, sizeof ours);
    if (what) snprintf(why, why_size, "it has %s %s, GPT-2 has %s", what, ours, theirs);
    return what == NULL;
}
