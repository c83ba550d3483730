/* tools/checkpoint_info — what a gpt3d checkpoint holds.
 *
 * Prints a checkpoint's iteration and training state, the model shape, the
 * layout it was saved with, and its parameter counts; --norms adds the L2
 * norm of every parameter's weights and Adam moments in canonical order
 * (the order of the model's state dict: embeddings, layers 0..L-1, final
 * layernorm), which do not depend on the layout, so two checkpoints of the
 * same run at different layouts can be compared; --verify checks that every
 * canonical element of every parameter the model shape implies is stored
 * exactly once, then reads every dataset and checks every CRC32C block. Norms are read in chunks of --chunk-elements, so memory stays
 * bounded whatever the model size.
 * --compare-to DIR compares the checkpoint with another one, of any layout,
 * element by element in canonical coordinates (checkpoint_compare below):
 * bitwise by default, or within --rtol/--atol.
 * Exit status: 0 shown (or the same), 1 --verify found a defect (or the
 * checkpoints differ), 2 bad usage or a checkpoint that cannot be read. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "core/flags.h"
#include "model/gpt_model.h"

typedef struct {
    char *load;
    int64_t iteration;
    bool verify, norms, json;
    int64_t chunk_elements;
    char *compare_to;
    int64_t compare_iteration;
    double rtol, atol;
    char *compare_tensors;
    bool ignore_training_state;
} Options;

#define MAX_CHUNK_ELEMENTS ((int64_t)1 << 28) /* 1 GiB of fp32 */

static const FlagSpec FLAGS[] = {
    {"load", FLAG_STRING, offsetof(Options, load), NULL, "DIR",
     "the --save directory of a training run", "checkpoint", true},
    {"iteration", FLAG_INT64, offsetof(Options, iteration), NULL, "N",
     "show the checkpoint of iteration N (default: the one latest_checkpointed_iteration.txt "
     "names)",
     "checkpoint", false},
    {"verify", FLAG_SWITCH, offsetof(Options, verify), NULL, NULL,
     "check that every canonical element of every parameter of the model shape is stored "
     "exactly once across the rank files, and read every dataset checking its CRC32C "
     "checksums; exit status 1 naming the first defect",
     "checks", false},
    {"norms", FLAG_SWITCH, offsetof(Options, norms), NULL, NULL,
     "print each parameter's L2 norm of weight, exp_avg and exp_avg_sq (computed in double), "
     "in canonical order",
     "checks", false},
    {"chunk-elements", FLAG_INT64, offsetof(Options, chunk_elements), "4194304", "K",
     "read at most K elements at a time for --norms (memory: 4*K bytes)", "checks", false},
    {"json", FLAG_SWITCH, offsetof(Options, json), NULL, NULL,
     "print one JSON object instead of text", "output", false},
    {"compare-to", FLAG_STRING, offsetof(Options, compare_to), NULL, "DIR",
     "compare with the checkpoint in DIR (any layout), element by element in canonical "
     "coordinates, plus model shape and training state; exit status 1 when they differ",
     "compare", false},
    {"compare-iteration", FLAG_INT64, offsetof(Options, compare_iteration), NULL, "N",
     "the iteration of --compare-to to use (default: its latest)", "compare", false},
    {"rtol", FLAG_DOUBLE, offsetof(Options, rtol), "0", "R",
     "relative tolerance: element a matches reference b when |a-b| <= atol + R*|b| "
     "(with --rtol 0 and --atol 0, the default, elements must be bitwise equal)",
     "compare", false},
    {"atol", FLAG_DOUBLE, offsetof(Options, atol), "0", "A", "absolute tolerance, see --rtol",
     "compare", false},
    {"compare-tensors", FLAG_STRING, offsetof(Options, compare_tensors),
     "weight,exp_avg,exp_avg_sq", "LIST", "comma-separated tensors to compare", "compare", false},
    {"ignore-training-state", FLAG_SWITCH, offsetof(Options, ignore_training_state), NULL, NULL,
     "do not compare iteration, consumed samples, optimizer and scheduler steps, loss scale "
     "and seed",
     "compare", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static const char *const TENSOR_LABELS[3] = {"weight", "exp_avg", "exp_avg_sq"};

/* One parameter, as the model shape implies it and as the rank files hold it. */
typedef struct {
    char *name;
    bool expected; /* the model shape in metadata.json has it */
    bool stored;   /* some rank file holds it */
    int ndim;      /* stored shape when stored, else the expected one */
    int64_t shape[CHECKPOINT_MAX_DIMS];
    int64_t numel;
    int expected_ndim;
    int64_t expected_shape[CHECKPOINT_MAX_DIMS];
    bool has_norm[3];
    double norm[3];
} ParamReport;

typedef struct {
    char dir[4096];
    CheckpointMeta meta;
    ParamReport *params; /* canonical order, then unexpected ones by name */
    int count, stored_count;
    int64_t stored_numel, expected_numel;
    bool verified, valid;
    char verify_error[2048];
    bool checksums_checked, checksums_ok; /* --verify read every dataset */
    CheckpointVerifyStats checksum_stats;
    char checksum_error[4096];
    bool norms_done;
} Report;

/* --------------------------------------------------------- opening */

/* ------------------------------------------------------- parameters */

/* Only names and shapes are needed from it: the run settings do not matter.
 * (metadata.json passed transformer_config_check when it was read, so the
 * table it describes is one gpt3d can build.) */
static TransformerConfig config_of(const CheckpointMeta *m) { return m->model; }

static void add_param(Report *rep, const CheckpointReader *r, const char *name,
                      const ParamInfo *expected) {
    ParamReport *p = &rep->params[rep->count++];
    memset(p, 0, sizeof *p);
    p->name = xstrdup(name);
    p->stored = checkpoint_param_shape(r, name, &p->ndim, p->shape);
    if (expected) {
        p->expected = true;
        p->expected_ndim = expected->ndim;
        for (int d = 0; d < expected->ndim && d < CHECKPOINT_MAX_DIMS; d++)
            p->expected_shape[d] = expected->shape[d];
        if (!p->stored) {
            p->ndim = p->expected_ndim;
            memcpy(p->shape, p->expected_shape, sizeof p->shape);
        }
    }
    p->numel = 1;
    for (int d = 0; d < p->ndim; d++)
        p->numel *= p->shape[d];
    if (p->stored) {
        rep->stored_count++;
        rep->stored_numel += p->numel;
    }
}

/* The model's full parameter table lists parameters in the order gradients
 * become ready (last layer first); its reverse is the state-dict order. */
static void collect_params(Report *rep, const CheckpointReader *r) {
    TransformerConfig cfg = config_of(&rep->meta);
    ModelPartition whole = {.tp_size = 1,
                            .tp_rank = 0,
                            .first_layer = 0,
                            .num_local_layers = cfg.num_layers,
                            .has_embedding = true,
                            .has_head = true};
    ParamTable table;
    param_table_build(&table, &cfg, &whole);
    int stored = checkpoint_num_params(r);
    rep->params = xcalloc((size_t)table.count + (size_t)stored + 1, sizeof *rep->params);
    for (int i = table.count - 1; i >= 0; i--) {
        add_param(rep, r, table.params[i].name, &table.params[i]);
        rep->expected_numel += table.params[i].canonical_numel;
    }
    for (int i = 0; i < stored; i++) {
        const char *name = checkpoint_param_name(r, i);
        if (param_table_find(&table, name) < 0) add_param(rep, r, name, NULL);
    }
    param_table_free(&table);
}

static void free_report(Report *rep) {
    for (int i = 0; i < rep->count; i++)
        free(rep->params[i].name);
    free(rep->params);
}

static void format_shape(int ndim, const int64_t *shape, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(out + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < size) snprintf(out + used, size - used, "]");
}

/* --------------------------------------------------------- checking */

/* Messages may be cut to err_size; they name the checkpoint first, so what
 * survives still says where to look. */
static void set_error(char *err, size_t err_size, const char *fmt, ...) GPT3D_PRINTF(3, 4);
static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

static bool same_shape(const ParamReport *p) {
    if (p->ndim != p->expected_ndim) return false;
    for (int d = 0; d < p->ndim; d++)
        if (p->shape[d] != p->expected_shape[d]) return false;
    return true;
}

/* The rank files must hold exactly the parameters the model shape implies,
 * each with its canonical shape; coverage alone cannot see a parameter that
 * no rank wrote at all. */
static bool check_param_set(const Report *rep, char *err, size_t err_size) {
    for (int i = 0; i < rep->count; i++) {
        const ParamReport *p = &rep->params[i];
        char have[160], want[160];
        format_shape(p->ndim, p->shape, have, sizeof have);
        format_shape(p->expected_ndim, p->expected_shape, want, sizeof want);
        if (!p->stored) {
            set_error(err, err_size,
                      "checkpoint '%s': parameter '%s' %s of the model shape in metadata.json "
                      "is in no rank file",
                      rep->dir, p->name, want);
            return false;
        }
        if (!p->expected) {
            set_error(err, err_size,
                      "checkpoint '%s': the rank files hold parameter '%s' %s, which the model "
                      "shape in metadata.json does not have",
                      rep->dir, p->name, have);
            return false;
        }
        if (!same_shape(p)) {
            set_error(err, err_size,
                      "checkpoint '%s': parameter '%s' has canonical shape %s in the rank files "
                      "but the model shape in metadata.json implies %s",
                      rep->dir, p->name, have, want);
            return false;
        }
    }
    return true;
}

/* Coverage first (cheap, from the index), then every dataset read whole and
 * every checksum block checked: --verify passing means a load would too. */
static void verify(Report *rep, CheckpointReader *r) {
    rep->verified = true;
    rep->valid = checkpoint_verify_coverage(r, rep->verify_error, sizeof rep->verify_error) &&
                 check_param_set(rep, rep->verify_error, sizeof rep->verify_error);
    rep->checksums_checked = true;
    rep->checksums_ok = checkpoint_verify_checksums(r, &rep->checksum_stats, rep->checksum_error,
                                                    sizeof rep->checksum_error);
    if (!rep->checksums_ok) rep->valid = false;
}

/* ------------------------------------------------------------ norms */

static bool tensor_norm(CheckpointReader *r, const ParamReport *p, CheckpointTensor which,
                        float *buf, int64_t chunk, double *norm, char *err, size_t err_size) {
    double sum = 0.0;
    for (int64_t begin = 0; begin < p->numel; begin += chunk) {
        int64_t end = p->numel - begin > chunk ? begin + chunk : p->numel;
        if (!checkpoint_read(r, p->name, which, begin, end, buf, err, err_size)) return false;
        for (int64_t i = 0; i < end - begin; i++)
            sum += (double)buf[i] * (double)buf[i];
    }
    *norm = sqrt(sum);
    return true;
}

static void compute_norms(Report *rep, CheckpointReader *r, int64_t chunk) {
    int64_t largest = 1;
    for (int i = 0; i < rep->count; i++)
        if (rep->params[i].stored && rep->params[i].numel > largest) largest = rep->params[i].numel;
    int64_t buf_numel = largest < chunk ? largest : chunk;
    float *buf = xmalloc((size_t)buf_numel * sizeof *buf);
    int tensors = rep->meta.has_optimizer_state ? 3 : 1;
    char err[2048];
    for (int i = 0; i < rep->count; i++) {
        ParamReport *p = &rep->params[i];
        if (!p->stored) continue;
        for (int t = 0; t < tensors; t++) {
            if (!tensor_norm(r, p, (CheckpointTensor)t, buf, buf_numel, &p->norm[t], err,
                             sizeof err))
                gpt3d_fail_user("%s (checkpoint_info --verify checks the whole checkpoint)", err);
            p->has_norm[t] = true;
        }
    }
    free(buf);
    rep->norms_done = true;
}

/* ------------------------------------------------------------- text */

static const char COVERAGE_OK[] =
    "every canonical element of every parameter is stored exactly once";

static void print_meta_text(const Report *rep) {
    const CheckpointMeta *m = &rep->meta;
    printf("checkpoint: %s\n", rep->dir);
    printf("iteration: %" PRId64 "\n", m->iteration);
    printf("consumed samples: %" PRId64 "\n", m->consumed_train_samples);
    printf("optimizer step: %" PRId64 "\n", m->optimizer_step);
    printf("scheduler steps: %" PRId64 "\n", m->scheduler_num_steps);
    printf("loss scale: %.17g (%s", m->loss_scale, CHECKPOINT_LOSS_SCALERS[m->loss_scaler]);
    if (m->loss_scaler == CKPT_LOSS_SCALER_DYNAMIC)
        printf("; growth tracker %d, hysteresis tracker %d", m->loss_scale_growth_tracker,
               m->loss_scale_hysteresis_tracker);
    printf(")\n");
    printf("model: %d layers, hidden %d, %d heads, ffn %d, vocab %" PRId64 " (padded %" PRId64
           "), max positions %d, seq length %d\n",
           m->model.num_layers, m->model.hidden_size, m->model.num_attention_heads,
           m->model.ffn_hidden_size, m->model.vocab_size, m->model.padded_vocab_size,
           m->model.max_position_embeddings, m->model.seq_length);
    printf("saved with: TP %d, PP %d, DP %d, CP %d, world size %d\n",
           m->tensor_model_parallel_size, m->pipeline_model_parallel_size, m->data_parallel_size,
           m->context_parallel_size, m->world_size);
    printf("seed: %" PRIu64 "\n", m->model.seed);
    printf("tokenizer: %s\n", m->tokenizer_type[0] ? m->tokenizer_type : "(not recorded)");
    printf("data: %s\n", m->data_description[0] ? m->data_description : "(not recorded)");
    printf("optimizer state: %s\n",
           m->has_optimizer_state ? "present (fp32 exp_avg, exp_avg_sq)" : "absent");
    printf("parameters: %d tensors, %" PRId64
           " canonical elements (the model shape implies %" PRId64 ")\n",
           rep->stored_count, rep->stored_numel, rep->expected_numel);
}

static void print_norm_cell(const ParamReport *p, int t) {
    if (p->has_norm[t])
        printf("  %16.9e", p->norm[t]);
    else
        printf("  %16s", "-");
}

static void print_norms_text(const Report *rep) {
    int name_width = 9, shape_width = 5;
    char shape[160];
    for (int i = 0; i < rep->count; i++) {
        int n = (int)strlen(rep->params[i].name);
        if (n > name_width) name_width = n;
        format_shape(rep->params[i].ndim, rep->params[i].shape, shape, sizeof shape);
        if ((int)strlen(shape) > shape_width) shape_width = (int)strlen(shape);
    }
    printf("norms (L2 of the fp32 values, summed in double):\n");
    printf("  %-*s  %-*s  %16s  %16s  %16s\n", name_width, "parameter", shape_width, "shape",
           TENSOR_LABELS[0], TENSOR_LABELS[1], TENSOR_LABELS[2]);
    for (int i = 0; i < rep->count; i++) {
        const ParamReport *p = &rep->params[i];
        format_shape(p->ndim, p->shape, shape, sizeof shape);
        printf("  %-*s  %-*s", name_width, p->name, shape_width, shape);
        if (!p->stored) {
            printf("  (in no rank file)\n");
            continue;
        }
        for (int t = 0; t < 3; t++)
            print_norm_cell(p, t);
        printf("\n");
    }
}

static void print_checksums_text(const Report *rep) {
    const CheckpointVerifyStats *st = &rep->checksum_stats;
    if (!rep->checksums_ok)
        printf("checksums: FAILED: %s\n", rep->checksum_error);
    else if (rep->meta.format_version < 2)
        printf("checksums: none (a format version %d checkpoint carries none); read all %" PRId64
               " datasets, %" PRId64 " bytes\n",
               rep->meta.format_version, st->datasets, st->bytes);
    else
        printf("checksums: verified %" PRId64 " datasets, %" PRId64 " bytes, %" PRId64
               " CRC32C blocks\n",
               st->datasets, st->bytes, st->blocks);
}

static void print_text(const Report *rep, bool norms_requested) {
    print_meta_text(rep);
    if (rep->verified) {
        if (!rep->verify_error[0])
            printf("coverage: %s\n", COVERAGE_OK);
        else
            printf("coverage: FAILED: %s\n", rep->verify_error);
        print_checksums_text(rep);
    }
    if (rep->norms_done)
        print_norms_text(rep);
    else if (norms_requested)
        printf("norms: not computed, the checkpoint failed --verify\n");
}

/* ------------------------------------------------------------- JSON */

static void add_integer(cJSON *obj, const char *key, int64_t v) {
    /* cJSON keeps numbers as doubles; the raw text keeps every digit. */
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, v);
    GPT3D_CHECK(cJSON_AddRawToObject(obj, key, text) != NULL, "out of memory");
}

/* Variant fields: numbers and booleans as JSON values, choices by name. */
static void add_variant_text(cJSON *obj, const char *key, const TransformerConfig *c, bool raw) {
    char text[TRANSFORMER_FIELD_TEXT_MAX];
    transformer_config_field_text(c, key, text, sizeof text);
    GPT3D_CHECK((raw ? cJSON_AddRawToObject(obj, key, text) : cJSON_AddStringToObject(obj, key, text)) != NULL,
                "out of memory");
}
#define add_variant_int(obj, key, c) add_variant_text(obj, key, c, true)
#define add_variant_count(obj, key, c) add_variant_text(obj, key, c, true)
#define add_variant_f64(obj, key, c) add_variant_text(obj, key, c, true)
#define add_variant_bool(obj, key, c) add_variant_text(obj, key, c, true)
#define add_variant_choice(obj, key, c) add_variant_text(obj, key, c, false)

static void add_model_json(cJSON *root, const CheckpointMeta *m) {
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    GPT3D_CHECK(model != NULL, "out of memory");
#define ADD_ARCH(f, kind, max, what) add_integer(model, #f, m->model.f);
    TRANSFORMER_ARCH_FIELDS(ADD_ARCH)
#undef ADD_ARCH
#define ADD_VARIANT(f, kind, names, what) add_variant_##kind(model, #f, &m->model);
    TRANSFORMER_VARIANT_FIELDS(ADD_VARIANT)
#undef ADD_VARIANT
    add_integer(model, "seq_length", m->model.seq_length);
    cJSON *layout = cJSON_AddObjectToObject(root, "layout");
    GPT3D_CHECK(layout != NULL, "out of memory");
    add_integer(layout, "tensor_model_parallel_size", m->tensor_model_parallel_size);
    add_integer(layout, "pipeline_model_parallel_size", m->pipeline_model_parallel_size);
    add_integer(layout, "data_parallel_size", m->data_parallel_size);
    add_integer(layout, "context_parallel_size", m->context_parallel_size);
    add_integer(layout, "world_size", m->world_size);
}

static void add_meta_json(cJSON *root, const Report *rep) {
    const CheckpointMeta *m = &rep->meta;
    cJSON_AddStringToObject(root, "checkpoint", rep->dir);
    add_integer(root, "iteration", m->iteration);
    add_integer(root, "consumed_train_samples", m->consumed_train_samples);
    add_integer(root, "optimizer_step", m->optimizer_step);
    add_integer(root, "scheduler_num_steps", m->scheduler_num_steps);
    cJSON_AddNumberToObject(root, "loss_scale", m->loss_scale);
    cJSON_AddStringToObject(root, "loss_scaler", CHECKPOINT_LOSS_SCALERS[m->loss_scaler]);
    add_integer(root, "loss_scale_growth_tracker", m->loss_scale_growth_tracker);
    add_integer(root, "loss_scale_hysteresis_tracker", m->loss_scale_hysteresis_tracker);
    add_model_json(root, m);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, m->model.seed);
    cJSON_AddRawToObject(root, "seed", seed);
    cJSON_AddStringToObject(root, "tokenizer_type", m->tokenizer_type);
    cJSON_AddStringToObject(root, "data_description", m->data_description);
    cJSON_AddBoolToObject(root, "has_optimizer_state", m->has_optimizer_state);
    add_integer(root, "num_parameters", rep->stored_count);
    add_integer(root, "canonical_parameter_count", rep->stored_numel);
    add_integer(root, "expected_canonical_parameter_count", rep->expected_numel);
}

static cJSON *param_json(const ParamReport *p) {
    cJSON *obj = cJSON_CreateObject();
    GPT3D_CHECK(obj != NULL, "out of memory");
    cJSON_AddStringToObject(obj, "name", p->name);
    cJSON *shape = cJSON_AddArrayToObject(obj, "shape");
    for (int d = 0; d < p->ndim; d++)
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)p->shape[d]));
    add_integer(obj, "numel", p->numel);
    cJSON_AddBoolToObject(obj, "stored", p->stored);
    for (int t = 0; t < 3; t++) {
        char key[32];
        snprintf(key, sizeof key, "%s_norm", TENSOR_LABELS[t]);
        if (p->has_norm[t])
            cJSON_AddNumberToObject(obj, key, p->norm[t]);
        else
            cJSON_AddNullToObject(obj, key);
    }
    return obj;
}

static void print_json(const Report *rep) {
    cJSON *root = cJSON_CreateObject();
    GPT3D_CHECK(root != NULL, "out of memory");
    add_meta_json(root, rep);
    if (rep->verified) {
        cJSON *cov = cJSON_AddObjectToObject(root, "coverage");
        cJSON_AddBoolToObject(cov, "ok", !rep->verify_error[0]);
        cJSON_AddStringToObject(cov, "message",
                                rep->verify_error[0] ? rep->verify_error : COVERAGE_OK);
        cJSON *sums = cJSON_AddObjectToObject(root, "checksums");
        GPT3D_CHECK(sums != NULL, "out of memory");
        cJSON_AddBoolToObject(sums, "ok", rep->checksums_ok);
        add_integer(sums, "datasets", rep->checksum_stats.datasets);
        add_integer(sums, "bytes", rep->checksum_stats.bytes);
        add_integer(sums, "blocks", rep->checksum_stats.blocks);
        if (!rep->checksums_ok) cJSON_AddStringToObject(sums, "message", rep->checksum_error);
    }
    if (rep->norms_done) {
        cJSON *params = cJSON_AddArrayToObject(root, "parameters");
        for (int i = 0; i < rep->count; i++)
            cJSON_AddItemToArray(params, param_json(&rep->params[i]));
    }
    char *text = cJSON_Print(root);
    GPT3D_CHECK(text != NULL, "out of memory printing JSON");
    printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(root);
}

/* Opens the checkpoint of load_dir that --iteration (or latest) names and
 * fills rep's metadata and parameter list; exits with a message when the
 * checkpoint cannot be read. */
static CheckpointReader *open_report(const char *load_dir, bool given, int64_t requested,
                                     Report *rep) {
    int64_t iteration = 0;
    char err[2048], note[2048];
    if (!checkpoint_resolve_iteration(load_dir, given, requested, &iteration, note, sizeof note,
                                      err, sizeof err))
        gpt3d_fail_user("%s", err);
    /* stderr: stdout may be --json */
    if (note[0]) fprintf(stderr, "note: %s\n", note);
    CheckpointReader *r = checkpoint_open(load_dir, iteration, err, sizeof err);
    if (!r) gpt3d_fail_user("%s", err);
    memset(rep, 0, sizeof *rep);
    checkpoint_iter_dir(rep->dir, sizeof rep->dir, load_dir, iteration);
    rep->meta = *checkpoint_meta(r);
    collect_params(rep, r);
    return r;
}

/* ---------------------------------------------------------- compare */

/* How a tensor kind compared: element counts and the largest differences,
 * the latter only for reporting (pass or fail is decided per element). */
typedef struct {
    int64_t compared, mismatched, nonfinite;
    double max_abs, max_rel; /* max_rel over elements whose reference is non-zero */
} TensorStats;

typedef struct {
    const Options *o;
    bool bitwise;
    int shown; /* mismatches printed so far */
} CompareCtx;

#define MAX_SHOWN_MISMATCHES 10

static bool bits_equal(float a, float b) {
    uint32_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return x == y;
}

/* Element a of the checkpoint against element b of the reference. A NaN or
 * inf on either side never matches: a checkpoint holding one is broken,
 * whatever the other holds. */
static void compare_element(CompareCtx *c, TensorStats *st, const char *param, const char *label,
                            int64_t index, float a, float b) {
    st->compared++;
    const bool finite = isfinite(a) && isfinite(b);
    const double d = fabs((double)a - (double)b);
    bool ok;
    if (!finite)
        ok = false;
    else if (c->bitwise)
        ok = bits_equal(a, b);
    else
        ok = d <= c->o->atol + c->o->rtol * fabs((double)b);
    if (finite) {
        if (d > st->max_abs) st->max_abs = d;
        if (b != 0.0f && d / fabs((double)b) > st->max_rel) st->max_rel = d / fabs((double)b);
    }
    if (ok) return;
    st->mismatched++;
    if (!finite) st->nonfinite++;
    if (c->shown++ < MAX_SHOWN_MISMATCHES)
        printf("differ: %s %s[%" PRId64 "]: %.9g, reference %.9g%s\n", param, label, index, a, b,
               finite ? "" : " (not finite)");
}

/* Reads both checkpoints piece by piece, each piece inside one stored
 * interval of each (checkpoint_stored_piece_end), so the comparison does not
 * trust the reader's stitching of rank files that it is meant to check. */
static void compare_tensor(CompareCtx *c, CheckpointReader *ra, CheckpointReader *rb,
                           const ParamReport *p, CheckpointTensor which, float *a, float *b,
                           int64_t chunk, TensorStats *st) {
    char err[2048];
    for (int64_t pos = 0; pos < p->numel;) {
        int64_t end = p->numel - pos > chunk ? pos + chunk : p->numel;
        const int64_t ea = checkpoint_stored_piece_end(ra, p->name, pos);
        const int64_t eb = checkpoint_stored_piece_end(rb, p->name, pos);
        if (ea < 0 || eb < 0)
            gpt3d_fail_user("parameter '%s' element %" PRId64 " is in no rank file of %s", p->name,
                            pos, ea < 0 ? "the checkpoint" : "the reference");
        if (ea < end) end = ea;
        if (eb < end) end = eb;
        if (!checkpoint_read(ra, p->name, which, pos, end, a, err, sizeof err) ||
            !checkpoint_read(rb, p->name, which, pos, end, b, err, sizeof err))
            gpt3d_fail_user("%s", err);
        for (int64_t i = 0; i < end - pos; i++)
            compare_element(c, st, p->name, TENSOR_LABELS[which], pos + i, a[i], b[i]);
        pos = end;
    }
}

/* Makes the first differing architecture field of a equal to b's. */
static bool copy_first_variant_difference(TransformerConfig *a, const TransformerConfig *b) {
#define COPY_FIRST(f, kind, extra, what)                                                           \
    if (a->f != b->f) {                                                                            \
        a->f = b->f;                                                                               \
        return true;                                                                               \
    }
    TRANSFORMER_ARCH_FIELDS(COPY_FIRST)
    TRANSFORMER_VARIANT_FIELDS(COPY_FIRST)
#undef COPY_FIRST
    return false;
}

/* The model shape always has to match; the training state unless
 * --ignore-training-state. Prints each difference; true when none. */
static bool compare_meta(const CheckpointMeta *a, const CheckpointMeta *b, bool shape, bool state) {
    bool same = true;
#define SAME(field, label)                                                                         \
    if ((int64_t)a->field != (int64_t)b->field) {                                                  \
        printf("differ: %s %" PRId64 ", reference %" PRId64 "\n", label, (int64_t)a->field,        \
               (int64_t)b->field);                                                                 \
        same = false;                                                                              \
    }
#define SAME_ARCH(f, kind, max, what) SAME(model.f, #f)
    if (shape) {
        TRANSFORMER_ARCH_FIELDS(SAME_ARCH)
        char ta[TRANSFORMER_FIELD_TEXT_MAX], tb[TRANSFORMER_FIELD_TEXT_MAX];
        TransformerConfig va = a->model, vb = b->model;
#define COPY_ARCH(f, kind, max, what) va.f = vb.f; /* reported above */
        TRANSFORMER_ARCH_FIELDS(COPY_ARCH)
#undef COPY_ARCH
        const char *what;
        /* The variant fields compared one by one: each difference reported. */
        while ((what = transformer_config_difference(&va, &vb, ta, tb, sizeof ta)) != NULL) {
            printf("differ: %s %s, reference %s\n", what, ta, tb);
            same = false;
            if (!copy_first_variant_difference(&va, &vb)) break;
        }
    }
#undef SAME_ARCH
    if (state) {
        SAME(iteration, "iteration");
        SAME(consumed_train_samples, "consumed samples");
        SAME(optimizer_step, "optimizer step");
        SAME(scheduler_num_steps, "scheduler steps");
        SAME(model.seed, "seed");
        SAME(loss_scaler, "loss scaler");
        SAME(loss_scale_growth_tracker, "loss-scale growth tracker");
        SAME(loss_scale_hysteresis_tracker, "loss-scale hysteresis tracker");
        if (!(a->loss_scale == b->loss_scale)) {
            printf("differ: loss scale %.17g, reference %.17g\n", a->loss_scale, b->loss_scale);
            same = false;
        }
    }
#undef SAME
    return same;
}

/* --compare-tensors: a comma-separated subset of the three tensor names. */
static void parse_tensor_list(const char *list, bool want[3]) {
    want[0] = want[1] = want[2] = false;
    char *copy = xstrdup(list), *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
        int k = 0;
        while (k < 3 && strcmp(t, TENSOR_LABELS[k]))
            k++;
        if (k == 3)
            gpt3d_fail_user("--compare-tensors: unknown tensor '%s' (use weight, exp_avg, "
                            "exp_avg_sq, comma-separated)",
                            t);
        want[k] = true;
    }
    free(copy);
    if (n == 0) gpt3d_fail_user("--compare-tensors is empty (use weight, exp_avg, exp_avg_sq)");
}

static int compare_checkpoints(const Options *o, bool iteration_given, bool ref_given) {
    bool want[3];
    parse_tensor_list(o->compare_tensors, want);
    Report ra, rb;
    CheckpointReader *a = open_report(o->load, iteration_given, o->iteration, &ra);
    CheckpointReader *b = open_report(o->compare_to, ref_given, o->compare_iteration, &rb);
    printf("checkpoint: %s (TP %d, PP %d, DP %d)\n", ra.dir, ra.meta.tensor_model_parallel_size,
           ra.meta.pipeline_model_parallel_size, ra.meta.data_parallel_size);
    printf("reference: %s (TP %d, PP %d, DP %d)\n", rb.dir, rb.meta.tensor_model_parallel_size,
           rb.meta.pipeline_model_parallel_size, rb.meta.data_parallel_size);
    const bool same_shape_meta = compare_meta(&ra.meta, &rb.meta, true, false);
    bool same =
        compare_meta(&ra.meta, &rb.meta, false, !o->ignore_training_state) && same_shape_meta;
    /* Parameters must match the model shape exactly, in both: a parameter
     * missing from one side is a difference, not something to skip. */
    verify(&ra, a);
    verify(&rb, b);
    if (!ra.valid) printf("differ: %s\n", ra.verify_error[0] ? ra.verify_error : ra.checksum_error);
    if (!rb.valid) printf("differ: %s\n", rb.verify_error[0] ? rb.verify_error : rb.checksum_error);
    for (int t = 1; t < 3; t++)
        if (want[t] && (!ra.meta.has_optimizer_state || !rb.meta.has_optimizer_state)) {
            printf("differ: %s has no optimizer state to compare %s\n",
                   ra.meta.has_optimizer_state ? "the reference" : "the checkpoint",
                   TENSOR_LABELS[t]);
            same = false;
            want[1] = want[2] = false;
        }
    CompareCtx ctx = {.o = o, .bitwise = o->rtol == 0.0 && o->atol == 0.0};
    TensorStats stats[3];
    memset(stats, 0, sizeof stats);
    if (ra.valid && rb.valid && same_shape_meta) {
        int64_t largest = 1;
        for (int i = 0; i < ra.count; i++)
            if (ra.params[i].numel > largest) largest = ra.params[i].numel;
        const int64_t chunk = largest < o->chunk_elements ? largest : o->chunk_elements;
        float *buf_a = xmalloc((size_t)chunk * sizeof(float));
        float *buf_b = xmalloc((size_t)chunk * sizeof(float));
        /* Both passed verify against the same model shape, so they hold the
         * same parameters with the same shapes, in ra's canonical order. */
        for (int t = 0; t < 3; t++)
            for (int i = 0; want[t] && i < ra.count; i++)
                compare_tensor(&ctx, a, b, &ra.params[i], (CheckpointTensor)t, buf_a, buf_b, chunk,
                               &stats[t]);
        free(buf_a);
        free(buf_b);
        for (int t = 0; t < 3; t++) {
            if (!want[t]) continue;
            const TensorStats *st = &stats[t];
            printf("%s: %" PRId64 " elements, %" PRId64 " differ (%" PRId64
                   " not finite); max |a-b| %.3e, max |a-b|/|b| %.3e\n",
                   TENSOR_LABELS[t], st->compared, st->mismatched, st->nonfinite, st->max_abs,
                   st->max_rel);
            if (st->mismatched || st->compared == 0) same = false;
        }
    }
    same = same && ra.valid && rb.valid;
    if (ctx.bitwise)
        printf("%s\n", same ? "same: bitwise equal" : "DIFFERENT (bitwise comparison)");
    else
        printf("%s (|a-b| <= %g + %g*|b| per element)\n", same ? "same" : "DIFFERENT", o->atol,
               o->rtol);
    free_report(&ra);
    free_report(&rb);
    checkpoint_close(a);
    checkpoint_close(b);
    return same ? 0 : 1;
}

/* ------------------------------------------------------------- main */

static const char SUMMARY[] =
    "Prints a gpt3d checkpoint's iteration, model shape, the layout it was saved with and "
    "its parameter counts; --norms adds per-parameter norms, --verify checks that every "
    "canonical element is stored exactly once and every checksum matches, --compare-to compares two checkpoints of any "
    "layouts element by element.";

static int describe(const Options *o, bool iteration_given) {
    Report rep;
    CheckpointReader *r = open_report(o->load, iteration_given, o->iteration, &rep);
    if (o->verify) verify(&rep, r);
    if (o->norms && (!rep.verified || rep.valid)) compute_norms(&rep, r, o->chunk_elements);
    if (o->json)
        print_json(&rep);
    else
        print_text(&rep, o->norms);
    int rc = rep.verified && !rep.valid ? 1 : 0;
    free_report(&rep);
    checkpoint_close(r);
    return rc;
}

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status =
        flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "checkpoint_info", SUMMARY);
    if (status >= 0) return status;
    if (o.chunk_elements < 1 || o.chunk_elements > MAX_CHUNK_ELEMENTS)
        gpt3d_fail_user("--chunk-elements must be between 1 and %" PRId64 " (got %" PRId64 ")",
                        MAX_CHUNK_ELEMENTS, o.chunk_elements);
    const bool compare = o.compare_to != NULL;
    if (!(o.rtol >= 0.0 && isfinite(o.rtol)) || !(o.atol >= 0.0 && isfinite(o.atol)))
        gpt3d_fail_user("--rtol and --atol must be finite and >= 0 (got %g, %g)", o.rtol, o.atol);
    if (compare && (o.norms || o.json || o.verify))
        gpt3d_fail_user("--compare-to cannot be combined with --norms, --json or --verify (it "
                        "verifies both checkpoints itself)");
    if (!compare && (flags_was_set(&parser, "compare-iteration") ||
                     flags_was_set(&parser, "rtol") || flags_was_set(&parser, "atol") ||
                     flags_was_set(&parser, "compare-tensors") || o.ignore_training_state))
        gpt3d_fail_user("--compare-iteration, --rtol, --atol, --compare-tensors and "
                        "--ignore-training-state need --compare-to DIR");
    int rc = compare ? compare_checkpoints(&o, flags_was_set(&parser, "iteration"),
                                           flags_was_set(&parser, "compare-iteration"))
                     : describe(&o, flags_was_set(&parser, "iteration"));
    flags_free(&parser, &o);
    return rc;
}
