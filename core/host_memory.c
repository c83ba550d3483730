#include "core/host_memory.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

bool host_memory_available_from(const char *meminfo, const char *cgroup_max,
                                const char *cgroup_current, uint64_t *bytes) {
    uint64_t avail = 0, limit = 0, used = 0;
    bool have = read_meminfo_available(meminfo, &avail);
    /* v1 reports "no limit" as a huge number, which the min below absorbs. */
    if (read_cgroup_number(cgroup_max, &limit) && read_cgroup_number(cgroup_current, &used)) {
        const uint64_t room = limit > used ? limit - used : 0;
        if (!have || room < avail) avail = room;
        have = true;
    }
    if (have) *bytes = avail;
    return have;
}

bool host_memory_available(uint64_t *bytes) {
    uint64_t v2 = 0;
    if (host_memory_available_from("/proc/meminfo", "/sys/fs/cgroup/memory.max",
                                   "/sys/fs/cgroup/memory.current", &v2)) {
        uint64_t v1 = v2;
        if (host_memory_available_from(NULL, "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                       "/sys/fs/cgroup/memory/memory.usage_in_bytes", &v1) &&
            v1 < v2)
            v2 = v1;
        *bytes = v2;
        return true;
    }
    return host_memory_available_from(NULL, "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                      "/sys/fs/cgroup/memory/memory.usage_in_bytes", bytes);
}
