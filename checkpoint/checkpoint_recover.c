/* checkpoint/checkpoint_recover.c — which checkpoint a directory resumes
 * from, and which saves a run may make into its --save directory.
 *
 * The rule: resume from the newest complete checkpoint. Publish writes
 * latest_checkpointed_iteration.txt last, so the tracker is the fast path: it
 * names the newest iter_* directory in the normal case, and that one is
 * checked and used. It can lag behind or be lost: a run stopped between
 * publish's rename and its tracker write (a crash, a full disk) leaves a
 * complete iter_N that the tracker does not name yet, and users delete or
 * garble the file. Then the newest complete directory wins, and the caller is
 * told so in one line; a directory with checkpoints never reads as empty.
 * "Complete" is what a load needs: metadata.json, every rank file it
 * declares, and every canonical element covered exactly once. */
#include "checkpoint/checkpoint_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool checkpoint_is_complete(const char *dir, int64_t iteration, char *why, size_t why_size) {
    CheckpointReader *r = checkpoint_open(dir, iteration, why, why_size);
    if (!r) return false;
    const bool ok = checkpoint_verify_coverage(r, why, why_size);
    checkpoint_close(r);
    return ok;
}

/* Why the tracker was not used, for the one-line note. */
static void tracker_reason(CkptTracker state, int64_t named, const char *bad_why, bool named_listed,
                           const char *named_why, int64_t chosen, char *out, size_t size) {
    if (state == CKPT_TRACKER_MISSING)
        snprintf(out, size, "it is missing");
    else if (state == CKPT_TRACKER_BAD)
        snprintf(out, size, "%s", bad_why);
    else if (!named_listed)
        snprintf(out, size, "it names iteration %" PRId64 ", whose directory does not exist",
                 named);
    else if (named > chosen)
        snprintf(out, size, "it names iteration %" PRId64 ", which is incomplete: %s", named,
                 named_why);
    else
        snprintf(out, size,
                 "it names iteration %" PRId64 ", older than the complete iter_%07" PRId64
                 " (a save stopped before updating it)",
                 named, chosen);
}

bool checkpoint_find_resume(const char *load_dir, int64_t *iteration, char *note,
                            size_t note_size, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    ckpt_set_err(note, note_size, "%s", "");
    if (!load_dir || !*load_dir || !ckpt_is_dir(load_dir)) return false;
    int64_t named = -1;
    char bad_why[256];
    const CkptTracker state = ckpt_read_tracker(load_dir, &named, bad_why, sizeof bad_why);
    int64_t *its = NULL;
    int count = 0;
    if (!ckpt_list_iterations(load_dir, &its, &count, err, err_size)) return false;
    if (count == 0) {
        free(its);
        if (state == CKPT_TRACKER_MISSING) return false; /* no checkpoint at all */
        checkpoint_find_latest(load_dir, &named, err, err_size); /* its message */
        return false;
    }
    int64_t chosen = -1, newest_bad = -1;
    bool named_listed = false;
    char why[1024] = "", named_why[1024] = "", newest_why[1024] = "";
    for (int i = 0; i < count && chosen < 0; i++) {
        if (checkpoint_is_complete(load_dir, its[i], why, sizeof why)) {
            chosen = its[i];
            break;
        }
        if (newest_bad < 0) {
            newest_bad = its[i];
            snprintf(newest_why, sizeof newest_why, "%s", why);
        }
        if (state == CKPT_TRACKER_OK && its[i] == named) snprintf(named_why, sizeof named_why, "%s", why);
    }
    for (int i = 0; i < count; i++) named_listed |= state == CKPT_TRACKER_OK && its[i] == named;
    free(its);
    if (chosen < 0) {
        ckpt_set_err(err, err_size,
                     "--load %s holds no complete checkpoint: the newest, iter_%07" PRId64
                     ", is unusable (%s); restore its files, or move it away to resume from an "
                     "older one",
                     load_dir, newest_bad, newest_why);
        return false;
    }
    *iteration = chosen;
    char skipped[1400] = "";
    if (newest_bad > chosen)
        snprintf(skipped, sizeof skipped, "; skipped the incomplete iter_%07" PRId64 " (%s)",
                 newest_bad, newest_why);
    if (state == CKPT_TRACKER_OK && named == chosen) {
        if (skipped[0])
            ckpt_set_err(note, note_size, "resuming from iter_%07" PRId64 " of %s%s", chosen,
                         load_dir, skipped);
        return true;
    }
    char reason[1400];
    tracker_reason(state, named, bad_why, named_listed, named_why, chosen, reason, sizeof reason);
    ckpt_set_err(note, note_size,
                 "no usable %s in %s (%s): resuming from the newest complete checkpoint "
                 "iter_%07" PRId64 "%s",
                 CKPT_LATEST_FILE, load_dir, reason, chosen, newest_bad == named ? "" : skipped);
    return true;
}

bool checkpoint_check_save_target(const char *save_dir, int64_t start_iteration,
                                  bool resaving_start, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!ckpt_is_dir(save_dir)) return true;
    int64_t *its = NULL;
    int count = 0;
    if (!ckpt_list_iterations(save_dir, &its, &count, err, err_size)) return false;
    char names[1024] = "";
    size_t n = 0;
    int clashes = 0;
    for (int i = 0; i < count; i++) {
        if (its[i] < start_iteration || (its[i] == start_iteration && resaving_start)) continue;
        if (clashes < 4 && n < sizeof names)
            n += (size_t)snprintf(names + n, sizeof names - n, "%siter_%07" PRId64,
                                  clashes ? ", " : "", its[i]);
        clashes++;
    }
    free(its);
    if (clashes == 0) return true;
    if (clashes > 4 && n < sizeof names)
        snprintf(names + n, sizeof names - n, " and %d more", clashes - 4);
    ckpt_set_err(err, err_size,
                 "--save %s already holds checkpoints this run did not write (%s), at or after "
                 "iteration %" PRId64 " where this run starts, and saving would overwrite them: "
                 "to continue that run pass --load %s, or pass another --save directory",
                 save_dir, names, start_iteration, save_dir);
    return false;
}

bool checkpoint_resolve_iteration(const char *load_dir, bool given, int64_t requested,
                                  int64_t *iteration, char *note, size_t note_size, char *err,
                                  size_t err_size) {
    ckpt_set_err(note, note_size, "%s", "");
    if (given && requested < 0) {
        ckpt_set_err(err, err_size, "--iteration must be >= 0 (got %" PRId64 ")", requested);
        return false;
    }
    if (!ckpt_is_dir(load_dir)) {
        ckpt_set_err(err, err_size,
                     "--load '%s' is not a directory, so it holds no checkpoint (give the --save "
                     "directory of a training run)",
                     load_dir);
        return false;
    }
    if (given) {
        *iteration = requested;
        return true;
    }
    if (checkpoint_find_resume(load_dir, iteration, note, note_size, err, err_size)) return true;
    /* With no complete checkpoint a tool still opens the one the tracker
     * names: showing what is wrong with it is what the user needs then. */
    char unused[512];
    if (err[0] && checkpoint_find_latest(load_dir, iteration, unused, sizeof unused)) {
        ckpt_set_err(note, note_size,
                     "%s holds no complete checkpoint: opening iter_%07" PRId64
                     ", which %s names, as it is",
                     load_dir, *iteration, CKPT_LATEST_FILE);
        ckpt_set_err(err, err_size, "%s", "");
        return true;
    }
    if (err[0]) {
        size_t n = strlen(err);
        snprintf(err + n, err_size - n, " (or pick a checkpoint with --iteration N)");
    } else {
        ckpt_set_err(err, err_size,
                     "--load '%s' holds no checkpoint (no iter_* directory); give the --save "
                     "directory of a run that saved, or --iteration N",
                     load_dir);
    }
    return false;
}
