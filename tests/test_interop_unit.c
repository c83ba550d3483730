/* interop/ library: the safetensors reader and writer (round trip, header
 * layout, every malformed-file case with its message), exact BF16/F16
 * widening against known bit patterns, and the GPT-2 layout permutations
 * against their definitions. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "interop/interop.h"
#include "test_util.h"

static char g_dir[256];

static void path_in_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", g_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
}

/* A file of an 8-byte length, the header text as given, and `data_bytes`
 * bytes of data. */
static void write_raw_safetensors(const char *path, const char *header, uint64_t declared_len,
                                  size_t data_bytes) {
    const size_t hlen = strlen(header);
    unsigned char *buf = calloc(1, 8 + hlen + data_bytes + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(declared_len >> (8 * i));
    memcpy(buf + 8, header, hlen);
    write_bytes(path, buf, 8 + hlen + data_bytes);
    free(buf);
}

/* ------------------------------------------------------ round trip */

static void test_round_trip(void) {
    char path[300];
    path_in_dir(path, sizeof path, "rt.safetensors");
    const SafetensorsSpec specs[] = {
        {"a.weight", 2, {3, 5}}, {"b", 1, {7}}, {"scalar", 0, {0}}, {"empty", 2, {0, 4}}};
    float a[15], b[7], s = 42.5f;
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 7; i++) b[i] = -(float)i;
    char err[1024];
    SafetensorsWriter *w = safetensors_create(path, specs, 4, err, sizeof err);
    CHECK_MSG(w != NULL, "%s", err);
    CHECK(safetensors_write_next(w, a, 15, err, sizeof err));
    CHECK(safetensors_write_next(w, b, 7, err, sizeof err));
    CHECK(safetensors_write_next(w, &s, 1, err, sizeof err));
    CHECK(safetensors_write_next(w, NULL, 0, err, sizeof err));
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) == 0 && access(path, F_OK) != 0); /* not published until finished */
    CHECK_MSG(safetensors_finish(w, err, sizeof err), "%s", err);
    CHECK(access(tmp, F_OK) != 0);

    /* The bytes themselves: header length aligned, JSON object, data after. */
    FILE *f = fopen(path, "rb");
    CHECK(f);
    unsigned char len8[8];
    CHECK(fread(len8, 1, 8, f) == 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    CHECK((8 + hlen) % 8 == 0);
    char *header = calloc(1, hlen + 1);
    CHECK(fread(header, 1, hlen, f) == hlen);
    cJSON *root = cJSON_Parse(header);
    CHECK(root && cJSON_IsObject(root));
    cJSON *meta = cJSON_GetObjectItem(root, "__metadata__");
    CHECK(meta && !strcmp(cJSON_GetObjectItem(meta, "format")->valuestring, "pt"));
    cJSON *bt = cJSON_GetObjectItem(root, "b");
    CHECK(bt && !strcmp(cJSON_GetObjectItem(bt, "dtype")->valuestring, "F32"));
    cJSON *off = cJSON_GetObjectItem(bt, "data_offsets");
    CHECK(cJSON_GetArrayItem(off, 0)->valuedouble == 60 && cJSON_GetArrayItem(off, 1)->valuedouble == 88);
    cJSON_Delete(root);
    free(header);
    float data[23];
    CHECK(fread(data, 4, 23, f) == 23);
    CHECK(!memcmp(data, a, sizeof a) && !memcmp(data + 15, b, sizeof b) && data[22] == 42.5f);
    fclose(f);

    SafetensorsReader *r = safetensors_open(path, err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    CHECK(safetensors_num_tensors(r) == 4);
    CHECK(!strcmp(safetensors_metadata(r, "format"), "pt"));
    CHECK(safetensors_metadata(r, "nope") == NULL);
    const SafetensorsTensor *ta = safetensors_find(r, "a.weight");
    CHECK(ta && ta->ndim == 2 && ta->shape[0] == 3 && ta->shape[1] == 5 && ta->numel == 15);
    CHECK(ta->dtype == SAFETENSORS_F32);
    float back[15];
    CHECK(safetensors_read_f32(r, ta, back, err, sizeof err));
    CHECK(!memcmp(back, a, sizeof a));
    const SafetensorsTensor *ts = safetensors_find(r, "scalar");
    CHECK(ts && ts->ndim == 0 && ts->numel == 1);
    float sv = 0;
    CHECK(safetensors_read_f32(r, ts, &sv, err, sizeof err) && sv == 42.5f);
    const SafetensorsTensor *te = safetensors_find(r, "empty");
    CHECK(te && te->numel == 0 && te->begin == te->end);
    CHECK(safetensors_find(r, "missing") == NULL);
    safetensors_close(r);
}

/* ------------------------------------------------------ half precision */

static void test_half_widening(void) {
    /* Known encodings: F16 and BF16 bit patterns and the values they mean. */
    const struct {
        uint16_t bits;
        float value;
    } f16[] = {{0x3C00, 1.0f},      {0xC000, -2.0f},           {0x7BFF, 65504.0f},
               {0x0001, 5.9604644775390625e-8f}, {0x0400, 6.103515625e-5f}, {0x3555, 0.333251953125f},
               {0x8000, -0.0f},     {0x03FF, 6.097555160522461e-5f}},
      bf16[] = {{0x3F80, 1.0f}, {0x4049, 3.140625f}, {0xC2F7, -123.5f}, {0x0001, 9.183549615799121e-41f}};
    const size_t nf = sizeof f16 / sizeof f16[0], nb = sizeof bf16 / sizeof bf16[0];
    char header[1024], path[300], err[1024];
    snprintf(header, sizeof header,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%zu],\"data_offsets\":[0,%zu]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]},"
             "\"i\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}}",
             nf, 2 * nf, nb, 2 * nf, 2 * nf + 2 * nb, 2 * nf + 2 * nb, 2 * nf + 2 * nb + 2);
    uint16_t data[32];
    for (size_t i = 0; i < nf; i++) data[i] = f16[i].bits;
    for (size_t i = 0; i < nb; i++) data[nf + i] = bf16[i].bits;
    data[nf + nb] = 0x7C00; /* +inf */
    const size_t hlen = strlen(header), bytes = 2 * (nf + nb + 1);
    unsigned char *buf = calloc(1, 8 + hlen + bytes);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    memcpy(buf + 8 + hlen, data, bytes);
    path_in_dir(path, sizeof path, "half.safetensors");
    write_bytes(path, buf, 8 + hlen + bytes);
    free(buf);
    SafetensorsReader *r = safetensors_open(path, err, sizeof err);
    CHECK_MSG(r != NULL, "%s", err);
    float out[16];
    CHECK(safetensors_read_f32(r, safetensors_find(r, "h"), out, err, sizeof err));
    for (size_t i = 0; i < nf; i++) {
        CHECK_MSG(out[i] == f16[i].value && signbit(out[i]) == signbit(f16[i].value),
                  "F16 0x%04x -> %.10g, want %.10g", f16[i].bits, out[i], f16[i].value);
    }
    CHECK(safetensors_read_f32(r, safetensors_find(r, "b"), out, err, sizeof err));
    for (size_t i = 0; i < nb; i++)
        CHECK_MSG(out[i] == bf16[i].value, "BF16 0x%04x -> %.10g", bf16[i].bits, out[i]);
    CHECK(safetensors_read_f32(r, safetensors_find(r, "i"), out, err, sizeof err));
    CHECK(isinf(out[0]) && out[0] > 0);
    safetensors_close(r);
}

/* ------------------------------------------------------ malformed files */

/* The header length field is the header's own length plus `extra`. */
static void expect_rejected(const char *name, const char *header, uint64_t extra,
                            size_t data_bytes, const char *keyword) {
    char path[300], err[2048] = "";
    path_in_dir(path, sizeof path, name);
    write_raw_safetensors(path, header, strlen(header) + extra, data_bytes);
    SafetensorsReader *r = safetensors_open(path, err, sizeof err);
    CHECK_MSG(r == NULL, "%s: accepted", name);
    CHECK_MSG(strstr(err, path) != NULL, "%s: message does not name the file: %s", name, err);
    CHECK_MSG(strstr(err, keyword) != NULL, "%s: message lacks '%s': %s", name, keyword, err);
    printf("  %-22s %s\n", name, err);
}

static void test_malformed(void) {
    const char *good = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    const uint64_t glen = strlen(good);
    char path[300], err[1024];
    path_in_dir(path, sizeof path, "good.safetensors");
    write_raw_safetensors(path, good, glen, 16);
    SafetensorsReader *r = safetensors_open(path, err, sizeof err);
    CHECK_MSG(r != NULL, "the well-formed control file was rejected: %s", err);
    safetensors_close(r);

    printf("malformed safetensors messages:\n");
    path_in_dir(path, sizeof path, "short.safetensors");
    write_bytes(path, "abc", 3);
    CHECK(safetensors_open(path, err, sizeof err) == NULL && strstr(err, "too short"));
    expect_rejected("header_too_long", good, 1000, 16, "larger than");
    expect_rejected("truncated_data", good, 0, 8, "outside the data section");
    expect_rejected("bad_json", "{\"t\": {\"dtype\": \"F32\", \"shape\": [2,", 0, 0, "not valid JSON");
    expect_rejected("not_object", "[1, 2, 3]", 0, 0, "not an object");
    expect_rejected("trailing_bytes", "{} xyz", 0, 0, "after its JSON");
    expect_rejected("unknown_dtype",
                    "{\"t\":{\"dtype\":\"Q7\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 0, 16,
                    "unknown dtype 'Q7'");
    expect_rejected("unsupported_dtype",
                    "{\"t\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 0, 16,
                    "dtype I64");
    expect_rejected("offsets_outside",
                    "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[16,32]}}", 0, 16,
                    "outside the data section");
    expect_rejected("offsets_size",
                    "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 0, 16,
                    "need 16");
    expect_rejected("offsets_reversed",
                    "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 0, 16,
                    "data_offsets");
    expect_rejected("negative_dim",
                    "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 16,
                    "shape entry");
    expect_rejected("no_dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 16, "dtype");
    expect_rejected("duplicate",
                    "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    0, 16, "twice");
    expect_rejected("bad_metadata", "{\"__metadata__\":{\"format\":3}}", 0, 0, "__metadata__");
}

/* ------------------------------------------------------ layouts */

static const TransformerConfig SHAPE = {.num_layers = 2, .hidden_size = 6, .num_attention_heads = 3,
                                .ffn_hidden_size = 10, .vocab_size = 11,
                                .padded_vocab_size = 16, .max_position_embeddings = 5,
                                /* the GPT-2 variant (transformer_config_set_gpt2_variant) */
                                .rotary_base = 10000, .rotary_percent = 1, .norm_epsilon = 1e-5,
                                .num_query_groups = 3, .kv_channels = 2, .add_bias_linear = true,
                                /* dense (transformer_config_set_dense) */
                                .moe_router_topk = 2, .moe_layer_freq = 1};

static const TensorMapping *find_map(const TensorMapping *maps, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (!strcmp(maps[i].external_name, name)) return &maps[i];
    return NULL;
}

static int64_t canonical_numel(const TensorMapping *m) {
    const int64_t C = SHAPE.hidden_size;
    if (m->layout == LAYOUT_VOCAB_ROWS) return SHAPE.padded_vocab_size * C;
    return tensor_mapping_numel(m);
}

/* Every layout moves each canonical element to one place and back. */
static void check_inverse(const TensorMapping *m) {
    const int64_t nc = canonical_numel(m), ne = tensor_mapping_numel(m);
    float *can = malloc((size_t)nc * sizeof *can), *ext = malloc((size_t)ne * sizeof *ext);
    float *back = calloc((size_t)nc, sizeof *back);
    for (int64_t k = 0; k < nc; k++) can[k] = (float)(k + 1);
    tensor_to_external(m, &SHAPE, can, ext);
    tensor_from_external(m, &SHAPE, ext, back);
    const int64_t C = SHAPE.hidden_size;
    for (int64_t k = 0; k < nc; k++) {
        const bool dropped = m->layout == LAYOUT_VOCAB_ROWS && k / C >= m->shape[0];
        CHECK_MSG(back[k] == (dropped ? 0.0f : can[k]), "%s: element %lld", m->external_name,
                  (long long)k);
    }
    if (m->layout != LAYOUT_VOCAB_ROWS) { /* a permutation: every value once */
        double sum = 0;
        for (int64_t i = 0; i < ne; i++) sum += ext[i];
        CHECK(sum == (double)nc * (double)(nc + 1) / 2);
    }
    free(can);
    free(ext);
    free(back);
}

static void test_layouts(void) {
    const int64_t C = SHAPE.hidden_size, HS = C / SHAPE.num_attention_heads, F = SHAPE.ffn_hidden_size;
    int nh = 0, nl = 0;
    TensorMapping *hf = hf_gpt2_mappings(&SHAPE, &nh);
    TensorMapping *lc = llmc_mappings(&SHAPE, 24, &nl);
    CHECK(nh == 4 + 12 * SHAPE.num_layers && nl == nh);
    for (int i = 0; i < nh; i++) check_inverse(&hf[i]);
    for (int i = 0; i < nl; i++) check_inverse(&lc[i]);

    /* HF c_attn [C, 3C]: hf[c, s*C + h*HS + d] = qkv[h, s, d, c]. */
    const TensorMapping *attn = find_map(hf, nh, "transformer.h.1.attn.c_attn.weight");
    CHECK(attn && attn->shape[0] == C && attn->shape[1] == 3 * C);
    CHECK(!strcmp(attn->canonical_name, "decoder.layers.1.self_attention.linear_qkv.weight"));
    float qkv[3 * 6 * 6], ext[3 * 6 * 6], ext2[3 * 6 * 6];
    for (int k = 0; k < 3 * 6 * 6; k++) qkv[k] = (float)k;
    tensor_to_external(attn, &SHAPE, qkv, ext);
    for (int h = 0; h < SHAPE.num_attention_heads; h++)
        for (int s = 0; s < 3; s++)
            for (int d = 0; d < HS; d++)
                for (int c = 0; c < C; c++)
                    CHECK(ext[c * 3 * C + s * C + h * HS + d] == qkv[((h * 3 + s) * HS + d) * C + c]);
    /* llm.c's qkvw is nn.Linear's [3C, C]: the transpose of HF's Conv1D. */
    const TensorMapping *qkvw = find_map(lc, nl, "qkvw (layer 1)");
    CHECK(qkvw && qkvw->shape[0] == 3 * C && qkvw->shape[1] == C);
    tensor_to_external(qkvw, &SHAPE, qkv, ext2);
    for (int c = 0; c < C; c++)
        for (int j = 0; j < 3 * C; j++) CHECK(ext2[j * C + c] == ext[c * 3 * C + j]);
    /* Bias: hf[s*C + h*HS + d] = bias[h, s, d]. */
    const TensorMapping *bias = find_map(hf, nh, "transformer.h.0.attn.c_attn.bias");
    float b[18], be[18];
    for (int k = 0; k < 18; k++) b[k] = (float)k;
    tensor_to_external(bias, &SHAPE, b, be);
    for (int h = 0; h < 3; h++)
        for (int s = 0; s < 3; s++)
            for (int d = 0; d < HS; d++) CHECK(be[s * C + h * HS + d] == b[(h * 3 + s) * HS + d]);
    /* c_fc [C, F] is fc1 [F, C] transposed; mlp.c_proj [F, C] is fc2 as stored. */
    const TensorMapping *fc = find_map(hf, nh, "transformer.h.0.mlp.c_fc.weight");
    CHECK(fc->shape[0] == C && fc->shape[1] == F && fc->layout == LAYOUT_TRANSPOSE);
    float fc1[60], fce[60];
    for (int k = 0; k < 60; k++) fc1[k] = (float)k;
    tensor_to_external(fc, &SHAPE, fc1, fce);
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++) CHECK(fce[c * F + f] == fc1[f * C + c]);
    CHECK(find_map(hf, nh, "transformer.h.0.mlp.c_proj.weight")->layout == LAYOUT_SAME);
    CHECK(find_map(hf, nh, "transformer.h.0.attn.c_proj.weight")->layout == LAYOUT_SAME);
    CHECK(find_map(lc, nl, "attprojw (layer 0)")->layout == LAYOUT_TRANSPOSE);
    CHECK(find_map(lc, nl, "fcprojw (layer 1)")->shape[0] == C);
    /* The vocabulary: HF drops padded rows; llm.c pads to its own count. */
    CHECK(hf[0].shape[0] == SHAPE.vocab_size && lc[0].shape[0] == 24);
    /* llm.c order: kinds together (all ln1w before any ln1b). */
    CHECK(!strcmp(lc[2].external_name, "ln1w (layer 0)") && !strcmp(lc[3].external_name, "ln1w (layer 1)"));
    CHECK(!strcmp(lc[4].external_name, "ln1b (layer 0)"));
    CHECK(!strcmp(lc[nl - 1].external_name, "lnfb"));
    free(hf);
    free(lc);
}

static void test_shape_check(void) {
    char err[512];
    TransformerConfig s = SHAPE;
    CHECK(transformer_config_check(&s, "x", err, sizeof err));
    s.num_attention_heads = 4;
    CHECK(!transformer_config_check(&s, "x", err, sizeof err) && strstr(err, "divisible"));
    s = SHAPE;
    s.padded_vocab_size = 8;
    CHECK(!transformer_config_check(&s, "x", err, sizeof err) && strstr(err, "smaller"));
    s = SHAPE;
    s.num_layers = 0;
    CHECK(!transformer_config_check(&s, "x", err, sizeof err) && strstr(err, "num_layers"));
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/test_interop_unit.XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    test_round_trip();
    test_half_widening();
    test_malformed();
    test_layouts();
    test_shape_check();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    CHECK(system(cmd) == 0);
    printf("test_interop_unit: ok\n");
    return 0;
}
