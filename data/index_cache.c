/* data/index_cache.c — cache files for dataset indices (see index_cache.h). */
#include "data/index_cache.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"

#define FNV_OFFSET 0xCBF29CE484222325ull
#define FNV_PRIME 0x100000001B3ull
#define BYTE_ORDER_MARK 0x0102030405060708ull

static const char MAGIC[8] = {'G', 'P', 'T', '3', 'D', 'I', 'D', 'X'};

typedef struct {
    char magic[8];
    uint64_t byte_order;
    uint64_t version;
    uint64_t key;
    uint64_t count;
} FileHeader;

/* ------------------------------------------------------------------- keys */

static void key_bytes(IndexKey *k, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) k->h = (k->h ^ b[i]) * FNV_PRIME;
}

void index_key_init(IndexKey *k, const char *purpose) {
    k->h = FNV_OFFSET;
    index_key_str(k, purpose);
    index_key_u64(k, INDEX_CACHE_FORMAT_VERSION);
}

/* Little-endian bytes, so a key does not depend on the host's byte order. */
void index_key_u64(IndexKey *k, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    key_bytes(k, b, sizeof b);
}

void index_key_f64(IndexKey *k, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    index_key_u64(k, bits);
}

/* Length first, so ("ab","c") and ("a","bc") differ. */
void index_key_str(IndexKey *k, const char *s) {
    size_t n = strlen(s);
    index_key_u64(k, n);
    key_bytes(k, s, n);
}

/* FNV-1a with 64-bit words as its symbols: one multiply per word. */
static uint64_t words_hash(const uint64_t *w, size_t n) {
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * FNV_PRIME;
    return h;
}

void index_key_words(IndexKey *k, const uint64_t *words, size_t n) {
    index_key_u64(k, n);
    index_key_u64(k, words_hash(words, n));
}

/* ------------------------------------------------------------------ paths */

bool index_cache_prepare_dir(const char *dir, char *err, size_t err_size) {
    if (!dir || !*dir) {
        snprintf(err, err_size, "--data-cache-path is empty; give a directory for index files");
        return false;
    }
    char *path = xstrdup(dir);
    /* mkdir -p: create each prefix in turn; EEXIST is fine. */
    for (char *p = path + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(path, 0777) != 0 && errno != EEXIST) {
                snprintf(err, err_size, "--data-cache-path %s: cannot create directory %s: %s",
                         dir, path, strerror(errno));
                free(path);
                return false;
            }
            if (end) break;
            *p = '/';
        }
    }
    free(path);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "--data-cache-path %s is not a directory; give a directory for "
                                "index files", dir);
        return false;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(err, err_size, "--data-cache-path %s is not writable (%s); give a directory "
                                "this user can write to", dir, strerror(errno));
        return false;
    }
    return true;
}

char *index_cache_path(const char *dir, const char *stem, uint64_t key) {
    size_t n = strlen(dir) + strlen(stem) + 32;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s_%016llx.idx", dir, stem, (unsigned long long)key);
    return p;
}

/* ------------------------------------------------------------------ files */

static bool header_matches(const FileHeader *h, uint64_t key, long long file_size) {
    if (memcmp(h->magic, MAGIC, sizeof MAGIC) != 0 || h->byte_order != BYTE_ORDER_MARK ||
        h->version != INDEX_CACHE_FORMAT_VERSION || h->key != key)
        return false;
    long long payload = file_size - (long long)sizeof *h - (long long)sizeof(uint64_t);
    return payload >= 0 && payload % 8 == 0 && h->count == (uint64_t)(payload / 8);
}

int64_t *index_cache_read(const char *path, uint64_t key, int64_t *count,
                          IndexCacheStatus *status) {
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        *status = errno == ENOENT ? INDEX_CACHE_MISSING : INDEX_CACHE_INVALID;
        return NULL;
    }
    *status = INDEX_CACHE_INVALID;
    int64_t *payload = NULL;
    struct stat st;
    FileHeader h;
    if (fstat(fileno(f), &st) != 0 || fread(&h, sizeof h, 1, f) != 1 ||
        !header_matches(&h, key, (long long)st.st_size))
        goto done;
    payload = xmalloc(h.count ? (size_t)h.count * sizeof *payload : 1);
    uint64_t checksum;
    if (fread(payload, sizeof *payload, (size_t)h.count, f) != (size_t)h.count ||
        fread(&checksum, sizeof checksum, 1, f) != 1 ||
        checksum != words_hash((const uint64_t *)payload, (size_t)h.count)) {
        free(payload);
        payload = NULL;
        goto done;
    }
    *count = (int64_t)h.count;
    *status = INDEX_CACHE_OK;
done:
    fclose(f);
    return payload;
}

bool index_cache_write(const char *path, uint64_t key, const int64_t *payload, int64_t count) {
    char host[256] = "host";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    size_t n = strlen(path) + strlen(host) + 64;
    char *tmp = xmalloc(n);
    /* Host, process and buffer address: unique among concurrent writers of
     * one shared directory. */
    snprintf(tmp, n, "%s.tmp.%s.%ld.%llx", path, host, (long)getpid(),
             (unsigned long long)(uintptr_t)payload);
    FileHeader h = {.byte_order = BYTE_ORDER_MARK,
                    .version = INDEX_CACHE_FORMAT_VERSION,
                    .key = key,
                    .count = (uint64_t)count};
    memcpy(h.magic, MAGIC, sizeof MAGIC);
    uint64_t checksum = words_hash((const uint64_t *)payload, (size_t)count);
    bool ok = false;
    FILE *f = fopen(tmp, "wb");
    if (f) {
        ok = fwrite(&h, sizeof h, 1, f) == 1 &&
             fwrite(payload, sizeof *payload, (size_t)count, f) == (size_t)count &&
             fwrite(&checksum, sizeof checksum, 1, f) == 1;
        ok = fclose(f) == 0 && ok;
        ok = ok && rename(tmp, path) == 0;
        if (!ok) unlink(tmp);
    }
    free(tmp);
    return ok;
}
