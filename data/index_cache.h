/* data/index_cache.h — files that cache dataset indices (internal to data/).
 *
 * A cache file holds one array of int64 under a 64-bit key that hashes
 * everything the array depends on; the caller puts the key in the file name
 * too, so a changed input simply names another file. Layout (native byte
 * order, which the header records so a foreign file reads as invalid):
 *   magic "GPT3DIDX", u64 byte-order mark, u64 format version, u64 key,
 *   u64 element count, int64 payload[count], u64 checksum of the payload.
 * A reader trusts a file only when all of that checks out; anything else is
 * reported as invalid and the caller rebuilds. Writers write a temporary name
 * unique to host, process and buffer, then rename: several ranks may build
 * the same file at once, and a reader sees either no file or a whole one. */
#ifndef GPT3D_DATA_INDEX_CACHE_H
#define GPT3D_DATA_INDEX_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bump when the meaning of any cached array changes. */
#define INDEX_CACHE_FORMAT_VERSION 1

/* 64-bit FNV-1a over a canonical byte sequence of the key's inputs. */
typedef struct {
    uint64_t h;
} IndexKey;

void index_key_init(IndexKey *k, const char *purpose);
void index_key_u64(IndexKey *k, uint64_t v);
void index_key_f64(IndexKey *k, double v);
void index_key_str(IndexKey *k, const char *s);
/* Folds a word-wise hash of `n` words in (fast enough for 10^8 offsets). */
void index_key_words(IndexKey *k, const uint64_t *words, size_t n);

typedef enum { INDEX_CACHE_MISSING, INDEX_CACHE_INVALID, INDEX_CACHE_OK } IndexCacheStatus;

/* Creates `dir` (and its parents) when missing and checks it is writable;
 * on failure a message naming --data-cache-path. */
bool index_cache_prepare_dir(const char *dir, char *err, size_t err_size);

/* "<dir>/<stem>_<16 hex digits of key>.idx", caller frees. */
char *index_cache_path(const char *dir, const char *stem, uint64_t key);

/* The payload of `path` when it is a valid cache file for `key` (caller
 * frees; *count elements), else NULL with *status MISSING or INVALID. */
int64_t *index_cache_read(const char *path, uint64_t key, int64_t *count, IndexCacheStatus *status);

/* Publishes payload[count] under `path` for `key`; false when the write
 * failed (nothing is left under `path` or the temporary name then). */
bool index_cache_write(const char *path, uint64_t key, const int64_t *payload, int64_t count);

#endif
