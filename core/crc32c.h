/* core/crc32c.h — CRC32C (Castagnoli), as used by iSCSI, ext4 and SSE4.2.
 *
 * Contract: crc32c(0, data, n) is the standard CRC32C of the bytes
 * (crc32c(0, "123456789", 9) == 0xE3069283); passing a previous result as
 * `crc` continues it over more bytes. The x86 SSE4.2 instruction is used when
 * the CPU has it (checked at run time, so a binary built for any x86-64 level
 * runs anywhere), else a table; both give identical results.
 * crc32c_blocks checksums consecutive fixed-size blocks independently: the
 * unit a partial read can verify without touching the rest of the data, and
 * independent chains run three at a time on the CPU's CRC unit. */
#ifndef GPT3D_CORE_CRC32C_H
#define GPT3D_CORE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t n);

/* out[i] = crc32c(0, block i) for the ceil(n / block_bytes) blocks of data;
 * the last block may be shorter. block_bytes > 0. */
void crc32c_blocks(const void *data, size_t n, size_t block_bytes, uint32_t *out);

/* The two implementations, for tests and benchmarks. crc32c_hardware may be
 * called only when crc32c_hardware_available(). */
bool crc32c_hardware_available(void);
uint32_t crc32c_hardware(uint32_t crc, const void *data, size_t n);
uint32_t crc32c_table(uint32_t crc, const void *data, size_t n);

#endif
