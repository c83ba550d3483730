/* CRC32C: known vectors (RFC 3720 B.4 and the "123456789" check value), the
 * hardware and table paths equal on random data of odd lengths and
 * alignments, continuation, block checksums equal to per-block CRCs, and the
 * throughput of each path (printed, not asserted: machines differ). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/timer.h"
#include "test_util.h"

typedef uint32_t (*CrcFn)(uint32_t, const void *, size_t);

static void check_vectors(CrcFn fn, const char *label) {
    unsigned char buf[48];
    CHECK_MSG(fn(0, "123456789", 9) == 0xE3069283u, "%s: check value", label);
    CHECK_MSG(fn(0, "", 0) == 0, "%s: empty input", label);
    memset(buf, 0, 32);
    CHECK_MSG(fn(0, buf, 32) == 0x8A9136AAu, "%s: 32 zero bytes", label);
    memset(buf, 0xff, 32);
    CHECK_MSG(fn(0, buf, 32) == 0x62A8AB43u, "%s: 32 0xff bytes", label);
    for (int i = 0; i < 32; i++) buf[i] = (unsigned char)i;
    CHECK_MSG(fn(0, buf, 32) == 0x46DD794Eu, "%s: 0..31", label);
    for (int i = 0; i < 32; i++) buf[i] = (unsigned char)(31 - i);
    CHECK_MSG(fn(0, buf, 32) == 0x113FDB5Cu, "%s: 31..0", label);
}

/* xorshift: fixed, portable test data. */
static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void check_paths_agree(unsigned char *data, size_t cap) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < cap; i++) data[i] = (unsigned char)next(&s);
    const int hw = crc32c_hardware_available();
    for (int trial = 0; trial < 400; trial++) {
        size_t off = next(&s) % 61, len = (next(&s) % (cap - 64)) | 1; /* odd lengths */
        if (trial < 40) len = (size_t)trial * 2 + 1;                     /* short tails */
        uint32_t t = crc32c_table(0, data + off, len);
        CHECK(crc32c(0, data + off, len) == t);
        if (hw) CHECK_MSG(crc32c_hardware(0, data + off, len) == t, "length %zu offset %zu", len, off);
        size_t cut = len / 3;
        CHECK(crc32c(crc32c(0, data + off, cut), data + off + cut, len - cut) == t);
    }
}

static void check_blocks(unsigned char *data, size_t cap) {
    const size_t sizes[] = {1, 7, 8, 4096, 65536 * 4, 65536 * 4 * 5 + 12};
    const size_t blocks[] = {1, 3, 8, 1000, 65536 * 4};
    uint32_t *out = malloc((cap + 1) * sizeof *out);
    CHECK(out);
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (size_t b = 0; b < sizeof blocks / sizeof *blocks; b++) {
            size_t n = sizes[a] < cap ? sizes[a] : cap - 1, bs = blocks[b];
            if (n / bs > 4096) continue;
            size_t count = (n + bs - 1) / bs;
            out[count] = 0xDEADBEEFu;
            crc32c_blocks(data + 1, n, bs, out);
            CHECK(out[count] == 0xDEADBEEFu); /* writes exactly count entries */
            for (size_t i = 0; i < count; i++) {
                size_t len = i + 1 < count ? bs : n - i * bs;
                CHECK_MSG(out[i] == crc32c_table(0, data + 1 + i * bs, len),
                          "n %zu block %zu index %zu", n, bs, i);
            }
        }
    free(out);
}

static void measure(const char *label, const unsigned char *data, size_t n, int blocks) {
    uint32_t sink = 0, crcs[256];
    double t0 = timer_now_s();
    int reps = 0;
    do {
        if (blocks)
            crc32c_blocks(data, n, 65536 * 4, crcs), sink ^= crcs[0];
        else
            sink ^= label[0] == 't' ? crc32c_table(0, data, n) : crc32c(0, data, n);
        reps++;
    } while (timer_now_s() - t0 < 0.2);
    double gbs = (double)n * reps / (timer_now_s() - t0) / 1e9;
    printf("crc32c %s: %.2f GB/s (%08x)\n", label, gbs, sink);
}

int main(void) {
    check_vectors(crc32c_table, "table");
    check_vectors(crc32c, "dispatch");
    if (crc32c_hardware_available()) check_vectors(crc32c_hardware, "hardware");
    printf("crc32c: hardware path %s\n", crc32c_hardware_available() ? "available" : "absent");
    const size_t cap = (size_t)64 << 20;
    unsigned char *data = malloc(cap);
    CHECK(data);
    memset(data, 0x5a, cap);
    check_paths_agree(data, 1 << 20);
    check_blocks(data, 1 << 23);
    measure("table", data, (size_t)16 << 20, 0);
    measure("single stream", data, cap, 0);
    measure("blocks of 256 KiB", data, cap, 1);
    free(data);
    printf("test_crc32c: OK\n");
    return 0;
}
