/* core/rng.h — counter-based random numbers (Philox-4x32-10).
 *
 * Contract: a value is a pure function of (seed, stream, index). There is no
 * generator state to carry, save or split, so any rank can produce exactly
 * the values of the elements it owns, and every parallel layout draws the
 * same numbers for the same global coordinates. Streams name what the numbers
 * are for: rng_stream_from_name("decoder.layers.3.mlp.linear_fc1.weight")
 * for a parameter, or a fixed tag for data shuffling. */
#ifndef GPT3D_CORE_RNG_H
#define GPT3D_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t v[4];
} Philox4x32;

/* The raw block: 10 rounds of Philox-4x32 on `counter` with `key`. */
Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t key0, uint32_t key1);

/* 64-bit FNV-1a of a string: a stable stream id for a name. */
uint64_t rng_stream_from_name(const char *name);

/* Four independent 32-bit words for (seed, stream, index). */
Philox4x32 rng_block(uint64_t seed, uint64_t stream, uint64_t index);

/* Uniform in [0, 1) with 53 random bits, for (seed, stream, index). */
double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/* Standard normal (Box-Muller on one block), for (seed, stream, index). */
double rng_normal(uint64_t seed, uint64_t stream, uint64_t index);

/* out[i] = (float)(std * rng_normal(seed, stream, index0 + i)) for i < n,
 * on `threads` threads (core/host_memory.h); bitwise the same for any
 * thread count, since each element is a pure function of its index. */
void rng_normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t index0,
                     double std, int threads);

/* Uniform integer in [0, n) without modulo bias worth measuring (n < 2^32
 * uses 64-bit multiply-shift; larger n uses 64 random bits). */
uint64_t rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n);

#endif
