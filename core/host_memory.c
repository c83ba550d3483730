#define _GNU_SOURCE /* sched_getaffinity, MADV_HUGEPAGE */
#include "core/host_memory.h"

#include <inttypes.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/errors.h"

/* Below this, calloc is as lazy as a mapping and wastes less. */
#define LARGE_BYTES ((size_t)2 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

void *host_alloc_zeroed(size_t bytes) {
    if (bytes < LARGE_BYTES) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes ? bytes : 1)) return NULL;
        memset(p, 0, bytes); /* small: clearing now costs little */
        return p;
    }
    /* Over-map by one huge page and trim, so the buffer starts on a huge-page
     * boundary and the kernel can back all of it with huge pages. */
    const size_t len = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (len < bytes || len > SIZE_MAX - HUGE_PAGE) return NULL;
    char *raw = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + HUGE_PAGE > p) munmap(p + len, (size_t)(raw + HUGE_PAGE - p));
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE); /* a hint: without THP the buffer still works */
#endif
    return p;
}

void host_free(void *ptr, size_t bytes) {
    if (!ptr) return;
    if (bytes < LARGE_BYTES) {
        free(ptr);
        return;
    }
    munmap(ptr, (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE);
}

int host_thread_count(void) {
    const char *env = getenv("GPT3D_THREADS");
    if (env && *env) {
        char *end = NULL;
        long n = strtol(env, &end, 10);
        GPT3D_CHECK(*end == '\0' && n >= 1 && n <= 1024,
                    "GPT3D_THREADS=%s: give a thread count between 1 and 1024", env);
        return (int)n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

typedef struct {
    HostRangeFn fn;
    void *ctx;
    size_t begin, end;
} RangeJob;

static void *run_range(void *arg) {
    RangeJob *j = arg;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

void host_parallel_for(size_t n, size_t min_per_thread, int threads, HostRangeFn fn, void *ctx) {
    if (n == 0) return;
    if (min_per_thread < 1) min_per_thread = 1;
    size_t t = threads > 1 ? (size_t)threads : 1;
    if (t > n / min_per_thread) t = n / min_per_thread;
    if (t <= 1) {
        fn(ctx, 0, n);
        return;
    }
    RangeJob *jobs = xcalloc(t, sizeof *jobs);
    pthread_t *ids = xcalloc(t, sizeof *ids);
    bool *started = xcalloc(t, sizeof *started);
    for (size_t i = 0; i < t; i++)
        jobs[i] = (RangeJob){fn, ctx, n / t * i + (i < n % t ? i : n % t),
                             n / t * (i + 1) + (i + 1 < n % t ? i + 1 : n % t)};
    /* Thread 0's range runs here; a thread that cannot be created runs its
     * range here too, so a short-of-threads system is only slower. */
    for (size_t i = 1; i < t; i++) started[i] = pthread_create(&ids[i], NULL, run_range, &jobs[i]) == 0;
    run_range(&jobs[0]);
    for (size_t i = 1; i < t; i++) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            run_range(&jobs[i]);
    }
    free(started);
    free(ids);
    free(jobs);
}

static bool read_meminfo_available(const char *path, uint64_t *bytes) {
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return false;
    char line[256];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        uint64_t kib;
        if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1) {
            *bytes = kib * 1024;
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* A cgroup file holds one number, or "max" for no limit (false then). */
static bool read_cgroup_number(const char *path, uint64_t *value) {
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return false;
    bool ok = fscanf(f, "%" SCNu64, value) == 1;
    fclose(f);
    return ok;
}

/* The cgroup's reclaimable page cache: the first of memory.stat's
 * "inactive_file" (v2) or "total_inactive_file" (v1, hierarchical), 0 when
 * the file or the key is missing (the usage then counts whole). */
static uint64_t read_cgroup_inactive_file(const char *path) {
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return 0;
    char line[256];
    uint64_t value = 0, v = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (sscanf(line, "inactive_file %" SCNu64, &v) == 1 ||
            sscanf(line, "total_inactive_file %" SCNu64, &v) == 1) {
            value = v;
            found = true;
        }
    }
    fclose(f);
    return value;
}

bool host_memory_available_from(const char *meminfo, const char *cgroup_max,
                                const char *cgroup_current, const char *cgroup_stat,
                                uint64_t *bytes) {
    uint64_t avail = 0, limit = 0, used = 0;
    bool have = read_meminfo_available(meminfo, &avail);
    /* v1 reports "no limit" as a huge number, which the min below absorbs. */
    if (read_cgroup_number(cgroup_max, &limit) && read_cgroup_number(cgroup_current, &used)) {
        const uint64_t cache = read_cgroup_inactive_file(cgroup_stat);
        used = used > cache ? used - cache : 0;
        const uint64_t room = limit > used ? limit - used : 0;
        if (!have || room < avail) avail = room;
        have = true;
    }
    if (have) *bytes = avail;
    return have;
}

bool host_memory_available(uint64_t *bytes) {
    uint64_t v2 = 0;
    static const char *const V1_LIMIT = "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                             *const V1_USAGE = "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                             *const V1_STAT = "/sys/fs/cgroup/memory/memory.stat";
    if (host_memory_available_from("/proc/meminfo", "/sys/fs/cgroup/memory.max",
                                   "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
                                   &v2)) {
        uint64_t v1 = v2;
        if (host_memory_available_from(NULL, V1_LIMIT, V1_USAGE, V1_STAT, &v1) && v1 < v2) v2 = v1;
        *bytes = v2;
        return true;
    }
    return host_memory_available_from(NULL, V1_LIMIT, V1_USAGE, V1_STAT, bytes);
}
