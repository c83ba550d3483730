#include "core/flags.h"

#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

static void set_error(FlagParser *p, const char *fmt, ...) GPT3D_PRINTF(2, 3);
static void set_error(FlagParser *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
}

static int find_spec(const FlagSpec *specs, int count, const char *name, size_t len) {
    for (int i = 0; i < count; i++)
        if (strlen(specs[i].name) == len && strncmp(specs[i].name, name, len) == 0) return i;
    return -1;
}

/* Levenshtein distance, to suggest the flag a typo meant. */
static int edit_distance(const char *a, size_t la, const char *b) {
    size_t lb = strlen(b);
    int *row = xmalloc((lb + 1) * sizeof *row);
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

static const char *closest_flag(const FlagSpec *specs, int count, const char *name, size_t len) {
    const char *best = NULL;
    int best_d = INT_MAX;
    for (int i = 0; i < count; i++) {
        int d = edit_distance(name, len, specs[i].name);
        if (d < best_d) {
            best_d = d;
            best = specs[i].name;
        }
    }
    return best_d <= 3 ? best : NULL;
}

static void *field(void *options, const FlagSpec *s) { return (char *)options + s->offset; }

static bool store_value(FlagParser *p, const FlagSpec *s, void *options, const char *value) {
    void *dst = field(options, s);
    char *end = NULL;
    errno = 0;
    switch (s->kind) {
    case FLAG_INT: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < INT_MIN || v > INT_MAX) {
            set_error(p, "--%s expects an integer, got '%s'", s->name, value);
            return false;
        }
        *(int *)dst = (int)v;
        return true;
    }
    case FLAG_INT64: {
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end) {
            set_error(p, "--%s expects an integer, got '%s'", s->name, value);
            return false;
        }
        *(int64_t *)dst = (int64_t)v;
        return true;
    }
    case FLAG_DOUBLE: {
        double v = strtod(value, &end);
        if (errno || end == value || *end) {
            set_error(p, "--%s expects a number, got '%s'", s->name, value);
            return false;
        }
        /* strtod takes "inf" and "nan"; no flag means either, and a NaN
         * learning rate would only show up as NaN losses much later. */
        if (!isfinite(v)) {
            set_error(p, "--%s expects a finite number, got '%s'", s->name, value);
            return false;
        }
        *(double *)dst = v;
        return true;
    }
    case FLAG_STRING: {
        char **sp = dst;
        free(*sp);
        *sp = xstrdup(value);
        return true;
    }
    case FLAG_SWITCH:
    case FLAG_SWITCH_OFF:
    case FLAG_LIST:
        break;
    }
    GPT3D_FAIL("flag kind %d cannot take a single value", (int)s->kind);
}

static bool apply_defaults(FlagParser *p, const FlagSpec *specs, int count, void *options) {
    for (int i = 0; i < count; i++) {
        const FlagSpec *s = &specs[i];
        void *dst = field(options, s);
        switch (s->kind) {
        case FLAG_SWITCH: *(bool *)dst = false; break;
        case FLAG_SWITCH_OFF: *(bool *)dst = true; break;
        case FLAG_LIST: {
            StringList *l = dst;
            l->items = NULL;
            l->count = 0;
            if (s->default_value) {
                /* Whitespace-separated default list. */
                char *copy = xstrdup(s->default_value);
                for (char *tok = strtok(copy, " "); tok; tok = strtok(NULL, " ")) {
                    l->items = xrealloc(l->items, (size_t)(l->count + 1) * sizeof *l->items);
                    l->items[l->count++] = xstrdup(tok);
                }
                free(copy);
            }
            break;
        }
        case FLAG_STRING: *(char **)dst = s->default_value ? xstrdup(s->default_value) : NULL; break;
        case FLAG_INT: *(int *)dst = 0; goto scalar;
        case FLAG_INT64: *(int64_t *)dst = 0; goto scalar;
        case FLAG_DOUBLE:
            *(double *)dst = 0.0;
        scalar:
            if (s->default_value && !store_value(p, s, options, s->default_value))
                GPT3D_FAIL("bad default for --%s: %s", s->name, p->error);
            break;
        }
    }
    return true;
}

static bool is_flag_word(const char *w) { return w[0] == '-' && w[1] == '-' && w[2] != '\0'; }

bool flags_parse(FlagParser *p, const FlagSpec *specs, int count, void *options, int argc,
                 char **argv, bool *wants_help) {
    p->specs = specs;
    p->count = count;
    p->was_set = xcalloc((size_t)count, sizeof *p->was_set);
    p->error[0] = '\0';
    *wants_help = false;
    apply_defaults(p, specs, count, options);

    for (int a = 1; a < argc; a++)
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            *wants_help = true;
            return true;
        }

    for (int a = 1; a < argc; a++) {
        const char *word = argv[a];
        if (!is_flag_word(word)) {
            set_error(p, "unexpected argument '%s': every option is a --flag (see --help)", word);
            return false;
        }
        const char *name = word + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int i = find_spec(specs, count, name, len);
        if (i < 0) {
            const char *near = closest_flag(specs, count, name, len);
            if (near)
                set_error(p, "unknown flag --%.*s (did you mean --%s?); see --help", (int)len, name,
                          near);
            else
                set_error(p, "unknown flag --%.*s; see --help for the flags this program takes",
                          (int)len, name);
            return false;
        }
        const FlagSpec *s = &specs[i];
        p->was_set[i] = true;
        if (s->kind == FLAG_SWITCH || s->kind == FLAG_SWITCH_OFF) {
            if (eq) {
                set_error(p, "--%s is a switch and takes no value", s->name);
                return false;
            }
            *(bool *)field(options, s) = s->kind == FLAG_SWITCH;
            continue;
        }
        if (s->kind == FLAG_LIST) {
            StringList *l = field(options, s);
            string_list_free(l);
            if (eq) {
                l->items = xmalloc(sizeof *l->items);
                l->items[l->count++] = xstrdup(eq + 1);
            }
            while (a + 1 < argc && !is_flag_word(argv[a + 1])) {
                l->items = xrealloc(l->items, (size_t)(l->count + 1) * sizeof *l->items);
                l->items[l->count++] = xstrdup(argv[++a]);
            }
            if (l->count == 0) {
                set_error(p, "--%s needs at least one value (%s)", s->name,
                          s->metavar ? s->metavar : "VALUE");
                return false;
            }
            continue;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (a + 1 < argc && !(is_flag_word(argv[a + 1]) && s->kind == FLAG_STRING)) {
            value = argv[++a];
        } else {
            set_error(p, "--%s needs a value (%s)", s->name, s->metavar ? s->metavar : "VALUE");
            return false;
        }
        if (!store_value(p, s, options, value)) return false;
    }

    for (int i = 0; i < count; i++)
        if (specs[i].required && !p->was_set[i]) {
            set_error(p, "missing required flag --%s %s: %s", specs[i].name,
                      specs[i].metavar ? specs[i].metavar : "VALUE", specs[i].help);
            return false;
        }
    return true;
}

int flags_parse_main(FlagParser *p, const FlagSpec *specs, int count, void *options, int argc,
                     char **argv, const char *program, const char *summary) {
    bool wants_help = false;
    if (!flags_parse(p, specs, count, options, argc, argv, &wants_help)) {
        fprintf(stderr, "error: %s\n", p->error);
        flags_free(p, options);
        return 2;
    }
    if (wants_help) {
        flags_print_help(specs, count, program, summary, stdout);
        flags_free(p, options);
        return 0;
    }
    return -1;
}

bool flags_was_set(const FlagParser *p, const char *name) {
    int i = find_spec(p->specs, p->count, name, strlen(name));
    GPT3D_CHECK(i >= 0, "flags_was_set: no flag --%s in the table", name);
    return p->was_set[i];
}

void string_list_free(StringList *l) {
    for (int i = 0; i < l->count; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

void flags_free(FlagParser *p, void *options) {
    for (int i = 0; i < p->count; i++) {
        const FlagSpec *s = &p->specs[i];
        if (s->kind == FLAG_STRING) {
            char **sp = field(options, s);
            free(*sp);
            *sp = NULL;
        } else if (s->kind == FLAG_LIST) {
            string_list_free(field(options, s));
        }
    }
    free(p->was_set);
    p->was_set = NULL;
}

static void print_wrapped(FILE *out, const char *text, int indent, int width) {
    int col = indent;
    const char *w = text;
    while (*w) {
        while (*w == ' ') w++;
        const char *e = w;
        while (*e && *e != ' ') e++;
        int len = (int)(e - w);
        if (len == 0) break;
        if (col > indent && col + 1 + len > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", len, w);
        col += len;
        w = e;
    }
    fputc('\n', out);
}

void flags_print_help(const FlagSpec *specs, int count, const char *program, const char *summary,
                      FILE *out) {
    fprintf(out, "usage: %s [--flag value ...]\n\n", program);
    print_wrapped(out, summary, 0, 80);
    const char *groups[64];
    int ngroups = 0;
    for (int i = 0; i < count; i++) {
        int seen = 0;
        for (int g = 0; g < ngroups; g++) seen |= !strcmp(groups[g], specs[i].group);
        if (!seen && ngroups < 64) groups[ngroups++] = specs[i].group;
    }
    for (int g = 0; g < ngroups; g++) {
        fprintf(out, "\n%s:\n", groups[g]);
        for (int i = 0; i < count; i++) {
            const FlagSpec *s = &specs[i];
            if (strcmp(s->group, groups[g])) continue;
            char head[160];
            if (s->kind == FLAG_SWITCH || s->kind == FLAG_SWITCH_OFF)
                snprintf(head, sizeof head, "  --%s", s->name);
            else
                snprintf(head, sizeof head, "  --%s %s%s", s->name, s->metavar ? s->metavar : "V",
                         s->kind == FLAG_LIST ? " ..." : "");
            fprintf(out, "%s", head);
            int col = (int)strlen(head);
            if (col >= 38) {
                fprintf(out, "\n%38s", "");
            } else {
                fprintf(out, "%*s", 38 - col, "");
            }
            char text[1024];
            if (s->required)
                snprintf(text, sizeof text, "%s (required)", s->help);
            else if (s->default_value && s->kind != FLAG_SWITCH && s->kind != FLAG_SWITCH_OFF)
                snprintf(text, sizeof text, "%s (default: %s)", s->help, s->default_value);
            else
                snprintf(text, sizeof text, "%s", s->help);
            print_wrapped(out, text, 38, 100);
        }
    }
}
