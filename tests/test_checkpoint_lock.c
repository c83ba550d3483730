/* tests/test_checkpoint_lock.c — ownership of --save and recovery without a
 * usable tracker, in one process (plus forked children as other runs).
 *
 * - the lock: a second holder is refused naming host and pid (in this
 *   process, and in a live child); a child SIGKILLed while holding it leaves
 *   a stale lock the next taker replaces with a note; a lock whose pid now
 *   names another process (pid reuse) is stale too; a lock of another host,
 *   or an empty lock file, is refused and left as it is; unlock removes the
 *   file and the directories the lock created when nothing was written;
 * - the probe: a --save under a regular file is refused naming --save;
 * - recovery (checkpoint_find_resume): every way the tracker can be unusable
 *   gives the newest complete checkpoint and a note saying why; a half
 *   written newest checkpoint is skipped; nothing complete is an error;
 * - checkpoint_check_save_target: later iterations (and the start one unless
 *   re-saved) are refused by name;
 * - a publish whose tracker write fails (the hook's ENOSPC) reports it, keeps
 *   both checkpoints, and recovery then resumes from the new one. */
#include "checkpoint/checkpoint.h"
#include "test_checkpoint_meta.h"
#include "test_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[256];

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void read_text(const char *path, char *out, size_t size) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

static void host_name(char *out, size_t size) {
    memset(out, 0, size);
    gethostname(out, size - 1);
}

static void test_lock_in_process(void) {
    char save[512], lockfile[600], err[2048], note[2048], host[256], want[300];
    snprintf(save, sizeof save, "%s/new/save", root);
    snprintf(lockfile, sizeof lockfile, "%s/.gpt3d_save.lock", save);
    CheckpointLock *a = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
    if (!a) fprintf(stderr, "%s\n", err);
    CHECK(a);
    CHECK(note[0] == '\0');
    CHECK(exists(lockfile));
    host_name(host, sizeof host);
    char text[1024];
    read_text(lockfile, text, sizeof text);
    snprintf(want, sizeof want, "host=%s\npid=%lld\n", host, (long long)getpid());
    CHECK_HAS(text, want);
    CheckpointLock *b = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
    CHECK(!b);
    CHECK_HAS(err, "in use by another gpt3d run");
    snprintf(want, sizeof want, "pid %lld on host %s", (long long)getpid(), host);
    CHECK_HAS(err, want);
    CHECK_HAS(err, "pass another --save directory");
    CHECK(exists(lockfile)); /* a refusal leaves the holder's lock alone */
    checkpoint_unlock(a);
    CHECK(!exists(lockfile));
    /* Nothing was written: the directories the lock made are gone again. */
    snprintf(want, sizeof want, "%s/new", root);
    CHECK(!exists(want));
    /* A directory that was there stays. */
    mkdir(want, 0777);
    a = checkpoint_lock_save_dir(want, note, sizeof note, err, sizeof err);
    CHECK(a);
    checkpoint_unlock(a);
    CHECK(exists(want));
}

/* A child takes the lock and waits; the parent is refused while it lives and
 * takes the stale lock over once it is SIGKILLed. */
static void test_lock_other_process(void) {
    char save[512], err[2048], note[2048], want[300];
    snprintf(save, sizeof save, "%s/shared", root);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        CheckpointLock *l = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
        char c = l ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(2);
        pause(); /* until killed */
        _exit(0);
    }
    char c = 0;
    CHECK(read(ready[0], &c, 1) == 1 && c == 'y');
    CheckpointLock *l = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
    CHECK(!l);
    snprintf(want, sizeof want, "pid %lld on host", (long long)child);
    CHECK_HAS(err, want);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    l = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
    if (!l) fprintf(stderr, "%s\n", err);
    CHECK(l);
    CHECK_HAS(note, "took over the stale lock of --save");
    CHECK_HAS(note, want);
    CHECK_HAS(note, "is no longer running");
    checkpoint_unlock(l);
    close(ready[0]);
    close(ready[1]);
}

static void test_lock_records(void) {
    char save[512], lockfile[600], err[2048], note[2048], host[256], text[1024], after[1024];
    snprintf(save, sizeof save, "%s/records", root);
    snprintf(lockfile, sizeof lockfile, "%s/.gpt3d_save.lock", save);
    mkdir(save, 0777);
    /* Another host: never taken over, the file to delete is named. */
    snprintf(text, sizeof text,
             "gpt3d save lock\nhost=gpt3d-test-other-host\npid=1\nproc_start=5\nsince=then\n");
    write_text(lockfile, text);
    CHECK(!checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err));
    CHECK_HAS(err, "locked by a gpt3d run on another host (pid 1 on host gpt3d-test-other-host, "
                   "since then)");
    CHECK_HAS(err, "if that run is gone, delete");
    CHECK_HAS(err, lockfile);
    read_text(lockfile, after, sizeof after);
    CHECK(strcmp(after, text) == 0);
    /* This host, our pid, but another start time: the pid was reused. */
    host_name(host, sizeof host);
    snprintf(text, sizeof text, "gpt3d save lock\nhost=%s\npid=%lld\nproc_start=1\nsince=then\n",
             host, (long long)getpid());
    write_text(lockfile, text);
    CheckpointLock *l = checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err);
    if (!l) fprintf(stderr, "%s\n", err);
    CHECK(l);
    CHECK_HAS(note, "took over the stale lock");
    checkpoint_unlock(l);
    /* A lock file that names nobody is refused, not guessed at. */
    write_text(lockfile, "");
    CHECK(!checkpoint_lock_save_dir(save, note, sizeof note, err, sizeof err));
    CHECK_HAS(err, "names no run (empty or damaged)");
    CHECK(exists(lockfile));
    unlink(lockfile);
}

static void test_probe(void) {
    char file[512], save[600], err[2048];
    snprintf(file, sizeof file, "%s/plain_file", root);
    write_text(file, "x");
    snprintf(save, sizeof save, "%s/ckpt", file);
    CHECK(!checkpoint_probe_save_dir(save, err, sizeof err));
    CHECK_HAS(err, "--save");
    CHECK_HAS(err, strerror(ENOTDIR));
    CHECK(!checkpoint_lock_save_dir(save, NULL, 0, err, sizeof err));
    CHECK_HAS(err, "--save");
}

/* ------------------------------------------------------------- recovery */

static const char *PARAM = "decoder.final_layernorm.weight";
enum { NUMEL = 8, WORLD = 2 };

static CheckpointMeta make_meta(int64_t iteration) { return test_checkpoint_meta(iteration, WORLD); }

typedef struct {
    int fail_errno;
} FaultCtx;

static int fault_hook(const char *point, void *ctx) {
    return strcmp(point, "tracker_write") == 0 ? ((FaultCtx *)ctx)->fail_errno : 0;
}

/* Two ranks, each half of one parameter. */
static bool save(const char *dir, int64_t iteration, FaultCtx *fault, char *err, size_t size) {
    float w[NUMEL];
    for (int i = 0; i < NUMEL; i++) w[i] = (float)(iteration * 100 + i);
    if (!checkpoint_begin_save(dir, iteration, err, size)) return false;
    for (int r = 0; r < WORLD; r++) {
        CheckpointInterval iv = {.name = PARAM, .ndim = 1, .shape = {NUMEL},
                                 .begin = r * NUMEL / WORLD, .end = (r + 1) * NUMEL / WORLD,
                                 .weight = w + r * NUMEL / WORLD};
        if (!checkpoint_write_rank(dir, iteration, r, &iv, 1, err, size)) return false;
    }
    CheckpointMeta m = make_meta(iteration);
    return checkpoint_write_meta(dir, &m, err, size) &&
           checkpoint_publish_with_hook(dir, iteration, fault ? fault_hook : NULL, fault, err,
                                        size);
}

static char tracker[600];

/* find_resume must pick `want` with a note containing every needle given. */
static void expect_resume(const char *dir, int64_t want, const char *n1, const char *n2) {
    char note[2048], err[2048];
    int64_t it = -1;
    CHECK_MSG(checkpoint_find_resume(dir, &it, note, sizeof note, err, sizeof err), "%s", err);
    CHECK_MSG(it == want, "find_resume picked %lld, want %lld (note: %s)", (long long)it,
              (long long)want, note);
    if (!n1) CHECK(note[0] == '\0');
    if (n1) CHECK_HAS(note, n1);
    if (n2) CHECK_HAS(note, n2);
}

static void test_recovery(void) {
    char dir[512], err[2048], note[2048], path[700];
    int64_t it = -1;
    snprintf(dir, sizeof dir, "%s/recover", root);
    snprintf(tracker, sizeof tracker, "%s/latest_checkpointed_iteration.txt", dir);
    mkdir(dir, 0777);
    CHECK(!checkpoint_find_resume(dir, &it, note, sizeof note, err, sizeof err));
    CHECK(err[0] == '\0'); /* empty: a fresh start */
    CHECK(save(dir, 1, NULL, err, sizeof err));
    CHECK(save(dir, 2, NULL, err, sizeof err));
    expect_resume(dir, 2, NULL, NULL);
    const char *newest = "resuming from the newest complete checkpoint iter_0000002";
    unlink(tracker);
    expect_resume(dir, 2, "no usable latest_checkpointed_iteration.txt in", "(it is missing)");
    expect_resume(dir, 2, newest, NULL);
    write_text(tracker, "");
    expect_resume(dir, 2, "(it is empty)", newest);
    write_text(tracker, "two\n");
    expect_resume(dir, 2, "(it is malformed)", newest);
    write_text(tracker, "7\n");
    expect_resume(dir, 2, "names iteration 7, whose directory does not exist", newest);
    write_text(tracker, "1\n");
    expect_resume(dir, 2, "names iteration 1, older than the complete iter_0000002", newest);
    /* A half-written newest: one rank file gone. */
    snprintf(path, sizeof path, "%s/iter_0000002/rank_00001.h5", dir);
    CHECK(unlink(path) == 0);
    expect_resume(dir, 1, "skipped the incomplete iter_0000002", "rank_00001.h5");
    write_text(tracker, "2\n");
    expect_resume(dir, 1, "names iteration 2, which is incomplete", "rank_00001.h5");
    expect_resume(dir, 1, "resuming from the newest complete checkpoint iter_0000001", NULL);
    /* Tools resolve alike. */
    CHECK(checkpoint_resolve_iteration(dir, false, 0, &it, note, sizeof note, err, sizeof err));
    CHECK(it == 1);
    CHECK_HAS(note, "iter_0000001");
    /* Nothing complete is an error naming the newest and why. */
    snprintf(path, sizeof path, "%s/iter_0000001/metadata.json", dir);
    CHECK(unlink(path) == 0);
    CHECK(!checkpoint_find_resume(dir, &it, note, sizeof note, err, sizeof err));
    CHECK_HAS(err, "holds no complete checkpoint");
    CHECK_HAS(err, "iter_0000002");
    /* A tracker without any checkpoint directory is not an empty directory. */
    snprintf(dir, sizeof dir, "%s/tracker_only", root);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/latest_checkpointed_iteration.txt", dir);
    write_text(path, "3\n");
    CHECK(!checkpoint_find_resume(dir, &it, note, sizeof note, err, sizeof err));
    CHECK_HAS(err, "iter_0000003");
}

static void test_save_target(void) {
    char dir[512], err[2048];
    snprintf(dir, sizeof dir, "%s/target", root);
    CHECK(checkpoint_check_save_target(dir, 0, false, err, sizeof err)); /* missing: fine */
    CHECK(save(dir, 3, NULL, err, sizeof err));
    CHECK(save(dir, 5, NULL, err, sizeof err));
    CHECK(checkpoint_check_save_target(dir, 5, true, err, sizeof err));
    CHECK(checkpoint_check_save_target(dir, 6, false, err, sizeof err));
    CHECK(!checkpoint_check_save_target(dir, 5, false, err, sizeof err));
    CHECK_HAS(err, "(iter_0000005)");
    CHECK(!checkpoint_check_save_target(dir, 4, true, err, sizeof err));
    CHECK_HAS(err, "(iter_0000005)");
    CHECK(!checkpoint_check_save_target(dir, 0, false, err, sizeof err));
    CHECK_HAS(err, "(iter_0000005, iter_0000003)");
    CHECK_HAS(err, "pass --load");
    CHECK_HAS(err, "another --save directory");
}

static void test_tracker_write_fails(void) {
    char dir[512], err[2048], path[700], text[64];
    snprintf(dir, sizeof dir, "%s/fulldisk", root);
    CHECK(save(dir, 4, NULL, err, sizeof err));
    FaultCtx full = {ENOSPC};
    CHECK(!save(dir, 8, &full, err, sizeof err));
    CHECK_HAS(err, strerror(ENOSPC));
    CHECK_HAS(err, "iter_0000008' is complete");
    snprintf(path, sizeof path, "%s/latest_checkpointed_iteration.txt", dir);
    read_text(path, text, sizeof text);
    CHECK(strcmp(text, "4") == 0);
    snprintf(path, sizeof path, "%s/latest_checkpointed_iteration.txt.tmp", dir);
    CHECK(!exists(path));
    CHECK(checkpoint_is_complete(dir, 4, err, sizeof err));
    CHECK(checkpoint_is_complete(dir, 8, err, sizeof err));
    expect_resume(dir, 8, "names iteration 4, older than the complete iter_0000008", NULL);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/gpt3d_test_lock_XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_lock_in_process();
    test_lock_other_process();
    test_lock_records();
    test_probe();
    test_recovery();
    test_save_target();
    test_tracker_write_fails();
    test_remove_dir(root);
    printf("test_checkpoint_lock: ok\n");
    return 0;
}
