/* GPT-2 tensor names and layouts of Hugging Face and llm.c, and the
 * permutations between them and gpt3d's canonical tensors. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"

int64_t tensor_mapping_numel(const TensorMapping *m) {
    int64_t n = 1;
    for (int d = 0; d < m->ndim; d++) n *= m->shape[d];
    return n;
}

/* ------------------------------------------------------------ conversions */

/* External index of canonical flat index k of a QKV tensor: canonical
 * [heads, 3, head_dim(, C)], external columns or rows [q | k | v] with head h
 * at h * head_dim inside each. */
static int64_t qkv_external_index(ExternalLayout layout, const TransformerConfig *s, int64_t k) {
    const int64_t C = s->hidden_size, HS = C / s->num_attention_heads;
    const int64_t c = layout == LAYOUT_QKV_BIAS ? 0 : k % C;
    const int64_t row = layout == LAYOUT_QKV_BIAS ? k : k / C; /* (h*3 + part)*HS + d */
    const int64_t d = row % HS, part = row / HS % 3, h = row / HS / 3;
    const int64_t feature = part * C + h * HS + d;
    switch (layout) {
    case LAYOUT_QKV_IN_MAJOR: return c * 3 * C + feature;
    case LAYOUT_QKV_OUT_MAJOR: return feature * C + c;
    default: return feature;
    }
}

/* Moves the canonical tensor to or from its external layout, element by
 * element: a permutation for every layout but the vocabulary rows. */
static void permute(const TensorMapping *m, const TransformerConfig *s, float *canonical, float *external,
                    bool to_external) {
    const int64_t n = tensor_mapping_numel(m);
    switch (m->layout) {
    case LAYOUT_SAME:
        if (to_external) memcpy(external, canonical, (size_t)n * sizeof(float));
        else memcpy(canonical, external, (size_t)n * sizeof(float));
        return;
    case LAYOUT_TRANSPOSE: {
        const int64_t rows = m->shape[0], cols = m->shape[1]; /* external [rows, cols] */
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                float *e = &external[i * cols + j], *c = &canonical[j * rows + i];
                if (to_external) *e = *c;
                else *c = *e;
            }
        return;
    }
    case LAYOUT_QKV_IN_MAJOR:
    case LAYOUT_QKV_OUT_MAJOR:
    case LAYOUT_QKV_BIAS:
        for (int64_t k = 0; k < n; k++) {
            float *e = &external[qkv_external_index(m->layout, s, k)];
            if (to_external) *e = canonical[k];
            else canonical[k] = *e;
        }
        return;
    case LAYOUT_VOCAB_ROWS: {
        const int64_t C = s->hidden_size, rows = m->shape[0];
        const int64_t shared = rows < s->padded_vocab_size ? rows : s->padded_vocab_size;
        if (to_external) {
            memcpy(external, canonical, (size_t)(shared * C) * sizeof(float));
            memset(external + shared * C, 0, (size_t)((rows - shared) * C) * sizeof(float));
        } else {
            memcpy(canonical, external, (size_t)(shared * C) * sizeof(float));
            memset(canonical + shared * C, 0,
                   (size_t)((s->padded_vocab_size - shared) * C) * sizeof(float));
        }
        return;
    }
    }
    GPT3D_FAIL("unknown external layout %d", (int)m->layout);
}

void tensor_to_external(const TensorMapping *m, const TransformerConfig *s, const float *canonical,
                        float *external) {
    permute(m, s, (float *)canonical, external, true); /* reads canonical only */
}

void tensor_from_external(const TensorMapping *m, const TransformerConfig *s, const float *external,
                          float *canonical) {
    permute(m, s, canonical, (float *)external, false); /* reads external only */
}

/* --------------------------------------------------------------- tables */

typedef struct {
    TensorMapping *items;
    int count, cap;
} MappingList;

static void add(MappingList *l, const char *external, const char *canonical, int ndim,
                int64_t d0, int64_t d1, ExternalLayout layout) {
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->items = xrealloc(l->items, (size_t)l->cap * sizeof *l->items);
    }
    TensorMapping *m = &l->items[l->count++];
    memset(m, 0, sizeof *m);
    GPT3D_CHECK(strlen(external) < INTEROP_NAME_MAX && strlen(canonical) < INTEROP_NAME_MAX,
                "tensor name too long");
    strcpy(m->external_name, external);
    strcpy(m->canonical_name, canonical);
    m->ndim = ndim;
    m->shape[0] = d0;
    m->shape[1] = ndim > 1 ? d1 : 0;
    m->layout = layout;
}

static void layer_name(char *out, const char *fmt, int layer, const char *suffix) {
    snprintf(out, INTEROP_NAME_MAX, fmt, layer, suffix);
}

static void add_hf_layer(MappingList *l, const TransformerConfig *s, int i) {
    const int64_t C = s->hidden_size, F = s->ffn_hidden_size;
    static const struct {
        const char *hf, *gpt3d;
        int ndim;
        char d0, d1; /* 'C', 'F', '3' (3C) */
        ExternalLayout layout;
    } TABLE[] = {
        {"ln_1.weight", "input_layernorm.weight", 1, 'C', 0, LAYOUT_SAME},
        {"ln_1.bias", "input_layernorm.bias", 1, 'C', 0, LAYOUT_SAME},
        {"attn.c_attn.weight", "self_attention.linear_qkv.weight", 2, 'C', '3', LAYOUT_QKV_IN_MAJOR},
        {"attn.c_attn.bias", "self_attention.linear_qkv.bias", 1, '3', 0, LAYOUT_QKV_BIAS},
        {"attn.c_proj.weight", "self_attention.linear_proj.weight", 2, 'C', 'C', LAYOUT_SAME},
        {"attn.c_proj.bias", "self_attention.linear_proj.bias", 1, 'C', 0, LAYOUT_SAME},
        {"ln_2.weight", "pre_mlp_layernorm.weight", 1, 'C', 0, LAYOUT_SAME},
        {"ln_2.bias", "pre_mlp_layernorm.bias", 1, 'C', 0, LAYOUT_SAME},
        {"mlp.c_fc.weight", "mlp.linear_fc1.weight", 2, 'C', 'F', LAYOUT_TRANSPOSE},
        {"mlp.c_fc.bias", "mlp.linear_fc1.bias", 1, 'F', 0, LAYOUT_SAME},
        {"mlp.c_proj.weight", "mlp.linear_fc2.weight", 2, 'F', 'C', LAYOUT_SAME},
        {"mlp.c_proj.bias", "mlp.linear_fc2.bias", 1, 'C', 0, LAYOUT_SAME},
    };
    for (size_t k = 0; k < sizeof TABLE / sizeof TABLE[0]; k++) {
        int64_t dims[2] = {0, 0};
        const char codes[2] = {TABLE[k].d0, TABLE[k].d1};
        for (int d = 0; d < 2; d++) dims[d] = codes[d] == 'C' ? C : codes[d] == 'F' ? F : 3 * C;
        char hf[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX];
        layer_name(hf, "transformer.h.%d.%s", i, TABLE[k].hf);
        layer_name(gpt3d, "decoder.layers.%d.%s", i, TABLE[k].gpt3d);
        add(l, hf, gpt3d, TABLE[k].ndim, dims[0], dims[1], TABLE[k].layout);
    }
}

TensorMapping *hf_gpt2_mappings(const TransformerConfig *s, int *count) {
    MappingList l = {0};
    const int64_t C = s->hidden_size;
    add(&l, "transformer.wte.weight", WORD_EMBEDDING, 2, s->vocab_size, C, LAYOUT_VOCAB_ROWS);
    add(&l, "transformer.wpe.weight", POSITION_EMBEDDING, 2, s->max_position_embeddings, C,
        LAYOUT_SAME);
    for (int i = 0; i < s->num_layers; i++) add_hf_layer(&l, s, i);
    add(&l, "transformer.ln_f.weight", "decoder.final_layernorm.weight", 1, C, 0, LAYOUT_SAME);
    add(&l, "transformer.ln_f.bias", "decoder.final_layernorm.bias", 1, C, 0, LAYOUT_SAME);
    *count = l.count;
    return l.items;
}

TensorMapping *llmc_mappings(const TransformerConfig *s, int64_t llmc_padded_vocab, int *count) {
    MappingList l = {0};
    const int64_t C = s->hidden_size, F = s->ffn_hidden_size;
    /* llm.c's weights are nn.Linear's [out, in]; its file keeps every layer
     * of one kind together, kinds in this order. */
    static const struct {
        const char *llmc, *gpt3d;
        int ndim;
        char d0, d1;
        ExternalLayout layout;
    } KINDS[] = {
        {"ln1w", "input_layernorm.weight", 1, 'C', 0, LAYOUT_SAME},
        {"ln1b", "input_layernorm.bias", 1, 'C', 0, LAYOUT_SAME},
        {"qkvw", "self_attention.linear_qkv.weight", 2, '3', 'C', LAYOUT_QKV_OUT_MAJOR},
        {"qkvb", "self_attention.linear_qkv.bias", 1, '3', 0, LAYOUT_QKV_BIAS},
        {"attprojw", "self_attention.linear_proj.weight", 2, 'C', 'C', LAYOUT_TRANSPOSE},
        {"attprojb", "self_attention.linear_proj.bias", 1, 'C', 0, LAYOUT_SAME},
        {"ln2w", "pre_mlp_layernorm.weight", 1, 'C', 0, LAYOUT_SAME},
        {"ln2b", "pre_mlp_layernorm.bias", 1, 'C', 0, LAYOUT_SAME},
        {"fcw", "mlp.linear_fc1.weight", 2, 'F', 'C', LAYOUT_SAME},
        {"fcb", "mlp.linear_fc1.bias", 1, 'F', 0, LAYOUT_SAME},
        {"fcprojw", "mlp.linear_fc2.weight", 2, 'C', 'F', LAYOUT_TRANSPOSE},
        {"fcprojb", "mlp.linear_fc2.bias", 1, 'C', 0, LAYOUT_SAME},
    };
    add(&l, "wte", WORD_EMBEDDING, 2, llmc_padded_vocab, C, LAYOUT_VOCAB_ROWS);
    add(&l, "wpe", POSITION_EMBEDDING, 2, s->max_position_embeddings, C, LAYOUT_SAME);
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        int64_t dims[2] = {0, 0};
        const char codes[2] = {KINDS[k].d0, KINDS[k].d1};
        for (int d = 0; d < 2; d++) dims[d] = codes[d] == 'C' ? C : codes[d] == 'F' ? F : 3 * C;
        for (int i = 0; i < s->num_layers; i++) {
            char external[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX];
            snprintf(external, sizeof external, "%s (layer %d)", KINDS[k].llmc, i);
            layer_name(gpt3d, "decoder.layers.%d.%s", i, KINDS[k].gpt3d);
            add(&l, external, gpt3d, KINDS[k].ndim, dims[0], dims[1], KINDS[k].layout);
        }
    }
    add(&l, "lnfw", "decoder.final_layernorm.weight", 1, C, 0, LAYOUT_SAME);
    add(&l, "lnfb", "decoder.final_layernorm.bias", 1, C, 0, LAYOUT_SAME);
    *count = l.count;
    return l.items;
}
