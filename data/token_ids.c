#include "data/token_ids.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"
#include "data/index_cache.h"

/* Everything a scan result depends on; a rewritten file changes its size or
 * modification time and so names another cache file. */
static bool scan_cache_key(const DocumentSource *s, IndexKey *k) {
    struct stat st;
    if (stat(document_source_name(s), &st) != 0) return false;
    char real[PATH_MAX];
    const char *path = realpath(document_source_name(s), real) ? real : document_source_name(s);
    index_key_init(k, "max_token_id");
    index_key_str(k, path);
    index_key_u64(k, (uint64_t)st.st_size);
    index_key_u64(k, (uint64_t)st.st_mtim.tv_sec);
    index_key_u64(k, (uint64_t)st.st_mtim.tv_nsec);
    index_key_u64(k, (uint64_t)document_source_num_tokens(s));
    index_key_u64(k, (uint64_t)document_source_vocab_size(s));
    return true;
}

struct TokenIdScans {
    struct {
        uint64_t key;
        int64_t max_id;
    } *found;
    size_t count, cap;
};

TokenIdScans *token_id_scans_new(void) { return xcalloc(1, sizeof(TokenIdScans)); }

void token_id_scans_free(TokenIdScans *scans) {
    if (!scans) return;
    free(scans->found);
    free(scans);
}

static bool scans_lookup(const TokenIdScans *scans, uint64_t key, int64_t *max_id) {
    for (size_t i = 0; scans && i < scans->count; i++)
        if (scans->found[i].key == key) {
            *max_id = scans->found[i].max_id;
            return true;
        }
    return false;
}

static void scans_add(TokenIdScans *scans, uint64_t key, int64_t max_id) {
    if (!scans) return;
    if (scans->count == scans->cap) {
        scans->cap = scans->cap ? 2 * scans->cap : 8;
        scans->found = xrealloc(scans->found, scans->cap * sizeof *scans->found);
    }
    scans->found[scans->count].key = key;
    scans->found[scans->count++].max_id = max_id;
}

static bool cached_or_scanned_max(DocumentSource *s, const char *cache_dir, TokenIdScans *scans,
                                  int64_t *max_id, bool *scanned, char *err, size_t err_size) {
    IndexKey key;
    const bool keyed = (cache_dir || scans) && scan_cache_key(s, &key);
    if (keyed && scans_lookup(scans, key.h, max_id)) return true;
    char *path = keyed && cache_dir ? index_cache_path(cache_dir, "maxid", key.h) : NULL;
    if (path) {
        int64_t count = 0;
        IndexCacheStatus status;
        int64_t *cached = index_cache_read(path, key.h, &count, &status);
        if (cached && count == 1) {
            *max_id = cached[0];
            free(cached);
            free(path);
            if (keyed) scans_add(scans, key.h, *max_id);
            return true;
        }
        free(cached);
    }
    *scanned = true;
    bool ok = document_source_scan_max_token_id(s, max_id, err, err_size);
    /* A failed cache write only costs the next run a scan. */
    if (ok && path) (void)index_cache_write(path, key.h, max_id, 1);
    if (ok && keyed) scans_add(scans, key.h, *max_id);
    free(path);
    return ok;
}

bool token_ids_check(DocumentSource *s, const char *cache_dir, TokenIdScans *scans, bool *scanned,
                     char *err, size_t err_size) {
    *scanned = false;
    int64_t max_id = document_source_known_max_token_id(s);
    if (max_id < 0 && document_source_num_tokens(s) > 0 &&
        !cached_or_scanned_max(s, cache_dir, scans, &max_id, scanned, err, err_size))
        return false;
    if (max_id < document_source_vocab_size(s)) return true;
    const bool shard = strcmp(document_source_kind(s), "token shard") == 0;
    snprintf(err, err_size,
             "%s %s holds token id %lld, outside its vocabulary [0, %lld)%s; the file is "
             "damaged or was made with another tokenizer: %s",
             document_source_kind(s), document_source_name(s), (long long)max_id,
             (long long)document_source_vocab_size(s),
             shard && document_source_known_max_token_id(s) >= 0 ? " (its max_token_id attribute)"
                                                                 : "",
             shard ? "re-make it with tools/preprocess_data and the run's --tokenizer-type"
                   : "make it with the run's --tokenizer-type");
    return false;
}
