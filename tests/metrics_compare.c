/* metrics_compare — the one end-to-end comparison of two --metrics-file
 * JSONL logs, shared by every e2e test script (tests/e2e_common.sh).
 *
 *   metrics_compare [--rtol R] [--atol A] [--name NAME] REFERENCE CANDIDATE
 *
 * Every record of CANDIDATE must match the record of REFERENCE on the same
 * line: the same iteration number, lm_loss and grad_norm within
 * |got - want| <= atol + rtol * |want| (default rtol 1e-6, atol 0), and
 * valid_loss, test_loss, loss_scale and the MoE fields (moe_aux_loss,
 * moe_z_loss, moe_dropped_tokens) the same way wherever either file has
 * one. An iteration that loss scaling skipped ("skipped": true, no
 * grad_norm) must be skipped in both. A
 * missing field, a value that does not parse, or a NaN or inf in either
 * file fails, as does a different record count or an empty reference: a
 * comparison that compared nothing has checked nothing.
 *
 * Written in C rather than awk because the awk found on Debian is mawk, in
 * which `nan` and a missing field make every comparison false, so a NaN
 * loss passed. The parser is deliberately lenient about JSON (the trainer
 * prints `nan` for a NaN, which is not JSON) and strict about numbers.
 *
 * Exit status: 0 all records match, 1 a difference, 2 bad usage or an
 * unreadable file. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPORTED 10

typedef struct {
    char *text; /* the line, NUL-terminated */
    int line_no;
} Record;

typedef struct {
    Record *records;
    int count;
} MetricsLog;

typedef struct {
    const char *name;
    double rtol, atol;
    int reported; /* differences printed so far */
    int differences;
} Comparison;

static bool read_log(const char *path, MetricsLog *log) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "metrics_compare: cannot open %s: %s\n", path, strerror(errno));
        return false;
    }
    log->records = NULL;
    log->count = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int line_no = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            line[--len] = '\0';
        if (len == 0) continue;
        Record *grown = realloc(log->records, (size_t)(log->count + 1) * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "metrics_compare: out of memory reading %s\n", path);
            exit(2);
        }
        log->records = grown;
        log->records[log->count].text = strdup(line);
        log->records[log->count].line_no = line_no;
        log->count++;
    }
    free(line);
    bool ok = !ferror(f);
    fclose(f);
    if (!ok) fprintf(stderr, "metrics_compare: error reading %s\n", path);
    return ok;
}

static void free_log(MetricsLog *log) {
    for (int i = 0; i < log->count; i++)
        free(log->records[i].text);
    free(log->records);
}

typedef enum { FIELD_OK, FIELD_MISSING, FIELD_MALFORMED } FieldStatus;

/* Finds `"key":` in the record and parses the number after it. The whole
 * token up to the next ',' or '}' must be the number: "1.5x" is malformed,
 * not 1.5. strtod accepts nan and inf, which the caller rejects. */
static FieldStatus field(const char *record, const char *key, double *value) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(record, pattern);
    if (!p) return FIELD_MISSING;
    p += strlen(pattern);
    while (*p == ' ' || *p == '\t') p++;
    if (*p++ != ':') return FIELD_MALFORMED;
    while (*p == ' ' || *p == '\t') p++;
    char *end;
    errno = 0;
    *value = strtod(p, &end);
    if (end == p || errno == ERANGE) return FIELD_MALFORMED;
    while (*end == ' ' || *end == '\t') end++;
    if (*end != ',' && *end != '}') return FIELD_MALFORMED;
    return FIELD_OK;
}

static void report(Comparison *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(Comparison *c, const char *fmt, ...) {
    c->differences++;
    if (c->reported++ >= MAX_REPORTED) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const char *status_word(FieldStatus s) {
    return s == FIELD_MISSING ? "missing" : "not a number";
}

/* Compares one field of a record pair. `optional` fields may be absent from
 * both records, never from one only. */
static void compare_field(Comparison *c, const Record *want, const Record *got, long long iteration,
                          const char *key, bool optional) {
    double w = 0.0, g = 0.0;
    FieldStatus ws = field(want->text, key, &w), gs = field(got->text, key, &g);
    if (optional && ws == FIELD_MISSING && gs == FIELD_MISSING) return;
    if (ws != FIELD_OK) {
        report(c, "iteration %lld: %s %s in the reference (line %d)", iteration, key,
               status_word(ws), want->line_no);
        return;
    }
    if (gs != FIELD_OK) {
        report(c, "iteration %lld: %s %s (line %d)", iteration, key, status_word(gs), got->line_no);
        return;
    }
    if (!isfinite(w) || !isfinite(g)) {
        report(c, "iteration %lld: %s %.17g vs reference %.17g: not finite", iteration, key, g, w);
        return;
    }
    const double diff = fabs(g - w), limit = c->atol + c->rtol * fabs(w);
    if (!(diff <= limit))
        report(c, "iteration %lld: %s %.17g vs reference %.17g (relative difference %.3g, limit %.3g)",
               iteration, key, g, w, w != 0.0 ? diff / fabs(w) : diff, c->rtol);
}

static bool iteration_of(Comparison *c, const Record *r, const char *which, long long *iteration) {
    double v;
    FieldStatus s = field(r->text, "iteration", &v);
    if (s != FIELD_OK || !isfinite(v) || v != floor(v)) {
        report(c, "line %d of the %s: iteration %s", r->line_no, which,
               s == FIELD_OK ? "not an integer" : status_word(s));
        return false;
    }
    *iteration = (long long)v;
    return true;
}

/* A mixture of experts' loss terms and dropped tokens (integers, which the
 * relative tolerance leaves exact at the counts of a test). */
static const char *const MOE_FIELDS[3] = {"moe_aux_loss", "moe_z_loss", "moe_dropped_tokens"};

static bool skipped(const Record *r) { return strstr(r->text, "\"skipped\": true") != NULL; }

static void compare_logs(Comparison *c, const MetricsLog *want, const MetricsLog *got) {
    if (want->count == 0) report(c, "the reference has no records");
    if (got->count != want->count)
        report(c, "%d records, the reference has %d", got->count, want->count);
    const int n = got->count < want->count ? got->count : want->count;
    for (int i = 0; i < n; i++) {
        long long wi, gi;
        if (!iteration_of(c, &want->records[i], "reference", &wi) ||
            !iteration_of(c, &got->records[i], "candidate", &gi))
            continue;
        if (wi != gi) {
            report(c, "record %d is iteration %lld, the reference's is %lld", i + 1, gi, wi);
            continue;
        }
        compare_field(c, &want->records[i], &got->records[i], wi, "lm_loss", false);
        const bool skip = skipped(&want->records[i]);
        if (skip != skipped(&got->records[i]))
            report(c, "iteration %lld: skipped by loss scaling in the %s only", wi,
                   skip ? "reference" : "candidate");
        compare_field(c, &want->records[i], &got->records[i], wi, "grad_norm", skip);
        compare_field(c, &want->records[i], &got->records[i], wi, "loss_scale", true);
        compare_field(c, &want->records[i], &got->records[i], wi, "valid_loss", true);
        compare_field(c, &want->records[i], &got->records[i], wi, "test_loss", true);
        for (int k = 0; k < 3; k++)
            compare_field(c, &want->records[i], &got->records[i], wi, MOE_FIELDS[k], true);
    }
}

static bool parse_tolerance(const char *flag, const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v < 0.0) {
        fprintf(stderr, "metrics_compare: %s %s: want a finite number >= 0\n", flag, text);
        return false;
    }
    *out = v;
    return true;
}

static int usage(void) {
    fprintf(stderr, "usage: metrics_compare [--rtol R] [--atol A] [--name NAME] REFERENCE "
                    "CANDIDATE\n"
                    "  compares every record's iteration, lm_loss, grad_norm, valid_loss, test_loss,\n"
                    "  loss_scale, the loss-scaling skips and the MoE fields;\n"
                    "  default --rtol 1e-6 --atol 0; NaN, inf and missing fields fail\n");
    return 2;
}

int main(int argc, char **argv) {
    Comparison c = {.name = "metrics", .rtol = 1e-6, .atol = 0.0};
    const char *paths[2];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--rtol") && has_value) {
            if (!parse_tolerance(a, argv[++i], &c.rtol)) return 2;
        } else if (!strcmp(a, "--atol") && has_value) {
            if (!parse_tolerance(a, argv[++i], &c.atol)) return 2;
        } else if (!strcmp(a, "--name") && has_value) {
            c.name = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "metrics_compare: unknown or incomplete option %s\n", a);
            return usage();
        } else if (npaths < 2) {
            paths[npaths++] = a;
        } else {
            return usage();
        }
    }
    if (npaths != 2) return usage();
    MetricsLog want, got;
    if (!read_log(paths[0], &want)) return 2;
    if (!read_log(paths[1], &got)) return 2;
    compare_logs(&c, &want, &got);
    if (c.reported > MAX_REPORTED)
        fprintf(stderr, "%s: ... %d more\n", c.name, c.reported - MAX_REPORTED);
    if (c.differences == 0)
        printf("%s: %d records match (rtol %.1e, atol %.1e)\n", c.name, got.count, c.rtol, c.atol);
    free_log(&want);
    free_log(&got);
    return c.differences ? 1 : 0;
}
