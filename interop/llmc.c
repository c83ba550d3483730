/* llm.c's GPT-2 model file (train_gpt2.c: gpt2_build_from_checkpoint):
 * 256 int32 header, then every parameter in llm.c's order and layouts. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

#define LLMC_HEADER_BYTES (LLMC_HEADER_INTS * 4)
#define LLMC_TOKENS_MAGIC 20240520 /* llm.c's token (data) files */

enum {
    H_MAGIC = 0,
    H_VERSION = 1,
    H_MAX_SEQ_LEN = 2,
    H_VOCAB = 3,
    H_LAYERS = 4,
    H_HEADS = 5,
    H_CHANNELS = 6,
    H_PADDED_VOCAB = 7,
};

/* --------------------------------------------------------------- export */

/* Round to nearest even, as torch's .to(torch.bfloat16) that llm.c's
 * exporter uses; NaN stays NaN. */
static uint16_t float_to_bf16(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(bits >> 16 | 0x40u);
    return (uint16_t)((bits + 0x7fffu + (bits >> 16 & 1u)) >> 16);
}

static bool write_values(FILE *f, const float *values, int64_t n, bool bf16) {
    if (!bf16) return fwrite(values, sizeof(float), (size_t)n, f) == (size_t)n;
    uint16_t *half = xmalloc((size_t)n * sizeof *half + 1);
    for (int64_t i = 0; i < n; i++) half[i] = float_to_bf16(values[i]);
    const bool ok = fwrite(half, sizeof *half, (size_t)n, f) == (size_t)n;
    free(half);
    return ok;
}

static bool write_tensors(ExportSource *src, FILE *f, const char *path, int64_t padded_vocab,
                          bool bf16, char *err, size_t err_size) {
    int count = 0;
    TensorMapping *maps = llmc_mappings(&src->shape, padded_vocab, &count);
    bool ok = true;
    for (int i = 0; ok && i < count; i++) {
        int64_t numel = 0;
        float *canonical = export_source_read(src, maps[i].canonical_name, &numel, err, err_size);
        if (!canonical) {
            ok = false;
            break;
        }
        const int64_t n = tensor_mapping_numel(&maps[i]);
        float *external = xmalloc((size_t)n * sizeof *external + 1);
        tensor_to_external(&maps[i], &src->shape, canonical, external);
        if (!write_values(f, external, n, bf16))
            ok = interop_fail(err, err_size, "cannot write '%s': %s", path, strerror(errno));
        free(external);
        free(canonical);
    }
    free(maps);
    return ok;
}

bool llmc_export(ExportSource *src, const char *path, int divisible_by, bool bf16, char *err,
                 size_t err_size) {
    GPT3D_CHECK(interop_host_is_little_endian(), "llm.c files need a little-endian host");
    GPT3D_CHECK(divisible_by >= 1, "divisible_by %d", divisible_by);
    const TransformerConfig *s = &src->shape;
    char why[512];
    if (!interop_is_gpt2_block(s, why, sizeof why))
        return interop_fail(err, err_size,
                            "checkpoint '%s' is not the GPT-2 block llm.c holds: %s; export it "
                            "with tools/export_hf instead",
                            src->dir, why);
    if (s->ffn_hidden_size != 4 * s->hidden_size)
        return interop_fail(err, err_size,
                            "checkpoint '%s' has ffn_hidden_size %d, but llm.c's GPT-2 always has "
                            "4 x hidden_size = %d: llm.c cannot hold this model",
                            src->dir, s->ffn_hidden_size, 4 * s->hidden_size);
    const int64_t padded_vocab = gpt_padded_vocab_size(s->vocab_size, divisible_by);
    if (padded_vocab > INT32_MAX)
        return interop_fail(err, err_size, "checkpoint '%s': padded vocabulary %" PRId64
                            " does not fit llm.c's int32 header", src->dir, padded_vocab);
    int32_t header[LLMC_HEADER_INTS] = {0};
    header[H_MAGIC] = LLMC_MAGIC;
    header[H_VERSION] = bf16 ? LLMC_VERSION_BF16 : LLMC_VERSION_FP32;
    header[H_MAX_SEQ_LEN] = s->max_position_embeddings;
    header[H_VOCAB] = (int32_t)s->vocab_size;
    header[H_LAYERS] = s->num_layers;
    header[H_HEADS] = s->num_attention_heads;
    header[H_CHANNELS] = s->hidden_size;
    header[H_PADDED_VOCAB] = (int32_t)padded_vocab;

    const size_t n = strlen(path) + 8;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    bool ok = f != NULL;
    if (!ok) interop_fail(err, err_size, "cannot create '%s': %s", tmp, strerror(errno));
    if (ok && fwrite(header, sizeof header, 1, f) != 1)
        ok = interop_fail(err, err_size, "cannot write '%s': %s", tmp, strerror(errno));
    if (ok) ok = write_tensors(src, f, tmp, padded_vocab, bf16, err, err_size);
    if (f) {
        if (ok) ok = interop_close_synced(f, tmp, err, err_size);
        else fclose(f);
    }
    if (ok && rename(tmp, path) != 0)
        ok = interop_fail(err, err_size, "cannot rename '%s' to '%s': %s", tmp, path,
                          strerror(errno));
    if (!ok) remove(tmp);
    free(tmp);
    return ok;
}

/* --------------------------------------------------------------- import */

static bool check_header(const char *path, const int32_t *h, char *err, size_t err_size) {
    if (h[H_MAGIC] == LLMC_TOKENS_MAGIC)
        return interop_fail(err, err_size,
                            "'%s' is an llm.c token file (magic %d), not a model file; "
                            "tools/convert_llmc_tokens turns it into a gpt3d shard",
                            path, LLMC_TOKENS_MAGIC);
    if (h[H_MAGIC] != LLMC_MAGIC)
        return interop_fail(err, err_size,
                            "'%s' is not an llm.c model file: magic %d, want %d", path,
                            h[H_MAGIC], LLMC_MAGIC);
    if (h[H_VERSION] != LLMC_VERSION_FP32 && h[H_VERSION] != LLMC_VERSION_BF16)
        return interop_fail(err, err_size,
                            "'%s' is an llm.c model file of version %d; gpt3d reads version %d "
                            "(fp32) and %d (bf16)",
                            path, h[H_VERSION], LLMC_VERSION_FP32, LLMC_VERSION_BF16);
    static const struct {
        int index;
        const char *name;
    } FIELDS[] = {{H_MAX_SEQ_LEN, "max_seq_len"}, {H_VOCAB, "vocab_size"},
                  {H_LAYERS, "num_layers"},       {H_HEADS, "num_heads"},
                  {H_CHANNELS, "channels"},       {H_PADDED_VOCAB, "padded_vocab_size"}};
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        if (h[FIELDS[i].index] < 1)
            return interop_fail(err, err_size, "'%s': header field %s = %d must be positive",
                                path, FIELDS[i].name, h[FIELDS[i].index]);
    if (h[H_PADDED_VOCAB] < h[H_VOCAB])
        return interop_fail(err, err_size,
                            "'%s': header padded_vocab_size %d is smaller than vocab_size %d",
                            path, h[H_PADDED_VOCAB], h[H_VOCAB]);
    return true;
}

static int64_t total_numel(const TensorMapping *maps, int count) {
    int64_t total = 0;
    for (int i = 0; i < count; i++) total += tensor_mapping_numel(&maps[i]);
    return total;
}

static bool read_values(FILE *f, float *out, int64_t n, bool bf16) {
    if (!bf16) return fread(out, sizeof(float), (size_t)n, f) == (size_t)n;
    uint16_t *half = xmalloc((size_t)n * sizeof *half + 1);
    const bool ok = fread(half, sizeof *half, (size_t)n, f) == (size_t)n;
    for (int64_t i = 0; ok && i < n; i++) out[i] = interop_bf16_to_float(half[i]);
    free(half);
    return ok;
}

static bool read_tensors(FILE *f, const char *path, const TensorMapping *maps, int count,
                         bool bf16, ModelWeights *w, char *err, size_t err_size) {
    const TransformerConfig *s = model_weights_shape(w);
    for (int i = 0; i < count; i++) {
        const int64_t n = tensor_mapping_numel(&maps[i]);
        float *external = xmalloc((size_t)n * sizeof *external + 1);
        const bool ok = read_values(f, external, n, bf16);
        if (ok) {
            float *canonical = model_weights_param(w, maps[i].canonical_name, NULL);
            GPT3D_CHECK(canonical != NULL, "no canonical parameter %s", maps[i].canonical_name);
            tensor_from_external(&maps[i], s, external, canonical);
        }
        free(external);
        if (!ok)
            return interop_fail(err, err_size, "cannot read %s from '%s': %s",
                                maps[i].external_name, path,
                                ferror(f) ? strerror(errno) : "unexpected end of file");
    }
    return true;
}

static ModelWeights *read_model(FILE *f, const char *path, uint64_t file_size, const int32_t *h,
                               int divisible_by, char *err, size_t err_size) {
    TransformerConfig s = {
        .num_layers = h[H_LAYERS],
        .hidden_size = h[H_CHANNELS],
        .num_attention_heads = h[H_HEADS],
        /* llm.c's MLP is 4C; an absurd C fails the shape check below first */
        .ffn_hidden_size = h[H_CHANNELS] <= (1 << 20) ? 4 * h[H_CHANNELS] : 0,
        .vocab_size = h[H_VOCAB],
        .padded_vocab_size = gpt_padded_vocab_size(h[H_VOCAB], divisible_by),
        .max_position_embeddings = h[H_MAX_SEQ_LEN],
    };
    transformer_config_set_gpt2_variant(&s);
    char where[4200];
    snprintf(where, sizeof where, "'%s'", path);
    if (!transformer_config_check(&s, where, err, err_size)) return NULL;
    int count = 0;
    TensorMapping *maps = llmc_mappings(&s, h[H_PADDED_VOCAB], &count);
    const bool bf16 = h[H_VERSION] == LLMC_VERSION_BF16;
    const uint64_t want =
        LLMC_HEADER_BYTES + (uint64_t)total_numel(maps, count) * (bf16 ? 2u : 4u);
    ModelWeights *w = NULL;
    if (want != file_size) {
        interop_fail(err, err_size,
                     "'%s' is %" PRIu64 " bytes, but its header (%d layers, %d heads, %d "
                     "channels, vocabulary %d padded to %d, %d positions, version %d) implies %"
                     PRIu64 ": the file is truncated or its header is wrong",
                     path, file_size, h[H_LAYERS], h[H_HEADS], h[H_CHANNELS], h[H_VOCAB],
                     h[H_PADDED_VOCAB], h[H_MAX_SEQ_LEN], h[H_VERSION], want);
    } else {
        w = model_weights_create(&s);
        if (!read_tensors(f, path, maps, count, bf16, w, err, err_size)) {
            model_weights_free(w);
            w = NULL;
        }
    }
    free(maps);
    return w;
}

ModelWeights *llmc_import(const char *path, int divisible_by, char *err, size_t err_size) {
    GPT3D_CHECK(interop_host_is_little_endian(), "llm.c files need a little-endian host");
    GPT3D_CHECK(divisible_by >= 1, "divisible_by %d", divisible_by);
    FILE *f = fopen(path, "rb");
    if (!f) {
        interop_fail(err, err_size, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    int32_t header[LLMC_HEADER_INTS];
    ModelWeights *w = NULL;
    if (fstat(fileno(f), &st) != 0) {
        interop_fail(err, err_size, "cannot stat '%s': %s", path, strerror(errno));
    } else if ((uint64_t)st.st_size < LLMC_HEADER_BYTES ||
               fread(header, sizeof header, 1, f) != 1) {
        interop_fail(err, err_size,
                     "'%s' is %lld bytes, shorter than llm.c's %d-byte model header", path,
                     (long long)st.st_size, LLMC_HEADER_BYTES);
    } else if (check_header(path, header, err, err_size)) {
        w = read_model(f, path, (uint64_t)st.st_size, header, divisible_by, err, err_size);
    }
    fclose(f);
    return w;
}
