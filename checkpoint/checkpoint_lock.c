/* checkpoint/checkpoint_lock.c — one run owns its --save directory.
 *
 * The lock is <save>/.gpt3d_save.lock, a small text file naming its holder
 * (host, pid, the pid's kernel start time, wall-clock start), created with
 * O_CREAT|O_EXCL and held with flock() for the life of the run. Two
 * mechanisms because neither suffices alone: the file survives a crash, so it
 * can name the holder and be found stale afterwards, and O_EXCL works on
 * every filesystem; flock() dies with its process, so a live holder is
 * recognised even when the file's pid means nothing here (another host on a
 * filesystem with coherent locks), but Lustre without -o flock and some NFS
 * mounts refuse or fake it.
 *
 * A lock is stale only when its holder ran on this host and that process is
 * gone: nobody holds the file's flock (the holder's exit released it, even
 * while the process lingers as a zombie), or, where flock() is unsupported,
 * its pid is free or now belongs to a process that started at another time
 * (pids are reused quickly in containers, where a restarted job often gets
 * the very pid of the one that died). A stale lock is replaced by
 * rename of a complete new file, so no reader ever sees a half-written one;
 * the takeover holds flock() on the stale file meanwhile, so of two runs
 * taking over at the same moment, the second finds the first's fresh lock. A
 * lock naming another host is never taken over: we cannot see its processes. */
#include "checkpoint/checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOCK_FILE ".gpt3d_save.lock"
#define PROBE_FILE ".gpt3d_write_probe"
#define LOCK_TAG "gpt3d save lock"

struct CheckpointLock {
    int fd;
    char path[CKPT_PATH_MAX];
    /* What the lock created, to remove again when the run wrote nothing
     * there: a run refused at start leaves no --save directory behind. */
    char save_dir[CKPT_PATH_MAX], created[CKPT_PATH_MAX];
};

typedef struct {
    char host[256];
    long long pid;
    unsigned long long proc_start; /* 0: unknown */
    char since[64];
} LockHolder;

/* Field 22 of /proc/<pid>/stat: when the process started, in clock ticks
 * since boot. Together with the pid it names one process. */
static unsigned long long process_start_ticks(long long pid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses. */
    const char *p = strrchr(text, ')');
    if (!p) return 0;
    unsigned long long start = 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ') field++;
    if (field == 22 && sscanf(p, "%llu", &start) != 1) start = 0;
    return start;
}

static void describe_self(LockHolder *me) {
    memset(me, 0, sizeof *me);
    if (gethostname(me->host, sizeof me->host - 1) != 0) snprintf(me->host, sizeof me->host, "?");
    me->pid = (long long)getpid();
    me->proc_start = process_start_ticks(me->pid);
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm)) strftime(me->since, sizeof me->since, "%Y-%m-%d %H:%M:%S %Z", &tm);
}

static bool write_all(int fd, const char *text) {
    size_t n = strlen(text), done = 0;
    while (done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        done += (size_t)w;
    }
    return true;
}

static bool write_record(int fd, const LockHolder *me) {
    char text[1024];
    snprintf(text, sizeof text, "%s\nhost=%s\npid=%lld\nproc_start=%llu\nsince=%s\n", LOCK_TAG,
             me->host, me->pid, me->proc_start, me->since);
    return write_all(fd, text) && fsync(fd) == 0;
}

/* False when the file is not a lock record (empty: its writer died, or is
 * between create and write). */
static bool read_record(int fd, LockHolder *h) {
    memset(h, 0, sizeof *h);
    char text[2048];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0) return false;
    text[n] = '\0';
    if (strncmp(text, LOCK_TAG "\n", strlen(LOCK_TAG) + 1) != 0) return false;
    bool has_host = false, has_pid = false;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "host=", 5))
            has_host = snprintf(h->host, sizeof h->host, "%s", line + 5) > 0;
        else if (!strncmp(line, "pid=", 4))
            has_pid = sscanf(line + 4, "%lld", &h->pid) == 1 && h->pid > 0;
        else if (!strncmp(line, "proc_start=", 11))
            sscanf(line + 11, "%llu", &h->proc_start);
        else if (!strncmp(line, "since=", 6))
            snprintf(h->since, sizeof h->since, "%s", line + 6);
    }
    if (!h->since[0]) snprintf(h->since, sizeof h->since, "an unknown time");
    return has_host && has_pid;
}

typedef enum { FLOCK_TAKEN, FLOCK_BUSY, FLOCK_UNSUPPORTED } FlockState;

/* flock() where the filesystem has it (Lustre without -o flock and some NFS
 * mounts answer ENOSYS, ENOLCK or EOPNOTSUPP; the record decides there). */
static FlockState try_flock(int fd) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return FLOCK_TAKEN;
    return errno == EWOULDBLOCK ? FLOCK_BUSY : FLOCK_UNSUPPORTED;
}

/* The creator of a fresh lock file must hold its flock: a run looking at the
 * file may hold it for a moment, so wait that out (up to about a second). */
static bool flock_fresh(int fd) {
    for (int i = 0; i < 100; i++) {
        if (try_flock(fd) != FLOCK_BUSY) return true;
        usleep(10000);
    }
    return false;
}

static bool same_file(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* True when the holder ran here and is gone (see the top of the file).
 * `ours` is what our flock() of its file got: a holder keeps its flock for
 * life, so when we got it the holder has exited (or is a zombie, which
 * kill() still finds), and only without flock support do the pid and its
 * start time decide. */
static bool holder_is_gone(const LockHolder *h, const LockHolder *me, FlockState ours) {
    if (strcmp(h->host, me->host) != 0 || ours == FLOCK_BUSY) return false;
    if (ours == FLOCK_TAKEN) return true;
    if (kill((pid_t)h->pid, 0) != 0 && errno == ESRCH) return true;
    if (h->pid == me->pid && h->proc_start == me->proc_start) return false; /* ourselves */
    unsigned long long now = process_start_ticks(h->pid);
    return h->proc_start != 0 && now != 0 && now != h->proc_start;
}

static void refuse_held(const char *save_dir, const char *path, const LockHolder *h,
                        const LockHolder *me, char *err, size_t err_size) {
    if (strcmp(h->host, me->host) != 0)
        ckpt_set_err(err, err_size,
                     "--save %s is locked by a gpt3d run on another host (pid %lld on host %s, "
                     "since %s): if that run is gone, delete %s; otherwise pass another --save "
                     "directory",
                     save_dir, h->pid, h->host, h->since, path);
    else
        ckpt_set_err(err, err_size,
                     "--save %s is in use by another gpt3d run (pid %lld on host %s, since %s; "
                     "lock file %s): wait for it to finish or pass another --save directory",
                     save_dir, h->pid, h->host, h->since, path);
}

/* Writes our record into a temporary file, locks it and renames it over the
 * stale lock at `path`. */
/* rmdir of the directories the lock created, innermost first, as far as
 * they are empty (rmdir never removes anything else). */
static void remove_created(const CheckpointLock *lock) {
    if (!lock->created[0]) return;
    char path[CKPT_PATH_MAX];
    snprintf(path, sizeof path, "%s", lock->save_dir);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--) path[n - 1] = '\0';
    const size_t top = strlen(lock->created);
    while (strlen(path) >= top && rmdir(path) == 0) {
        char *slash = strrchr(path, '/');
        if (!slash || slash == path) break;
        *slash = '\0';
    }
}

static int take_over(const char *path, const LockHolder *me, char *err, size_t err_size) {
    char tmp[CKPT_PATH_MAX];
    if (!ckpt_path(tmp, sizeof tmp, err, err_size, "%s.%lld.tmp", path, me->pid)) return -1;
    unlink(tmp);
    int fd = open(tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) {
        ckpt_set_err(err, err_size, "cannot create '%s' to replace a stale lock: %s", tmp,
                     strerror(errno));
        return -1;
    }
    if (!flock_fresh(fd) || !write_record(fd, me) || rename(tmp, path) != 0) {
        ckpt_set_err(err, err_size, "cannot replace the stale lock '%s': %s", path,
                     strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

/* One attempt at the lock. Returns our fd, -1 with err on refusal, or -2 when
 * the lock file changed under us (released or replaced) and a retry is due. */
static int lock_once(const char *save_dir, const char *path, const LockHolder *me, char *note,
                     size_t note_size, char *err, size_t err_size) {
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd >= 0) {
        /* Locked before writing, so a reader that finds the file still empty
         * also finds it held. */
        if (flock_fresh(fd) && write_record(fd, me)) return fd;
        ckpt_set_err(err, err_size, "cannot write the lock file '%s' of --save %s: %s", path,
                     save_dir, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (errno != EEXIST) {
        ckpt_set_err(err, err_size,
                     "cannot create the lock file '%s' of --save %s: %s; pass a --save "
                     "directory you can write to",
                     path, save_dir, strerror(errno));
        return -1;
    }
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return -2; /* released meanwhile */
    if (fd < 0) {
        ckpt_set_err(err, err_size, "cannot open the lock file '%s' of --save %s: %s", path,
                     save_dir, strerror(errno));
        return -1;
    }
    const FlockState ours = try_flock(fd);
    if (!same_file(fd, path)) { /* replaced or released meanwhile */
        close(fd);
        return -2;
    }
    LockHolder h;
    const bool readable = read_record(fd, &h);
    if (!readable) {
        ckpt_set_err(err, err_size,
                     "--save %s has a lock file %s that names no run (empty or damaged): if no "
                     "gpt3d run uses %s, delete it; otherwise pass another --save directory",
                     save_dir, path, save_dir);
    } else if (!holder_is_gone(&h, me, ours)) {
        refuse_held(save_dir, path, &h, me, err, err_size);
    } else {
        int mine = take_over(path, me, err, err_size);
        if (mine >= 0)
            ckpt_set_err(note, note_size,
                         "took over the stale lock of --save %s: pid %lld on host %s (since %s) "
                         "is no longer running",
                         save_dir, h.pid, h.host, h.since);
        close(fd); /* releases our flock of the stale file only now */
        return mine;
    }
    close(fd);
    return -1;
}

/* checkpoint_probe_save_dir, telling what it created (see ckpt_make_save_dir). */
static bool probe(const char *save_dir, char *created, size_t created_size, char *err,
                  size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    if (!save_dir || !*save_dir) {
        ckpt_set_err(err, err_size, "no checkpoint directory: pass --save DIR");
        return false;
    }
    if (!ckpt_make_save_dir(save_dir, created, created_size, err, err_size)) return false;
    char path[CKPT_PATH_MAX];
    if (!ckpt_path(path, sizeof path, err, err_size, "%s/%s.%lld", save_dir, PROBE_FILE,
                   (long long)getpid()))
        return false;
    /* A few bytes, not an empty file: a full disk still has inodes. */
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write_all(fd, "gpt3d checks that --save is writable\n") && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (fd >= 0 && unlink(path) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        if (fd >= 0) unlink(path);
        ckpt_set_err(err, err_size,
                     "--save %s is not writable (writing a test file there failed: %s); pass a "
                     "--save directory with free space that you can write to",
                     save_dir, strerror(saved));
    }
    return ok;
}

CheckpointLock *checkpoint_lock_save_dir(const char *save_dir, char *note, size_t note_size,
                                         char *err, size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    ckpt_set_err(note, note_size, "%s", "");
    CheckpointLock *lock = xcalloc(1, sizeof *lock);
    lock->fd = -1;
    snprintf(lock->save_dir, sizeof lock->save_dir, "%s", save_dir);
    if (!probe(save_dir, lock->created, sizeof lock->created, err, err_size)) {
        free(lock);
        return NULL;
    }
    if (!ckpt_path(lock->path, sizeof lock->path, err, err_size, "%s/%s", save_dir, LOCK_FILE)) {
        free(lock);
        return NULL;
    }
    LockHolder me;
    describe_self(&me);
    /* A few rounds: each retry means another run released or replaced the
     * lock between our open and our look at it. */
    for (int round = 0; round < 5 && lock->fd == -1; round++) {
        int fd = lock_once(save_dir, lock->path, &me, note, note_size, err, err_size);
        if (fd == -1) break;
        if (fd >= 0) lock->fd = fd;
    }
    if (lock->fd < 0) {
        remove_created(lock);
        if (!err[0])
            ckpt_set_err(err, err_size, "--save %s: its lock file %s keeps changing; is another "
                                        "run starting on it?",
                         save_dir, lock->path);
        free(lock);
        return NULL;
    }
    /* The new entry must survive a crash of this host for the lock to hold. */
    if (!ckpt_fsync_path(save_dir, true, err, err_size)) {
        checkpoint_unlock(lock);
        return NULL;
    }
    return lock;
}

void checkpoint_unlock(CheckpointLock *lock) {
    if (!lock) return;
    /* Only our own file: if someone deleted and replaced it by hand, the new
     * one is not ours to remove. */
    if (same_file(lock->fd, lock->path)) unlink(lock->path);
    close(lock->fd);
    remove_created(lock);
    free(lock);
}

bool checkpoint_probe_save_dir(const char *save_dir, char *err, size_t err_size) {
    return probe(save_dir, NULL, 0, err, err_size);
}
