/* Hugging Face import: the weight files (one model.safetensors or the
 * shards an index lists) read into canonical tensors through an
 * architecture's mappings, with the checks every architecture shares. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "interop/hf_internal.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

/* A generous bound on shards: a damaged index must not open thousands. */
#define MAX_SHARDS 4096

/* ---------------------------------------------------- the weight files */

typedef struct {
    SafetensorsReader **files;
    int count;
} WeightFiles;

static void weight_files_close(WeightFiles *w) {
    for (int i = 0; i < w->count; i++) safetensors_close(w->files[i]);
    free(w->files);
    memset(w, 0, sizeof *w);
}

/* The tensor and the file holding it; NULL when no file has it. */
static const SafetensorsTensor *weight_files_find(const WeightFiles *w, const char *name,
                                                  SafetensorsReader **file) {
    for (int i = 0; i < w->count; i++) {
        const SafetensorsTensor *t = safetensors_find(w->files[i], name);
        if (t) {
            if (file) *file = w->files[i];
            return t;
        }
    }
    return NULL;
}

static bool add_file(WeightFiles *w, const char *path, char *err, size_t err_size) {
    SafetensorsReader *r = safetensors_open(path, err, err_size);
    if (!r) return false;
    w->files = xrealloc(w->files, (size_t)(w->count + 1) * sizeof *w->files);
    w->files[w->count++] = r;
    return true;
}

static bool already_open(const WeightFiles *w, const char *path) {
    for (int i = 0; i < w->count; i++)
        if (!strcmp(safetensors_path(w->files[i]), path)) return true;
    return false;
}

/* A tensor in two shards would make the model depend on which one wins. */
static bool check_no_duplicates(const WeightFiles *w, const char *index, char *err,
                                size_t err_size) {
    for (int i = 0; i < w->count; i++)
        for (int k = 0; k < safetensors_num_tensors(w->files[i]); k++) {
            const char *name = safetensors_tensor(w->files[i], k)->name;
            for (int j = i + 1; j < w->count; j++)
                if (safetensors_find(w->files[j], name))
                    return interop_fail(err, err_size, "'%s': tensor '%s' is in both '%s' and '%s'",
                                        index, name, safetensors_path(w->files[i]),
                                        safetensors_path(w->files[j]));
        }
    return true;
}

/* Opens every shard the index's weight_map names (plain file names in the
 * same directory) and checks each listed tensor is where the map says. */
static bool open_shards(WeightFiles *w, const char *dir, const char *index, char *err,
                        size_t err_size) {
    char *text = hf_read_text_file(index, err, err_size);
    if (!text) return false;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    bool ok = cJSON_IsObject(map);
    if (!ok) interop_fail(err, err_size, "'%s' is not a JSON object with a \"weight_map\" object", index);
    for (const cJSON *e = ok ? map->child : NULL; ok && e; e = e->next) {
        const char *file = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!file || !file[0] || strchr(file, '/') || !strcmp(file, "..")) {
            ok = interop_fail(err, err_size,
                              "'%s': weight_map entry '%s' must name a shard file in the same "
                              "directory",
                              index, e->string);
            break;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (!already_open(w, path)) {
            if (w->count == MAX_SHARDS)
                ok = interop_fail(err, err_size, "'%s' lists more than %d shards", index, MAX_SHARDS);
            else ok = add_file(w, path, err, err_size);
        }
        SafetensorsReader *holder = NULL;
        if (ok && (!weight_files_find(w, e->string, &holder) ||
                   strcmp(safetensors_path(holder), path)))
            ok = interop_fail(err, err_size, "'%s' places tensor '%s' in '%s', which does not hold it",
                              index, e->string, path);
    }
    cJSON_Delete(root);
    return ok && check_no_duplicates(w, index, err, err_size);
}

/* model.safetensors when it exists, else the shards of the index. */
static bool weight_files_open(WeightFiles *w, const char *dir, char *err, size_t err_size) {
    memset(w, 0, sizeof *w);
    char single[4200], index[4200];
    snprintf(single, sizeof single, "%s/%s", dir, HF_WEIGHTS_FILE);
    snprintf(index, sizeof index, "%s/%s", dir, HF_WEIGHTS_INDEX_FILE);
    struct stat st;
    bool ok = stat(single, &st) != 0 && stat(index, &st) == 0
                  ? open_shards(w, dir, index, err, err_size)
                  : add_file(w, single, err, err_size);
    if (!ok) weight_files_close(w);
    return ok;
}

/* --------------------------------------------------------------- import */

typedef struct {
    WeightFiles files;
    const char *dir;
    const HFArchitecture *arch;
    const char *prefix_dropped; /* the optional prefix the files lack, or "" */
    const TensorMapping *maps;
    int count;
    const TransformerConfig *shape;
} ImportContext;

static const char *file_name_of(const ImportContext *c, const char *mapped) {
    const size_t n = strlen(c->prefix_dropped);
    return n && !strncmp(mapped, c->prefix_dropped, n) ? mapped + n : mapped;
}

/* The files' names drop the architecture's optional prefix when the word
 * embedding (the first mapping) is found only without it. */
static bool detect_prefix(ImportContext *c, char *err, size_t err_size) {
    const char *embedding = c->maps[0].external_name, *prefix = c->arch->optional_prefix;
    c->prefix_dropped = "";
    if (weight_files_find(&c->files, embedding, NULL)) return true;
    if (prefix && !strncmp(embedding, prefix, strlen(prefix)) &&
        weight_files_find(&c->files, embedding + strlen(prefix), NULL)) {
        c->prefix_dropped = prefix;
        return true;
    }
    return interop_fail(err, err_size, "'%s' has no tensor '%s'%s%s%s: it is not a %s model",
                        c->dir, embedding, prefix ? " (or '" : "",
                        prefix ? embedding + strlen(prefix) : "", prefix ? "')" : "",
                        c->arch->architecture);
}

static bool tied_head(const ImportContext *c, const char *name) {
    return transformer_tied_output(c->shape) && !strcmp(name, "lm_head.weight");
}

/* Every tensor in the files is one the model needs, a buffer, or a tied
 * lm_head: anything else means another architecture or another config. */
static bool check_unexpected(const ImportContext *c, char *err, size_t err_size) {
    for (int f = 0; f < c->files.count; f++) {
        SafetensorsReader *file = c->files.files[f];
        for (int i = 0; i < safetensors_num_tensors(file); i++) {
            const char *have = safetensors_tensor(file, i)->name;
            bool known = tied_head(c, have) || c->arch->is_buffer(have);
            for (int k = 0; k < c->count && !known; k++)
                known = !strcmp(file_name_of(c, c->maps[k].external_name), have);
            if (!known)
                return interop_fail(err, err_size,
                                    "'%s' holds tensor '%s', which a %s of config.json's shape "
                                    "(%d layers) does not have",
                                    safetensors_path(file), have, c->arch->architecture,
                                    c->shape->num_layers);
        }
    }
    return true;
}

static bool same_shape(const SafetensorsTensor *t, const TensorMapping *m) {
    if (t->ndim != m->ndim) return false;
    for (int d = 0; d < m->ndim; d++)
        if (t->shape[d] != m->shape[d]) return false;
    return true;
}

static void shape_text(int ndim, const int64_t *shape, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(out + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < size) snprintf(out + used, size - used, "]");
}

/* The tensor's values as fp32 (malloc'd), found by its file name with the
 * shape config.json implies. */
static float *read_mapped(ImportContext *c, const TensorMapping *m, char *err, size_t err_size) {
    const char *name = file_name_of(c, m->external_name);
    SafetensorsReader *file = NULL;
    const SafetensorsTensor *t = weight_files_find(&c->files, name, &file);
    char have[160], want[160];
    if (!t) {
        interop_fail(err, err_size,
                     "'%s/%s' has no tensor '%s', which config.json's %s (%d layers, hidden %d) "
                     "needs",
                     c->dir, c->files.count == 1 ? HF_WEIGHTS_FILE : HF_WEIGHTS_INDEX_FILE, name,
                     c->arch->architecture, c->shape->num_layers, c->shape->hidden_size);
        return NULL;
    }
    if (!same_shape(t, m)) {
        shape_text(t->ndim, t->shape, have, sizeof have);
        shape_text(m->ndim, m->shape, want, sizeof want);
        interop_fail(err, err_size, "'%s': tensor '%s' has shape %s, but config.json implies %s",
                     safetensors_path(file), name, have, want);
        return NULL;
    }
    float *values = xmalloc((size_t)t->numel * sizeof *values + 1);
    if (!safetensors_read_f32(file, t, values, err, err_size)) {
        free(values);
        return NULL;
    }
    return values;
}

/* A tied lm_head.weight that differs from the embedding would be silently
 * dropped, so it is refused. */
static bool check_tied_head(ImportContext *c, const float *embedding, int64_t numel, char *err,
                            size_t err_size) {
    SafetensorsReader *file = NULL;
    const SafetensorsTensor *t = weight_files_find(&c->files, "lm_head.weight", &file);
    if (!t) return true;
    bool ok = t->numel == numel;
    if (ok) {
        float *head = xmalloc((size_t)numel * sizeof *head + 1);
        ok = safetensors_read_f32(file, t, head, err, err_size);
        if (!ok) {
            free(head);
            return false;
        }
        ok = memcmp(head, embedding, (size_t)numel * sizeof *head) == 0;
        free(head);
    }
    if (!ok)
        return interop_fail(err, err_size,
                            "'%s': lm_head.weight differs from the word embedding, but the model "
                            "ties its output layer to it (an untied model says "
                            "tie_word_embeddings false)",
                            safetensors_path(file));
    return true;
}

static bool import_tensors(ImportContext *c, ModelWeights *w, char *err, size_t err_size) {
    for (int i = 0; i < c->count; i++) {
        const TensorMapping *m = &c->maps[i];
        float *external = read_mapped(c, m, err, err_size);
        if (!external) return false;
        int64_t numel = 0;
        float *canonical = model_weights_param(w, m->canonical_name, &numel);
        GPT3D_CHECK(canonical != NULL, "no canonical parameter %s", m->canonical_name);
        tensor_from_external(m, c->shape, external, canonical);
        const bool ok = strcmp(m->canonical_name, GPT_WORD_EMBEDDING) ||
                        !transformer_tied_output(c->shape) ||
                        check_tied_head(c, external, tensor_mapping_numel(m), err, err_size);
        free(external);
        if (!ok) return false;
    }
    return true;
}

ModelWeights *hf_import(const char *hf_dir, int divisible_by, const char **architecture, char *err,
                        size_t err_size) {
    char config_path[4200];
    snprintf(config_path, sizeof config_path, "%s/%s", hf_dir, HF_CONFIG_FILE);
    TransformerConfig shape;
    ImportContext c = {.dir = hf_dir, .shape = &shape};
    c.arch = hf_read_model_config(config_path, divisible_by, &shape, err, err_size);
    if (!c.arch || !weight_files_open(&c.files, hf_dir, err, err_size)) return NULL;
    if (architecture) *architecture = c.arch->architecture;
    TensorMapping *maps = c.arch->mappings(&shape, &c.count);
    c.maps = maps;
    ModelWeights *w = model_weights_create(&shape);
    if (!detect_prefix(&c, err, err_size) || !check_unexpected(&c, err, err_size) ||
        !import_tensors(&c, w, err, err_size)) {
        model_weights_free(w);
        w = NULL;
    }
    free(maps);
    weight_files_close(&c.files);
    return w;
}
