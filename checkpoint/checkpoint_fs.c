/* checkpoint/checkpoint_fs.c — the directory protocol of a checkpoint save.
 *
 * A save of iteration I runs:
 *   begin_save:  mkdir -p <save>; rm -r <save>/iter_I.tmp; mkdir it
 *   every rank:  <save>/iter_I.tmp/rank_%05d.h5 (fsync'd by its writer)
 *   one rank:    <save>/iter_I.tmp/metadata.json
 *   publish:     fsync the files and iter_I.tmp; if iter_I exists, rename it
 *                to iter_I.old; rename iter_I.tmp -> iter_I; fsync <save>;
 *                write latest.tmp, fsync, rename over latest; fsync <save>;
 *                rm -r iter_I.old
 * Every step before the rename over `latest` leaves `latest` naming the
 * previous checkpoint, whose directory is untouched — except when that
 * previous checkpoint is iteration I itself: between the two renames it exists
 * only as iter_I.old, so readers fall back to the .old name, and the next
 * begin_save puts it back (or drops it once iter_I is complete again). */
#include "checkpoint/checkpoint_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ckpt_set_err(char *err, size_t err_size, const char *fmt, ...) {
    if (!err || err_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

bool ckpt_path(char *out, size_t size, char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        ckpt_set_err(err, err_size, "checkpoint path too long (over %zu bytes) starting '%.200s'",
                     size - 1, out);
        return false;
    }
    return true;
}

void checkpoint_iter_dir(char *out, size_t size, const char *save_dir, int64_t iteration) {
    snprintf(out, size, "%s/iter_%07" PRId64, save_dir, iteration);
}

bool ckpt_iter_path(char *out, size_t size, const char *save_dir, int64_t iteration,
                    const char *suffix, char *err, size_t err_size) {
    return ckpt_path(out, size, err, err_size, "%s/iter_%07" PRId64 "%s", save_dir, iteration,
                     suffix);
}

bool ckpt_rank_path(char *out, size_t size, const char *dir, int rank, char *err, size_t err_size) {
    return ckpt_path(out, size, err, err_size, "%s/rank_%05d.h5", dir, rank);
}

bool ckpt_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool ckpt_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool ckpt_resolve_iter_dir(char *out, size_t size, const char *dir, int64_t iteration) {
    if (!ckpt_iter_path(out, size, dir, iteration, "", NULL, 0)) return false;
    if (ckpt_is_dir(out)) return true;
    if (!ckpt_iter_path(out, size, dir, iteration, CKPT_ASIDE_SUFFIX, NULL, 0)) return false;
    return ckpt_is_dir(out);
}

bool ckpt_fsync_path(const char *path, bool is_dir, char *err, size_t err_size) {
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) {
        ckpt_set_err(err, err_size, "cannot open '%s' to flush it to disk: %s", path,
                     strerror(errno));
        return false;
    }
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    /* Some filesystems cannot fsync a directory; their renames are durable
     * by other means, so that is not an error. */
    if (rc != 0 && !(is_dir && (saved == EINVAL || saved == ENOTSUP))) {
        ckpt_set_err(err, err_size, "cannot flush '%s' to disk: %s", path, strerror(saved));
        return false;
    }
    return true;
}

/* rm -r of one entry of parent_fd, never following symbolic links. */
static bool remove_tree_at(int parent_fd, const char *name) {
    struct stat st;
    if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT;
    if (!S_ISDIR(st.st_mode)) return unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT;
    int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return false;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        ok = remove_tree_at(fd, e->d_name);
    }
    closedir(d);
    return ok && (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT);
}

static bool remove_tree(const char *path, char *err, size_t err_size) {
    errno = 0;
    if (remove_tree_at(AT_FDCWD, path)) return true;
    ckpt_set_err(err, err_size, "cannot remove '%s': %s", path, strerror(errno));
    return false;
}

bool ckpt_make_save_dir(const char *save_dir, char *created, size_t created_size, char *err,
                        size_t err_size) {
    char path[CKPT_PATH_MAX];
    if (created && created_size) created[0] = '\0';
    if (!ckpt_path(path, sizeof path, err, err_size, "%s", save_dir)) return false;
    for (char *p = path + 1;; p++) {
        bool last = *p == '\0';
        if (*p != '/' && !last) continue;
        char saved = *p;
        *p = '\0';
        const bool made = mkdir(path, 0777) == 0;
        if (made && created && created_size && !created[0])
            snprintf(created, created_size, "%s", path);
        if (!made && errno != EEXIST) {
            ckpt_set_err(err, err_size,
                         "cannot create checkpoint directory '%s' for --save %s: %s; pass a "
                         "--save directory you can write to",
                         path, save_dir, strerror(errno));
            return false;
        }
        *p = saved;
        if (last) break;
    }
    if (!ckpt_is_dir(save_dir)) {
        ckpt_set_err(err, err_size, "--save %s exists but is not a directory", save_dir);
        return false;
    }
    if (access(save_dir, W_OK | X_OK) != 0) {
        ckpt_set_err(err, err_size,
                     "--save directory '%s' is not writable: %s; pass a --save directory you "
                     "can write to",
                     save_dir, strerror(errno));
        return false;
    }
    return true;
}

bool ckpt_parse_iter_name(const char *name, const char *suffix, int64_t *iteration) {
    const char *p = name;
    if (strncmp(p, "iter_", 5) != 0) return false;
    p += 5;
    const char *digits = p;
    while (*p >= '0' && *p <= '9')
        p++;
    size_t nd = (size_t)(p - digits);
    if (nd < 7 || nd > 18 || strcmp(p, suffix) != 0) return false;
    *iteration = strtoll(digits, NULL, 10);
    return true;
}

/* Finishes the publish of an earlier run that crashed between its renames:
 * an aside copy is put back when its final name is missing, else dropped. */
static bool recover_aside_copies(const char *save_dir, char *err, size_t err_size) {
    DIR *d = opendir(save_dir);
    if (!d) {
        ckpt_set_err(err, err_size, "cannot list --save directory '%s': %s", save_dir,
                     strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        int64_t it;
        if (!ckpt_parse_iter_name(e->d_name, CKPT_ASIDE_SUFFIX, &it)) continue;
        char aside[CKPT_PATH_MAX], final[CKPT_PATH_MAX];
        ok = ckpt_iter_path(aside, sizeof aside, save_dir, it, CKPT_ASIDE_SUFFIX, err, err_size) &&
             ckpt_iter_path(final, sizeof final, save_dir, it, "", err, err_size);
        if (!ok) break;
        if (ckpt_is_dir(final)) {
            ok = remove_tree(aside, err, err_size);
        } else if (rename(aside, final) != 0) {
            ckpt_set_err(err, err_size, "cannot restore '%s' to '%s': %s", aside, final,
                         strerror(errno));
            ok = false;
        }
    }
    closedir(d);
    return ok;
}

static bool check_save_args(const char *save_dir, int64_t iteration, char *err, size_t err_size) {
    if (!save_dir || !*save_dir) {
        ckpt_set_err(err, err_size, "no checkpoint directory: pass --save DIR");
        return false;
    }
    if (iteration < 0) {
        ckpt_set_err(err, err_size, "cannot checkpoint negative iteration %" PRId64, iteration);
        return false;
    }
    return true;
}

bool checkpoint_begin_save(const char *save_dir, int64_t iteration, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!check_save_args(save_dir, iteration, err, err_size)) return false;
    if (!ckpt_make_save_dir(save_dir, NULL, 0, err, err_size)) return false;
    if (!recover_aside_copies(save_dir, err, err_size)) return false;
    char tmp[CKPT_PATH_MAX];
    if (!ckpt_iter_path(tmp, sizeof tmp, save_dir, iteration, CKPT_TMP_SUFFIX, err, err_size))
        return false;
    if (!remove_tree(tmp, err, err_size)) return false;
    if (mkdir(tmp, 0777) != 0) {
        ckpt_set_err(err, err_size, "cannot create '%s' (in --save %s): %s", tmp, save_dir,
                     strerror(errno));
        return false;
    }
    return true;
}

/* Refuses to publish a save some rank did not finish: metadata.json and one
 * file per rank of its world must be there. */
static bool check_save_complete(const char *tmp, char *err, size_t err_size) {
    char path[CKPT_PATH_MAX];
    if (!ckpt_path(path, sizeof path, err, err_size, "%s/%s", tmp, CKPT_META_FILE)) return false;
    if (!ckpt_is_file(path)) {
        ckpt_set_err(err, err_size, "cannot publish '%s': it has no %s (write it first)", tmp,
                     CKPT_META_FILE);
        return false;
    }
    CheckpointMeta meta;
    if (!ckpt_meta_read_file(path, &meta, err, err_size)) return false;
    for (int r = 0; r < meta.world_size; r++) {
        if (!ckpt_rank_path(path, sizeof path, tmp, r, err, err_size)) return false;
        if (!ckpt_is_file(path)) {
            ckpt_set_err(err, err_size,
                         "cannot publish '%s': rank file '%s' is missing (rank %d did not "
                         "write its part of the %d-rank checkpoint)",
                         tmp, path, r, meta.world_size);
            return false;
        }
    }
    return true;
}

static bool fsync_dir_and_files(const char *dir, char *err, size_t err_size) {
    DIR *d = opendir(dir);
    if (!d) {
        ckpt_set_err(err, err_size, "cannot list '%s': %s", dir, strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        char path[CKPT_PATH_MAX];
        ok = ckpt_path(path, sizeof path, err, err_size, "%s/%s", dir, e->d_name);
        if (ok && ckpt_is_file(path)) ok = ckpt_fsync_path(path, false, err, err_size);
    }
    closedir(d);
    return ok && ckpt_fsync_path(dir, true, err, err_size);
}

/* Megatron's format: the iteration in decimal, nothing else. */
static bool write_latest(const char *save_dir, int64_t iteration, CheckpointPublishHook hook,
                         void *ctx, char *err, size_t err_size) {
    char path[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX];
    if (!ckpt_path(path, sizeof path, err, err_size, "%s/%s", save_dir, CKPT_LATEST_FILE) ||
        !ckpt_path(tmp, sizeof tmp, err, err_size, "%s%s", path, CKPT_TMP_SUFFIX))
        return false;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ckpt_set_err(err, err_size, "cannot create '%s': %s", tmp, strerror(errno));
        return false;
    }
    const int injected = hook ? hook("tracker_write", ctx) : 0;
    bool ok = !injected && fprintf(f, "%" PRId64, iteration) > 0 && fflush(f) == 0 &&
              fsync(fileno(f)) == 0;
    int saved = injected ? injected : errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        ckpt_set_err(err, err_size, "cannot write '%s': %s", tmp, strerror(saved));
        unlink(tmp);
        return false;
    }
    if (rename(tmp, path) != 0) {
        ckpt_set_err(err, err_size, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
        return false;
    }
    return ckpt_fsync_path(save_dir, true, err, err_size);
}

bool checkpoint_publish(const char *save_dir, int64_t iteration, char *err, size_t err_size) {
    return checkpoint_publish_with_hook(save_dir, iteration, NULL, NULL, err, err_size);
}

bool checkpoint_publish_with_hook(const char *save_dir, int64_t iteration,
                                  CheckpointPublishHook hook, void *ctx, char *err,
                                  size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!check_save_args(save_dir, iteration, err, err_size)) return false;
    char tmp[CKPT_PATH_MAX], final[CKPT_PATH_MAX], aside[CKPT_PATH_MAX];
    if (!ckpt_iter_path(tmp, sizeof tmp, save_dir, iteration, CKPT_TMP_SUFFIX, err, err_size) ||
        !ckpt_iter_path(final, sizeof final, save_dir, iteration, "", err, err_size) ||
        !ckpt_iter_path(aside, sizeof aside, save_dir, iteration, CKPT_ASIDE_SUFFIX, err, err_size))
        return false;
    if (!ckpt_is_dir(tmp)) {
        ckpt_set_err(err, err_size, "cannot publish: '%s' does not exist (no save in progress)",
                     tmp);
        return false;
    }
    if (!check_save_complete(tmp, err, err_size)) return false;
    if (!fsync_dir_and_files(tmp, err, err_size)) return false;
    if (ckpt_is_dir(final)) {
        if (!remove_tree(aside, err, err_size)) return false;
        if (rename(final, aside) != 0) {
            ckpt_set_err(err, err_size, "cannot move the older '%s' aside: %s", final,
                         strerror(errno));
            return false;
        }
    }
    if (rename(tmp, final) != 0) {
        ckpt_set_err(err, err_size, "cannot rename '%s' to '%s': %s", tmp, final, strerror(errno));
        return false;
    }
    if (!ckpt_fsync_path(save_dir, true, err, err_size)) return false;
    if (hook) hook("after_rename", ctx);
    if (!write_latest(save_dir, iteration, hook, ctx, err, err_size)) {
        /* The checkpoint itself is safe; say so, and how the next run finds it. */
        size_t n = strlen(err);
        snprintf(err + n, err_size - n,
                 "; '%s' is complete, but %s still names the previous checkpoint: free space "
                 "and resume with --load %s, which recovers the newest complete checkpoint",
                 final, CKPT_LATEST_FILE, save_dir);
        return false;
    }
    return remove_tree(aside, err, err_size);
}

static bool parse_latest(const char *text, int64_t *iteration) {
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    const char *digits = p;
    while (*p >= '0' && *p <= '9')
        p++;
    size_t nd = (size_t)(p - digits);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (nd == 0 || nd > 18 || *p != '\0') return false;
    *iteration = strtoll(digits, NULL, 10);
    return true;
}

CkptTracker ckpt_read_tracker(const char *dir, int64_t *iteration, char *why, size_t why_size) {
    ckpt_set_err(why, why_size, "%s", "");
    char path[CKPT_PATH_MAX];
    if (!ckpt_path(path, sizeof path, why, why_size, "%s/%s", dir, CKPT_LATEST_FILE))
        return CKPT_TRACKER_BAD;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return CKPT_TRACKER_MISSING;
        ckpt_set_err(why, why_size, "it cannot be read: %s", strerror(errno));
        return CKPT_TRACKER_BAD;
    }
    char text[64];
    size_t n = fread(text, 1, sizeof text - 1, f);
    bool read_error = ferror(f) != 0;
    fclose(f);
    text[n] = '\0';
    if (read_error || n == sizeof text - 1 || strlen(text) != n || !parse_latest(text, iteration)) {
        ckpt_set_err(why, why_size, "%s", n == 0 && !read_error ? "it is empty" : "it is malformed");
        return CKPT_TRACKER_BAD;
    }
    return CKPT_TRACKER_OK;
}

bool checkpoint_tracker_is_release(const char *load_dir) {
    char path[CKPT_PATH_MAX], text[16] = "";
    if (!load_dir || !ckpt_path(path, sizeof path, NULL, 0, "%s/%s", load_dir, CKPT_LATEST_FILE))
        return false;
    FILE *f = fopen(path, "r");
    if (!f) return false;
    const size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t end = n;
    while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' '))
        text[--end] = '\0';
    return !strcmp(text, "release");
}

bool checkpoint_find_latest(const char *load_dir, int64_t *iteration, char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!load_dir || !*load_dir) return false;
    char path[CKPT_PATH_MAX], why[256];
    if (!ckpt_path(path, sizeof path, err, err_size, "%s/%s", load_dir, CKPT_LATEST_FILE))
        return false;
    int64_t it = 0;
    switch (ckpt_read_tracker(load_dir, &it, why, sizeof why)) {
    case CKPT_TRACKER_MISSING: return false;
    case CKPT_TRACKER_BAD:
        ckpt_set_err(err, err_size,
                     "'%s' is unusable (%s): expected an iteration number in decimal (as "
                     "Megatron writes it); fix or delete the file",
                     path, why);
        return false;
    case CKPT_TRACKER_OK: break;
    }
    char dir[CKPT_PATH_MAX];
    if (!ckpt_resolve_iter_dir(dir, sizeof dir, load_dir, it)) {
        checkpoint_iter_dir(dir, sizeof dir, load_dir, it);
        ckpt_set_err(err, err_size,
                     "'%s' names iteration %" PRId64 " but its directory '%s' does not exist", path,
                     it, dir);
        return false;
    }
    *iteration = it;
    return true;
}

static int compare_desc(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* The one listing of a directory's checkpoints (see checkpoint_internal.h). */
bool ckpt_list_iterations(const char *dir, int64_t **out, int *count, char *err,
                            size_t err_size) {
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) {
        ckpt_set_err(err, err_size, "cannot list checkpoint directory '%s': %s", dir,
                     strerror(errno));
        return false;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t it;
        if (!ckpt_parse_iter_name(e->d_name, "", &it) &&
            !ckpt_parse_iter_name(e->d_name, CKPT_ASIDE_SUFFIX, &it))
            continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            *out = xrealloc(*out, (size_t)cap * sizeof **out);
        }
        (*out)[(*count)++] = it;
    }
    closedir(d);
    qsort(*out, (size_t)*count, sizeof **out, compare_desc);
    int kept = 0; /* iter_N and iter_N.old are one checkpoint */
    for (int i = 0; i < *count; i++)
        if (kept == 0 || (*out)[kept - 1] != (*out)[i]) (*out)[kept++] = (*out)[i];
    *count = kept;
    return true;
}
