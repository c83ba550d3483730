#include "core/errors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static Gpt3dExitHook exit_hook = NULL;

void gpt3d_set_exit_hook(Gpt3dExitHook hook) { exit_hook = hook; }

void gpt3d_exit(int code) {
    fflush(stdout);
    fflush(stderr);
    if (exit_hook) exit_hook(code);
    exit(code);
}

void gpt3d_fail_internal(const char *file, int line, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "gpt3d internal error at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    gpt3d_exit(1);
}

void gpt3d_fail_user(const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "error: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    gpt3d_exit(2);
}

void *gpt3d_malloc_checked(size_t bytes, const char *file, int line) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) gpt3d_fail_internal(file, line, "out of host memory allocating %zu bytes", bytes);
    return p;
}

void *gpt3d_calloc_checked(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        gpt3d_fail_internal(file, line, "out of host memory allocating %zu x %zu bytes", count,
                            size);
    return p;
}

void *gpt3d_realloc_checked(void *ptr, size_t bytes, const char *file, int line) {
    void *p = realloc(ptr, bytes ? bytes : 1);
    if (!p) gpt3d_fail_internal(file, line, "out of host memory reallocating to %zu bytes", bytes);
    return p;
}

char *gpt3d_strdup_checked(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = gpt3d_malloc_checked(n, file, line);
    memcpy(p, s, n);
    return p;
}
