/* tests/test_corpus.h — real text for tokenizer tests, and reference ids from
 * a node script: documents in memory, the Python documentation sources
 * (Debian's python3.11-doc) as documents, and the file protocol the
 * reference scripts use (documents separated by NUL bytes in, one line of
 * space-separated ids per document out). */
#ifndef GPT3D_TEST_CORPUS_H
#define GPT3D_TEST_CORPUS_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CORPUS_CHECK(cond)                                                                \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

typedef struct {
    char *text;
    size_t len;
} CorpusDoc;

typedef struct {
    CorpusDoc *items;
    size_t count, cap, bytes;
} Corpus;

typedef struct {
    int32_t *ids;
    size_t count, cap;
} CorpusIds;

static inline void corpus_add(Corpus *c, const char *text, size_t len) {
    if (c->count == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->items = realloc(c->items, c->cap * sizeof *c->items);
        CORPUS_CHECK(c->items);
    }
    char *copy = malloc(len + 1);
    CORPUS_CHECK(copy);
    memcpy(copy, text, len);
    copy[len] = '\0';
    c->items[c->count++] = (CorpusDoc){copy, len};
    c->bytes += len;
}

static inline void corpus_free(Corpus *c) {
    for (size_t i = 0; i < c->count; i++) free(c->items[i].text);
    free(c->items);
    memset(c, 0, sizeof *c);
}

static inline char *corpus_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    CORPUS_CHECK(buf);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) CORPUS_CHECK((buf = realloc(buf, (cap *= 2) + 1)));
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static inline int corpus_compare_paths(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every *.rst.txt below dir (unsorted). */
static inline void corpus_find_rst(const char *dir, char ***paths, size_t *count) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *entry;
    while ((entry = readdir(d))) {
        if (entry->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        size_t n = strlen(path);
        if (S_ISDIR(st.st_mode)) {
            corpus_find_rst(path, paths, count);
        } else if (n > 8 && strcmp(path + n - 8, ".rst.txt") == 0) {
            *paths = realloc(*paths, (*count + 1) * sizeof **paths);
            CORPUS_CHECK(*paths);
            (*paths)[(*count)++] = strdup(path);
        }
    }
    closedir(d);
}

/* Whole files as documents, in path order, until at least min_bytes. */
static inline void corpus_load_docs(Corpus *c, const char *dir, size_t min_bytes) {
    char **paths = NULL;
    size_t n = 0;
    corpus_find_rst(dir, &paths, &n);
    qsort(paths, n, sizeof *paths, corpus_compare_paths);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *text = c->bytes < min_bytes ? corpus_read_file(paths[i], &len) : NULL;
        if (text && !memchr(text, '\0', len)) corpus_add(c, text, len);
        free(text);
        free(paths[i]);
    }
    free(paths);
}

/* Writes the documents NUL-separated to path. */
static inline void corpus_write(const Corpus *c, const char *path) {
    FILE *f = fopen(path, "wb");
    CORPUS_CHECK(f);
    for (size_t i = 0; i < c->count; i++) {
        if (i) CORPUS_CHECK(fputc('\0', f) == 0);
        CORPUS_CHECK(fwrite(c->items[i].text, 1, c->items[i].len, f) == c->items[i].len);
    }
    CORPUS_CHECK(fclose(f) == 0);
}

/* One CorpusIds per line of path (space-separated ids); NULL when the file
 * does not have exactly `expected` lines. */
static inline CorpusIds *corpus_read_ids(const char *path, size_t expected) {
    size_t len;
    char *text = corpus_read_file(path, &len);
    if (!text) return NULL;
    CorpusIds *out = calloc(expected ? expected : 1, sizeof *out);
    CORPUS_CHECK(out);
    size_t line = 0;
    for (char *p = text; *p && line <= expected;) {
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = '\0';
        if (line < expected) {
            for (char *q = p; *q;) {
                char *end;
                long v = strtol(q, &end, 10);
                if (end == q) break;
                CorpusIds *r = &out[line];
                if (r->count == r->cap) {
                    r->cap = r->cap ? 2 * r->cap : 64;
                    CORPUS_CHECK((r->ids = realloc(r->ids, r->cap * sizeof *r->ids)));
                }
                r->ids[r->count++] = (int32_t)v;
                q = end;
            }
        }
        line++;
        p = nl + 1;
    }
    free(text);
    if (line != expected) {
        for (size_t i = 0; i < expected; i++) free(out[i].ids);
        free(out);
        return NULL;
    }
    return out;
}

static inline void corpus_ids_free(CorpusIds *ids, size_t n) {
    for (size_t i = 0; ids && i < n; i++) free(ids[i].ids);
    free(ids);
}

#endif
