/* Hugging Face GPT-2: config.json (GPT2Config) and model.safetensors with
 * GPT-2's tensor names and Conv1D layouts, to and from gpt3d's canonical
 * tensors. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

#define HF_PREFIX "transformer."
#define GPT2_VOCAB 50257
#define GPT2_EOT 50256
#define BYTE_TOKENIZER_VOCAB 257
#define BYTE_TOKENIZER_EOD 256
#define MAX_CONFIG_BYTES (16 << 20)
#define LAYERNORM_EPS 1e-5

static void join_path(char *out, size_t size, const char *dir, const char *file) {
    snprintf(out, size, "%s/%s", dir, file);
}

/* ------------------------------------------------------------ config.json */

/* The token that ends a document, when the tokenizer is one we know. */
static int64_t end_of_text_token(const CheckpointMeta *m) {
    if (m->model.vocab_size == GPT2_VOCAB) return GPT2_EOT;
    if (m->model.vocab_size == BYTE_TOKENIZER_VOCAB && !strcmp(m->tokenizer_type, "ByteTokenizer"))
        return BYTE_TOKENIZER_EOD;
    return -1;
}

static char *config_json(const ExportSource *src) {
    const TransformerConfig *s = &src->shape;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", "gpt2");
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddNumberToObject(root, "n_layer", s->num_layers);
    cJSON_AddNumberToObject(root, "n_head", s->num_attention_heads);
    cJSON_AddNumberToObject(root, "n_embd", s->hidden_size);
    cJSON_AddNumberToObject(root, "n_positions", s->max_position_embeddings);
    cJSON_AddNumberToObject(root, "n_ctx", s->max_position_embeddings);
    if (s->ffn_hidden_size == 4 * s->hidden_size) cJSON_AddNullToObject(root, "n_inner");
    else cJSON_AddNumberToObject(root, "n_inner", s->ffn_hidden_size);
    cJSON_AddNumberToObject(root, "vocab_size", (double)s->vocab_size);
    cJSON_AddNumberToObject(root, "layer_norm_epsilon", LAYERNORM_EPS);
    cJSON_AddStringToObject(root, "activation_function", "gelu_new");
    cJSON_AddTrueToObject(root, "tie_word_embeddings");
    /* gpt3d trains without dropout; HF's defaults (0.1) would change the
     * model a user continues training elsewhere. */
    cJSON_AddNumberToObject(root, "attn_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "embd_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "resid_pdrop", 0.0);
    const int64_t eot = end_of_text_token(&src->meta);
    if (eot >= 0) {
        cJSON_AddNumberToObject(root, "bos_token_id", (double)eot);
        cJSON_AddNumberToObject(root, "eos_token_id", (double)eot);
    } else {
        cJSON_AddNullToObject(root, "bos_token_id");
        cJSON_AddNullToObject(root, "eos_token_id");
    }
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    char *text = cJSON_Print(root);
    GPT3D_CHECK(text != NULL, "out of memory printing config.json");
    cJSON_Delete(root);
    return text;
}

static char *read_text_file(const char *path, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        interop_fail(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    rewind(f);
    if (size < 0 || size > MAX_CONFIG_BYTES) {
        fclose(f);
        interop_fail(err, err_size, "'%s' is not a readable file of at most %d MiB (a model config)",
                     path, MAX_CONFIG_BYTES >> 20);
        return NULL;
    }
    char *text = xmalloc((size_t)size + 1);
    const size_t n = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

/* The first of `names` present; false when none is (or it is no positive
 * integer, which sets err). */
static bool config_int(const cJSON *root, const char *const *names, int count, const char *path,
                       int64_t *value, bool *present, char *err, size_t err_size) {
    *present = false;
    for (int i = 0; i < count; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, names[i]);
        if (!item || cJSON_IsNull(item)) continue;
        const double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
        if (!(v >= 1) || v != floor(v) || v > INT32_MAX)
            return interop_fail(err, err_size, "'%s': \"%s\" must be a positive integer", path,
                                names[i]);
        *value = (int64_t)v;
        *present = true;
        return true;
    }
    return true;
}

static bool require_int(const cJSON *root, const char *const *names, int count, const char *path,
                        int64_t *value, char *err, size_t err_size) {
    bool present;
    if (!config_int(root, names, count, path, value, &present, err, err_size)) return false;
    if (!present)
        return interop_fail(err, err_size, "'%s' has no \"%s\" (a GPT2Config field)", path,
                            names[0]);
    return true;
}

/* Options of GPT2Config that change the model's function in ways gpt3d
 * does not implement. */
static bool check_supported(const cJSON *root, const char *path, char *err, size_t err_size) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "gpt2")))
        return interop_fail(err, err_size, "'%s': model_type is not \"gpt2\"; only GPT-2 models "
                            "convert", path);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "gelu_new") &&
                                         strcmp(act->valuestring, "gelu_pytorch_tanh"))))
        return interop_fail(err, err_size,
                            "'%s': activation_function must be \"gelu_new\" (the tanh GELU "
                            "gpt3d computes)",
                            path);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    if (eps && (!cJSON_IsNumber(eps) || fabs(eps->valuedouble - LAYERNORM_EPS) > 1e-12))
        return interop_fail(err, err_size,
                            "'%s': layer_norm_epsilon must be 1e-05 (the value gpt3d uses)", path);
    const struct {
        const char *name;
        bool required; /* the value gpt3d's model has */
    } flags[] = {{"tie_word_embeddings", true}, {"scale_attn_weights", true},
                 {"scale_attn_by_inverse_layer_idx", false}, {"add_cross_attention", false}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, flags[i].name);
        if (item && (!cJSON_IsBool(item) || cJSON_IsTrue(item) != flags[i].required))
            return interop_fail(err, err_size, "'%s': %s must be %s for a gpt3d model", path,
                                flags[i].name, flags[i].required ? "true" : "false");
    }
    return true;
}

static bool read_shape(const cJSON *root, const char *path, int divisible_by, TransformerConfig *s,
                       char *err, size_t err_size) {
    static const char *const LAYERS[] = {"n_layer", "num_hidden_layers"};
    static const char *const HEADS[] = {"n_head", "num_attention_heads"};
    static const char *const HIDDEN[] = {"n_embd", "hidden_size"};
    static const char *const POSITIONS[] = {"n_positions", "max_position_embeddings", "n_ctx"};
    static const char *const VOCAB[] = {"vocab_size"};
    static const char *const INNER[] = {"n_inner"};
    int64_t layers = 0, heads = 0, hidden = 0, positions = 0, vocab = 0, inner = 0;
    bool has_inner = false;
    if (!require_int(root, LAYERS, 2, path, &layers, err, err_size) ||
        !require_int(root, HEADS, 2, path, &heads, err, err_size) ||
        !require_int(root, HIDDEN, 2, path, &hidden, err, err_size) ||
        !require_int(root, POSITIONS, 3, path, &positions, err, err_size) ||
        !require_int(root, VOCAB, 1, path, &vocab, err, err_size) ||
        !config_int(root, INNER, 1, path, &inner, &has_inner, err, err_size))
        return false;
    s->num_layers = (int)layers;
    s->num_attention_heads = (int)heads;
    s->hidden_size = (int)hidden;
    s->max_position_embeddings = (int)positions;
    s->vocab_size = vocab;
    s->ffn_hidden_size = (int)(has_inner ? inner : 4 * hidden);
    s->padded_vocab_size = gpt_padded_vocab_size(vocab, divisible_by);
    transformer_config_set_gpt2_variant(s);
    char where[4200];
    snprintf(where, sizeof where, "'%s'", path);
    return transformer_config_check(s, where, err, err_size);
}

bool hf_read_config(const char *path, int divisible_by, TransformerConfig *s, char *err,
                    size_t err_size) {
    GPT3D_CHECK(divisible_by >= 1, "divisible_by %d", divisible_by);
    char *text = read_text_file(path, err, err_size);
    if (!text) return false;
    cJSON *root = cJSON_Parse(text);
    free(text);
    bool ok = root != NULL;
    if (!ok) interop_fail(err, err_size, "'%s' is not valid JSON", path);
    else if (!cJSON_IsObject(root)) ok = interop_fail(err, err_size, "'%s' is not a JSON object", path);
    ok = ok && check_supported(root, path, err, err_size) &&
         read_shape(root, path, divisible_by, s, err, err_size);
    cJSON_Delete(root);
    return ok;
}

/* --------------------------------------------------------------- export */

static bool export_weights(ExportSource *src, const char *path, int *tensors, int64_t *elements,
                           char *err, size_t err_size) {
    int count = 0;
    TensorMapping *maps = hf_gpt2_mappings(&src->shape, &count);
    SafetensorsSpec *specs = xcalloc((size_t)count, sizeof *specs);
    for (int i = 0; i < count; i++) {
        specs[i].name = maps[i].external_name;
        specs[i].ndim = maps[i].ndim;
        specs[i].shape[0] = maps[i].shape[0];
        specs[i].shape[1] = maps[i].shape[1];
    }
    SafetensorsWriter *w = safetensors_create(path, specs, count, err, err_size);
    bool ok = w != NULL;
    *elements = 0;
    for (int i = 0; ok && i < count; i++) {
        int64_t numel = 0;
        float *canonical = export_source_read(src, maps[i].canonical_name, &numel, err, err_size);
        if (!canonical) {
            ok = false;
            break;
        }
        const int64_t n = tensor_mapping_numel(&maps[i]);
        float *external = xmalloc((size_t)n * sizeof *external);
        tensor_to_external(&maps[i], &src->shape, canonical, external);
        ok = safetensors_write_next(w, external, n, err, err_size);
        *elements += n;
        free(external);
        free(canonical);
    }
    if (ok) ok = safetensors_finish(w, err, err_size);
    else safetensors_abort(w);
    *tensors = count;
    free(specs);
    free(maps);
    return ok;
}

bool hf_export(ExportSource *src, const char *out_dir, int *tensors, int64_t *elements, char *err,
               size_t err_size) {
    if (!interop_make_dirs(out_dir, err, err_size)) return false;
    char path[4200];
    join_path(path, sizeof path, out_dir, HF_WEIGHTS_FILE);
    if (!export_weights(src, path, tensors, elements, err, err_size)) return false;
    join_path(path, sizeof path, out_dir, HF_CONFIG_FILE);
    char *config = config_json(src);
    const size_t len = strlen(config);
    char *text = xmalloc(len + 1);
    memcpy(text, config, len);
    text[len] = '\n';
    cJSON_free(config);
    const bool ok = interop_write_file_atomic(path, text, len + 1, err, err_size);
    free(text);
    return ok;
}

/* --------------------------------------------------------------- import */

/* Attention-mask buffers older transformers versions saved with the
 * weights: "h.<i>.attn.bias" and "h.<i>.attn.masked_bias". */
static bool is_mask_buffer(const char *name) {
    if (strncmp(name, "h.", 2)) return false;
    const char *p = name + 2;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    return !strcmp(p, ".attn.bias") || !strcmp(p, ".attn.masked_bias");
}

typedef struct {
    SafetensorsReader *file;
    const char *path;
    const char *prefix; /* "transformer." or "" as the file names them */
    const TensorMapping *maps;
    int count;
    const TransformerConfig *shape;
} ImportContext;

static void file_name_of(const ImportContext *c, const TensorMapping *m, char *out, size_t size) {
    snprintf(out, size, "%s%s", c->prefix, m->external_name + strlen(HF_PREFIX));
}

/* Every tensor in the file is one GPT-2 needs, a mask buffer, or the tied
 * lm_head: anything else means another architecture or another config. */
static bool check_unexpected(const ImportContext *c, char *err, size_t err_size) {
    char name[INTEROP_NAME_MAX + 16];
    for (int i = 0; i < safetensors_num_tensors(c->file); i++) {
        const char *have = safetensors_tensor(c->file, i)->name;
        const size_t plen = strlen(c->prefix);
        if (!strcmp(have, "lm_head.weight")) continue;
        if (!strncmp(have, c->prefix, plen) && is_mask_buffer(have + plen)) continue;
        bool known = false;
        for (int k = 0; k < c->count && !known; k++) {
            file_name_of(c, &c->maps[k], name, sizeof name);
            known = !strcmp(name, have);
        }
        if (!known)
            return interop_fail(err, err_size,
                                "'%s' holds tensor '%s', which a GPT-2 of config.json's shape "
                                "(%d layers) does not have",
                                c->path, have, c->shape->num_layers);
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

/* Finds the file's tensor for m with the shape config.json implies, and
 * reads it as fp32 (malloc'd). */
static float *read_mapped(ImportContext *c, const TensorMapping *m, const SafetensorsTensor **out,
                          char *err, size_t err_size) {
    char name[INTEROP_NAME_MAX + 16], have[160], want[160];
    file_name_of(c, m, name, sizeof name);
    const SafetensorsTensor *t = safetensors_find(c->file, name);
    if (!t) {
        interop_fail(err, err_size,
                     "'%s' has no tensor '%s', which config.json's GPT-2 (%d layers, n_embd %d) "
                     "needs",
                     c->path, name, c->shape->num_layers, c->shape->hidden_size);
        return NULL;
    }
    if (!same_shape(t, m)) {
        shape_text(t->ndim, t->shape, have, sizeof have);
        shape_text(m->ndim, m->shape, want, sizeof want);
        interop_fail(err, err_size,
                     "'%s': tensor '%s' has shape %s, but config.json implies %s", c->path, name,
                     have, want);
        return NULL;
    }
    float *values = xmalloc((size_t)t->numel * sizeof *values + 1);
    if (!safetensors_read_f32(c->file, t, values, err, err_size)) {
        free(values);
        return NULL;
    }
    *out = t;
    return values;
}

/* gpt3d ties the output layer to the word embedding; an lm_head.weight that
 * differs would be silently dropped, so it is refused. */
static bool check_lm_head(ImportContext *c, const float *wte, int64_t numel, char *err,
                          size_t err_size) {
    const SafetensorsTensor *t = safetensors_find(c->file, "lm_head.weight");
    if (!t) return true;
    bool ok = t->numel == numel;
    if (ok) {
        float *head = xmalloc((size_t)numel * sizeof *head + 1);
        ok = safetensors_read_f32(c->file, t, head, err, err_size);
        if (!ok) {
            free(head);
            return false;
        }
        ok = memcmp(head, wte, (size_t)numel * sizeof *head) == 0;
        free(head);
    }
    if (!ok)
        return interop_fail(err, err_size,
                            "'%s': lm_head.weight differs from the word embedding, but gpt3d "
                            "ties the output layer to it (untied GPT-2 models do not convert)",
                            c->path);
    return true;
}

static bool import_tensors(ImportContext *c, GPT2Weights *w, char *err, size_t err_size) {
    for (int i = 0; i < c->count; i++) {
        const TensorMapping *m = &c->maps[i];
        const SafetensorsTensor *t = NULL;
        float *external = read_mapped(c, m, &t, err, err_size);
        if (!external) return false;
        int64_t numel = 0;
        float *canonical = gpt2_weights_param(w, m->canonical_name, &numel);
        GPT3D_CHECK(canonical != NULL, "no canonical parameter %s", m->canonical_name);
        tensor_from_external(m, c->shape, external, canonical);
        bool ok = m->layout != LAYOUT_VOCAB_ROWS ||
                  check_lm_head(c, external, t->numel, err, err_size);
        free(external);
        if (!ok) return false;
    }
    return true;
}

GPT2Weights *hf_import(const char *hf_dir, int divisible_by, char *err, size_t err_size) {
    char config_path[4200], weights_path[4200];
    join_path(config_path, sizeof config_path, hf_dir, HF_CONFIG_FILE);
    join_path(weights_path, sizeof weights_path, hf_dir, HF_WEIGHTS_FILE);
    TransformerConfig shape;
    if (!hf_read_config(config_path, divisible_by, &shape, err, err_size)) return NULL;
    SafetensorsReader *file = safetensors_open(weights_path, err, err_size);
    if (!file) return NULL;
    ImportContext c = {.file = file, .path = weights_path, .shape = &shape};
    if (safetensors_find(file, HF_PREFIX "wte.weight")) c.prefix = HF_PREFIX;
    else if (safetensors_find(file, "wte.weight")) c.prefix = "";
    GPT2Weights *w = NULL;
    if (!c.prefix) {
        interop_fail(err, err_size,
                     "'%s' has no tensor 'transformer.wte.weight' (or 'wte.weight'): it is not "
                     "a GPT-2 model",
                     weights_path);
    } else {
        c.maps = hf_gpt2_mappings(&shape, &c.count);
        w = gpt2_weights_create(&shape);
        if (!check_unexpected(&c, err, err_size) || !import_tensors(&c, w, err, err_size)) {
            gpt2_weights_free(w);
            w = NULL;
        }
        free((void *)c.maps);
    }
    safetensors_close(file);
    return w;
}
