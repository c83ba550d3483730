/* GPT-2 tensor names and layouts of Hugging Face and llm.c, and the
 * permutations between them and gpt3d's canonical tensors. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interop/interop.h"
#include "interop/interop_internal.h"
#include "model/gpt_model.h"

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

/* Canonical row of external row r of a one-part layout (rows are features;
 * a weight's columns follow its row unchanged). */
static int64_t part_canonical_row(const TensorMapping *m, const TransformerConfig *s, int64_t r) {
    if (m->layout == LAYOUT_GATED_PART) return r * 2 + m->part;
    const int64_t HS = transformer_head_dim(s), per_group = transformer_heads_per_group(s);
    const int64_t d = r % HS, head = r / HS; /* a query head, or a group's key / value head */
    const int64_t group = m->part == 0 ? head / per_group : head;
    const int64_t slot = m->part == 0 ? head % per_group : per_group + m->part - 1;
    return (group * (per_group + 2) + slot) * HS + d;
}

static void permute_part(const TensorMapping *m, const TransformerConfig *s, float *canonical,
                         float *external, bool to_external) {
    const int64_t rows = m->shape[0], cols = m->ndim > 1 ? m->shape[1] : 1;
    for (int64_t r = 0; r < rows; r++) {
        float *e = &external[r * cols], *c = &canonical[part_canonical_row(m, s, r) * cols];
        if (to_external) memcpy(e, c, (size_t)cols * sizeof *e);
        else memcpy(c, e, (size_t)cols * sizeof *c);
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
    case LAYOUT_QKV_PART:
    case LAYOUT_GATED_PART: permute_part(m, s, canonical, external, to_external); return;
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

static TensorMapping *add(MappingList *l, const char *external, const char *canonical, int ndim,
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
    return m;
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
    add(&l, "transformer.wte.weight", GPT_WORD_EMBEDDING, 2, s->vocab_size, C, LAYOUT_VOCAB_ROWS);
    add(&l, "transformer.wpe.weight", GPT_POSITION_EMBEDDING, 2, s->max_position_embeddings, C,
        LAYOUT_SAME);
    for (int i = 0; i < s->num_layers; i++) add_hf_layer(&l, s, i);
    add(&l, "transformer.ln_f.weight", "decoder.final_layernorm.weight", 1, C, 0, LAYOUT_SAME);
    add(&l, "transformer.ln_f.bias", "decoder.final_layernorm.bias", 1, C, 0, LAYOUT_SAME);
    *count = l.count;
    return l.items;
}

static void llama_names(char *hf, char *gpt3d, int layer, const char *ours, const char *theirs) {
    layer_name(hf, "model.layers.%d.%s", layer, theirs);
    layer_name(gpt3d, "decoder.layers.%d.%s", layer, ours);
}

/* A Llama-family layer's attention (q, k, v, o, each weight then its
 * bias), as LlamaAttention and MixtralAttention name them. */
static void add_llama_attention(MappingList *l, const TransformerConfig *s, int i) {
    const int64_t C = s->hidden_size, HS = transformer_head_dim(s);
    const int64_t Q = (int64_t)s->num_attention_heads * HS, KV = (int64_t)s->num_query_groups * HS;
    const bool bias = s->add_bias_linear;
    char hf[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX];
    static const char *const QKV[3] = {"q_proj", "k_proj", "v_proj"};
    for (int part = 0; part < 3; part++) {
        const int64_t rows = part == 0 ? Q : KV;
        char theirs[48];
        snprintf(theirs, sizeof theirs, "self_attn.%s.weight", QKV[part]);
        llama_names(hf, gpt3d, i, "self_attention.linear_qkv.weight", theirs);
        add(l, hf, gpt3d, 2, rows, C, LAYOUT_QKV_PART)->part = part;
        if (!bias) continue;
        snprintf(theirs, sizeof theirs, "self_attn.%s.bias", QKV[part]);
        llama_names(hf, gpt3d, i, "self_attention.linear_qkv.bias", theirs);
        add(l, hf, gpt3d, 1, rows, 0, LAYOUT_QKV_PART)->part = part;
    }
    llama_names(hf, gpt3d, i, "self_attention.linear_proj.weight", "self_attn.o_proj.weight");
    add(l, hf, gpt3d, 2, C, Q, LAYOUT_TRANSPOSE);
    if (bias) {
        llama_names(hf, gpt3d, i, "self_attention.linear_proj.bias", "self_attn.o_proj.bias");
        add(l, hf, gpt3d, 1, C, 0, LAYOUT_SAME);
    }
}

/* A SwiGLU MLP of F features whose gpt3d tensors are ours + "linear_fc1" /
 * "linear_fc2": HF's gate and up projections (nn.Linear [F, C]) are the
 * parts 0 and 1 of the interleaved fc1 [F, 2, C], the down projection
 * [C, F] the transpose of the input-major fc2 [F, C]. names[3]: the gate,
 * up and down module names under `theirs`. */
static void add_gated_mlp(MappingList *l, const TransformerConfig *s, int i, const char *ours,
                          const char *theirs, const char *const names[3], int64_t F) {
    const int64_t C = s->hidden_size;
    const bool bias = s->add_bias_linear;
    char hf[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX], a[96], b[96];
    for (int part = 0; part < 2; part++)
        for (int is_bias = 0; is_bias <= (bias ? 1 : 0); is_bias++) {
            const char *kind = is_bias ? "bias" : "weight";
            snprintf(a, sizeof a, "%slinear_fc1.%s", ours, kind);
            snprintf(b, sizeof b, "%s%s.%s", theirs, names[part], kind);
            llama_names(hf, gpt3d, i, a, b);
            add(l, hf, gpt3d, is_bias ? 1 : 2, F, C, LAYOUT_GATED_PART)->part = part;
        }
    snprintf(a, sizeof a, "%slinear_fc2.weight", ours);
    snprintf(b, sizeof b, "%s%s.weight", theirs, names[2]);
    llama_names(hf, gpt3d, i, a, b);
    add(l, hf, gpt3d, 2, C, F, LAYOUT_TRANSPOSE);
    if (bias) {
        snprintf(a, sizeof a, "%slinear_fc2.bias", ours);
        snprintf(b, sizeof b, "%s%s.bias", theirs, names[2]);
        llama_names(hf, gpt3d, i, a, b);
        add(l, hf, gpt3d, 1, C, 0, LAYOUT_SAME);
    }
}

static void add_llama_norms(MappingList *l, const TransformerConfig *s, int i) {
    char hf[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX];
    llama_names(hf, gpt3d, i, "input_layernorm.weight", "input_layernorm.weight");
    add(l, hf, gpt3d, 1, s->hidden_size, 0, LAYOUT_SAME);
    llama_names(hf, gpt3d, i, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight");
    add(l, hf, gpt3d, 1, s->hidden_size, 0, LAYOUT_SAME);
}

/* One Llama decoder layer in LlamaDecoderLayer's order: attention, MLP
 * (gate, up, down), then the two norms. */
static void add_llama_layer(MappingList *l, const TransformerConfig *s, int i) {
    static const char *const MLP[3] = {"gate_proj", "up_proj", "down_proj"};
    add_llama_attention(l, s, i);
    add_gated_mlp(l, s, i, "mlp.", "mlp.", MLP, s->ffn_hidden_size);
    add_llama_norms(l, s, i);
}

/* One Mixtral decoder layer in MixtralDecoderLayer's order: attention, the
 * sparse MoE block (the router "gate" [E, C], then each expert's w1 = gate
 * projection, w3 = up projection, w2 = down projection), the two norms. */
static void add_mixtral_layer(MappingList *l, const TransformerConfig *s, int i) {
    static const char *const EXPERT[3] = {"w1", "w3", "w2"};
    char hf[INTEROP_NAME_MAX], gpt3d[INTEROP_NAME_MAX], ours[96], theirs[96];
    add_llama_attention(l, s, i);
    llama_names(hf, gpt3d, i, "mlp.router.weight", "block_sparse_moe.gate.weight");
    add(l, hf, gpt3d, 2, s->num_experts, s->hidden_size, LAYOUT_SAME);
    for (int e = 0; e < s->num_experts; e++) {
        snprintf(ours, sizeof ours, "mlp.experts.local_experts.%d.", e);
        snprintf(theirs, sizeof theirs, "block_sparse_moe.experts.%d.", e);
        add_gated_mlp(l, s, i, ours, theirs, EXPERT, s->moe_ffn_hidden_size);
    }
    add_llama_norms(l, s, i);
}

/* The Llama family's tensors: the embedding, the layers, the final norm
 * and an untied lm_head. */
static TensorMapping *llama_family_mappings(const TransformerConfig *s, int *count,
                                            void (*add_layer)(MappingList *,
                                                              const TransformerConfig *, int)) {
    MappingList l = {0};
    const int64_t C = s->hidden_size;
    add(&l, "model.embed_tokens.weight", GPT_WORD_EMBEDDING, 2, s->vocab_size, C, LAYOUT_VOCAB_ROWS);
    for (int i = 0; i < s->num_layers; i++) add_layer(&l, s, i);
    add(&l, "model.norm.weight", "decoder.final_layernorm.weight", 1, C, 0, LAYOUT_SAME);
    if (!transformer_tied_output(s))
        add(&l, "lm_head.weight", GPT_OUTPUT_LAYER, 2, s->vocab_size, C, LAYOUT_VOCAB_ROWS);
    *count = l.count;
    return l.items;
}

TensorMapping *hf_llama_mappings(const TransformerConfig *s, int *count) {
    return llama_family_mappings(s, count, add_llama_layer);
}

TensorMapping *hf_mixtral_mappings(const TransformerConfig *s, int *count) {
    return llama_family_mappings(s, count, add_mixtral_layer);
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
    add(&l, "wte", GPT_WORD_EMBEDDING, 2, llmc_padded_vocab, C, LAYOUT_VOCAB_ROWS);
    add(&l, "wpe", GPT_POSITION_EMBEDDING, 2, s->max_position_embeddings, C, LAYOUT_SAME);
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
