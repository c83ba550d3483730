/* data/data_path.c — Megatron's --data-path syntax: files, globs,
 * Megatron-style prefixes (resolved as data.h states), weights.
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
#include <sys/stat.h>

#include "core/errors.h"
#include "data/data.h"
#include "data/data_util.h"

static const char WEIGHTED_EXAMPLE[] = "0.7 web-*.h5 0.3 books.h5";

/* A whole word that is a finite number. */
static bool parse_number(const char *word, double *out) {
    char *end = NULL;
    double v = strtod(word, &end);
    if (end == word || *end != '\0' || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static char *with_suffix(const char *prefix, const char *suffix) {
    size_t n = strlen(prefix) + strlen(suffix) + 1;
    char *s = xmalloc(n);
    snprintf(s, n, "%s%s", prefix, suffix);
    return s;
}

/* Appends `path` to c->files unless one of files[from..] already names it;
 * a .idx stands for its pair, which the dataset knows by the .bin. */
static void add_file(DataPathComponent *c, const char *path, int from) {
    char *file = xstrdup(path);
    if (ends_with(file, ".idx")) memcpy(file + strlen(file) - 4, ".bin", 4);
    for (int i = from; i < c->num_files; i++)
        if (strcmp(c->files[i], file) == 0) {
            free(file);
            return;
        }
    c->files = xrealloc(c->files, (size_t)(c->num_files + 1) * sizeof *c->files);
    c->files[c->num_files++] = file;
}

/* ------------------------------------------------------------- globs */

/* Appends the matches of a wildcard pattern, sorted. */
static bool expand_glob(const char *flag, const char *pattern, DataPathComponent *c, char *err,
                        size_t err_size) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH)
        snprintf(err, err_size, "%s %s: no file matches; make shards with tools/preprocess_data",
                 flag, pattern);
    else if (rc != 0)
        snprintf(err, err_size, "%s %s: cannot list the files it names (%s)", flag, pattern,
                 rc == GLOB_ABORTED ? "read error" : "out of memory");
    if (rc != 0) {
        globfree(&g);
        return false;
    }
    const int from = c->num_files;
    for (size_t i = 0; i < g.gl_pathc; i++)
        add_file(c, g.gl_pathv[i], from);
    globfree(&g);
    return true;
}

/* ------------------------------------------------------------ prefixes */

typedef struct {
    char **paths;
    long *numbers;
    int count;
} NumberedShards;

static void numbered_shards_free(NumberedShards *n) {
    for (int i = 0; i < n->count; i++)
        free(n->paths[i]);
    free(n->paths);
    free(n->numbers);
    memset(n, 0, sizeof *n);
}

/* The number of PREFIX_NNNNN.h5 (at least five digits, as
 * tools/preprocess_data names them), or -1 for any other name. */
static long shard_number(const char *path, size_t prefix_len) {
    const char *digits = path + prefix_len + 1;
    size_t n = strspn(digits, "0123456789");
    if (n < 5 || strcmp(digits + n, ".h5") != 0) return -1;
    return strtol(digits, NULL, 10);
}

/* PREFIX_NNNNN.h5 in numeric order (numbers past 99999 have more digits,
 * so the glob's order is not theirs). */
static void find_numbered_shards(const char *prefix, NumberedShards *out) {
    memset(out, 0, sizeof *out);
    char *pattern = with_suffix(prefix, "_[0-9][0-9][0-9][0-9][0-9]*.h5");
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        out->paths = xcalloc(g.gl_pathc, sizeof *out->paths);
        out->numbers = xcalloc(g.gl_pathc, sizeof *out->numbers);
        for (size_t i = 0; i < g.gl_pathc; i++) {
            long k = shard_number(g.gl_pathv[i], strlen(prefix));
            if (k < 0) continue;
            int j = out->count++;
            for (; j > 0 && out->numbers[j - 1] > k; j--) { /* insertion: few shards */
                out->numbers[j] = out->numbers[j - 1];
                out->paths[j] = out->paths[j - 1];
            }
            out->numbers[j] = k;
            out->paths[j] = xstrdup(g.gl_pathv[i]);
        }
    }
    globfree(&g);
    free(pattern);
}

/* Numbered shards must run 0, 1, 2, ...: a gap is a shard lost in a copy. */
static bool check_shard_numbers(const char *flag, const char *prefix, const NumberedShards *n,
                                char *err, size_t err_size) {
    for (int i = 0; i < n->count; i++) {
        if (n->numbers[i] == i) continue;
        snprintf(err, err_size,
                 "%s %s: numbered shard %s_%05d.h5 is missing (found %d shards up to %s); "
                 "shards run from _00000 without gaps: copy the missing one, or give the "
                 "files you mean explicitly",
                 flag, prefix, prefix, i, n->count, n->paths[n->count - 1]);
        return false;
    }
    return true;
}

static void report_nothing_found(const char *flag, const char *prefix, char *err, size_t err_size) {
    double ignored;
    const char *weight_hint =
        parse_number(prefix, &ignored)
            ? " (it looks like a weight: a weighted list puts a weight before every pattern, "
              "e.g. 0.7 web-*.h5 0.3 books.h5)"
            : "";
    snprintf(err, err_size,
             "%s %s: no such file or dataset prefix%s; tried %s, %s.bin + %s.idx (Megatron), "
             "%s.h5 and %s_00000.h5, ... (numbered shards); make token shards with "
             "tools/preprocess_data --output-prefix, or give the prefix of a Megatron .bin/.idx "
             "pair (read in place; tools/convert_megatron_dataset converts one to a shard)",
             flag, prefix, weight_hint, prefix, prefix, prefix, prefix, prefix);
}

/* Resolves a word that is neither an existing file nor a glob (the order
 * and its reasons are in data.h). */
static bool resolve_prefix(const char *flag, const char *prefix, DataPathComponent *c, char *err,
                           size_t err_size) {
    char *bin = with_suffix(prefix, ".bin"), *idx = with_suffix(prefix, ".idx");
    char *h5 = with_suffix(prefix, ".h5");
    const bool has_bin = exists(bin), has_idx = exists(idx), has_h5 = exists(h5);
    NumberedShards shards;
    find_numbered_shards(prefix, &shards);
    bool ok = true;
    if (has_bin != has_idx) {
        snprintf(err, err_size,
                 "%s %s: %s exists but %s does not; a Megatron dataset is both files: copy the "
                 "missing one (or give a .h5 file explicitly)",
                 flag, prefix, has_bin ? bin : idx, has_bin ? idx : bin);
        ok = false;
    } else if (has_bin) {
        add_file(c, bin, c->num_files);
        data_appendf(&c->resolved, "%s%s -> %s.{bin,idx} (Megatron, read in place%s)",
                     c->resolved ? "; " : "", prefix, prefix,
                     has_h5 || shards.count ? "; the .h5 shard(s) of this prefix are not used"
                                            : "");
    } else if (has_h5 && shards.count) {
        snprintf(err, err_size,
                 "%s %s is ambiguous: both %s and numbered shards %s, ... exist; give the one "
                 "you mean (%s, or %s_*.h5)",
                 flag, prefix, h5, shards.paths[0], h5, prefix);
        ok = false;
    } else if (has_h5) {
        add_file(c, h5, c->num_files);
        data_appendf(&c->resolved, "%s%s -> %s", c->resolved ? "; " : "", prefix, h5);
    } else if (shards.count) {
        ok = check_shard_numbers(flag, prefix, &shards, err, err_size);
        for (int i = 0; ok && i < shards.count; i++)
            add_file(c, shards.paths[i], c->num_files);
        if (ok)
            data_appendf(&c->resolved, "%s%s -> %d numbered shard%s", c->resolved ? "; " : "",
                         prefix, shards.count, shards.count == 1 ? "" : "s");
    } else {
        report_nothing_found(flag, prefix, err, err_size);
        ok = false;
    }
    numbered_shards_free(&shards);
    free(bin);
    free(idx);
    free(h5);
    return ok;
}

/* Appends the file(s) one word names: a glob's matches, an existing file,
 * or what a prefix resolves to. */
static bool expand_pattern(const char *flag, const char *word, DataPathComponent *c, char *err,
                           size_t err_size) {
    if (strpbrk(word, "*?[")) return expand_glob(flag, word, c, err, err_size);
    if (exists(word)) {
        add_file(c, word, c->num_files);
        return true;
    }
    if (ends_with(word, ".h5") || ends_with(word, ".bin") || ends_with(word, ".idx")) {
        snprintf(err, err_size, "%s %s: no such file; make shards with tools/preprocess_data", flag,
                 word);
        return false;
    }
    return resolve_prefix(flag, word, c, err, err_size);
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
        free(c->resolved);
    }
    free(p->components);
    memset(p, 0, sizeof *p);
}
