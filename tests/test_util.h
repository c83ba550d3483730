/* Tiny assertion helpers shared by the test programs. */
#ifndef GPT3D_TEST_UTIL_H
#define GPT3D_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a failed check ends the test: exit(1), or, defined before this header
 * is included, something else (an MPI test aborts the job so no rank waits
 * for the failed one: #define TEST_FAIL_EXIT() MPI_Abort(MPI_COMM_WORLD, 1)). */
#ifndef TEST_FAIL_EXIT
#define TEST_FAIL_EXIT() exit(1)
#endif

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
            TEST_FAIL_EXIT();                                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            TEST_FAIL_EXIT();                                                                      \
        }                                                                                          \
    } while (0)

/* The string s must contain needle; both are printed otherwise. */
#define CHECK_HAS(s, needle)                                                                       \
    do {                                                                                           \
        if (!strstr((s), (needle))) {                                                              \
            fprintf(stderr, "%s:%d: '%s' lacks '%s'\n", __FILE__, __LINE__, (s), (needle));       \
            TEST_FAIL_EXIT();                                                                      \
        }                                                                                          \
    } while (0)

/* Removes a test's scratch directory and everything in it. */
static inline void test_remove_dir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

#endif
