/* Hugging Face models: config.json and the export driver, for every
 * architecture of hf_internal.h (GPT-2, Llama, Mixtral). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/hf_internal.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

#define GPT2_VOCAB 50257
#define GPT2_EOT 50256
#define BYTE_TOKENIZER_VOCAB 257
#define BYTE_TOKENIZER_EOD 256
#define MAX_CONFIG_BYTES (16 << 20)

static const HFArchitecture *const ARCHITECTURES[] = {
    &HF_GPT2_ARCHITECTURE, &HF_LLAMA_ARCHITECTURE, &HF_MIXTRAL_ARCHITECTURE};
#define NUM_ARCHITECTURES ((int)(sizeof ARCHITECTURES / sizeof ARCHITECTURES[0]))

/* ------------------------------------------------------- config fields */

bool hf_config_int(const cJSON *root, const char *const *names, int count, const char *path,
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

bool hf_require_int(const cJSON *root, const char *const *names, int count, const char *path,
                    const char *what, int64_t *value, char *err, size_t err_size) {
    bool present;
    if (!hf_config_int(root, names, count, path, value, &present, err, err_size)) return false;
    if (!present) return interop_fail(err, err_size, "'%s' has no \"%s\" (%s)", path, names[0], what);
    return true;
}

bool hf_config_positive(const cJSON *root, const char *name, const char *path, double *value,
                        char *err, size_t err_size) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!item || cJSON_IsNull(item)) return true;
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || !(item->valuedouble > 0))
        return interop_fail(err, err_size, "'%s': \"%s\" must be a positive number", path, name);
    *value = item->valuedouble;
    return true;
}

bool hf_config_bool(const cJSON *root, const char *name, const char *path, bool *value, char *err,
                    size_t err_size) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!item || cJSON_IsNull(item)) return true;
    if (!cJSON_IsBool(item))
        return interop_fail(err, err_size, "'%s': \"%s\" must be true or false", path, name);
    *value = cJSON_IsTrue(item);
    return true;
}

bool hf_check_shape(const TransformerConfig *s, const char *path, char *err, size_t err_size) {
    char where[4200];
    snprintf(where, sizeof where, "'%s'", path);
    return transformer_config_check(s, where, err, err_size);
}

/* ------------------------------------------------------------ config.json */

/* The token that ends a document, when the tokenizer is one we know. */
static int64_t end_of_text_token(const CheckpointMeta *m) {
    if (m->model.vocab_size == GPT2_VOCAB) return GPT2_EOT;
    if (m->model.vocab_size == BYTE_TOKENIZER_VOCAB && !strcmp(m->tokenizer_type, "ByteTokenizer"))
        return BYTE_TOKENIZER_EOD;
    return -1;
}

static char *config_json(const ExportSource *src, const HFArchitecture *arch) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", arch->model_type);
    cJSON *names = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(names, cJSON_CreateString(arch->architecture));
    arch->write_config(root, &src->shape);
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

char *hf_read_text_file(const char *path, char *err, size_t err_size) {
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

/* The architecture model_type names; GPT-2 when there is none (the
 * oldest GPT-2 configs). */
static const HFArchitecture *architecture_of(const cJSON *root, const char *path, char *err,
                                             size_t err_size) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!type) return &HF_GPT2_ARCHITECTURE;
    for (int i = 0; cJSON_IsString(type) && i < NUM_ARCHITECTURES; i++)
        if (!strcmp(type->valuestring, ARCHITECTURES[i]->model_type)) return ARCHITECTURES[i];
    char known[512] = "";
    for (int i = 0; i < NUM_ARCHITECTURES; i++) {
        const size_t n = strlen(known);
        snprintf(known + n, sizeof known - n, "%s\"%s\" (%s)", i ? ", " : "",
                 ARCHITECTURES[i]->model_type, ARCHITECTURES[i]->architecture);
    }
    interop_fail(err, err_size, "'%s': model_type %s%s%s does not convert; gpt3d reads %s", path,
                 cJSON_IsString(type) ? "\"" : "",
                 cJSON_IsString(type) ? type->valuestring : "(not a string)",
                 cJSON_IsString(type) ? "\"" : "", known);
    return NULL;
}

const HFArchitecture *hf_read_model_config(const char *path, int divisible_by,
                                           TransformerConfig *s, char *err, size_t err_size) {
    GPT3D_CHECK(divisible_by >= 1, "divisible_by %d", divisible_by);
    char *text = hf_read_text_file(path, err, err_size);
    if (!text) return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const HFArchitecture *arch = NULL;
    if (!root) interop_fail(err, err_size, "'%s' is not valid JSON", path);
    else if (!cJSON_IsObject(root)) interop_fail(err, err_size, "'%s' is not a JSON object", path);
    else arch = architecture_of(root, path, err, err_size);
    if (arch) {
        memset(s, 0, sizeof *s);
        if (!arch->read_config(root, path, divisible_by, s, err, err_size)) arch = NULL;
    }
    cJSON_Delete(root);
    return arch;
}

bool hf_read_config(const char *path, int divisible_by, TransformerConfig *s, char *err,
                    size_t err_size) {
    return hf_read_model_config(path, divisible_by, s, err, err_size) != NULL;
}

/* --------------------------------------------------------------- export */

/* The first architecture that computes what the checkpoint's model does;
 * when none does, one error saying why for each. */
static const HFArchitecture *export_architecture(const ExportSource *src, char *err,
                                                 size_t err_size) {
    char why[512], reasons[NUM_ARCHITECTURES * 560] = "";
    for (int i = 0; i < NUM_ARCHITECTURES; i++) {
        if (ARCHITECTURES[i]->expresses(&src->shape, why, sizeof why)) return ARCHITECTURES[i];
        const size_t n = strlen(reasons);
        snprintf(reasons + n, sizeof reasons - n, "%snot %s (%s)", i ? ", " : "",
                 ARCHITECTURES[i]->architecture, why);
    }
    interop_fail(err, err_size,
                 "checkpoint '%s' has no Hugging Face form: %s; export a model of one of these "
                 "architectures",
                 src->dir, reasons);
    return NULL;
}

static bool export_weights(ExportSource *src, const HFArchitecture *arch, const char *path,
                           int *tensors, int64_t *elements, char *err, size_t err_size) {
    int count = 0;
    TensorMapping *maps = arch->mappings(&src->shape, &count);
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
    else if (w) safetensors_abort(w);
    *tensors = count;
    free(specs);
    free(maps);
    return ok;
}

bool hf_export(ExportSource *src, const char *out_dir, const char **architecture, int *tensors,
               int64_t *elements, char *err, size_t err_size) {
    const HFArchitecture *arch = export_architecture(src, err, err_size);
    if (!arch) return false;
    if (architecture) *architecture = arch->architecture;
    if (!interop_make_dirs(out_dir, err, err_size)) return false;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", out_dir, HF_WEIGHTS_FILE);
    if (!export_weights(src, arch, path, tensors, elements, err, err_size)) return false;
    snprintf(path, sizeof path, "%s/%s", out_dir, HF_CONFIG_FILE);
    char *config = config_json(src, arch);
    const size_t len = strlen(config);
    char *text = xmalloc(len + 1);
    memcpy(text, config, len);
    text[len] = '\n';
    cJSON_free(config);
    const bool ok = interop_write_file_atomic(path, text, len + 1, err, err_size);
    free(text);
    return ok;
}
