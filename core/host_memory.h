/* core/host_memory.h — how much host memory this process can still use.
 *
 * Contract. The smaller of the kernel's MemAvailable (/proc/meminfo) and the
 * room left under this process's cgroup limit (v2 memory.max - memory.current,
 * or v1 memory.limit_in_bytes - memory.usage_in_bytes), because a container
 * is killed at its cgroup limit long before the machine runs out. Returns
 * false when neither source can be read (then nothing should be refused on
 * its account). */
#ifndef GPT3D_CORE_HOST_MEMORY_H
#define GPT3D_CORE_HOST_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

bool host_memory_available(uint64_t *bytes);

/* The same, from files of the given paths (for tests); NULL skips a source. */
bool host_memory_available_from(const char *meminfo, const char *cgroup_max,
                                const char *cgroup_current, uint64_t *bytes);

#endif
