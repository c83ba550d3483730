/* core/host_memory.h — large host buffers and a small parallel-for.
 *
 * Contract. host_alloc_zeroed() returns zero-filled memory that costs
 * nothing until it is touched: large buffers come straight from the kernel
 * (anonymous mappings, zero-filled lazily, page by page) and ask for
 * transparent huge pages, small ones from calloc. Huge pages matter beyond
 * the TLB: every first touch of a 4 KiB page is a fault, and on virtual
 * machines a fault costs tens of microseconds, so a fresh 1 GiB buffer of
 * small pages can take seconds to fill (measured: bench/RESULTS.md).
 * host_free() takes the size the buffer was allocated with.
 *
 * host_parallel_for() splits [0, n) into contiguous ranges, one per thread,
 * and calls fn on each; the split never changes what fn computes for an
 * index, so results do not depend on the thread count. The thread count is
 * host_thread_count(): $GPT3D_THREADS when set (tests pin it to compare 1
 * and N threads), else the CPUs this process may run on.
 *
 * host_memory_available() is the smaller of the kernel's MemAvailable (/proc/meminfo) and the
 * room left under this process's cgroup limit (v2 memory.max - memory.current,
 * or v1 memory.limit_in_bytes - memory.usage_in_bytes), because a container
 * is killed at its cgroup limit long before the machine runs out. The
 * cgroup's usage counts its page cache, of which the inactive part (v2
 * inactive_file, v1 total_inactive_file in memory.stat) is reclaimed before
 * the limit kills anything, so it is not counted as used (the working set
 * that container runtimes report): a job that has read a large dataset
 * leaves its cgroup near the limit in cache alone. Returns
 * false when neither source can be read (then nothing should be refused on
 * its account). */
#ifndef GPT3D_CORE_HOST_MEMORY_H
#define GPT3D_CORE_HOST_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-filled, 64-byte aligned (page aligned when large); NULL when the
 * system has no memory left (the caller reports what it was for). */
void *host_alloc_zeroed(size_t bytes);
void host_free(void *ptr, size_t bytes);

int host_thread_count(void);

typedef void (*HostRangeFn)(void *ctx, size_t begin, size_t end);
/* Runs fn over [0, n) on up to `threads` threads (the caller's thread is one
 * of them); ranges are at least min_per_thread long, so small n runs
 * inline without creating threads. */
void host_parallel_for(size_t n, size_t min_per_thread, int threads, HostRangeFn fn, void *ctx);

bool host_memory_available(uint64_t *bytes);

/* The same, from files of the given paths (for tests); NULL skips a source. */
bool host_memory_available_from(const char *meminfo, const char *cgroup_max,
                                const char *cgroup_current, const char *cgroup_stat,
                                uint64_t *bytes);

#endif
