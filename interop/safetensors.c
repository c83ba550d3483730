/* Safetensors reader and writer (the format of Hugging Face's
 * model.safetensors): 8-byte little-endian header length, JSON header, raw
 * little-endian tensor data. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"

#define MAX_EXACT_JSON_INTEGER 9007199254740992.0 /* 2^53 */
#define CONVERT_CHUNK_ELEMENTS ((int64_t)1 << 20)

struct SafetensorsReader {
    char *path;
    int fd;
    uint64_t file_size, data_start, data_size;
    SafetensorsTensor *tensors;
    int count;
    char **meta_keys, **meta_values;
    int meta_count;
};

typedef struct {
    const char *name;
    int size; /* bytes per element; 0: known to the format but not read here */
} DtypeInfo;

/* Every dtype the format defines, so an unsupported one is told apart from
 * a damaged header. The first three are SafetensorsDtype's values. */
static const DtypeInfo DTYPES[] = {
    {"F32", 4},     {"BF16", 2},    {"F16", 2},  {"F64", 0},      {"I64", 0},
    {"I32", 0},     {"I16", 0},     {"I8", 0},   {"U64", 0},      {"U32", 0},
    {"U16", 0},     {"U8", 0},      {"BOOL", 0}, {"F8_E4M3", 0},  {"F8_E5M2", 0},
};
#define NUM_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

const char *safetensors_dtype_name(SafetensorsDtype t) { return DTYPES[t].name; }

/* ----------------------------------------------------------------- reading */

static bool read_exact(int fd, void *buf, uint64_t size, uint64_t offset) {
    char *p = buf;
    while (size > 0) {
        size_t want = size > ((uint64_t)1 << 30) ? (size_t)1 << 30 : (size_t)size;
        ssize_t got = pread(fd, p, want, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            if (got == 0) errno = 0; /* end of file: no errno of its own */
            return false;
        }
        p += got;
        size -= (uint64_t)got;
        offset += (uint64_t)got;
    }
    return true;
}

static uint64_t load_u64_le(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_count(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    const double v = item->valuedouble;
    if (!(v >= 0) || v > MAX_EXACT_JSON_INTEGER || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

static bool parse_dtype(const SafetensorsReader *r, const char *tensor, const cJSON *item,
                        SafetensorsDtype *dtype, char *err, size_t err_size) {
    if (!cJSON_IsString(item))
        return interop_fail(err, err_size, "'%s': tensor '%s' has no \"dtype\" string", r->path,
                            tensor);
    for (int i = 0; i < NUM_DTYPES; i++) {
        if (strcmp(item->valuestring, DTYPES[i].name)) continue;
        if (DTYPES[i].size == 0)
            return interop_fail(err, err_size,
                                "'%s': tensor '%s' has dtype %s, which gpt3d does not read "
                                "(weights must be F32, BF16 or F16)",
                                r->path, tensor, DTYPES[i].name);
        *dtype = (SafetensorsDtype)i;
        return true;
    }
    return interop_fail(err, err_size,
                        "'%s': tensor '%s' has unknown dtype '%.40s' (safetensors dtypes are "
                        "F32, BF16, F16, F64, I8..I64, U8..U64, BOOL, F8_E4M3, F8_E5M2)",
                        r->path, tensor, item->valuestring);
}

static bool parse_shape(const SafetensorsReader *r, SafetensorsTensor *t, const cJSON *item,
                        char *err, size_t err_size) {
    const int ndim = cJSON_IsArray(item) ? cJSON_GetArraySize(item) : -1;
    if (ndim < 0 || ndim > SAFETENSORS_MAX_DIMS)
        return interop_fail(err, err_size,
                            "'%s': tensor '%s' needs a \"shape\" array of at most %d integers",
                            r->path, t->name, SAFETENSORS_MAX_DIMS);
    t->ndim = ndim;
    t->numel = 1;
    const cJSON *dim;
    int d = 0;
    cJSON_ArrayForEach(dim, item) {
        uint64_t v;
        if (!json_count(dim, &v))
            return interop_fail(err, err_size,
                                "'%s': tensor '%s' has a shape entry that is not a non-negative "
                                "integer",
                                r->path, t->name);
        if (v != 0 && (uint64_t)t->numel > (uint64_t)INT64_MAX / 8 / v)
            return interop_fail(err, err_size, "'%s': tensor '%s' has an impossibly large shape",
                                r->path, t->name);
        t->shape[d++] = (int64_t)v;
        t->numel *= (int64_t)v;
    }
    return true;
}

static bool parse_offsets(const SafetensorsReader *r, SafetensorsTensor *t, const cJSON *item,
                          char *err, size_t err_size) {
    uint64_t b = 0, e = 0;
    if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2 ||
        !json_count(cJSON_GetArrayItem(item, 0), &b) ||
        !json_count(cJSON_GetArrayItem(item, 1), &e) || e < b)
        return interop_fail(err, err_size,
                            "'%s': tensor '%s' needs \"data_offsets\" [begin, end] with 0 <= "
                            "begin <= end",
                            r->path, t->name);
    if (e > r->data_size)
        return interop_fail(err, err_size,
                            "'%s': tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64
                            "] outside the data section of %" PRIu64
                            " bytes (the file is truncated or damaged)",
                            r->path, t->name, b, e, r->data_size);
    const uint64_t want = (uint64_t)t->numel * (uint64_t)DTYPES[t->dtype].size;
    if (e - b != want)
        return interop_fail(err, err_size,
                            "'%s': tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64
                            "] spanning %" PRIu64 " bytes, but %" PRId64 " elements of %s need %" PRIu64,
                            r->path, t->name, b, e, e - b, t->numel, DTYPES[t->dtype].name, want);
    t->begin = b;
    t->end = e;
    return true;
}

static bool parse_metadata(SafetensorsReader *r, const cJSON *item, char *err, size_t err_size) {
    if (!cJSON_IsObject(item))
        return interop_fail(err, err_size, "'%s': \"__metadata__\" must be an object of strings",
                            r->path);
    if (r->meta_keys)
        return interop_fail(err, err_size, "'%s': \"__metadata__\" appears twice in the header",
                            r->path);
    const int n = cJSON_GetArraySize(item);
    r->meta_keys = xcalloc((size_t)n + 1, sizeof *r->meta_keys);
    r->meta_values = xcalloc((size_t)n + 1, sizeof *r->meta_values);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, item) {
        if (!cJSON_IsString(entry))
            return interop_fail(err, err_size,
                                "'%s': \"__metadata__\" value '%s' is not a string", r->path,
                                entry->string);
        r->meta_keys[r->meta_count] = xstrdup(entry->string);
        r->meta_values[r->meta_count++] = xstrdup(entry->valuestring);
    }
    return true;
}

static bool parse_tensor(SafetensorsReader *r, const cJSON *item, char *err, size_t err_size) {
    SafetensorsTensor *t = &r->tensors[r->count];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(item->string);
    r->count++; /* owned from here, so close() frees the name on failure */
    if (!cJSON_IsObject(item))
        return interop_fail(err, err_size, "'%s': entry '%s' of the header is not an object",
                            r->path, t->name);
    if (safetensors_find(r, t->name) != t)
        return interop_fail(err, err_size, "'%s': tensor '%s' appears twice in the header",
                            r->path, t->name);
    return parse_dtype(r, t->name, cJSON_GetObjectItemCaseSensitive(item, "dtype"), &t->dtype,
                       err, err_size) &&
           parse_shape(r, t, cJSON_GetObjectItemCaseSensitive(item, "shape"), err, err_size) &&
           parse_offsets(r, t, cJSON_GetObjectItemCaseSensitive(item, "data_offsets"), err,
                         err_size);
}

static bool only_whitespace(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

static bool parse_header(SafetensorsReader *r, const char *text, size_t size, char *err,
                         size_t err_size) {
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, size, &parse_end, false);
    if (!root) {
        long at = parse_end ? (long)(parse_end - text) : -1;
        return interop_fail(err, err_size,
                            "'%s': the header is not valid JSON (error near byte %ld of %zu); "
                            "the file is damaged or not safetensors",
                            r->path, at, size);
    }
    bool ok = true;
    if (!cJSON_IsObject(root))
        ok = interop_fail(err, err_size, "'%s': the header is JSON but not an object", r->path);
    else if (!only_whitespace(parse_end, text + size))
        ok = interop_fail(err, err_size,
                          "'%s': the header has bytes after its JSON object (byte %ld)", r->path,
                          (long)(parse_end - text));
    if (!ok) {
        cJSON_Delete(root);
        return false;
    }
    r->tensors = xcalloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *r->tensors);
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) ok = parse_metadata(r, item, err, err_size);
        else ok = parse_tensor(r, item, err, err_size);
        if (!ok) break;
    }
    cJSON_Delete(root);
    return ok;
}

static bool read_header(SafetensorsReader *r, char *err, size_t err_size) {
    struct stat st;
    if (fstat(r->fd, &st) != 0)
        return interop_fail(err, err_size, "cannot stat '%s': %s", r->path, strerror(errno));
    r->file_size = (uint64_t)st.st_size;
    unsigned char len_bytes[8];
    if (r->file_size < 8 || !read_exact(r->fd, len_bytes, 8, 0))
        return interop_fail(err, err_size,
                            "'%s' is %" PRIu64 " bytes, too short for a safetensors file (it "
                            "starts with an 8-byte header length)",
                            r->path, r->file_size);
    const uint64_t header = load_u64_le(len_bytes);
    if (header > r->file_size - 8)
        return interop_fail(err, err_size,
                            "'%s': header length %" PRIu64 " is larger than the %" PRIu64
                            " bytes after it: the file is truncated or not safetensors",
                            r->path, header, r->file_size - 8);
    if (header > SAFETENSORS_MAX_HEADER_BYTES || header < 2)
        return interop_fail(err, err_size,
                            "'%s': header length %" PRIu64 " is outside the format's limits "
                            "(2 bytes to 100 MiB): the file is not safetensors",
                            r->path, header);
    r->data_start = 8 + header;
    r->data_size = r->file_size - r->data_start;
    char *text = xmalloc((size_t)header);
    bool ok = read_exact(r->fd, text, header, 8);
    if (!ok) interop_fail(err, err_size, "cannot read '%s': %s", r->path, strerror(errno));
    if (ok) ok = parse_header(r, text, (size_t)header, err, err_size);
    free(text);
    return ok;
}

SafetensorsReader *safetensors_open(const char *path, char *err, size_t err_size) {
    GPT3D_CHECK(interop_host_is_little_endian(), "safetensors needs a little-endian host");
    SafetensorsReader *r = xcalloc(1, sizeof *r);
    r->path = xstrdup(path);
    r->fd = open(path, O_RDONLY);
    if (r->fd < 0) {
        interop_fail(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        safetensors_close(r);
        return NULL;
    }
    if (!read_header(r, err, err_size)) {
        safetensors_close(r);
        return NULL;
    }
    return r;
}

void safetensors_close(SafetensorsReader *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    for (int i = 0; i < r->count; i++) free(r->tensors[i].name);
    for (int i = 0; i < r->meta_count; i++) {
        free(r->meta_keys[i]);
        free(r->meta_values[i]);
    }
    free(r->meta_keys);
    free(r->meta_values);
    free(r->tensors);
    free(r->path);
    free(r);
}

const char *safetensors_path(const SafetensorsReader *r) { return r->path; }
int safetensors_num_tensors(const SafetensorsReader *r) { return r->count; }
const SafetensorsTensor *safetensors_tensor(const SafetensorsReader *r, int i) {
    GPT3D_CHECK(i >= 0 && i < r->count, "tensor index %d out of range", i);
    return &r->tensors[i];
}

const SafetensorsTensor *safetensors_find(const SafetensorsReader *r, const char *name) {
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->tensors[i].name, name)) return &r->tensors[i];
    return NULL;
}

const char *safetensors_metadata(const SafetensorsReader *r, const char *key) {
    for (int i = 0; i < r->meta_count; i++)
        if (!strcmp(r->meta_keys[i], key)) return r->meta_values[i];
    return NULL;
}

static float f16_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1fu,
                   mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) { /* zero or subnormal: mantissa x 2^-24, exact in fp32 */
        const float v = ldexpf((float)mantissa, -24);
        return sign ? -v : v;
    }
    if (exponent == 0x1f) bits = sign | 0x7f800000u | mantissa << 13; /* inf, NaN */
    else bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

bool safetensors_read_f32(SafetensorsReader *r, const SafetensorsTensor *t, float *out, char *err,
                          size_t err_size) {
    const uint64_t at = r->data_start + t->begin;
    if (t->dtype == SAFETENSORS_F32) {
        if (!read_exact(r->fd, out, t->end - t->begin, at))
            return interop_fail(err, err_size, "cannot read tensor '%s' from '%s': %s", t->name,
                                r->path, errno ? strerror(errno) : "unexpected end of file");
        return true;
    }
    uint16_t *half = xmalloc((size_t)CONVERT_CHUNK_ELEMENTS * sizeof *half);
    bool ok = true;
    for (int64_t done = 0; ok && done < t->numel; done += CONVERT_CHUNK_ELEMENTS) {
        const int64_t n = t->numel - done < CONVERT_CHUNK_ELEMENTS ? t->numel - done
                                                                  : CONVERT_CHUNK_ELEMENTS;
        ok = read_exact(r->fd, half, (uint64_t)n * 2, at + (uint64_t)done * 2);
        for (int64_t i = 0; ok && i < n; i++)
            out[done + i] = t->dtype == SAFETENSORS_BF16 ? interop_bf16_to_float(half[i])
                                                         : f16_to_float(half[i]);
    }
    free(half);
    if (!ok)
        return interop_fail(err, err_size, "cannot read tensor '%s' from '%s': %s", t->name,
                            r->path, errno ? strerror(errno) : "unexpected end of file");
    return true;
}

/* ----------------------------------------------------------------- writing */

struct SafetensorsWriter {
    char *path, *tmp_path;
    FILE *file;
    int64_t *numels;
    int count, next;
};

static void add_int_array(cJSON *obj, const char *key, const int64_t *values, int n) {
    cJSON *arr = cJSON_AddArrayToObject(obj, key);
    GPT3D_CHECK(arr != NULL, "out of memory building a safetensors header");
    for (int i = 0; i < n; i++) {
        GPT3D_CHECK((double)values[i] <= MAX_EXACT_JSON_INTEGER, "value beyond 2^53");
        cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)values[i]));
    }
}

/* The header JSON, padded with spaces so the data starts 8-byte aligned. */
static char *build_header(const SafetensorsSpec *specs, int count, int64_t *numels,
                          size_t *size) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    int64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const SafetensorsSpec *s = &specs[i];
        GPT3D_CHECK(s->ndim >= 0 && s->ndim <= SAFETENSORS_MAX_DIMS, "bad ndim %d", s->ndim);
        numels[i] = 1;
        for (int d = 0; d < s->ndim; d++) numels[i] *= s->shape[d];
        cJSON *t = cJSON_AddObjectToObject(root, s->name);
        cJSON_AddStringToObject(t, "dtype", "F32");
        add_int_array(t, "shape", s->shape, s->ndim);
        const int64_t range[2] = {offset, offset + 4 * numels[i]};
        add_int_array(t, "data_offsets", range, 2);
        offset = range[1];
    }
    char *json = cJSON_PrintUnformatted(root);
    GPT3D_CHECK(json != NULL, "out of memory printing a safetensors header");
    cJSON_Delete(root);
    const size_t len = strlen(json), padded = (8 + len + 7) / 8 * 8 - 8;
    char *text = xmalloc(padded);
    memcpy(text, json, len);
    memset(text + len, ' ', padded - len);
    cJSON_free(json);
    *size = padded;
    return text;
}

SafetensorsWriter *safetensors_create(const char *path, const SafetensorsSpec *specs, int count,
                                      char *err, size_t err_size) {
    GPT3D_CHECK(interop_host_is_little_endian(), "safetensors needs a little-endian host");
    SafetensorsWriter *w = xcalloc(1, sizeof *w);
    w->path = xstrdup(path);
    const size_t n = strlen(path) + 8;
    w->tmp_path = xmalloc(n);
    snprintf(w->tmp_path, n, "%s.tmp", path);
    w->numels = xcalloc((size_t)count + 1, sizeof *w->numels);
    w->count = count;
    size_t header_size;
    char *header = build_header(specs, count, w->numels, &header_size);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header_size >> (8 * i));
    w->file = fopen(w->tmp_path, "wb");
    bool ok = w->file && fwrite(len_bytes, 1, 8, w->file) == 8 &&
              fwrite(header, 1, header_size, w->file) == header_size;
    free(header);
    if (!ok) {
        interop_fail(err, err_size, "cannot write '%s': %s", w->tmp_path, strerror(errno));
        safetensors_abort(w);
        return NULL;
    }
    return w;
}

bool safetensors_write_next(SafetensorsWriter *w, const float *data, int64_t numel, char *err,
                            size_t err_size) {
    GPT3D_CHECK(w->next < w->count, "more tensors written than declared");
    GPT3D_CHECK(numel == w->numels[w->next], "tensor %d: %lld elements written, %lld declared",
                w->next, (long long)numel, (long long)w->numels[w->next]);
    if (numel && fwrite(data, sizeof(float), (size_t)numel, w->file) != (size_t)numel)
        return interop_fail(err, err_size, "cannot write '%s': %s", w->tmp_path,
                            strerror(errno));
    w->next++;
    return true;
}

static void free_writer(SafetensorsWriter *w) {
    free(w->numels);
    free(w->tmp_path);
    free(w->path);
    free(w);
}

bool safetensors_finish(SafetensorsWriter *w, char *err, size_t err_size) {
    GPT3D_CHECK(w->next == w->count, "%d of %d tensors written", w->next, w->count);
    FILE *f = w->file;
    w->file = NULL;
    bool ok = interop_close_synced(f, w->tmp_path, err, err_size);
    if (ok && rename(w->tmp_path, w->path) != 0)
        ok = interop_fail(err, err_size, "cannot rename '%s' to '%s': %s", w->tmp_path, w->path,
                          strerror(errno));
    if (!ok) remove(w->tmp_path);
    free_writer(w);
    return ok;
}

void safetensors_abort(SafetensorsWriter *w) {
    if (!w) return;
    if (w->file) fclose(w->file);
    remove(w->tmp_path);
    free_writer(w);
}
