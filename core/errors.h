/* core/errors.h — fatal-error reporting for gpt3d.
 *
 * Contract: every check reports the file and line of the failing call plus a
 * hint aimed at the user, then exits non-zero (under MPI the whole job is
 * aborted so no rank is left waiting in a collective). User input is never
 * checked with assert(): input errors go through gpt3d_fail_user(), which
 * prints one "error:" line without source coordinates, because the user needs
 * the flag or file and the fix, not our line number. */
#ifndef GPT3D_CORE_ERRORS_H
#define GPT3D_CORE_ERRORS_H

#include <stddef.h>
#include <stdio.h>

#if defined(__GNUC__)
#define GPT3D_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define GPT3D_NORETURN __attribute__((noreturn))
#else
#define GPT3D_PRINTF(a, b)
#define GPT3D_NORETURN
#endif

/* How a fatal error ends the process. The default calls exit(); programs
 * running under MPI install a hook that calls MPI_Abort so sibling ranks stop
 * too. Set once at start-up, before any other thread exists. */
typedef void (*Gpt3dExitHook)(int code);
void gpt3d_set_exit_hook(Gpt3dExitHook hook);

/* Internal error (a bug or a failed system call): file, line, message. */
GPT3D_NORETURN void gpt3d_fail_internal(const char *file, int line, const char *fmt, ...)
    GPT3D_PRINTF(3, 4);

/* User error (bad flag, bad file): one clear line, exit status 2. */
GPT3D_NORETURN void gpt3d_fail_user(const char *fmt, ...) GPT3D_PRINTF(1, 2);

/* Exit with `code` through the installed hook (used after a message was
 * already printed, e.g. by a collective error agreement). */
GPT3D_NORETURN void gpt3d_exit(int code);

#define GPT3D_CHECK(cond, ...)                                                   \
    do {                                                                         \
        if (!(cond)) gpt3d_fail_internal(__FILE__, __LINE__, __VA_ARGS__);       \
    } while (0)

#define GPT3D_FAIL(...) gpt3d_fail_internal(__FILE__, __LINE__, __VA_ARGS__)

/* Allocation helpers that never return NULL. */
void *gpt3d_malloc_checked(size_t bytes, const char *file, int line);
void *gpt3d_calloc_checked(size_t count, size_t size, const char *file, int line);
void *gpt3d_realloc_checked(void *ptr, size_t bytes, const char *file, int line);
char *gpt3d_strdup_checked(const char *s, const char *file, int line);
#define xmalloc(n) gpt3d_malloc_checked((n), __FILE__, __LINE__)
#define xcalloc(n, s) gpt3d_calloc_checked((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) gpt3d_realloc_checked((p), (n), __FILE__, __LINE__)
#define xstrdup(s) gpt3d_strdup_checked((s), __FILE__, __LINE__)

#endif
