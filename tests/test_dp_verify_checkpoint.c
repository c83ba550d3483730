/* Helper of test_checkpoint_crash.sh: checks that a --save directory holds
 * only complete checkpoints under their final names.
 * Usage: test_dp_verify_checkpoint SAVE_DIR
 * Every entry named exactly iter_NNNNNNN (temporary .tmp directories are
 * allowed to be incomplete, that is their purpose) must open, record its own
 * iteration and cover every canonical element of every parameter exactly once;
 * latest_checkpointed_iteration.txt must name one of them. Prints
 * "latest N" and exits 0, or names the first problem and exits 1. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"

/* The iteration of a final checkpoint directory name, or -1 for any other
 * entry (iter_0000010.tmp, iter_0000010.old, latest_checkpointed_iteration.txt). */
static long long final_dir_iteration(const char *name) {
    if (strncmp(name, "iter_", 5) || strlen(name) != 12) return -1;
    long long it = 0;
    for (const char *c = name + 5; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        it = 10 * it + (*c - '0');
    }
    return it;
}

static int verify_one(const char *save_dir, long long iteration) {
    char err[2048] = "";
    CheckpointReader *r = checkpoint_open(save_dir, iteration, err, sizeof err);
    if (!r) {
        fprintf(stderr, "%s: iteration %lld does not open: %s\n", save_dir, iteration, err);
        return 1;
    }
    int bad = 0;
    if (checkpoint_meta(r)->iteration != iteration) {
        fprintf(stderr, "%s: directory of iteration %lld records iteration %lld\n", save_dir,
                iteration, (long long)checkpoint_meta(r)->iteration);
        bad = 1;
    } else if (!checkpoint_verify_coverage(r, err, sizeof err)) {
        fprintf(stderr, "%s: iteration %lld is incomplete: %s\n", save_dir, iteration, err);
        bad = 1;
    }
    checkpoint_close(r);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SAVE_DIR\n", argv[0]);
        return 2;
    }
    const char *save_dir = argv[1];
    DIR *d = opendir(save_dir);
    if (!d) {
        fprintf(stderr, "%s: cannot open the directory\n", save_dir);
        return 1;
    }
    int bad = 0, finals = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const long long it = final_dir_iteration(e->d_name);
        if (it < 0) continue;
        finals++;
        bad |= verify_one(save_dir, it);
    }
    closedir(d);

    char err[2048] = "";
    int64_t latest = -1;
    if (!checkpoint_find_latest(save_dir, &latest, err, sizeof err)) {
        fprintf(stderr, "%s: no latest checkpoint: %s\n", save_dir, err[0] ? err : "none recorded");
        return 1;
    }
    char dir[4096];
    checkpoint_iter_dir(dir, sizeof dir, save_dir, latest);
    DIR *ld = opendir(dir);
    if (!ld) {
        fprintf(stderr, "%s: latest names iteration %lld but %s is missing\n", save_dir,
                (long long)latest, dir);
        return 1;
    }
    closedir(ld);
    if (bad) return 1;
    printf("latest %lld (%d complete checkpoint(s))\n", (long long)latest, finals);
    return 0;
}
