#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

Philox4x32 philox4x32_10(Philox4x32 c, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c.v[0], &hi0, &lo0);
        mulhilo(PHILOX_M1, c.v[2], &hi1, &lo1);
        Philox4x32 n = {{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        c = n;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return c;
}

uint64_t rng_stream_from_name(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

Philox4x32 rng_block(uint64_t seed, uint64_t stream, uint64_t index) {
    Philox4x32 c = {{(uint32_t)index, (uint32_t)(index >> 32), (uint32_t)stream,
                     (uint32_t)(stream >> 32)}};
    return philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

static double bits_to_unit(uint32_t hi, uint32_t lo) {
    uint64_t x = ((uint64_t)hi << 21) ^ (uint64_t)(lo >> 11);
    x &= (1ull << 53) - 1;
    return (double)x * (1.0 / 9007199254740992.0);
}

double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    Philox4x32 b = rng_block(seed, stream, index);
    return bits_to_unit(b.v[0], b.v[1]);
}

double rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    Philox4x32 b = rng_block(seed, stream, index);
    double u1 = 1.0 - bits_to_unit(b.v[0], b.v[1]); /* (0, 1]: log is finite */
    double u2 = bits_to_unit(b.v[2], b.v[3]);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}

uint64_t rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n) {
    Philox4x32 b = rng_block(seed, stream, index);
    if (n <= 0xFFFFFFFFull) return ((uint64_t)b.v[0] * n) >> 32;
    uint64_t x = ((uint64_t)b.v[0] << 32) | b.v[1];
    return x % n;
}
