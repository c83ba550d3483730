/* tools/plot_metrics — loss curves from --metrics-file JSONL with gnuplot.
 *
 * Reads the JSON-lines metrics files of one or more runs (one object per
 * iteration, as pretrain_gpt --metrics-file writes them), writes one data
 * file per (run, metric) and a gnuplot script into a private temporary
 * directory, runs `gnuplot` on it, and publishes the PNG under -o by rename.
 * The first panel shows training loss (lm_loss) and, where the run
 * evaluated, validation loss (valid_loss, dashed, with points); every other
 * metric asked for with --metrics gets a panel of its own below it. Runs
 * overlay in one colour each, labelled with their file names.
 *
 * x axis: iteration (default), samples (consumed_samples), or tokens =
 * consumed_samples x --seq-length (the metrics do not record the sequence
 * length, so it must be given). A resumed run that appended to the same
 * file repeats the iterations after its checkpoint; the later records
 * replace the earlier ones, so the plot shows the trajectory the run kept.
 *
 * Exit status: 0 plotted, 2 bad usage, unreadable or malformed metrics, no
 * metric to plot, or gnuplot missing or failing. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/flags.h"

extern char **environ;

typedef struct {
    StringList input, metrics;
    char *output, *x, *title, *gnuplot, *script_dir;
    int64_t seq_length;
    int width, height;
} Options;

static const FlagSpec FLAGS[] = {
    {"input", FLAG_LIST, offsetof(Options, input), NULL, "FILE.jsonl",
     "metrics files (--metrics-file of pretrain_gpt); may also be given as plain words, "
     "before or between the flags",
     "input", false},
    {"output", FLAG_STRING, offsetof(Options, output), NULL, "FILE.png",
     "the PNG to write (also -o)", "output", true},
    {"x", FLAG_STRING, offsetof(Options, x), "iteration", "AXIS",
     "iteration, samples (consumed_samples) or tokens (consumed_samples x --seq-length)", "plot",
     false},
    {"seq-length", FLAG_INT64, offsetof(Options, seq_length), "0", "L",
     "the run's --seq-length, needed by --x tokens", "plot", false},
    {"metrics", FLAG_LIST, offsetof(Options, metrics), "lm_loss,valid_loss", "NAMES",
     "metrics to draw, comma- or space-separated: lm_loss and valid_loss share the loss panel, "
     "any other numeric field (lr, grad_norm, tokens_per_s, ...) gets its own panel",
     "plot", false},
    {"title", FLAG_STRING, offsetof(Options, title), NULL, "TEXT", "a title above the plot", "plot",
     false},
    {"width", FLAG_INT, offsetof(Options, width), "900", "PX", "image width in pixels", "plot",
     false},
    {"height", FLAG_INT, offsetof(Options, height), "450", "PX", "height of each panel in pixels",
     "plot", false},
    {"gnuplot", FLAG_STRING, offsetof(Options, gnuplot), "gnuplot", "PROGRAM",
     "the gnuplot program to run (searched on PATH)", "plot", false},
    {"script-dir", FLAG_STRING, offsetof(Options, script_dir), NULL, "DIR",
     "keep the gnuplot script (plot.gp) and its data files in DIR, to restyle the plot and "
     "rerun `gnuplot plot.gp` (default: a temporary directory, removed)",
     "plot", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

#define MAX_METRICS 32
#define MAX_LINE_ERROR 160

typedef enum { X_ITERATION, X_SAMPLES, X_TOKENS } XAxis;

static const char *const X_LABELS[] = {"iteration", "consumed samples", "tokens"};

/* ------------------------------------------------------------ data */

typedef struct {
    double *x, *y;
    size_t count, cap;
} Series;

typedef struct {
    const char *path;
    char *label;
    Series series[MAX_METRICS]; /* one per requested metric */
} Run;

typedef struct {
    char *names[MAX_METRICS];
    int count;
    int panel_of[MAX_METRICS]; /* panel index per metric */
    int num_panels;
} MetricSet;

static bool is_loss(const char *name) {
    return !strcmp(name, "lm_loss") || !strcmp(name, "valid_loss");
}

static bool valid_metric_name(const char *name) {
    if (!*name) return false;
    for (const char *c = name; *c; c++)
        if (!(*c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9')))
            return false;
    return true;
}

/* Splits the --metrics words on commas; the loss metrics share panel 0
 * when asked for, the others follow in the order given. */
static void parse_metrics(const StringList *words, MetricSet *m) {
    memset(m, 0, sizeof *m);
    int loss_panel = -1;
    for (int w = 0; w < words->count; w++) {
        char *copy = xstrdup(words->items[w]), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (!valid_metric_name(tok))
                gpt3d_fail_user("--metrics: '%s' is not a metric name (letters, digits, _)", tok);
            bool seen = false;
            for (int i = 0; i < m->count; i++)
                seen |= !strcmp(m->names[i], tok);
            if (seen) continue;
            if (m->count == MAX_METRICS)
                gpt3d_fail_user("--metrics: at most %d metrics", MAX_METRICS);
            int panel;
            if (is_loss(tok)) {
                if (loss_panel < 0) loss_panel = m->num_panels++;
                panel = loss_panel;
            } else {
                panel = m->num_panels++;
            }
            m->panel_of[m->count] = panel;
            m->names[m->count++] = xstrdup(tok);
        }
        free(copy);
    }
    if (m->count == 0) gpt3d_fail_user("--metrics names no metric");
}

/* Appends (x, y); records at or after x from an earlier, abandoned part of
 * the run (a restart from a checkpoint) are dropped first. */
static void series_add(Series *s, double x, double y) {
    while (s->count > 0 && s->x[s->count - 1] >= x)
        s->count--;
    if (s->count == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = xrealloc(s->x, s->cap * sizeof *s->x);
        s->y = xrealloc(s->y, s->cap * sizeof *s->y);
    }
    s->x[s->count] = x;
    s->y[s->count++] = y;
}

static double number_field(const cJSON *obj, const char *key, const char *path, long line) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v))
        gpt3d_fail_user("%s:%ld: the record has no numeric \"%s\" (is this a gpt3d "
                        "--metrics-file?)",
                        path, line, key);
    return v->valuedouble;
}

static double x_of(const cJSON *obj, XAxis axis, int64_t seq_length, const char *path, long line) {
    if (axis == X_ITERATION) return number_field(obj, "iteration", path, line);
    double samples = number_field(obj, "consumed_samples", path, line);
    return axis == X_TOKENS ? samples * (double)seq_length : samples;
}

/* A malformed line is reported with a short excerpt of it. */
static void fail_line(const char *path, long line, const char *text, const char *problem) {
    char excerpt[MAX_LINE_ERROR + 4];
    int len = (int)strcspn(text, "\r\n");
    snprintf(excerpt, sizeof excerpt, "%.*s%s", len < MAX_LINE_ERROR ? len : MAX_LINE_ERROR, text,
             len > MAX_LINE_ERROR ? "..." : "");
    gpt3d_fail_user("%s:%ld: %s: %s", path, line, problem, excerpt);
}

static bool blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return false;
    return true;
}

static void read_run(Run *run, const MetricSet *m, XAxis axis, int64_t seq_length) {
    FILE *f = fopen(run->path, "r");
    if (!f) gpt3d_fail_user("cannot read metrics file '%s': %s", run->path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long number = 0;
    while (getline(&line, &cap, f) >= 0) {
        number++;
        if (blank(line)) continue;
        cJSON *obj = cJSON_Parse(line);
        if (!obj) fail_line(run->path, number, line, "not valid JSON");
        if (!cJSON_IsObject(obj)) fail_line(run->path, number, line, "not a JSON object");
        double x = x_of(obj, axis, seq_length, run->path, number);
        for (int i = 0; i < m->count; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, m->names[i]);
            if (cJSON_IsNumber(v)) series_add(&run->series[i], x, v->valuedouble);
        }
        cJSON_Delete(obj);
    }
    if (ferror(f)) gpt3d_fail_user("error reading metrics file '%s'", run->path);
    free(line);
    fclose(f);
}

/* Labels are file names; where two runs share one, their paths. */
static void label_runs(Run *runs, int n) {
    for (int i = 0; i < n; i++) {
        const char *slash = strrchr(runs[i].path, '/');
        runs[i].label = xstrdup(slash ? slash + 1 : runs[i].path);
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (!strcmp(runs[i].label, runs[j].label)) {
                for (int k = 0; k < n; k++) {
                    free(runs[k].label);
                    runs[k].label = xstrdup(runs[k].path);
                }
                return;
            }
}

/* ------------------------------------------------------------ gnuplot */

/* Where the script and data go: a private temporary directory, or the
 * user's --script-dir, whose files are kept. */
typedef struct {
    char dir[4096];
    bool keep;
    char **files; /* created under dir, removed at the end unless kept */
    int num_files, cap_files;
    char *partial_png; /* the image until it is renamed to -o */
} TempDir;

static char *temp_path(TempDir *t, const char *name) {
    size_t n = strlen(t->dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", t->dir, name);
    if (t->num_files == t->cap_files) {
        t->cap_files = t->cap_files ? 2 * t->cap_files : 16;
        t->files = xrealloc(t->files, (size_t)t->cap_files * sizeof *t->files);
    }
    t->files[t->num_files++] = p;
    return p;
}

static void temp_dir_remove(TempDir *t) {
    for (int i = 0; i < t->num_files; i++) {
        if (!t->keep) unlink(t->files[i]);
        free(t->files[i]);
    }
    free(t->files);
    t->files = NULL;
    t->num_files = t->cap_files = 0;
    if (t->dir[0] && !t->keep) rmdir(t->dir);
    if (t->partial_png) unlink(t->partial_png); /* gone already once published */
    free(t->partial_png);
    t->partial_png = NULL;
}

/* A kept script names its files by absolute paths, so it reruns from
 * any directory. */
static char *absolute_path(const char *path) {
    if (path[0] == '/') return xstrdup(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) gpt3d_fail_user("cannot resolve '%s': %s", path, strerror(errno));
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *abs = xmalloc(n);
    snprintf(abs, n, "%s/%s", cwd, path);
    return abs;
}

/* A gnuplot single-quoted string: a quote is written twice. */
static void put_quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static bool write_series(const char *path, const Series *s) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    for (size_t i = 0; i < s->count; i++)
        fprintf(f, "%.17g %.17g\n", s->x[i], s->y[i]);
    return fclose(f) == 0;
}

typedef struct {
    const Options *o;
    const MetricSet *m;
    Run *runs;
    int num_runs;
    XAxis axis;
} Plot;

static bool panel_has_data(const Plot *p, int panel) {
    for (int i = 0; i < p->m->count; i++)
        if (p->m->panel_of[i] == panel)
            for (int r = 0; r < p->num_runs; r++)
                if (p->runs[r].series[i].count > 0) return true;
    return false;
}

static int panels_with_data(const Plot *p) {
    int n = 0;
    for (int panel = 0; panel < p->m->num_panels; panel++)
        n += panel_has_data(p, panel);
    return n;
}

static void write_panel(FILE *f, const Plot *p, TempDir *t, int panel, bool *ok) {
    const MetricSet *m = p->m;
    bool loss = false;
    for (int i = 0; i < m->count; i++)
        loss |= m->panel_of[i] == panel && is_loss(m->names[i]);
    fprintf(f, "set xlabel ");
    put_quoted(f, X_LABELS[p->axis]);
    fprintf(f, "\nset ylabel ");
    for (int i = 0; i < m->count; i++)
        if (m->panel_of[i] == panel && !loss) put_quoted(f, m->names[i]);
    if (loss) put_quoted(f, "loss");
    fprintf(f, "\nplot ");
    bool first = true;
    for (int r = 0; r < p->num_runs; r++)
        for (int i = 0; i < m->count; i++) {
            const Series *s = &p->runs[r].series[i];
            if (m->panel_of[i] != panel || s->count == 0) continue;
            char name[128];
            snprintf(name, sizeof name, "run%d_%s.dat", r, m->names[i]);
            char *data = temp_path(t, name);
            *ok = *ok && write_series(data, s);
            char title[1024];
            snprintf(title, sizeof title, "%s %s", p->runs[r].label, m->names[i]);
            fprintf(f, "%s", first ? "" : ", \\\n     ");
            put_quoted(f, data);
            if (!strcmp(m->names[i], "valid_loss"))
                fprintf(f, " using 1:2 with linespoints lc %d dt 2 pt 7 ps 0.6 lw 1.5 title ",
                        r + 1);
            else
                fprintf(f, " using 1:2 with lines lc %d lw 1.5 title ", r + 1);
            put_quoted(f, title);
            first = false;
        }
    fprintf(f, "\n");
}

static bool write_script(const char *path, const Plot *p, TempDir *t) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    const int panels = panels_with_data(p);
    const int height = p->o->height * panels + (p->o->title ? 40 : 0);
    /* pngcairo draws anti-aliased dashed lines; libgd's png is the fallback. */
    fprintf(f,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "  set terminal pngcairo size %d,%d noenhanced font 'sans,10'\n"
            "} else {\n"
            "  set terminal png size %d,%d noenhanced\n"
            "}\n",
            p->o->width, height, p->o->width, height);
    /* plot_metrics passes outfile (a temporary name it renames to -o); a
     * rerun of the kept script by hand writes -o itself. */
    fprintf(f, "if (!exists('outfile')) outfile = ");
    char *output = absolute_path(p->o->output);
    put_quoted(f, output);
    free(output);
    fprintf(f, "\nset output outfile");
    fprintf(f, "\nset grid\nset key top right\nset format y '%%g'\n");
    if (panels > 1 || p->o->title) {
        fprintf(f, "set multiplot layout %d,1", panels);
        if (p->o->title) {
            fprintf(f, " title ");
            put_quoted(f, p->o->title);
        }
        fprintf(f, "\n");
    }
    bool ok = true;
    for (int panel = 0; panel < p->m->num_panels; panel++)
        if (panel_has_data(p, panel)) write_panel(f, p, t, panel, &ok);
    if (panels > 1 || p->o->title) fprintf(f, "unset multiplot\n");
    fprintf(f, "unset output\n");
    return fclose(f) == 0 && ok;
}

/* Runs gnuplot on the script, its messages captured in log_path. */
static void run_gnuplot(const char *program, const char *script, const char *log_path, TempDir *t) {
    size_t n = 2 * strlen(t->partial_png) + 16;
    char *assign = xmalloc(n), *w = assign;
    w += sprintf(w, "outfile='");
    for (const char *c = t->partial_png; *c; c++) {
        if (*c == '\'') *w++ = '\'';
        *w++ = *c;
    }
    strcpy(w, "'");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    char *argv[] = {(char *)program, "-e", assign, (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, program, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    free(assign);
    if (rc != 0) {
        temp_dir_remove(t);
        if (rc == ENOENT)
            gpt3d_fail_user("gnuplot is not installed ('%s' not found): install it, e.g. "
                            "apt-get install gnuplot-nox, or give --gnuplot PROGRAM",
                            program);
        gpt3d_fail_user("cannot run '%s': %s", program, strerror(rc));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    /* Show what gnuplot said: it names the line of the script it rejected. */
    FILE *log = fopen(log_path, "r");
    char said[2048] = "";
    if (log) {
        size_t n = fread(said, 1, sizeof said - 1, log);
        said[n] = 0;
        fclose(log);
    }
    temp_dir_remove(t);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        gpt3d_fail_user("gnuplot is not installed ('%s' could not be run): install it, e.g. "
                        "apt-get install gnuplot-nox, or give --gnuplot PROGRAM",
                        program);
    gpt3d_fail_user("gnuplot failed (%s %d): %s", WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), said);
}

static void open_script_dir(TempDir *t, const char *script_dir) {
    if (script_dir) {
        t->keep = true;
        if (mkdir(script_dir, 0777) != 0 && errno != EEXIST)
            gpt3d_fail_user("--script-dir '%s': %s", script_dir, strerror(errno));
        char *abs = absolute_path(script_dir);
        snprintf(t->dir, sizeof t->dir, "%s", abs);
        free(abs);
        return;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/plot_metrics.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(t->dir))
        gpt3d_fail_user("cannot create a temporary directory under '%s': %s (set TMPDIR)",
                        tmp && *tmp ? tmp : "/tmp", strerror(errno));
}

static void plot(Plot *p) {
    TempDir t = {0};
    open_script_dir(&t, p->o->script_dir);
    size_t n = strlen(p->o->output) + 32;
    t.partial_png = xmalloc(n);
    snprintf(t.partial_png, n, "%s.tmp.%ld", p->o->output, (long)getpid());
    /* Fail on an unwritable -o before gnuplot does, with a clearer message. */
    FILE *probe = fopen(t.partial_png, "wb");
    if (!probe) {
        int e = errno;
        temp_dir_remove(&t);
        gpt3d_fail_user("-o '%s': cannot write next to it: %s", p->o->output, strerror(e));
    }
    fclose(probe);
    char *script = temp_path(&t, "plot.gp"), *log = temp_path(&t, "gnuplot.log");
    if (!write_script(script, p, &t)) {
        temp_dir_remove(&t);
        gpt3d_fail_user("cannot write the gnuplot script and data under '%s'", t.dir);
    }
    run_gnuplot(p->o->gnuplot, script, log, &t);
    struct stat st;
    if (stat(t.partial_png, &st) != 0 || st.st_size == 0) {
        temp_dir_remove(&t);
        gpt3d_fail_user("gnuplot wrote no image for -o '%s'", p->o->output);
    }
    if (rename(t.partial_png, p->o->output) != 0) {
        int e = errno;
        temp_dir_remove(&t);
        gpt3d_fail_user("-o '%s': %s", p->o->output, strerror(e));
    }
    temp_dir_remove(&t);
}

/* ------------------------------------------------------------ arguments */

static const FlagSpec *find_flag(const char *word) {
    const char *name = word + 2;
    size_t len = strcspn(name, "=");
    for (int i = 0; i < NUM_FLAGS; i++)
        if (strlen(FLAGS[i].name) == len && !strncmp(FLAGS[i].name, name, len)) return &FLAGS[i];
    return NULL;
}

/* The flag parser takes --name words only: plain words that are not a
 * flag's value become --input files (with those of any --input), and -o
 * becomes --output. */
static char **normalise_args(int argc, char **argv, int *out_argc) {
    char **flags = xcalloc((size_t)argc * 2 + 2, sizeof *flags);
    char **files = xcalloc((size_t)argc + 1, sizeof *files);
    int nf = 0, nfiles = 0;
    flags[nf++] = argv[0];
    for (int a = 1; a < argc; a++) {
        const char *w = argv[a];
        if (!strcmp(w, "-o")) w = "--output";
        if (!strcmp(w, "--input")) { /* merged with the plain words: the parser keeps one list */
            while (a + 1 < argc && argv[a + 1][0] != '-')
                files[nfiles++] = argv[++a];
        } else if (!strncmp(w, "--input=", 8)) {
            files[nfiles++] = (char *)w + 8;
        } else if (w[0] == '-' && w[1] == '-') {
            flags[nf++] = (char *)w;
            const FlagSpec *s = find_flag(w);
            if (!s || strchr(w, '=') || s->kind == FLAG_SWITCH || s->kind == FLAG_SWITCH_OFF)
                continue;
            if (s->kind == FLAG_LIST)
                while (a + 1 < argc && argv[a + 1][0] != '-')
                    flags[nf++] = argv[++a];
            else if (a + 1 < argc)
                flags[nf++] = argv[++a];
        } else if (w[0] == '-' && w[1] != 0) {
            flags[nf++] = (char *)w; /* -h, or an unknown flag the parser names */
        } else {
            files[nfiles++] = (char *)w;
        }
    }
    if (nfiles > 0) {
        flags[nf++] = "--input";
        for (int i = 0; i < nfiles; i++)
            flags[nf++] = files[i];
    }
    free(files);
    *out_argc = nf;
    return flags;
}

static XAxis parse_axis(const Options *o) {
    if (!strcmp(o->x, "iteration")) return X_ITERATION;
    if (!strcmp(o->x, "samples")) return X_SAMPLES;
    if (!strcmp(o->x, "tokens")) {
        if (o->seq_length <= 0)
            gpt3d_fail_user("--x tokens needs the run's --seq-length (tokens = consumed_samples "
                            "x seq_length; the metrics do not record it)");
        return X_TOKENS;
    }
    gpt3d_fail_user("--x must be iteration, samples or tokens (got '%s')", o->x);
}

static const char SUMMARY[] =
    "Plots training and validation loss (and --metrics like lr, grad_norm, tokens_per_s) of "
    "one or more pretrain_gpt --metrics-file JSONL files against iteration, samples or tokens "
    "into a PNG, with gnuplot. Usage: plot_metrics RUN.jsonl... -o loss.png";

int main(int argc, char **argv) {
    int n_args;
    char **args = normalise_args(argc, argv, &n_args);
    Options o;
    FlagParser parser;
    bool wants_help = false;
    if (!flags_parse(&parser, FLAGS, NUM_FLAGS, &o, n_args, args, &wants_help)) {
        fprintf(stderr, "error: %s\n", parser.error);
        return 2;
    }
    if (wants_help) {
        flags_print_help(FLAGS, NUM_FLAGS, "plot_metrics", SUMMARY, stdout);
        return 0;
    }
    if (o.input.count == 0)
        gpt3d_fail_user("no metrics file given: plot_metrics RUN.jsonl... -o loss.png");
    if (o.width < 100 || o.width > 10000 || o.height < 100 || o.height > 10000)
        gpt3d_fail_user("--width and --height must be between 100 and 10000 pixels");
    XAxis axis = parse_axis(&o);
    MetricSet m;
    parse_metrics(&o.metrics, &m);
    Run *runs = xcalloc((size_t)o.input.count, sizeof *runs);
    for (int r = 0; r < o.input.count; r++) {
        runs[r].path = o.input.items[r];
        read_run(&runs[r], &m, axis, o.seq_length);
    }
    label_runs(runs, o.input.count);
    Plot p = {.o = &o, .m = &m, .runs = runs, .num_runs = o.input.count, .axis = axis};
    for (int i = 0; i < m.count; i++) {
        bool any = false;
        for (int r = 0; r < p.num_runs; r++)
            any |= runs[r].series[i].count > 0;
        if (!any && !is_loss(m.names[i]))
            fprintf(stderr, "warning: no metrics file has \"%s\"; it is not plotted\n", m.names[i]);
    }
    if (panels_with_data(&p) == 0) {
        char names[1024] = "";
        for (int i = 0; i < m.count; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     m.names[i]);
        gpt3d_fail_user("no metrics file has any of the metrics %s (a gpt3d metrics file has "
                        "lm_loss; see --metrics)",
                        names);
    }
    plot(&p);
    printf("plot_metrics: wrote %s (%d run%s, %d panel%s, x = %s)\n", o.output, p.num_runs,
           p.num_runs == 1 ? "" : "s", panels_with_data(&p), panels_with_data(&p) == 1 ? "" : "s",
           X_LABELS[axis]);
    for (int r = 0; r < p.num_runs; r++) {
        for (int i = 0; i < m.count; i++) {
            free(runs[r].series[i].x);
            free(runs[r].series[i].y);
        }
        free(runs[r].label);
    }
    for (int i = 0; i < m.count; i++)
        free(m.names[i]);
    free(runs);
    flags_free(&parser, &o);
    free(args);
    return 0;
}
