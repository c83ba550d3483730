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
 * and N threads), else the CPUs this process may run on. */
#ifndef GPT3D_CORE_HOST_MEMORY_H
#define GPT3D_CORE_HOST_MEMORY_H

#include <stddef.h>

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

#endif
