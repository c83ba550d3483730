/* checkpoint/checkpoint_meta.c — metadata.json of a checkpoint.
 *
 * One JSON object: "format": "gpt3d-checkpoint", "format_version": 3, then
 * every CheckpointMeta field under its C name. JSON numbers are doubles to
 * cJSON (and to most readers), so integers are stored only when |v| <= 2^53,
 * where the double is exact; a larger value fails the save rather than being
 * silently rounded. cJSON's own printer keeps only ~15 significant digits
 * (0.1*3 comes back as 0.3), so numbers are formatted here, exactly, and
 * inserted as raw JSON text; parsing (strtod) is exact. A field table drives
 * writing, reading and validation alike, so the three cannot drift apart.
 * Version 3 added the architecture variant (model/transformer_config.h);
 * an older file is of the GPT-2 variant. Version 4 added the context
 * parallel size, version 5 the mixture of experts.
 * Integrity (format version 2): "crc32c" holds 8 hex digits, the CRC32C of
 * the canonical text of every other field (cJSON's unformatted print of the
 * object this file builds, in table order). A reader rebuilds that text from
 * the values it parsed, so any change to a value (a flipped digit) fails the
 * check, while whitespace or key order, which change no value, do not
 * matter. Version 1 files carry no checksum and still load. */
#include "checkpoint/checkpoint_internal.h"

#include <cjson/cJSON.h>
#include "core/crc32c.h"
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_EXACT_INTEGER 9007199254740992.0 /* 2^53 */
#define MAX_META_BYTES (1 << 20)

typedef enum { F_I64, F_INT, F_U64, F_F64, F_BOOL, F_STR, F_CHOICE } FieldKind;

typedef struct {
    const char *name;
    FieldKind kind;
    size_t offset;
    size_t size;     /* F_STR: capacity of the char array */
    int64_t minimum; /* integer fields */
    const char *const *choices; /* F_CHOICE: the names, stored as text */
    int since;                  /* first format version that has the field */
} MetaField;

#define FIELD(f, kind, min)                                                                        \
    {#f, kind, offsetof(CheckpointMeta, f), sizeof(((CheckpointMeta *)0)->f), min, NULL, 1}
/* The model's fields keep their flat JSON keys (checkpoints of every
 * version read alike); the architecture's come from its one list. */
#define META_KIND_int F_INT
#define META_KIND_count F_INT
#define META_KIND_int64 F_I64
#define META_KIND_u64 F_U64
#define META_KIND_bool F_BOOL
#define META_KIND_f64 F_F64
#define META_KIND_choice F_CHOICE
#define MODEL_FIELD(f, kind, max, what)                                                            \
    {#f, META_KIND_##kind, offsetof(CheckpointMeta, model.f),                                      \
     sizeof(((CheckpointMeta *)0)->model.f), META_KIND_##kind == F_U64 ? 0 : 1, NULL, 1},
/* The architecture variant arrived with format version 3; older files are
 * of the GPT-2 variant (transformer_config_set_gpt2_variant). */
#define VARIANT_FIELD(f, kind, names, what)                                                        \
    {#f, META_KIND_##kind, offsetof(CheckpointMeta, model.f),                                      \
     sizeof(((CheckpointMeta *)0)->model.f), 1, names, 3},
/* The mixture of experts arrived with format version 5; an older file is
 * of a dense model (transformer_config_set_dense). A count may be 0. */
#define MOE_FIELD(f, kind, names, what)                                                            \
    {#f, META_KIND_##kind, offsetof(CheckpointMeta, model.f),                                      \
     sizeof(((CheckpointMeta *)0)->model.f), 0, names, 5},

const char *const CHECKPOINT_LOSS_SCALERS[] = {"none", "constant", "dynamic", NULL};

/* Loss scaling's state arrived with format version 6. */
#define SCALER_FIELD(f, kind, choices)                                                             \
    {#f, kind, offsetof(CheckpointMeta, f), sizeof(((CheckpointMeta *)0)->f), 0, choices, 6}

static const MetaField META_FIELDS[] = {
    FIELD(iteration, F_I64, 0),
    FIELD(consumed_train_samples, F_I64, 0),
    FIELD(optimizer_step, F_I64, 0),
    FIELD(scheduler_num_steps, F_I64, 0),
    FIELD(loss_scale, F_F64, 0),
    SCALER_FIELD(loss_scaler, F_CHOICE, CHECKPOINT_LOSS_SCALERS),
    SCALER_FIELD(loss_scale_growth_tracker, F_INT, NULL),
    SCALER_FIELD(loss_scale_hysteresis_tracker, F_INT, NULL),
    TRANSFORMER_ARCH_FIELDS(MODEL_FIELD)
    TRANSFORMER_DENSE_VARIANT_FIELDS(VARIANT_FIELD)
    TRANSFORMER_MOE_FIELDS(MOE_FIELD)
    MODEL_FIELD(seq_length, int, 0, 0)
    MODEL_FIELD(seed, u64, 0, 0)
    FIELD(tensor_model_parallel_size, F_INT, 1),
    FIELD(pipeline_model_parallel_size, F_INT, 1),
    FIELD(data_parallel_size, F_INT, 1),
    FIELD(world_size, F_INT, 1),
    {"context_parallel_size", F_INT, offsetof(CheckpointMeta, context_parallel_size),
     sizeof(int), 1, NULL, 4},
    FIELD(has_optimizer_state, F_BOOL, 0),
    FIELD(data_description, F_STR, 0),
    FIELD(tokenizer_type, F_STR, 0),
};
#define NUM_META_FIELDS ((int)(sizeof META_FIELDS / sizeof META_FIELDS[0]))

/* An integer field as a double (exact: every field is checked <= 2^53). */
static double field_integer(const CheckpointMeta *m, const MetaField *f) {
    const char *p = (const char *)m + f->offset;
    switch (f->kind) {
    case F_I64: return (double)*(const int64_t *)p;
    case F_INT: return (double)*(const int *)p;
    case F_U64: return (double)*(const uint64_t *)p;
    default: GPT3D_FAIL("field %s is not an integer", f->name);
    }
}

/* Integer fields hold values below 2^63, so printing them through %lld/%llu
 * needs their own type, not the double. */
static void format_integer(const CheckpointMeta *m, const MetaField *f, char *out, size_t size) {
    const char *p = (const char *)m + f->offset;
    if (f->kind == F_U64)
        snprintf(out, size, "%" PRIu64, *(const uint64_t *)p);
    else if (f->kind == F_I64)
        snprintf(out, size, "%" PRId64, *(const int64_t *)p);
    else
        snprintf(out, size, "%d", *(const int *)p);
}

static bool validate_integer(const CheckpointMeta *m, const MetaField *f, const char *where,
                             char *err, size_t err_size) {
    char text[32];
    format_integer(m, f, text, sizeof text);
    const char *p = (const char *)m + f->offset;
    bool too_big = f->kind == F_U64 ? *(const uint64_t *)p > (uint64_t)1 << 53
                                    : field_integer(m, f) > MAX_EXACT_INTEGER;
    if (too_big) {
        ckpt_set_err(err, err_size,
                     "%s: %s = %s is above 2^53 and cannot be stored exactly in JSON", where,
                     f->name, text);
        return false;
    }
    if (f->kind != F_U64 && field_integer(m, f) < (double)f->minimum) {
        ckpt_set_err(err, err_size, "%s: %s = %s must be at least %" PRId64, where, f->name,
                     text, f->minimum);
        return false;
    }
    return true;
}

static bool validate_field(const CheckpointMeta *m, const MetaField *f, const char *where,
                           char *err, size_t err_size) {
    const char *p = (const char *)m + f->offset;
    switch (f->kind) {
    case F_I64:
    case F_INT:
    case F_U64: return validate_integer(m, f, where, err, err_size);
    case F_F64:
        if (!isfinite(*(const double *)p) || *(const double *)p <= 0) {
            ckpt_set_err(err, err_size, "%s: %s = %g must be a finite positive number", where,
                         f->name, *(const double *)p);
            return false;
        }
        return true;
    case F_BOOL:
    case F_CHOICE: return true; /* transformer_config_check names a bad choice */
    case F_STR:
        if (memchr(p, '\0', f->size) == NULL) {
            ckpt_set_err(err, err_size, "%s: %s is longer than %zu bytes", where, f->name,
                         f->size - 1);
            return false;
        }
        return true;
    }
    return true;
}

bool ckpt_meta_validate(const CheckpointMeta *m, const char *where, char *err, size_t err_size) {
    for (int i = 0; i < NUM_META_FIELDS; i++)
        if (!validate_field(m, &META_FIELDS[i], where, err, err_size)) return false;
    if (!transformer_config_check(&m->model, where, err, err_size)) return false;
    int64_t layout = (int64_t)m->tensor_model_parallel_size * m->pipeline_model_parallel_size *
                     m->data_parallel_size * m->context_parallel_size;
    if (layout != m->world_size) {
        ckpt_set_err(err, err_size,
                     "%s: world_size %d is not tensor x pipeline x data x context parallel size = "
                     "%d x %d x %d x %d",
                     where, m->world_size, m->tensor_model_parallel_size,
                     m->pipeline_model_parallel_size, m->data_parallel_size,
                     m->context_parallel_size);
        return false;
    }
    return true;
}

/* The shortest decimal that reads back as exactly v. */
static void format_double(double v, char *out, size_t size) {
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(out, size, "%.*g", digits, v);
        if (strtod(out, NULL) == v) return;
    }
}

static bool add_raw_number(cJSON *root, const char *name, const char *text) {
    return cJSON_AddRawToObject(root, name, text) != NULL;
}

static const char *choice_name(const MetaField *f, int v) {
    for (int i = 0; f->choices[i]; i++)
        if (i == v) return f->choices[i];
    return "(unknown)";
}

static cJSON *meta_to_json(const CheckpointMeta *m, int version) {
    cJSON *root = cJSON_CreateObject();
    GPT3D_CHECK(root != NULL, "out of memory building %s", CKPT_META_FILE);
    bool ok = cJSON_AddStringToObject(root, "format", CHECKPOINT_FORMAT) &&
              cJSON_AddNumberToObject(root, "format_version", version);
    for (int i = 0; ok && i < NUM_META_FIELDS; i++) {
        const MetaField *f = &META_FIELDS[i];
        const char *p = (const char *)m + f->offset;
        char number[40];
        if (f->since > version) continue;
        switch (f->kind) {
        case F_I64:
        case F_INT:
        case F_U64:
            format_integer(m, f, number, sizeof number);
            ok = add_raw_number(root, f->name, number);
            break;
        case F_F64:
            format_double(*(const double *)p, number, sizeof number);
            ok = add_raw_number(root, f->name, number);
            break;
        case F_BOOL: ok = cJSON_AddBoolToObject(root, f->name, *(const bool *)p); break;
        case F_STR: ok = cJSON_AddStringToObject(root, f->name, p); break;
        case F_CHOICE: ok = cJSON_AddStringToObject(root, f->name, choice_name(f, *(const int *)p)); break;
        }
    }
    GPT3D_CHECK(ok, "out of memory building %s", CKPT_META_FILE);
    return root;
}

/* CRC32C of the canonical text of m as a file of this version holds it. */
static uint32_t meta_checksum(const CheckpointMeta *m, int version) {
    cJSON *root = meta_to_json(m, version);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    GPT3D_CHECK(text != NULL, "out of memory printing %s", CKPT_META_FILE);
    uint32_t crc = crc32c(0, text, strlen(text));
    cJSON_free(text);
    return crc;
}

bool ckpt_meta_write_file(const char *path, const CheckpointMeta *meta, char *err,
                          size_t err_size) {
    if (!ckpt_meta_validate(meta, "cannot write checkpoint metadata", err, err_size))
        return false;
    cJSON *root = meta_to_json(meta, CHECKPOINT_FORMAT_VERSION);
    char crc[16];
    snprintf(crc, sizeof crc, "%08x", meta_checksum(meta, CHECKPOINT_FORMAT_VERSION));
    GPT3D_CHECK(cJSON_AddStringToObject(root, CKPT_META_CRC, crc) != NULL,
                "out of memory building %s", CKPT_META_FILE);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    GPT3D_CHECK(text != NULL, "out of memory printing %s", CKPT_META_FILE);
    FILE *f = fopen(path, "w");
    if (!f) {
        ckpt_set_err(err, err_size, "cannot create '%s': %s", path, strerror(errno));
        cJSON_free(text);
        return false;
    }
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF && fflush(f) == 0 &&
              fsync(fileno(f)) == 0;
    int saved = errno;
    cJSON_free(text);
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) ckpt_set_err(err, err_size, "cannot write '%s': %s", path, strerror(saved));
    return ok;
}

bool checkpoint_write_meta(const char *save_dir, const CheckpointMeta *meta, char *err,
                           size_t err_size) {
    ckpt_set_err(err, err_size, "%s", "");
    char tmp[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if (!ckpt_iter_path(tmp, sizeof tmp, save_dir, meta->iteration, CKPT_TMP_SUFFIX, err,
                        err_size) ||
        !ckpt_path(path, sizeof path, err, err_size, "%s/%s", tmp, CKPT_META_FILE))
        return false;
    if (!ckpt_is_dir(tmp)) {
        ckpt_set_err(err, err_size,
                     "cannot write '%s': '%s' does not exist (checkpoint_begin_save must run "
                     "first)",
                     path, tmp);
        return false;
    }
    return ckpt_meta_write_file(path, meta, err, err_size);
}

static char *read_small_file(const char *path, size_t *len, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ckpt_set_err(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(MAX_META_BYTES + 1);
    *len = fread(buf, 1, MAX_META_BYTES + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || *len > MAX_META_BYTES) {
        ckpt_set_err(err, err_size, "cannot read '%s': %s", path,
                     bad ? "read error" : "larger than 1 MiB, not a checkpoint metadata file");
        free(buf);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

static bool json_integer(const cJSON *item, const MetaField *f, const char *path, double *out,
                         char *err, size_t err_size) {
    double v = item->valuedouble;
    if (!cJSON_IsNumber(item) || v != floor(v)) {
        ckpt_set_err(err, err_size, "'%s': \"%s\" must be an integer", path, f->name);
        return false;
    }
    if (v > MAX_EXACT_INTEGER || v < (double)f->minimum ||
        (f->kind == F_INT && v > (double)INT_MAX)) {
        ckpt_set_err(err, err_size, "'%s': \"%s\" = %.17g is out of range", path, f->name, v);
        return false;
    }
    *out = v;
    return true;
}

static bool json_to_field(const cJSON *root, const MetaField *f, const char *path,
                          CheckpointMeta *m, char *err, size_t err_size) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, f->name);
    char *p = (char *)m + f->offset;
    if (!item) {
        ckpt_set_err(err, err_size, "'%s' has no \"%s\" field", path, f->name);
        return false;
    }
    double v = 0;
    switch (f->kind) {
    case F_I64:
        if (!json_integer(item, f, path, &v, err, err_size)) return false;
        *(int64_t *)p = (int64_t)v;
        return true;
    case F_INT:
        if (!json_integer(item, f, path, &v, err, err_size)) return false;
        *(int *)p = (int)v;
        return true;
    case F_U64:
        if (!json_integer(item, f, path, &v, err, err_size)) return false;
        *(uint64_t *)p = (uint64_t)v;
        return true;
    case F_F64:
        if (!cJSON_IsNumber(item)) break;
        *(double *)p = item->valuedouble;
        return true;
    case F_BOOL:
        if (!cJSON_IsBool(item)) break;
        *(bool *)p = cJSON_IsTrue(item);
        return true;
    case F_STR:
        if (!cJSON_IsString(item)) break;
        if (strlen(item->valuestring) >= f->size) {
            ckpt_set_err(err, err_size, "'%s': \"%s\" is longer than %zu bytes", path, f->name,
                         f->size - 1);
            return false;
        }
        strcpy(p, item->valuestring);
        return true;
    case F_CHOICE: {
        if (!cJSON_IsString(item)) break;
        const int v = transformer_choice_index(f->choices, item->valuestring);
        if (v < 0) {
            ckpt_set_err(err, err_size, "'%s': \"%s\" = \"%.40s\" is not a choice this build knows",
                         path, f->name, item->valuestring);
            return false;
        }
        *(int *)p = v;
        return true;
    }
    }
    ckpt_set_err(err, err_size, "'%s': \"%s\" has the wrong JSON type", path, f->name);
    return false;
}

static bool check_format(const cJSON *root, const char *path, int *version_out, char *err,
                         size_t err_size) {
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, CHECKPOINT_FORMAT) != 0) {
        ckpt_set_err(err, err_size, "'%s' is not gpt3d checkpoint metadata (\"format\" is not \"%s\")",
                     path, CHECKPOINT_FORMAT);
        return false;
    }
    double v = cJSON_IsNumber(version) ? version->valuedouble : -1.0;
    if (v != floor(v) || v < CHECKPOINT_MIN_FORMAT_VERSION || v > CHECKPOINT_FORMAT_VERSION) {
        ckpt_set_err(err, err_size,
                     "'%s' has format_version %g; this build reads versions %d to %d (use the "
                     "gpt3d that wrote it, or convert the checkpoint)",
                     path, v, CHECKPOINT_MIN_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION);
        return false;
    }
    *version_out = (int)v;
    return true;
}

/* Version 2 on: the stored checksum must match the values just parsed. */
static bool check_meta_crc(const cJSON *root, const CheckpointMeta *m, const char *path,
                           char *err, size_t err_size) {
    if (m->format_version < 2) return true;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, CKPT_META_CRC);
    const char *text = cJSON_IsString(item) ? item->valuestring : "";
    char *end = NULL;
    unsigned long stored = strtoul(text, &end, 16);
    uint32_t computed = meta_checksum(m, m->format_version);
    if (strlen(text) != 8 || *end != '\0' || stored != computed) {
        ckpt_set_err(err, err_size,
                     "checkpoint file '%s' fails its CRC32C check (stored \"%s\": \"%.16s\", "
                     "computed %08x): the file is damaged; %s",
                     path, CKPT_META_CRC, text, computed, CKPT_DAMAGED_FIX);
        return false;
    }
    return true;
}

bool ckpt_meta_read_file(const char *path, CheckpointMeta *meta, char *err, size_t err_size) {
    size_t len = 0;
    char *text = read_small_file(path, &len, err, err_size);
    if (!text) return false;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    if (!root || !cJSON_IsObject(root)) {
        long at = end ? (long)(end - text) : -1;
        ckpt_set_err(err, err_size, "'%s' is not valid JSON (error near byte %ld)", path, at);
        cJSON_Delete(root);
        free(text);
        return false;
    }
    free(text);
    memset(meta, 0, sizeof *meta);
    bool ok = check_format(root, path, &meta->format_version, err, err_size);
    for (int i = 0; ok && i < NUM_META_FIELDS; i++) {
        if (META_FIELDS[i].since > meta->format_version) continue;
        ok = json_to_field(root, &META_FIELDS[i], path, meta, err, err_size);
    }
    if (ok && meta->format_version < 3) transformer_config_set_gpt2_variant(&meta->model);
    if (ok && meta->format_version < 4) meta->context_parallel_size = 1;
    if (ok && meta->format_version < 5) transformer_config_set_dense(&meta->model);
    if (ok) ok = check_meta_crc(root, meta, path, err, err_size);
    cJSON_Delete(root);
    if (!ok) return false;
    char where[CKPT_PATH_MAX + 16];
    snprintf(where, sizeof where, "'%s'", path);
    return ckpt_meta_validate(meta, where, err, err_size);
}
