/* Helper of test_interop.sh: builds checkpoints and llm.c files whose values
 * are known, checks exported files against the formats' own definitions
 * (parsed here, not by interop/), compares checkpoints bitwise, and makes
 * malformed inputs. Exit status 0: the check passed. (The forward check is
 * test_interop_forward: linking the compute backend costs every run of this
 * helper the CUDA libraries' start-up.) */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "test_interop_formats.h"
#include "test_util.h"

/* ------------------------------------------------------------ shapes */

typedef struct {
    int L, C, H, F, V, VP, P;
} Shape;

static Shape parse_shape(char **argv) {
    Shape s = {atoi(argv[0]), atoi(argv[1]), atoi(argv[2]), atoi(argv[3]),
               atoi(argv[4]), atoi(argv[5]), atoi(argv[6])};
    CHECK(s.L > 0 && s.C > 0 && s.H > 0 && s.C % s.H == 0 && s.VP >= s.V && s.P > 0);
    return s;
}

/* Canonical names, shapes in state-dict order, from DESIGN.md's table. */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
} Param;

static int canonical_params(const Shape *s, Param *out) {
    const int64_t C = s->C, F = s->F, H = s->H, HS = s->C / s->H;
    int n = 0;
#define ADD(nd, d0, d1, d2, d3, ...)                                                               \
    do {                                                                                           \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                    \
        out[n].ndim = nd;                                                                          \
        out[n].shape[0] = d0, out[n].shape[1] = d1, out[n].shape[2] = d2, out[n].shape[3] = d3;    \
        n++;                                                                                       \
    } while (0)
    ADD(2, s->VP, C, 0, 0, "embedding.word_embeddings.weight");
    ADD(2, s->P, C, 0, 0, "embedding.position_embeddings.weight");
    for (int l = 0; l < s->L; l++) {
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.input_layernorm.weight", l);
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.input_layernorm.bias", l);
        ADD(4, H, 3, HS, C, "decoder.layers.%d.self_attention.linear_qkv.weight", l);
        ADD(3, H, 3, HS, 0, "decoder.layers.%d.self_attention.linear_qkv.bias", l);
        ADD(2, C, C, 0, 0, "decoder.layers.%d.self_attention.linear_proj.weight", l);
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.self_attention.linear_proj.bias", l);
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.pre_mlp_layernorm.weight", l);
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.pre_mlp_layernorm.bias", l);
        ADD(2, F, C, 0, 0, "decoder.layers.%d.mlp.linear_fc1.weight", l);
        ADD(1, F, 0, 0, 0, "decoder.layers.%d.mlp.linear_fc1.bias", l);
        ADD(2, F, C, 0, 0, "decoder.layers.%d.mlp.linear_fc2.weight", l);
        ADD(1, C, 0, 0, 0, "decoder.layers.%d.mlp.linear_fc2.bias", l);
    }
    ADD(1, C, 0, 0, 0, "decoder.final_layernorm.weight");
    ADD(1, C, 0, 0, 0, "decoder.final_layernorm.bias");
#undef ADD
    return n;
}

static int64_t numel_of(const Param *p) {
    int64_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= p->shape[d];
    return n;
}

static int find_param(const Param *ps, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(ps[i].name, name)) return i;
    CHECK_MSG(false, "no canonical parameter %s", name);
    return -1;
}

/* ------------------------------------------------- checkpoint writing */

/* Value of element k of parameter p in a coordinate checkpoint: exact in
 * fp32 while p < 4096 and k < 4096. */
static float coord(int p, int64_t k) { return (float)(p * 4096 + k); }

static uint64_t rng_next(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ull;
}

static double rng_normal(uint64_t *state) {
    const double u1 = ((double)(rng_next(state) >> 11) + 0.5) / 9007199254740992.0;
    const double u2 = (double)(rng_next(state) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Random weights large enough that attention, every bias and every
 * layernorm visibly change the loss. */
static void random_values(const Param *p, uint64_t *state, float *out) {
    const int64_t n = numel_of(p);
    const int64_t fan_in = p->shape[p->ndim - 1];
    const bool is_ln_weight = strstr(p->name, "layernorm.weight") != NULL;
    const bool is_bias = strstr(p->name, ".bias") != NULL;
    double scale = 1.0 / sqrt((double)fan_in);
    if (strstr(p->name, "word_embeddings")) scale = 1.0;
    if (strstr(p->name, "position_embeddings")) scale = 0.5;
    if (strstr(p->name, "linear_proj.weight") || strstr(p->name, "linear_fc2.weight"))
        scale = 1.0 / sqrt((double)p->shape[0]); /* input-major: fan-in is dim 0 */
    for (int64_t k = 0; k < n; k++) {
        const double z = rng_normal(state);
        out[k] = (float)(is_ln_weight ? 1.0 + 0.3 * z : is_bias ? 0.2 * z : scale * z);
    }
}

/* Writes a checkpoint with `ranks` rank files, each parameter cut into
 * `ranks` uneven flat intervals, as a DP layout would. */
static void write_checkpoint(const char *dir, const Shape *s, int ranks, bool random,
                             uint64_t seed) {
    Param ps[1024];
    const int n = canonical_params(s, ps);
    float **values = calloc((size_t)n, sizeof *values);
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < n; i++) {
        const int64_t m = numel_of(&ps[i]);
        values[i] = malloc((size_t)m * sizeof(float));
        if (random) random_values(&ps[i], &state, values[i]);
        else
            for (int64_t k = 0; k < m; k++) values[i][k] = coord(i, k);
    }
    char err[2048];
    CHECK_MSG(checkpoint_begin_save(dir, 5, err, sizeof err), "%s", err);
    CheckpointInterval *iv = calloc((size_t)n, sizeof *iv);
    for (int r = 0; r < ranks; r++) {
        for (int i = 0; i < n; i++) {
            const int64_t m = numel_of(&ps[i]);
            /* rank r owns [cut(r), cut(r+1)), cuts skewed toward the start */
            const int64_t b = m * r * r / (ranks * ranks), e = m * (r + 1) * (r + 1) / (ranks * ranks);
            iv[i] = (CheckpointInterval){.name = ps[i].name, .ndim = ps[i].ndim, .begin = b,
                                         .end = e, .weight = values[i] + b};
            memcpy(iv[i].shape, ps[i].shape, sizeof iv[i].shape);
        }
        CHECK_MSG(checkpoint_write_rank(dir, 5, r, iv, n, err, sizeof err), "%s", err);
    }
    CheckpointMeta m = {.iteration = 5, .loss_scale = 1.0, .model.num_layers = s->L,
                        .model.hidden_size = s->C, .model.num_attention_heads = s->H,
                        .model.ffn_hidden_size = s->F, .model.vocab_size = s->V,
                        .model.padded_vocab_size = s->VP, .model.max_position_embeddings = s->P,
                        .model.seq_length = s->P, .tensor_model_parallel_size = 1,
                        .pipeline_model_parallel_size = 1, .data_parallel_size = ranks,
                        .world_size = ranks, .context_parallel_size = 1,
                        .model.seed = seed};
    snprintf(m.tokenizer_type, sizeof m.tokenizer_type, "ByteTokenizer");
    transformer_config_set_gpt2_variant(&m.model);
    CHECK_MSG(checkpoint_write_meta(dir, &m, err, sizeof err), "%s", err);
    CHECK_MSG(checkpoint_publish(dir, 5, err, sizeof err), "%s", err);
    for (int i = 0; i < n; i++) free(values[i]);
    free(values);
    free(iv);
}

/* ------------------------------------------- coordinate checks: HF */

static int g_failures;

static void expect_value(const char *what, int64_t i, float got, float want) {
    if (memcmp(&got, &want, sizeof got) == 0) return;
    if (g_failures++ < 10)
        fprintf(stderr, "%s[%lld] = %.9g, want %.9g\n", what, (long long)i, got, want);
}

/* Expected value of HF tensor `name` at flat index i, from the definition
 * of GPT-2's Conv1D layout against DESIGN.md's canonical one. */
static float hf_expected(const Shape *s, const Param *ps, int np, const char *name, int64_t i) {
    const int64_t C = s->C, F = s->F, HS = s->C / s->H;
    char canon[128];
    int layer = -1;
    char rest[96] = "";
    if (!strcmp(name, "transformer.wte.weight"))
        return coord(find_param(ps, np, "embedding.word_embeddings.weight"), i);
    if (!strcmp(name, "transformer.wpe.weight"))
        return coord(find_param(ps, np, "embedding.position_embeddings.weight"), i);
    if (!strncmp(name, "transformer.ln_f.", 17)) {
        snprintf(canon, sizeof canon, "decoder.final_layernorm.%s", name + 17);
        return coord(find_param(ps, np, canon), i);
    }
    CHECK(sscanf(name, "transformer.h.%d.%95s", &layer, rest) == 2);
    const struct {
        const char *hf, *gpt3d;
    } SAME[] = {{"ln_1.weight", "input_layernorm.weight"}, {"ln_1.bias", "input_layernorm.bias"},
                {"ln_2.weight", "pre_mlp_layernorm.weight"}, {"ln_2.bias", "pre_mlp_layernorm.bias"},
                {"attn.c_proj.weight", "self_attention.linear_proj.weight"},
                {"attn.c_proj.bias", "self_attention.linear_proj.bias"},
                {"mlp.c_fc.bias", "mlp.linear_fc1.bias"}, {"mlp.c_proj.weight", "mlp.linear_fc2.weight"},
                {"mlp.c_proj.bias", "mlp.linear_fc2.bias"}};
    for (size_t k = 0; k < sizeof SAME / sizeof SAME[0]; k++)
        if (!strcmp(rest, SAME[k].hf)) {
            snprintf(canon, sizeof canon, "decoder.layers.%d.%s", layer, SAME[k].gpt3d);
            return coord(find_param(ps, np, canon), i);
        }
    if (!strcmp(rest, "mlp.c_fc.weight")) { /* [C, F] = fc1 [F, C] transposed */
        snprintf(canon, sizeof canon, "decoder.layers.%d.mlp.linear_fc1.weight", layer);
        const int64_t c = i / F, f = i % F;
        return coord(find_param(ps, np, canon), f * C + c);
    }
    /* c_attn: output feature j = part*C + head*HS + d */
    const bool weight = !strcmp(rest, "attn.c_attn.weight");
    CHECK(weight || !strcmp(rest, "attn.c_attn.bias"));
    snprintf(canon, sizeof canon, "decoder.layers.%d.self_attention.linear_qkv.%s", layer,
             weight ? "weight" : "bias");
    const int64_t j = weight ? i % (3 * C) : i, c = weight ? i / (3 * C) : 0;
    const int64_t part = j / C, head = j % C / HS, d = j % HS;
    const int64_t row = (head * 3 + part) * HS + d;
    return coord(find_param(ps, np, canon), weight ? row * C + c : row);
}

/* GPT-2's tensor list for this shape, written from the HF model's
 * named_parameters(). */
static int hf_names(const Shape *s, char names[][96], int64_t shapes[][2], int *ndims) {
    int n = 0;
#define NAME(nd, d0, d1, ...)                                                                      \
    do {                                                                                           \
        snprintf(names[n], 96, __VA_ARGS__);                                                       \
        ndims[n] = nd, shapes[n][0] = d0, shapes[n][1] = d1;                                       \
        n++;                                                                                       \
    } while (0)
    NAME(2, s->V, s->C, "transformer.wte.weight");
    NAME(2, s->P, s->C, "transformer.wpe.weight");
    for (int l = 0; l < s->L; l++) {
        NAME(1, s->C, 0, "transformer.h.%d.ln_1.weight", l);
        NAME(1, s->C, 0, "transformer.h.%d.ln_1.bias", l);
        NAME(2, s->C, 3 * s->C, "transformer.h.%d.attn.c_attn.weight", l);
        NAME(1, 3 * s->C, 0, "transformer.h.%d.attn.c_attn.bias", l);
        NAME(2, s->C, s->C, "transformer.h.%d.attn.c_proj.weight", l);
        NAME(1, s->C, 0, "transformer.h.%d.attn.c_proj.bias", l);
        NAME(1, s->C, 0, "transformer.h.%d.ln_2.weight", l);
        NAME(1, s->C, 0, "transformer.h.%d.ln_2.bias", l);
        NAME(2, s->C, s->F, "transformer.h.%d.mlp.c_fc.weight", l);
        NAME(1, s->F, 0, "transformer.h.%d.mlp.c_fc.bias", l);
        NAME(2, s->F, s->C, "transformer.h.%d.mlp.c_proj.weight", l);
        NAME(1, s->C, 0, "transformer.h.%d.mlp.c_proj.bias", l);
    }
    NAME(1, s->C, 0, "transformer.ln_f.weight");
    NAME(1, s->C, 0, "transformer.ln_f.bias");
#undef NAME
    return n;
}

/* The header lists exactly GPT-2's names and shapes, F32, the data section
 * covered once without gaps. */
static void check_hf_header(TfFile *f, const Shape *s) {
    char(*names)[96] = calloc(1024, sizeof *names);
    int64_t(*shapes)[2] = calloc(1024, sizeof *shapes);
    int *ndims = calloc(1024, sizeof *ndims);
    const int n = hf_names(s, names, shapes, ndims);
    CHECK_MSG(f->count == n, "header lists %d tensors, GPT-2 has %d", f->count, n);
    CHECK(!strcmp(f->metadata_format, "pt"));
    uint64_t covered = 0;
    for (int i = 0; i < n; i++) {
        const TfTensor *t = tf_find(f, names[i]);
        CHECK_MSG(t != NULL, "header lacks %s", names[i]);
        CHECK_MSG(!strcmp(t->dtype, "F32"), "%s has dtype %s", names[i], t->dtype);
        CHECK_MSG(t->ndim == ndims[i] && t->shape[0] == shapes[i][0] &&
                      (ndims[i] < 2 || t->shape[1] == shapes[i][1]),
                  "%s has the wrong shape", names[i]);
        covered += t->end - t->begin;
        for (int j = 0; j < f->count; j++) { /* no two tensors share bytes */
            const TfTensor *o = &f->tensors[j];
            CHECK(o == t || o->end <= t->begin || t->end <= o->begin);
        }
    }
    CHECK_MSG(covered == f->size - 8 - f->header_len, "data section has gaps or extra bytes");
    free(names);
    free(shapes);
    free(ndims);
}

static void check_hf_config(const char *dir, const Shape *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t size;
    unsigned char *text = tf_slurp(path, &size);
    char expect[512];
    const struct {
        const char *key;
        int value;
    } ints[] = {{"n_layer", s->L}, {"n_head", s->H}, {"n_embd", s->C},
                {"n_positions", s->P}, {"vocab_size", s->V}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(expect, sizeof expect, "\"%s\":\t%d", ints[i].key, ints[i].value);
        CHECK_MSG(strstr((char *)text, expect), "config.json lacks %s", expect);
    }
    if (s->F == 4 * s->C) snprintf(expect, sizeof expect, "\"n_inner\":\tnull");
    else snprintf(expect, sizeof expect, "\"n_inner\":\t%d", s->F);
    CHECK_MSG(strstr((char *)text, expect), "config.json lacks %s", expect);
    CHECK(strstr((char *)text, "\"model_type\":\t\"gpt2\""));
    CHECK(strstr((char *)text, "\"activation_function\":\t\"gelu_new\""));
    CHECK(strstr((char *)text, "\"GPT2LMHeadModel\""));
    CHECK(strstr((char *)text, "\"layer_norm_epsilon\":\t1e-05"));
    free(text);
}

static void check_hf_coords(const char *dir, const Shape *s) {
    Param ps[1024];
    const int np = canonical_params(s, ps);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    TfFile f;
    tf_read(&f, path);
    check_hf_header(&f, s);
    check_hf_config(dir, s);
    int64_t checked = 0;
    for (int i = 0; i < f.count; i++) {
        const TfTensor *t = &f.tensors[i];
        for (int64_t k = 0; k < tf_numel(t); k++)
            expect_value(t->name, k, tf_f32(t, k), hf_expected(s, ps, np, t->name, k));
        checked += tf_numel(t);
    }
    const int count = f.count;
    tf_free(&f);
    CHECK_MSG(g_failures == 0, "%d elements in the wrong place", g_failures);
    printf("HF export: %d tensors with GPT-2's names and shapes; %lld elements where the "
           "layouts put them\n",
           count, (long long)checked);
}

/* ----------------------------------------- coordinate checks: llm.c */

#define LLMC_HEADER_BYTES 1024

static void check_llmc_header(const int32_t *h, const Shape *s, int lvp, int version) {
    const int32_t want[8] = {20240326, version, s->P, s->V, s->L, s->H, s->C, lvp};
    for (int i = 0; i < 8; i++) CHECK_MSG(h[i] == want[i], "header[%d] = %d, want %d", i, h[i], want[i]);
    for (int i = 8; i < 256; i++) CHECK_MSG(h[i] == 0, "header[%d] = %d, want 0", i, h[i]);
}

/* Expected value at (layer, kind, flat index) from llm.c's definitions:
 * nn.Linear weights [out, in], qkv features [q | k | v]. */
static float llmc_expected(const Shape *s, const Param *ps, int np, const char *kind, int layer,
                           int64_t i) {
    const int64_t C = s->C, HS = s->C / s->H;
    char canon[128];
    static const struct {
        const char *kind, *gpt3d;
    } SAME[] = {{"ln1w", "input_layernorm.weight"}, {"ln1b", "input_layernorm.bias"},
                {"attprojb", "self_attention.linear_proj.bias"}, {"ln2w", "pre_mlp_layernorm.weight"},
                {"ln2b", "pre_mlp_layernorm.bias"}, {"fcw", "mlp.linear_fc1.weight"},
                {"fcb", "mlp.linear_fc1.bias"}, {"fcprojb", "mlp.linear_fc2.bias"}};
    for (size_t k = 0; k < sizeof SAME / sizeof SAME[0]; k++)
        if (!strcmp(kind, SAME[k].kind)) {
            snprintf(canon, sizeof canon, "decoder.layers.%d.%s", layer, SAME[k].gpt3d);
            return coord(find_param(ps, np, canon), i);
        }
    if (!strcmp(kind, "attprojw") || !strcmp(kind, "fcprojw")) { /* [C_out, IN]; gpt3d [IN, C] */
        const int64_t in = !strcmp(kind, "attprojw") ? C : s->F;
        snprintf(canon, sizeof canon, "decoder.layers.%d.%s", layer,
                 !strcmp(kind, "attprojw") ? "self_attention.linear_proj.weight" : "mlp.linear_fc2.weight");
        const int64_t out = i / in, j = i % in;
        return coord(find_param(ps, np, canon), j * C + out);
    }
    const bool weight = !strcmp(kind, "qkvw");
    CHECK(weight || !strcmp(kind, "qkvb"));
    snprintf(canon, sizeof canon, "decoder.layers.%d.self_attention.linear_qkv.%s", layer,
             weight ? "weight" : "bias");
    const int64_t j = weight ? i / C : i, c = weight ? i % C : 0;
    const int64_t row = (j % C / HS * 3 + j / C) * HS + j % HS;
    return coord(find_param(ps, np, canon), weight ? row * C + c : row);
}

static void check_llmc_coords(const char *path, const Shape *s, int lvp) {
    Param ps[1024];
    const int np = canonical_params(s, ps);
    size_t size;
    unsigned char *image = tf_slurp(path, &size);
    check_llmc_header((const int32_t *)image, s, lvp, 3);
    const float *v = (const float *)(image + LLMC_HEADER_BYTES);
    const int64_t C = s->C, F = s->F;
    CHECK_MSG(F == 4 * C, "llm.c models have F = 4C");
    const int wte = find_param(ps, np, "embedding.word_embeddings.weight");
    for (int64_t i = 0; i < lvp * C; i++)
        expect_value("wte", i, *v++, i / C < s->VP ? coord(wte, i) : 0.0f);
    const int wpe = find_param(ps, np, "embedding.position_embeddings.weight");
    for (int64_t i = 0; i < s->P * C; i++) expect_value("wpe", i, *v++, coord(wpe, i));
    static const char *const KINDS[12] = {"ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
                                          "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb"};
    const int64_t sizes[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
    for (int k = 0; k < 12; k++)
        for (int l = 0; l < s->L; l++)
            for (int64_t i = 0; i < sizes[k]; i++)
                expect_value(KINDS[k], i, *v++, llmc_expected(s, ps, np, KINDS[k], l, i));
    const int lnfw = find_param(ps, np, "decoder.final_layernorm.weight");
    const int lnfb = find_param(ps, np, "decoder.final_layernorm.bias");
    for (int64_t i = 0; i < C; i++) expect_value("lnfw", i, *v++, coord(lnfw, i));
    for (int64_t i = 0; i < C; i++) expect_value("lnfb", i, *v++, coord(lnfb, i));
    CHECK_MSG((const unsigned char *)v == image + size, "file has %lld bytes after the parameters",
              (long long)(image + size - (const unsigned char *)v));
    free(image);
    CHECK_MSG(g_failures == 0, "%d elements in the wrong place", g_failures);
    printf("llm.c export: header and %lld elements where llm.c's layout puts them\n",
           (long long)((size - LLMC_HEADER_BYTES) / 4));
}

/* ------------------------------------------------- llm.c files */

static int64_t llmc_numel(const int32_t *h) {
    const int64_t maxT = h[2], L = h[4], C = h[6], Vp = h[7];
    return Vp * C + maxT * C + L * (C * 2 + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C +
                                    4 * C + 4 * C * C + C) + 2 * C;
}

static void make_llmc(const char *path, char **argv) {
    /* argv: L C H V LVP P VERSION SEED */
    int32_t h[256] = {20240326, atoi(argv[6]), atoi(argv[5]), atoi(argv[3]), atoi(argv[0]),
                      atoi(argv[2]), atoi(argv[1]), atoi(argv[4])};
    const bool bf16 = h[1] == 5;
    const int64_t n = llmc_numel(h);
    const size_t bytes = LLMC_HEADER_BYTES + (size_t)n * (bf16 ? 2 : 4);
    unsigned char *image = calloc(1, bytes);
    memcpy(image, h, sizeof h);
    uint64_t state = (uint64_t)atoll(argv[7]) * 0x9E3779B97F4A7C15ull + 7;
    /* The first values are exact bf16 ties, so bf16 export must round them to even. */
    const float ties[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -(1.0f + 0x1p-8f), 0x1.018p+3f};
    for (int64_t i = 0; i < n; i++) {
        const float v = i < 4 ? ties[i] : (float)(0.3 * rng_normal(&state));
        if (bf16) {
            const uint16_t b = tf_f32_to_bf16_truncate(v);
            memcpy(image + LLMC_HEADER_BYTES + 2 * i, &b, 2);
        } else {
            memcpy(image + LLMC_HEADER_BYTES + 4 * i, &v, 4);
        }
    }
    tf_spit(path, image, bytes);
    free(image);
}

/* The f32 file holds exactly the bf16 file's values, widened. */
static void check_llmc_widened(const char *bf16_path, const char *f32_path) {
    size_t nb, nf;
    unsigned char *b = tf_slurp(bf16_path, &nb), *f = tf_slurp(f32_path, &nf);
    int32_t hb[256], hf[256];
    memcpy(hb, b, sizeof hb);
    memcpy(hf, f, sizeof hf);
    CHECK(hb[1] == 5 && hf[1] == 3);
    hb[1] = 3;
    CHECK(!memcmp(hb, hf, sizeof hb));
    const int64_t n = llmc_numel(hb);
    CHECK(nb == LLMC_HEADER_BYTES + (size_t)n * 2 && nf == LLMC_HEADER_BYTES + (size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        uint16_t x;
        float y;
        memcpy(&x, b + LLMC_HEADER_BYTES + 2 * i, 2);
        memcpy(&y, f + LLMC_HEADER_BYTES + 4 * i, 4);
        const float w = tf_bf16_to_f32(x);
        CHECK_MSG(!memcmp(&w, &y, 4), "element %lld: %.9g vs %.9g", (long long)i, w, y);
    }
    printf("llm.c bf16 -> fp32: %lld elements widened exactly\n", (long long)n);
    free(b);
    free(f);
}

/* The nearer of the two bf16 values around v (ties: even mantissa), by
 * comparing distances in double rather than by bit arithmetic. */
static uint16_t nearest_bf16(float v) {
    const uint16_t low = tf_f32_to_bf16_truncate(v);
    const uint16_t high = (uint16_t)(low + 1);
    const double dl = fabs((double)tf_bf16_to_f32(low) - v), dh = fabs((double)tf_bf16_to_f32(high) - v);
    if (dl != dh) return dl < dh ? low : high;
    return (low & 1) ? high : low;
}

/* The bf16 file holds the f32 file's values rounded to nearest even. */
static void check_llmc_rounded(const char *f32_path, const char *bf16_path) {
    size_t nf, nb;
    unsigned char *f = tf_slurp(f32_path, &nf), *b = tf_slurp(bf16_path, &nb);
    int32_t hf[256], hb[256];
    memcpy(hf, f, sizeof hf);
    memcpy(hb, b, sizeof hb);
    CHECK(hf[1] == 3 && hb[1] == 5);
    hb[1] = 3;
    CHECK(!memcmp(hb, hf, sizeof hb));
    const int64_t n = llmc_numel(hf);
    CHECK(nb == LLMC_HEADER_BYTES + (size_t)n * 2 && nf == LLMC_HEADER_BYTES + (size_t)n * 4);
    int64_t ties = 0, exact = 0;
    for (int64_t i = 0; i < n; i++) {
        float v;
        uint16_t got;
        memcpy(&v, f + LLMC_HEADER_BYTES + 4 * i, 4);
        memcpy(&got, b + LLMC_HEADER_BYTES + 2 * i, 2);
        CHECK_MSG(got == nearest_bf16(v), "element %lld: %.9g -> 0x%04x, want 0x%04x",
                  (long long)i, v, got, nearest_bf16(v));
        exact += tf_bf16_to_f32(got) == v;
        ties += fabs((double)tf_bf16_to_f32(tf_f32_to_bf16_truncate(v)) - v) ==
                fabs((double)tf_bf16_to_f32((uint16_t)(tf_f32_to_bf16_truncate(v) + 1)) - v);
    }
    CHECK_MSG(ties > 0, "no ties: the round-to-even case went untested");
    printf("llm.c fp32 -> bf16: %lld elements rounded to nearest (%lld ties to even, %lld exact)\n",
           (long long)n, (long long)ties, (long long)exact);
    free(f);
    free(b);
}

static void bad_llmc(const char *src, const char *dst, const char *kind) {
    size_t size;
    unsigned char *image = tf_slurp(src, &size);
    int32_t *h = (int32_t *)image;
    if (!strcmp(kind, "version2")) h[1] = 2;
    else if (!strcmp(kind, "version4")) h[1] = 4;
    else if (!strcmp(kind, "magic")) h[0] = 12345;
    else if (!strcmp(kind, "tokens")) h[0] = 20240520;
    else if (!strcmp(kind, "layers")) h[4] += 1;
    else if (!strcmp(kind, "heads")) h[5] = h[6] - 1;
    else if (!strcmp(kind, "padded-small")) h[7] = h[3] - 1;
    else if (!strcmp(kind, "truncated")) size -= 100;
    else if (!strcmp(kind, "short")) size = 100;
    else CHECK_MSG(false, "unknown kind %s", kind);
    tf_spit(dst, image, size);
    free(image);
}

/* ------------------------------------------------- checkpoint compare */

/* Same parameters, same shapes, bitwise the same weights; with
 * padded_zero, B's padded vocabulary rows are zero instead of A's. */
static void compare_checkpoints(const char *a_dir, const char *b_dir, bool padded_zero) {
    char err[2048];
    int64_t ia = 0, ib = 0;
    CHECK_MSG(checkpoint_find_latest(a_dir, &ia, err, sizeof err), "%s: %s", a_dir, err);
    CHECK_MSG(checkpoint_find_latest(b_dir, &ib, err, sizeof err), "%s: %s", b_dir, err);
    CheckpointReader *a = checkpoint_open(a_dir, ia, err, sizeof err);
    CHECK_MSG(a != NULL, "%s", err);
    CheckpointReader *b = checkpoint_open(b_dir, ib, err, sizeof err);
    CHECK_MSG(b != NULL, "%s", err);
    CHECK_MSG(checkpoint_verify_coverage(b, err, sizeof err), "%s", err);
    CHECK(checkpoint_num_params(a) == checkpoint_num_params(b));
    const int64_t V = checkpoint_meta(a)->model.vocab_size;
    CHECK(checkpoint_meta(b)->model.vocab_size == V &&
          checkpoint_meta(b)->model.padded_vocab_size == checkpoint_meta(a)->model.padded_vocab_size);
    int64_t total = 0, padded = 0;
    for (int i = 0; i < checkpoint_num_params(a); i++) {
        const char *name = checkpoint_param_name(a, i);
        int na, nb;
        int64_t sa[CHECKPOINT_MAX_DIMS], sb[CHECKPOINT_MAX_DIMS];
        CHECK(checkpoint_param_shape(a, name, &na, sa));
        CHECK_MSG(checkpoint_param_shape(b, name, &nb, sb), "%s lacks %s", b_dir, name);
        CHECK_MSG(na == nb && !memcmp(sa, sb, (size_t)na * sizeof *sa), "%s: shapes differ", name);
        int64_t n = 1;
        for (int d = 0; d < na; d++) n *= sa[d];
        float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
        CHECK_MSG(checkpoint_read(a, name, CKPT_WEIGHT, 0, n, x, err, sizeof err), "%s", err);
        CHECK_MSG(checkpoint_read(b, name, CKPT_WEIGHT, 0, n, y, err, sizeof err), "%s", err);
        const bool vocab = !strcmp(name, "embedding.word_embeddings.weight") ||
                           !strcmp(name, "output_layer.weight"); /* rows past V are padding */
        const int64_t shared = vocab && padded_zero ? V * sa[1] : n;
        CHECK_MSG(!memcmp(x, y, (size_t)shared * 4), "%s differs", name);
        for (int64_t k = shared; k < n; k++) CHECK_MSG(y[k] == 0.0f, "%s: padded row not zero", name);
        total += shared;
        padded += n - shared;
        free(x);
        free(y);
    }
    printf("%d parameters, %lld elements bitwise equal%s\n", checkpoint_num_params(a),
           (long long)total, padded ? " (padded vocabulary rows zero)" : "");
    checkpoint_close(a);
    checkpoint_close(b);
}

/* ------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: test_interop_helper COMMAND ARGS\n"
            "  coord-ckpt DIR L C H F V VP P | random-ckpt DIR L C H F V VP P SEED\n"
            "  check-hf-coords HFDIR L C H F V VP P | check-hf-header HFDIR L C H F V VP P\n"
            "  check-llmc-coords FILE L C H F V VP P LVP\n"
            "  compare-ckpt A B [padded-zero]\n"
            "  make-llmc FILE L C H V LVP P VERSION SEED | bad-llmc SRC DST KIND\n"
            "  check-llmc-widened BF16FILE F32FILE | check-llmc-rounded F32FILE BF16FILE\n"
            "  variant SRC_HFDIR DST_HFDIR KIND | check-widened LOWDIR F32DIR\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "coord-ckpt") && argc == 10) {
        const Shape s = parse_shape(argv + 3);
        write_checkpoint(argv[2], &s, 2, false, 0);
    } else if (!strcmp(cmd, "random-ckpt") && argc == 11) {
        const Shape s = parse_shape(argv + 3);
        write_checkpoint(argv[2], &s, 3, true, (uint64_t)atoll(argv[10]));
    } else if (!strcmp(cmd, "check-hf-coords") && argc == 10) {
        const Shape s = parse_shape(argv + 3);
        check_hf_coords(argv[2], &s);
    } else if (!strcmp(cmd, "check-hf-header") && argc == 10) {
        const Shape s = parse_shape(argv + 3);
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors", argv[2]);
        TfFile f;
        tf_read(&f, path);
        check_hf_header(&f, &s);
        check_hf_config(argv[2], &s);
        printf("HF export: %d tensors with GPT-2's names and shapes, config.json matches\n", f.count);
        tf_free(&f);
    } else if (!strcmp(cmd, "check-llmc-coords") && argc == 11) {
        const Shape s = parse_shape(argv + 3);
        check_llmc_coords(argv[2], &s, atoi(argv[10]));
    } else if (!strcmp(cmd, "compare-ckpt") && (argc == 4 || argc == 5)) {
        compare_checkpoints(argv[2], argv[3], argc == 5 && !strcmp(argv[4], "padded-zero"));
    } else if (!strcmp(cmd, "make-llmc") && argc == 11) {
        make_llmc(argv[2], argv + 3);
    } else if (!strcmp(cmd, "bad-llmc") && argc == 5) {
        bad_llmc(argv[2], argv[3], argv[4]);
    } else if (!strcmp(cmd, "check-llmc-rounded") && argc == 4) {
        check_llmc_rounded(argv[2], argv[3]);
    } else if (!strcmp(cmd, "check-llmc-widened") && argc == 4) {
        check_llmc_widened(argv[2], argv[3]);
    } else if (!strcmp(cmd, "variant") && argc == 5) {
        tf_make_variant(argv[2], argv[3], argv[4]);
    } else if (!strcmp(cmd, "check-widened") && argc == 4) {
        tf_check_widened(argv[2], argv[3]);
    } else {
        usage();
    }
    return 0;
}
