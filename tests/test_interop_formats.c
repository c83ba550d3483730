/* Test-side safetensors reading and writing, and the malformed or
 * alternative Hugging Face directories the converters are tested on. */
#include "test_interop_formats.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

unsigned char *tf_slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    buf[n] = 0;
    *size = (size_t)n;
    return buf;
}

void tf_spit(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
}

static int dtype_bytes(const char *dtype) {
    if (!strcmp(dtype, "F32")) return 4;
    if (!strcmp(dtype, "BF16") || !strcmp(dtype, "F16")) return 2;
    return 0;
}

int64_t tf_numel(const TfTensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* ------------------------------------------------------------ reading */

void tf_read(TfFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->image = tf_slurp(path, &f->size);
    CHECK_MSG(f->size >= 8, "%s: shorter than 8 bytes", path);
    for (int i = 7; i >= 0; i--) f->header_len = f->header_len << 8 | f->image[i];
    CHECK_MSG(f->header_len <= f->size - 8, "%s: header length beyond the file", path);
    CHECK_MSG((8 + f->header_len) % 8 == 0, "%s: data section not 8-byte aligned", path);
    f->header_text = calloc(1, f->header_len + 1);
    memcpy(f->header_text, f->image + 8, f->header_len);
    cJSON *root = cJSON_Parse(f->header_text);
    CHECK_MSG(root && cJSON_IsObject(root), "%s: header is not a JSON object", path);
    const uint64_t data_size = f->size - 8 - f->header_len;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) {
            const cJSON *fmt = cJSON_GetObjectItem(item, "format");
            if (cJSON_IsString(fmt))
                snprintf(f->metadata_format, sizeof f->metadata_format, "%s", fmt->valuestring);
            continue;
        }
        CHECK(f->count < TF_MAX_TENSORS);
        TfTensor *t = &f->tensors[f->count++];
        snprintf(t->name, sizeof t->name, "%s", item->string);
        snprintf(t->dtype, sizeof t->dtype, "%s", cJSON_GetObjectItem(item, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(item, "shape"), *dim;
        cJSON_ArrayForEach(dim, shape) t->shape[t->ndim++] = (int64_t)dim->valuedouble;
        const cJSON *off = cJSON_GetObjectItem(item, "data_offsets");
        t->begin = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        t->end = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        CHECK_MSG(t->end <= data_size && t->begin <= t->end, "%s: %s offsets", path, t->name);
        CHECK_MSG(t->end - t->begin == (uint64_t)(tf_numel(t) * dtype_bytes(t->dtype)),
                  "%s: %s offsets do not match its shape", path, t->name);
        t->data = f->image + 8 + f->header_len + t->begin;
    }
    cJSON_Delete(root);
}

void tf_free(TfFile *f) {
    free(f->image);
    free(f->header_text);
    memset(f, 0, sizeof *f);
}

TfTensor *tf_find(TfFile *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

float tf_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

float tf_f16_to_f32(uint16_t h) {
    const int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    double v;
    if (exponent == 0) v = mantissa * pow(2.0, -24);
    else if (exponent == 31) v = mantissa ? NAN : INFINITY;
    else v = (1.0 + mantissa / 1024.0) * pow(2.0, exponent - 15);
    return (float)(sign ? -v : v);
}

uint16_t tf_f32_to_bf16_truncate(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)(bits >> 16);
}

/* Toward zero; the tests only need some F16 value per element. */
uint16_t tf_f32_to_f16_truncate(float f) {
    const uint16_t sign = f < 0 ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65504.0) return sign | 0x7BFF;
    if (a < pow(2.0, -14)) return sign | (uint16_t)(a / pow(2.0, -24));
    int e = (int)floor(log2(a));
    if (a < pow(2.0, e)) e--; /* guard log2 rounding */
    const int mantissa = (int)((a / pow(2.0, e) - 1.0) * 1024.0);
    return sign | (uint16_t)((e + 15) << 10) | (uint16_t)(mantissa & 1023);
}

float tf_f32(const TfTensor *t, int64_t i) {
    if (!strcmp(t->dtype, "F32")) {
        float v;
        memcpy(&v, t->data + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return !strcmp(t->dtype, "BF16") ? tf_bf16_to_f32(h) : tf_f16_to_f32(h);
}

/* ------------------------------------------------------------ writing */

void tf_write(const char *path, const TfTensor *tensors, int count) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const TfTensor *t = &tensors[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(o, "dtype", t->dtype);
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        const uint64_t bytes = (uint64_t)(tf_numel(t) * dtype_bytes(t->dtype));
        cJSON *off = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *printed = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t len = strlen(printed);
    char *json = malloc(len + 8);
    memcpy(json, printed, len);
    cJSON_free(printed);
    while ((8 + len) % 8) json[len++] = ' ';
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    CHECK(fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, len, f) == len);
    for (int i = 0; i < count; i++) {
        const size_t bytes = (size_t)(tf_numel(&tensors[i]) * dtype_bytes(tensors[i].dtype));
        CHECK(fwrite(tensors[i].data, 1, bytes, f) == bytes);
    }
    fclose(f);
    free(json);
}

/* ------------------------------------------------------------ variants */

static void join(char *out, size_t size, const char *dir, const char *file) {
    snprintf(out, size, "%s/%s", dir, file);
}

/* Copies config.json, changing one field when key != NULL. */
static void write_config(const char *src_dir, const char *dst_dir, const char *key,
                         cJSON *value) {
    char path[4096];
    join(path, sizeof path, src_dir, "config.json");
    size_t size;
    unsigned char *text = tf_slurp(path, &size);
    cJSON *root = cJSON_Parse((char *)text);
    CHECK(root != NULL);
    free(text);
    if (key) {
        cJSON_DeleteItemFromObject(root, key);
        cJSON_AddItemToObject(root, key, value);
    }
    char *out = cJSON_Print(root);
    join(path, sizeof path, dst_dir, "config.json");
    tf_spit(path, out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(root);
}

static int config_int(const char *dir, const char *key) {
    char path[4096];
    join(path, sizeof path, dir, "config.json");
    size_t size;
    unsigned char *text = tf_slurp(path, &size);
    cJSON *root = cJSON_Parse((char *)text);
    free(text);
    const int v = (int)cJSON_GetObjectItem(root, key)->valuedouble;
    cJSON_Delete(root);
    return v;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const TfTensor *)a)->name, ((const TfTensor *)b)->name);
}

/* GPT-2's released file: no "transformer." prefix, attention-mask buffers,
 * the tied lm_head, names sorted (not model order). */
static int released_style(TfFile *f, TfTensor *out, int positions, unsigned char **owned) {
    int n = 0, layers = 0;
    for (int i = 0; i < f->count; i++) {
        TfTensor t = f->tensors[i];
        const char *p = "transformer.";
        if (!strncmp(t.name, p, strlen(p))) memmove(t.name, t.name + strlen(p), strlen(t.name) - strlen(p) + 1);
        int layer;
        if (sscanf(t.name, "h.%d.", &layer) == 1 && layer + 1 > layers) layers = layer + 1;
        out[n++] = t;
    }
    TfTensor head = *tf_find(f, "transformer.wte.weight");
    snprintf(head.name, sizeof head.name, "lm_head.weight");
    out[n++] = head;
    /* one allocation: the causal mask, then the masked_bias scalar */
    float *mask = calloc((size_t)positions * positions + 1, sizeof *mask);
    for (int r = 0; r < positions; r++)
        for (int c = 0; c <= r; c++) mask[r * positions + c] = 1.0f;
    mask[positions * positions] = -1e4f;
    *owned = (unsigned char *)mask;
    for (int l = 0; l < layers; l++) {
        TfTensor b = {.ndim = 4, .shape = {1, 1, positions, positions}, .data = *owned};
        snprintf(b.name, sizeof b.name, "h.%d.attn.bias", l);
        snprintf(b.dtype, sizeof b.dtype, "F32");
        out[n++] = b;
        TfTensor m = {.ndim = 0, .data = (unsigned char *)(mask + positions * positions)};
        snprintf(m.name, sizeof m.name, "h.%d.attn.masked_bias", l);
        snprintf(m.dtype, sizeof m.dtype, "F32");
        out[n++] = m;
    }
    qsort(out, (size_t)n, sizeof *out, by_name);
    return n;
}

/* Every tensor converted to BF16 or F16 (toward zero). */
static int low_precision(TfFile *f, TfTensor *out, bool bf16, unsigned char **owned) {
    size_t total = 0;
    for (int i = 0; i < f->count; i++) total += (size_t)tf_numel(&f->tensors[i]);
    uint16_t *buf = malloc(total * 2 + 2);
    *owned = (unsigned char *)buf;
    for (int i = 0; i < f->count; i++) {
        out[i] = f->tensors[i];
        snprintf(out[i].dtype, sizeof out[i].dtype, "%s", bf16 ? "BF16" : "F16");
        out[i].data = (unsigned char *)buf;
        for (int64_t k = 0; k < tf_numel(&f->tensors[i]); k++) {
            const float v = tf_f32(&f->tensors[i], k);
            *buf++ = bf16 ? tf_f32_to_bf16_truncate(v) : tf_f32_to_f16_truncate(v);
        }
    }
    return f->count;
}

/* Rewrites the header (after `edit`) in front of the original data. */
static void write_edited_header(TfFile *f, const char *dst, const char *kind) {
    cJSON *root = cJSON_Parse(f->header_text);
    cJSON *last = NULL, *item;
    cJSON_ArrayForEach(item, root) if (strcmp(item->string, "__metadata__")) last = item;
    if (!strcmp(kind, "unknown-dtype")) {
        cJSON_ReplaceItemInObject(last, "dtype", cJSON_CreateString("Q8"));
    } else { /* offsets-outside: the last tensor ends past the data */
        cJSON *off = cJSON_GetObjectItem(last, "data_offsets");
        const double b = cJSON_GetArrayItem(off, 0)->valuedouble + 64;
        const double e = cJSON_GetArrayItem(off, 1)->valuedouble + 64;
        cJSON_ReplaceItemInArray(off, 0, cJSON_CreateNumber(b));
        cJSON_ReplaceItemInArray(off, 1, cJSON_CreateNumber(e));
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    const size_t len = strlen(text), data = f->size - 8 - f->header_len;
    unsigned char *out = malloc(8 + len + data);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + 8, text, len);
    memcpy(out + 8 + len, f->image + 8 + f->header_len, data);
    tf_spit(dst, out, 8 + len + data);
    free(out);
    cJSON_free(text);
}

static void write_bad_json(TfFile *f, const char *dst) {
    const char *text = "{\"transformer.wte.weight\": {\"dtype\": \"F32\", \"shape\": [1,";
    const size_t len = strlen(text), data = f->size - 8 - f->header_len;
    unsigned char *out = malloc(8 + len + data);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + 8, text, len);
    memcpy(out + 8 + len, f->image + 8 + f->header_len, data);
    tf_spit(dst, out, 8 + len + data);
    free(out);
}

static int without(TfFile *f, TfTensor *out, const char *name) {
    int n = 0;
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name)) out[n++] = f->tensors[i];
    return n;
}

static int with_extra(TfFile *f, TfTensor *out, const char *kind, unsigned char **owned) {
    memcpy(out, f->tensors, (size_t)f->count * sizeof *out);
    int n = f->count;
    if (!strcmp(kind, "extra-tensor")) {
        out[n] = *tf_find(f, "transformer.h.0.attn.c_attn.weight");
        snprintf(out[n++].name, sizeof out->name, "transformer.h.7.attn.c_attn.weight");
        return n;
    }
    TfTensor head = *tf_find(f, "transformer.wte.weight"); /* untied-head */
    const size_t bytes = (size_t)tf_numel(&head) * 4;
    *owned = malloc(bytes);
    memcpy(*owned, head.data, bytes);
    float first;
    memcpy(&first, *owned, 4);
    first += 1.0f;
    memcpy(*owned, &first, 4);
    head.data = *owned;
    snprintf(head.name, sizeof head.name, "lm_head.weight");
    out[n++] = head;
    return n;
}

void tf_make_variant(const char *src_dir, const char *dst_dir, const char *kind) {
    char src[4096], dst[4096];
    join(src, sizeof src, src_dir, "model.safetensors");
    join(dst, sizeof dst, dst_dir, "model.safetensors");
    TfFile f;
    tf_read(&f, src);
    TfTensor *out = calloc(TF_MAX_TENSORS, sizeof *out);
    unsigned char *owned = NULL;
    int n = -1;
    const char *config_key = NULL;
    cJSON *config_value = NULL;
    if (!strcmp(kind, "unprefixed")) n = released_style(&f, out, config_int(src_dir, "n_positions"), &owned);
    else if (!strcmp(kind, "bf16") || !strcmp(kind, "f16")) n = low_precision(&f, out, kind[0] == 'b', &owned);
    else if (!strcmp(kind, "missing-tensor")) n = without(&f, out, "transformer.h.1.mlp.c_fc.bias");
    else if (!strcmp(kind, "extra-tensor") || !strcmp(kind, "untied-head")) n = with_extra(&f, out, kind, &owned);
    else if (!strcmp(kind, "truncated")) tf_spit(dst, f.image, f.size - 10);
    else if (!strcmp(kind, "bad-json")) write_bad_json(&f, dst);
    else if (!strcmp(kind, "unknown-dtype") || !strcmp(kind, "offsets-outside")) write_edited_header(&f, dst, kind);
    else if (!strcmp(kind, "config-positions")) {
        config_key = "n_positions";
        config_value = cJSON_CreateNumber(config_int(src_dir, "n_positions") + 1);
        n = f.count;
        memcpy(out, f.tensors, (size_t)n * sizeof *out);
    } else if (!strcmp(kind, "config-layers")) {
        config_key = "n_layer";
        config_value = cJSON_CreateNumber(config_int(src_dir, "n_layer") + 1);
        n = f.count;
        memcpy(out, f.tensors, (size_t)n * sizeof *out);
    } else if (!strcmp(kind, "config-activation")) {
        config_key = "activation_function";
        config_value = cJSON_CreateString("relu");
        n = f.count;
        memcpy(out, f.tensors, (size_t)n * sizeof *out);
    } else {
        CHECK_MSG(false, "unknown variant %s", kind);
    }
    if (n >= 0) tf_write(dst, out, n);
    write_config(src_dir, dst_dir, config_key, config_value);
    free(owned);
    free(out);
    tf_free(&f);
}

void tf_check_widened(const char *low_dir, const char *f32_dir) {
    char low_path[4096], f32_path[4096];
    join(low_path, sizeof low_path, low_dir, "model.safetensors");
    join(f32_path, sizeof f32_path, f32_dir, "model.safetensors");
    TfFile low, full;
    tf_read(&low, low_path);
    tf_read(&full, f32_path);
    CHECK_MSG(low.count == full.count, "%d tensors vs %d", low.count, full.count);
    int64_t checked = 0;
    for (int i = 0; i < low.count; i++) {
        const TfTensor *a = &low.tensors[i], *b = tf_find(&full, a->name);
        CHECK_MSG(b != NULL && !strcmp(b->dtype, "F32"), "%s missing or not F32", a->name);
        CHECK(tf_numel(a) == tf_numel(b));
        for (int64_t k = 0; k < tf_numel(a); k++) {
            const float x = tf_f32(a, k), y = tf_f32(b, k);
            CHECK_MSG(memcmp(&x, &y, 4) == 0, "%s[%lld]: %.9g widened, %.9g exported", a->name,
                      (long long)k, x, y);
        }
        checked += tf_numel(a);
    }
    printf("%lld %s elements widen exactly to the exported F32 values\n", (long long)checked,
           low.tensors[0].dtype);
    tf_free(&low);
    tf_free(&full);
}
