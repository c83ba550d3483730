/* data/data_path.c — Megatron's --data-path syntax: files, globs, weights.
 *
 * A list that starts with a number is weighted (`0.7 web-*.h5 0.3 books.h5`,
 * Megatron's "weight prefix" pairs); any other list is one dataset whose
 * files are concatenated in the order given. Each pattern goes through
 * glob(3), whose matches are sorted, so the file order (and with it every
 * document index) does not depend on the directory's listing order. */
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "data/data.h"

static const char WEIGHTED_EXAMPLE[] = "0.7 web-*.h5 0.3 books.h5";

/* A whole word that is a finite number. */
static bool parse_number(const char *word, double *out) {
    char *end = NULL;
    double v = strtod(word, &end);
    if (end == word || *end != '\0' || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* Appends the matches of `pattern` to c->files. */
static bool expand_pattern(const char *flag, const char *pattern, DataPathComponent *c, char *err,
                           size_t err_size) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc != 0) {
        double ignored;
        const char *hint = parse_number(pattern, &ignored)
                               ? " (it looks like a weight: a weighted list puts a weight before "
                                 "every pattern, e.g. 0.7 web-*.h5 0.3 books.h5)"
                               : "; make shards with tools/preprocess_data";
        bool wildcard = strpbrk(pattern, "*?[") != NULL;
        if (rc == GLOB_NOMATCH)
            snprintf(err, err_size, "%s %s: %s%s", flag, pattern,
                     wildcard ? "no file matches" : "no such file", hint);
        else
            snprintf(err, err_size, "%s %s: cannot list the files it names (%s)", flag, pattern,
                     rc == GLOB_ABORTED ? "read error" : "out of memory");
        globfree(&g);
        return false;
    }
    c->files = xrealloc(c->files, (c->num_files + g.gl_pathc) * sizeof *c->files);
    for (size_t i = 0; i < g.gl_pathc; i++) c->files[c->num_files++] = xstrdup(g.gl_pathv[i]);
    globfree(&g);
    return true;
}

static char *join_words(const char *const *words, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(words[i]) + 1;
    char *s = xmalloc(len);
    s[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, " ");
        strcat(s, words[i]);
    }
    return s;
}

static bool parse_unweighted(const char *flag, const char *const *words, int n, DataPath *out,
                             char *err, size_t err_size) {
    out->num_components = 1;
    out->components = xcalloc(1, sizeof *out->components);
    DataPathComponent *c = &out->components[0];
    c->pattern = join_words(words, n);
    c->weight = 1.0;
    for (int i = 0; i < n; i++)
        if (!expand_pattern(flag, words[i], c, err, err_size)) return false;
    return true;
}

static bool parse_weights(const char *flag, const char *const *words, int n, double *sum,
                          char *err, size_t err_size) {
    if (n % 2) {
        snprintf(err, err_size,
                 "%s starts with a weight, so it must be WEIGHT PATTERN pairs (e.g. %s), but it "
                 "has %d words; give every pattern its weight, or no weights at all",
                 flag, WEIGHTED_EXAMPLE, n);
        return false;
    }
    *sum = 0.0;
    for (int i = 0; i < n; i += 2) {
        double w;
        if (!parse_number(words[i], &w)) {
            snprintf(err, err_size,
                     "%s: '%s' (word %d) should be the weight of '%s' but is not a number; a "
                     "weighted list alternates WEIGHT PATTERN, e.g. %s",
                     flag, words[i], i + 1, words[i + 1], WEIGHTED_EXAMPLE);
            return false;
        }
        if (!(w > 0.0)) {
            snprintf(err, err_size, "%s: the weight %s of '%s' must be a positive number", flag,
                     words[i], words[i + 1]);
            return false;
        }
        *sum += w;
    }
    if (!isfinite(*sum)) {
        snprintf(err, err_size, "%s: the weights sum to infinity; use smaller numbers", flag);
        return false;
    }
    return true;
}

static bool parse_weighted(const char *flag, const char *const *words, int n, DataPath *out,
                           char *err, size_t err_size) {
    double sum;
    if (!parse_weights(flag, words, n, &sum, err, err_size)) return false;
    out->weighted = true;
    out->num_components = n / 2;
    out->components = xcalloc((size_t)out->num_components, sizeof *out->components);
    for (int i = 0; i < out->num_components; i++) {
        DataPathComponent *c = &out->components[i];
        double w = 0.0;
        parse_number(words[2 * i], &w); /* checked by parse_weights */
        c->weight = w / sum;
        c->pattern = xstrdup(words[2 * i + 1]);
        if (!expand_pattern(flag, c->pattern, c, err, err_size)) return false;
    }
    return true;
}

bool data_path_parse(const char *flag, const char *const *words, int num_words, DataPath *out,
                     char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    if (num_words <= 0 || !words) {
        snprintf(err, err_size,
                 "%s names no token shards; give .h5 files or globs made by "
                 "tools/preprocess_data, optionally weighted (%s)",
                 flag, WEIGHTED_EXAMPLE);
        return false;
    }
    double first;
    bool ok = parse_number(words[0], &first)
                  ? parse_weighted(flag, words, num_words, out, err, err_size)
                  : parse_unweighted(flag, words, num_words, out, err, err_size);
    if (!ok) data_path_free(out);
    return ok;
}

void data_path_free(DataPath *p) {
    if (!p) return;
    for (int i = 0; i < p->num_components; i++) {
        DataPathComponent *c = &p->components[i];
        for (int f = 0; f < c->num_files; f++) free(c->files[f]);
        free(c->files);
        free(c->pattern);
    }
    free(p->components);
    memset(p, 0, sizeof *p);
}
