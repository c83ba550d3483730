/* checkpoint/checkpoint_verify.c — whole-checkpoint checks for callers that
 * must name a checkpoint as good (the NaN guard, tools): coverage plus every
 * checksum, and a search for the newest checkpoint that passes them. */
#include "checkpoint/checkpoint_internal.h"

#include <stdlib.h>

bool checkpoint_verify_full(const char *load_dir, int64_t iteration, char *err, size_t err_size) {
    CheckpointReader *r = checkpoint_open(load_dir, iteration, err, err_size);
    if (!r) return false;
    CheckpointVerifyStats stats;
    bool ok = checkpoint_verify_coverage(r, err, err_size) &&
              checkpoint_verify_checksums(r, &stats, err, err_size);
    checkpoint_close(r);
    return ok;
}

bool checkpoint_find_verified(const char *load_dir, int64_t at_most, int64_t *found,
                              char *first_err, size_t first_err_size) {
    ckpt_set_err(first_err, first_err_size, "%s", "");
    int64_t *its = NULL;
    int n = 0;
    if (!ckpt_list_iterations(load_dir, &its, &n, first_err, first_err_size)) return false;
    bool ok = false, tried = false;
    char err[4096];
    for (int i = 0; !ok && i < n; i++) {
        if (its[i] > at_most) continue;
        ok = checkpoint_verify_full(load_dir, its[i], err, sizeof err);
        if (ok)
            *found = its[i];
        else if (!tried)
            ckpt_set_err(first_err, first_err_size, "%s", err);
        tried = true;
    }
    free(its);
    return ok;
}
