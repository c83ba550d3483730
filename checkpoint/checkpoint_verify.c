/* checkpoint/checkpoint_verify.c — whole-checkpoint checks for callers that
 * must name a checkpoint as good (the NaN guard, tools): coverage plus every
 * checksum, and a search for the newest checkpoint that passes them. */
#include "checkpoint/checkpoint_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool checkpoint_verify_full(const char *load_dir, int64_t iteration, char *err, size_t err_size) {
    CheckpointReader *r = checkpoint_open(load_dir, iteration, err, err_size);
    if (!r) return false;
    CheckpointVerifyStats stats;
    bool ok = checkpoint_verify_coverage(r, err, err_size) &&
              checkpoint_verify_checksums(r, &stats, err, err_size);
    checkpoint_close(r);
    return ok;
}

/* "iter_<7 or more digits>" exactly (no .tmp or .old suffix) -> iteration. */
static bool parse_iter_name(const char *name, int64_t *iteration) {
    if (strncmp(name, "iter_", 5) != 0) return false;
    const char *digits = name + 5, *p = digits;
    while (*p >= '0' && *p <= '9') p++;
    if (*p != '\0' || p - digits < 7 || p - digits > 18) return false;
    *iteration = strtoll(digits, NULL, 10);
    return true;
}

static int newest_first(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* The iterations of the iter_* directories of dir at or below at_most,
 * newest first; -1 when dir cannot be listed. */
static int list_iterations(const char *dir, int64_t at_most, int64_t **out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 0;
    *out = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t it;
        if (!parse_iter_name(e->d_name, &it) || it > at_most) continue;
        if (n == cap) *out = xrealloc(*out, (size_t)(cap = cap ? 2 * cap : 16) * sizeof **out);
        (*out)[n++] = it;
    }
    closedir(d);
    if (n > 1) qsort(*out, (size_t)n, sizeof **out, newest_first);
    return n;
}

bool checkpoint_find_verified(const char *load_dir, int64_t at_most, int64_t *found,
                              char *first_err, size_t first_err_size) {
    ckpt_set_err(first_err, first_err_size, "%s", "");
    int64_t *its = NULL;
    int n = list_iterations(load_dir, at_most, &its);
    if (n < 0) {
        ckpt_set_err(first_err, first_err_size, "cannot list '%s': %s", load_dir,
                     strerror(errno));
        return false;
    }
    bool ok = false;
    char err[4096];
    for (int i = 0; !ok && i < n; i++) {
        ok = checkpoint_verify_full(load_dir, its[i], err, sizeof err);
        if (ok)
            *found = its[i];
        else if (i == 0)
            ckpt_set_err(first_err, first_err_size, "%s", err);
    }
    free(its);
    return ok;
}
