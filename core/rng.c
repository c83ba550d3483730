#include "core/rng.h"

#include <math.h>

#include "core/host_memory.h"

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

/* Box-Muller on one block's four words: the one definition of the normal
 * draw (the CUDA init kernel repeats these operations, in this order). */
static inline double box_muller(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
    double u1 = 1.0 - bits_to_unit(w0, w1); /* (0, 1]: log is finite */
    double u2 = bits_to_unit(w2, w3);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}

double rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    Philox4x32 b = rng_block(seed, stream, index);
    return box_muller(b.v[0], b.v[1], b.v[2], b.v[3]);
}

typedef struct {
    float *out;
    uint64_t seed, stream, index0;
    double std;
} NormalFill;

/* Philox of FILL_BATCH consecutive indices at once, lane by lane in
 * separate arrays: the same integer operations as philox4x32_10, laid out
 * so the compiler keeps many blocks in flight (measured ~25% faster per
 * element than one rng_normal call at a time); log, cos and sqrt stay the
 * scalar libm calls, so every value is bitwise rng_normal's. */
enum { FILL_BATCH = 64 };

static void philox_batch(uint64_t seed, uint64_t stream, uint64_t first, uint32_t c[4][FILL_BATCH]) {
    for (int j = 0; j < FILL_BATCH; j++) {
        const uint64_t index = first + (uint64_t)j;
        c[0][j] = (uint32_t)index;
        c[1][j] = (uint32_t)(index >> 32);
        c[2][j] = (uint32_t)stream;
        c[3][j] = (uint32_t)(stream >> 32);
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        for (int j = 0; j < FILL_BATCH; j++) {
            const uint64_t p0 = (uint64_t)PHILOX_M0 * c[0][j], p1 = (uint64_t)PHILOX_M1 * c[2][j];
            const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1][j] ^ k0;
            const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3][j] ^ k1;
            c[1][j] = (uint32_t)p1;
            c[3][j] = (uint32_t)p0;
            c[0][j] = n0;
            c[2][j] = n2;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

static void normal_fill_range(void *ctx, size_t begin, size_t end) {
    const NormalFill *f = ctx;
    uint32_t c[4][FILL_BATCH];
    for (size_t base = begin; base < end; base += FILL_BATCH) {
        const size_t m = end - base < FILL_BATCH ? end - base : FILL_BATCH;
        philox_batch(f->seed, f->stream, f->index0 + base, c);
        for (size_t j = 0; j < m; j++)
            f->out[base + j] = (float)(f->std * box_muller(c[0][j], c[1][j], c[2][j], c[3][j]));
    }
}

void rng_normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t index0,
                     double std, int threads) {
    NormalFill f = {out, seed, stream, index0, std};
    /* 64K elements (a few ms) per thread at least: thread start-up stays noise. */
    host_parallel_for(n, (size_t)1 << 16, threads, normal_fill_range, &f);
}

uint64_t rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n) {
    Philox4x32 b = rng_block(seed, stream, index);
    if (n <= 0xFFFFFFFFull) return ((uint64_t)b.v[0] * n) >> 32;
    uint64_t x = ((uint64_t)b.v[0] << 32) | b.v[1];
    return x % n;
}
