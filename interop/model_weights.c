/* Canonical GPT-2 weights in host memory, saved as a one-rank checkpoint;
 * and a checkpoint of any layout read back tensor by tensor for export. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

struct ModelWeights {
    TransformerConfig shape;
    ParamTable table; /* the whole model on one rank; offsets index values */
    float *values;
};

static void whole_model_table(const TransformerConfig *s, ParamTable *table) {
    /* Only names and shapes are needed: the run settings do not matter. */
    const TransformerConfig cfg = *s;
    const ModelPartition whole = {.tp_size = 1, .tp_rank = 0, .first_layer = 0,
                                  .num_local_layers = s->num_layers, .has_embedding = true,
                                  .has_head = true};
    param_table_build(table, &cfg, &whole);
}

ModelWeights *model_weights_create(const TransformerConfig *s) {
    ModelWeights *w = xcalloc(1, sizeof *w);
    w->shape = *s;
    whole_model_table(s, &w->table);
    w->values = xcalloc(w->table.total_numel, sizeof *w->values);
    return w;
}

void model_weights_free(ModelWeights *w) {
    if (!w) return;
    param_table_free(&w->table);
    free(w->values);
    free(w);
}

const TransformerConfig *model_weights_shape(const ModelWeights *w) { return &w->shape; }

float *model_weights_param(ModelWeights *w, const char *name, int64_t *numel) {
    const int i = param_table_find(&w->table, name);
    if (i < 0) return NULL;
    if (numel) *numel = w->table.params[i].canonical_numel;
    return w->values + w->table.params[i].offset;
}

static void fill_meta(const ModelWeights *w, const WeightsSaveInfo *info, CheckpointMeta *m) {
    memset(m, 0, sizeof *m);
    const TransformerConfig *s = &w->shape;
    m->loss_scale = 1.0;
    m->model = *s;
    m->model.seq_length = info->seq_length;
    m->tensor_model_parallel_size = m->pipeline_model_parallel_size = 1;
    m->data_parallel_size = m->world_size = m->context_parallel_size = 1;
    m->has_optimizer_state = false;
    snprintf(m->data_description, sizeof m->data_description, "%s",
             info->source ? info->source : "");
    snprintf(m->tokenizer_type, sizeof m->tokenizer_type, "%s",
             info->tokenizer_type ? info->tokenizer_type : "");
}

bool model_weights_save(const ModelWeights *w, const char *save_dir, const WeightsSaveInfo *info,
                       char *err, size_t err_size) {
    CheckpointMeta meta;
    fill_meta(w, info, &meta);
    const ParamTable *t = &w->table;
    CheckpointInterval *iv = xcalloc((size_t)t->count, sizeof *iv);
    for (int k = 0; k < t->count; k++) { /* state-dict order: the table reversed */
        const ParamInfo *p = &t->params[t->count - 1 - k];
        iv[k].name = p->name;
        iv[k].ndim = p->ndim;
        memcpy(iv[k].shape, p->shape, sizeof iv[k].shape);
        iv[k].begin = 0;
        iv[k].end = p->canonical_numel;
        iv[k].weight = w->values + p->offset;
    }
    const bool ok = checkpoint_begin_save(save_dir, 0, err, err_size) &&
                    checkpoint_write_rank(save_dir, 0, 0, iv, t->count, err, err_size) &&
                    checkpoint_write_meta(save_dir, &meta, err, err_size) &&
                    checkpoint_publish(save_dir, 0, err, err_size);
    free(iv);
    return ok;
}

bool import_check_save_dir(const char *save_dir, char *err, size_t err_size) {
    int64_t iteration = 0;
    err[0] = '\0';
    if (checkpoint_find_latest(save_dir, &iteration, err, err_size))
        return interop_fail(err, err_size,
                            "--save '%s' already holds a checkpoint (iteration %" PRId64
                            "); import into a new directory",
                            save_dir, iteration);
    if (err[0]) {
        char why[2048];
        snprintf(why, sizeof why, "%s", err);
        return interop_fail(err, err_size, "--save '%s': %s; import into a new directory",
                            save_dir, why);
    }
    /* iter_* directories without a tracker are checkpoints too. */
    return checkpoint_check_save_target(save_dir, 0, false, err, err_size);
}

const char *import_default_tokenizer(int64_t vocab_size) {
    if (vocab_size == 50257) return "GPT2BPETokenizer";
    if (vocab_size == 257) return "ByteTokenizer";
    return "";
}

/* ----------------------------------------------------- export source */


static void format_shape(int ndim, const int64_t *shape, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(out + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < size) snprintf(out + used, size - used, "]");
}

/* Every parameter the model shape implies, stored with its canonical shape:
 * a checkpoint that fails this would export a model that cannot run. */
static bool check_params(ExportSource *src, char *err, size_t err_size) {
    ParamTable table;
    whole_model_table(&src->shape, &table);
    bool ok = true;
    for (int i = 0; ok && i < table.count; i++) {
        const ParamInfo *p = &table.params[i];
        int ndim = 0;
        int64_t shape[CHECKPOINT_MAX_DIMS] = {0};
        char have[128], want[128];
        format_shape(p->ndim, p->shape, want, sizeof want);
        if (!checkpoint_param_shape(src->reader, p->name, &ndim, shape)) {
            ok = interop_fail(err, err_size,
                              "checkpoint '%s' has no parameter '%s' %s, which its model shape "
                              "in metadata.json implies",
                              src->dir, p->name, want);
        } else if (ndim != p->ndim || memcmp(shape, p->shape, (size_t)ndim * sizeof *shape)) {
            format_shape(ndim, shape, have, sizeof have);
            ok = interop_fail(err, err_size,
                              "checkpoint '%s': parameter '%s' has shape %s, but the model "
                              "shape in metadata.json implies %s",
                              src->dir, p->name, have, want);
        }
    }
    param_table_free(&table);
    return ok;
}

bool export_source_open(ExportSource *src, const char *load_dir, int64_t iteration, char *err,
                        size_t err_size) {
    memset(src, 0, sizeof *src);
    if (iteration < 0 && checkpoint_tracker_is_release(load_dir)) {
        snprintf(src->dir, sizeof src->dir, "%s/%s", load_dir, CHECKPOINT_RELEASE_DIR);
        src->reader = checkpoint_open_release(load_dir, err, err_size);
    } else {
        char note[2048];
        if (!checkpoint_resolve_iteration(load_dir, iteration >= 0, iteration, &iteration, note,
                                          sizeof note, err, err_size))
            return false;
        if (note[0]) fprintf(stderr, "note: %s\n", note); /* a recovery is never silent */
        checkpoint_iter_dir(src->dir, sizeof src->dir, load_dir, iteration);
        src->reader = checkpoint_open(load_dir, iteration, err, err_size);
    }
    if (!src->reader) return false;
    src->meta = *checkpoint_meta(src->reader);
    src->shape = src->meta.model;
    char where[4200];
    snprintf(where, sizeof where, "checkpoint '%s'", src->dir);
    if (!transformer_config_check(&src->shape, where, err, err_size) ||
        !check_params(src, err, err_size)) {
        export_source_close(src);
        return false;
    }
    return true;
}

void export_source_close(ExportSource *src) {
    if (src->reader) checkpoint_close(src->reader);
    src->reader = NULL;
}

float *export_source_read(ExportSource *src, const char *name, int64_t *numel, char *err,
                          size_t err_size) {
    int ndim = 0;
    int64_t shape[CHECKPOINT_MAX_DIMS];
    if (!checkpoint_param_shape(src->reader, name, &ndim, shape)) {
        interop_fail(err, err_size, "checkpoint '%s' has no parameter '%s'", src->dir, name);
        return NULL;
    }
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *values = xmalloc((size_t)n * sizeof *values);
    if (!checkpoint_read(src->reader, name, CKPT_WEIGHT, 0, n, values, err, err_size)) {
        free(values);
        return NULL;
    }
    *numel = n;
    return values;
}
