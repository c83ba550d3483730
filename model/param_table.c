/* The parameter table: names, canonical shapes, TP slices, buffer offsets
 * and init rules of the GPT parameters a rank holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/host_memory.h"
#include "core/rng.h"
#include "model/gpt_model_internal.h"

/* Offsets are aligned so every parameter starts on a 256-byte boundary for
 * any element type (vectorised CPU loops, aligned GPU loads). */
#define PARAM_ALIGN_ELEMENTS 64

int64_t gpt_padded_vocab_size(int64_t vocab_size, int divisible_by) {
    return (vocab_size + divisible_by - 1) / divisible_by * divisible_by;
}

typedef struct {
    ParamTable *table;
    int cap;
    const ModelPartition *part;
    bool expert_pass; /* adding the routed experts (the expert region) */
} TableBuilder;

static void add_param(TableBuilder *b, const char *name, int ndim, const int64_t *shape,
                      bool tp_split, bool weight_decay, ParamInitKind init, double std) {
    ParamTable *t = b->table;
    if (t->count == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 32;
        t->params = xrealloc(t->params, (size_t)b->cap * sizeof *t->params);
    }
    ParamInfo *p = &t->params[t->count++];
    memset(p, 0, sizeof *p);
    GPT3D_CHECK(strlen(name) < PARAM_NAME_MAX, "parameter name too long: %s", name);
    strcpy(p->name, name);
    p->ndim = ndim;
    p->canonical_numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->canonical_numel *= shape[d];
    }
    p->tensor_parallel_split = tp_split && b->part->tp_size > 1;
    if (p->tensor_parallel_split) {
        GPT3D_CHECK(shape[0] % b->part->tp_size == 0, "%s: dim 0 (%lld) not divisible by TP %d",
                    name, (long long)shape[0], b->part->tp_size);
        p->local_numel = p->canonical_numel / b->part->tp_size;
        p->local_begin = p->local_numel * b->part->tp_rank;
    } else {
        p->local_numel = p->canonical_numel;
        p->local_begin = 0;
    }
    p->offset = t->total_numel;
    size_t padded = ((size_t)p->local_numel + PARAM_ALIGN_ELEMENTS - 1) / PARAM_ALIGN_ELEMENTS *
                    PARAM_ALIGN_ELEMENTS;
    t->total_numel += padded;
    p->weight_decay = weight_decay;
    /* A routed expert's weights live on one rank of the expert layout (and
     * its shards): every copy there is the one. */
    p->counts_in_grad_norm = p->tensor_parallel_split || b->part->tp_rank == 0 || b->expert_pass;
    p->expert = b->expert_pass;
    p->init = init;
    p->init_std = std;
}

/* out = prefix + suffix; names are short, so overflow is a bug. */
static void join_name(char *out, const char *prefix, const char *suffix) {
    size_t a = strlen(prefix), s = strlen(suffix);
    GPT3D_CHECK(a + s < PARAM_NAME_MAX, "parameter name too long: %s%s", prefix, suffix);
    memcpy(out, prefix, a);
    memcpy(out + a, suffix, s + 1);
}

/* A norm's parameters (bias only for LayerNorm); with --apply-layernorm-1p
 * the stored weight is the weight minus one, so it starts at zero. */
static void add_norm(TableBuilder *b, const TransformerConfig *cfg, const char *prefix, int64_t C) {
    char name[PARAM_NAME_MAX];
    /* Bias before weight: reverse of use, the order gradients become ready. */
    if (cfg->normalization == NORM_LAYERNORM) {
        join_name(name, prefix, ".bias");
        add_param(b, name, 1, &C, false, false, PARAM_INIT_ZEROS, 0.0);
    }
    join_name(name, prefix, ".weight");
    add_param(b, name, 1, &C, false, false,
              cfg->apply_layernorm_1p ? PARAM_INIT_ZEROS : PARAM_INIT_ONES, 0.0);
}

/* The query and key norms over the head dimension (--qk-layernorm), in
 * reverse of use (the key's, then the query's). They are replicated over
 * TP, but a TP rank normalises only its own heads, so its gradient is a
 * part of the whole: marked to be summed over the TP group. */
static void add_qk_norms(TableBuilder *b, const TransformerConfig *cfg, const char *layer_prefix) {
    const int64_t HS = transformer_head_dim(cfg);
    static const char *const suffixes[] = {".self_attention.k_layernorm",
                                           ".self_attention.q_layernorm"};
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < 2; i++) {
        join_name(name, layer_prefix, suffixes[i]);
        const int first = b->table->count;
        add_norm(b, cfg, name, HS);
        for (int p = first; p < b->table->count; p++)
            b->table->params[p].grad_partial_over_heads = b->part->tp_size > 1;
    }
}

int gpt_norm_param_count(const TransformerConfig *cfg) {
    return cfg->normalization == NORM_LAYERNORM ? 2 : 1;
}

static bool has_qkv_bias(const TransformerConfig *cfg) {
    return cfg->add_bias_linear || cfg->add_qkv_bias;
}

int gpt_layer_param_count(const TransformerConfig *cfg, int layer) {
    const int norms = cfg->qk_layernorm ? 4 : 2; /* input, pre-MLP (query, key) */
    const int attention = 2 + (cfg->add_bias_linear ? 1 : 0) + (has_qkv_bias(cfg) ? 1 : 0);
    const int mlp = transformer_layer_is_moe(cfg, layer)
                        ? 1 + 2 * cfg->num_experts + (cfg->moe_shared_expert_intermediate_size ? 2 : 0)
                        : 2 + (cfg->add_bias_linear ? 2 : 0);
    return norms * gpt_norm_param_count(cfg) + attention + mlp;
}

int gpt_layer_dense_param_count(const TransformerConfig *cfg, int layer) {
    return gpt_layer_param_count(cfg, layer) -
           (transformer_layer_is_moe(cfg, layer) ? 2 * cfg->num_experts : 0);
}

/* linear_fc1 of F features: [F, 2, C] for SwiGLU, else [F, C]; out-major. */
static void add_fc1(TableBuilder *b, const TransformerConfig *cfg, const char *name, int64_t F,
                    double std, bool tp_split) {
    const int64_t C = cfg->hidden_size;
    if (cfg->activation == ACTIVATION_SWIGLU)
        add_param(b, name, 3, (int64_t[]){F, 2, C}, tp_split, true, PARAM_INIT_NORMAL, std);
    else
        add_param(b, name, 2, (int64_t[]){F, C}, tp_split, true, PARAM_INIT_NORMAL, std);
}

/* The experts this rank holds (expert_range) of an MoE layer, last first,
 * each its own tensor (Megatron's SequentialMLP names, global expert
 * index), split over TP by features like a dense MLP. */
static void expert_range(const TransformerConfig *cfg, const ModelPartition *part, int *first,
                         int *count) {
    const int ep = part->ep_size > 1 ? part->ep_size : 1;
    *count = cfg->num_experts / ep;
    *first = (part->ep_size > 1 ? part->ep_rank : 0) * *count;
}

static void add_experts(TableBuilder *b, const TransformerConfig *cfg, int layer) {
    const int64_t C = cfg->hidden_size, Fm = cfg->moe_ffn_hidden_size;
    const double std = cfg->init_method_std, out_std = std / sqrt(2.0 * cfg->num_layers);
    char name[PARAM_NAME_MAX];
    int first, count;
    expert_range(cfg, b->part, &first, &count);
    /* Whole experts (--expert-tensor-parallel-size 1) are not TP-split. */
    const bool split = b->part->etp_size == 0 || b->part->etp_size == b->part->tp_size;
    for (int e = first + count - 1; e >= first; e--) {
        snprintf(name, sizeof name, "decoder.layers.%d.mlp.experts.local_experts.%d.linear_fc2.weight",
                 layer, e);
        add_param(b, name, 2, (int64_t[]){Fm, C}, split, true, PARAM_INIT_NORMAL, out_std);
        snprintf(name, sizeof name, "decoder.layers.%d.mlp.experts.local_experts.%d.linear_fc1.weight",
                 layer, e);
        add_fc1(b, cfg, name, Fm, std, split);
    }
}

/* An MoE layer's MLP but its routed experts (the expert region's), in
 * reverse of use: the shared expert, the router [E, C] (replicated). */
static void add_moe_mlp(TableBuilder *b, const TransformerConfig *cfg, const char *prefix,
                        double std, double out_std) {
    const int64_t C = cfg->hidden_size, Fs = cfg->moe_shared_expert_intermediate_size;
    char name[PARAM_NAME_MAX];
    if (Fs) {
        join_name(name, prefix, ".mlp.shared_experts.linear_fc2.weight");
        add_param(b, name, 2, (int64_t[]){Fs, C}, true, true, PARAM_INIT_NORMAL, out_std);
        join_name(name, prefix, ".mlp.shared_experts.linear_fc1.weight");
        add_fc1(b, cfg, name, Fs, std, true);
    }
    join_name(name, prefix, ".mlp.router.weight");
    add_param(b, name, 2, (int64_t[]){cfg->num_experts, C}, false, true, PARAM_INIT_NORMAL, std);
}

int gpt_local_expert_param_count(const TransformerConfig *cfg, const ModelPartition *part,
                                 int layer) {
    if (!transformer_layer_is_moe(cfg, layer)) return 0;
    int first, count;
    expert_range(cfg, part, &first, &count);
    return 2 * count;
}

/* The canonical layouts put the TP split dimension first: linear_qkv is
 * [groups, heads per group + 2, head dim, C] (each group's query heads,
 * then its key and value head, as Megatron's linear_qkv), the SwiGLU
 * linear_fc1 is [F, 2, C] (each feature's gate and up rows together), so a
 * TP shard of groups or features is one contiguous interval. */
static void add_layer(TableBuilder *b, const TransformerConfig *cfg, int layer) {
    const int64_t C = cfg->hidden_size, F = cfg->ffn_hidden_size;
    const int64_t NG = cfg->num_query_groups, HS = transformer_head_dim(cfg);
    const int64_t QKV = transformer_heads_per_group(cfg) + 2, NH = cfg->num_attention_heads;
    const bool gated = cfg->activation == ACTIVATION_SWIGLU, bias = cfg->add_bias_linear;
    const double std = cfg->init_method_std;
    const double out_std = std / sqrt(2.0 * cfg->num_layers);
    char prefix[32], name[PARAM_NAME_MAX];
    snprintf(prefix, sizeof prefix, "decoder.layers.%d", layer);

    /* Reverse order of use within the layer. */
    if (transformer_layer_is_moe(cfg, layer)) {
        add_moe_mlp(b, cfg, prefix, std, out_std);
    } else {
        if (bias) {
            join_name(name, prefix, ".mlp.linear_fc2.bias");
            add_param(b, name, 1, &C, false, false, PARAM_INIT_ZEROS, 0.0);
        }
        join_name(name, prefix, ".mlp.linear_fc2.weight");
        add_param(b, name, 2, (int64_t[]){F, C}, true, true, PARAM_INIT_NORMAL, out_std);
        if (bias) {
            join_name(name, prefix, ".mlp.linear_fc1.bias");
            add_param(b, name, gated ? 2 : 1, (int64_t[]){F, 2}, true, false, PARAM_INIT_ZEROS,
                      0.0);
        }
        join_name(name, prefix, ".mlp.linear_fc1.weight");
        add_fc1(b, cfg, name, F, std, true);
    }
    join_name(name, prefix, ".pre_mlp_layernorm");
    add_norm(b, cfg, name, C);
    if (bias) {
        join_name(name, prefix, ".self_attention.linear_proj.bias");
        add_param(b, name, 1, &C, false, false, PARAM_INIT_ZEROS, 0.0);
    }
    join_name(name, prefix, ".self_attention.linear_proj.weight");
    add_param(b, name, 2, (int64_t[]){NH * HS, C}, true, true, PARAM_INIT_NORMAL, out_std);
    if (cfg->qk_layernorm) add_qk_norms(b, cfg, prefix);
    if (has_qkv_bias(cfg)) {
        join_name(name, prefix, ".self_attention.linear_qkv.bias");
        add_param(b, name, 3, (int64_t[]){NG, QKV, HS}, true, false, PARAM_INIT_ZEROS, 0.0);
    }
    join_name(name, prefix, ".self_attention.linear_qkv.weight");
    add_param(b, name, 4, (int64_t[]){NG, QKV, HS, C}, true, true, PARAM_INIT_NORMAL, std);
    join_name(name, prefix, ".input_layernorm");
    add_norm(b, cfg, name, C);
}

static void align_total(TableBuilder *b) {
    const size_t unit = b->part->region_align;
    if (unit > 1) b->table->total_numel = (b->table->total_numel + unit - 1) / unit * unit;
}

/* The routed experts of every local layer, last layer first, after the
 * rest (aligned, so the optimizer can shard the region on its own). */
static void add_expert_region(TableBuilder *b, const TransformerConfig *cfg) {
    const ModelPartition *part = b->part;
    align_total(b);
    b->table->expert_begin = b->table->total_numel;
    b->expert_pass = true;
    for (int l = part->first_layer + part->num_local_layers - 1; l >= part->first_layer; l--)
        if (transformer_layer_is_moe(cfg, l)) add_experts(b, cfg, l);
    b->expert_pass = false;
    align_total(b);
}

void param_table_build(ParamTable *t, const TransformerConfig *cfg, const ModelPartition *part) {
    memset(t, 0, sizeof *t);
    TableBuilder b = {.table = t, .cap = 0, .part = part};
    const int64_t C = cfg->hidden_size, V = cfg->padded_vocab_size;
    const bool tied = transformer_tied_output(cfg);
    if (part->has_head) {
        if (!tied)
        {
            add_param(&b, GPT_OUTPUT_LAYER, 2, (int64_t[]){V, C}, true, true, PARAM_INIT_NORMAL,
                      cfg->init_method_std);
            t->params[t->count - 1].embedding_or_output = true;
        }
        add_norm(&b, cfg, "decoder.final_layernorm", C);
    }
    for (int l = part->first_layer + part->num_local_layers - 1; l >= part->first_layer; l--) {
        const int before = t->count;
        add_layer(&b, cfg, l);
        GPT3D_CHECK(t->count - before == gpt_layer_dense_param_count(cfg, l),
                    "layer %d has %d parameters besides its experts, not %d", l,
                    t->count - before, gpt_layer_dense_param_count(cfg, l));
    }
    if (part->has_embedding && cfg->position_embedding_type == POSITION_LEARNED_ABSOLUTE) {
        add_param(&b, GPT_POSITION_EMBEDDING, 2, (int64_t[]){cfg->max_position_embeddings, C},
                  false, true, PARAM_INIT_NORMAL, cfg->init_method_std);
    }
    /* With a tied output layer the last stage keeps its own copy of the
     * word embedding. */
    if (part->has_embedding || (part->has_head && tied)) {
        add_param(&b, GPT_WORD_EMBEDDING, 2, (int64_t[]){V, C}, true, true, PARAM_INIT_NORMAL,
                  cfg->init_method_std);
        t->params[t->count - 1].embedding_or_output = true;
        /* The first stage's copy is the one the global norm counts. */
        if (!part->has_embedding) {
            t->params[t->count - 1].counts_in_grad_norm = false;
            t->params[t->count - 1].tied_copy = true;
        }
    }
    add_expert_region(&b, cfg);
}

void param_table_free(ParamTable *t) {
    free(t->params);
    memset(t, 0, sizeof *t);
}

int param_table_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->count; i++)
        if (!strcmp(t->params[i].name, name)) return i;
    return -1;
}

static int64_t table_numel(const TransformerConfig *cfg, const ModelPartition *part) {
    ParamTable t;
    param_table_build(&t, cfg, part);
    int64_t n = 0;
    for (int i = 0; i < t.count; i++) n += t.params[i].canonical_numel;
    param_table_free(&t);
    return n;
}

/* From the tables of one layer and of the embeddings and head: the table
 * stays the one owner of the shapes, and an absurd layer count costs no
 * more than a small one. */
int64_t gpt_canonical_param_count(const TransformerConfig *cfg) {
    const ModelPartition ends = {.tp_size = 1, .has_embedding = true, .has_head = true};
    const int moe_layers = transformer_moe_layer_count(cfg);
    TransformerConfig dense = *cfg;
    dense.num_experts = 0;
    const ModelPartition first = {.tp_size = 1, .num_local_layers = 1};
    return moe_layers * table_numel(cfg, &first) +
           (cfg->num_layers - moe_layers) * table_numel(&dense, &first) + table_numel(cfg, &ends);
}

/* The parameters of one routed expert, and of all of them. */
static int64_t expert_param_count(const TransformerConfig *cfg) {
    const int64_t gate = cfg->activation == ACTIVATION_SWIGLU ? 2 : 1;
    return (int64_t)cfg->moe_ffn_hidden_size * cfg->hidden_size * (gate + 1);
}
static int64_t routed_expert_param_count(const TransformerConfig *cfg) {
    return (int64_t)transformer_moe_layer_count(cfg) * cfg->num_experts * expert_param_count(cfg);
}

int64_t gpt_active_param_count(const TransformerConfig *cfg) {
    const int64_t inactive = (int64_t)transformer_moe_layer_count(cfg) *
                             (cfg->num_experts - cfg->moe_router_topk) * expert_param_count(cfg);
    return gpt_canonical_param_count(cfg) - inactive;
}

double gpt_model_min_rank_bytes(const TransformerConfig *cfg, int tp_size, int pp_size,
                                int ep_size, int etp_size, int max_rank_layers,
                                size_t act_elem_bytes) {
    /* The routed experts are spread over EP x ETP instead of TP. */
    const double experts = (double)routed_expert_param_count(cfg);
    const double expert_ranks = (double)(ep_size > 1 ? ep_size : 1) *
                                (etp_size > 0 ? etp_size : tp_size) * pp_size;
    const double params = ((double)gpt_canonical_param_count(cfg) - experts) /
                              ((double)tp_size * pp_size) +
                          experts / expert_ranks;
    const int per_layer = gpt_layer_param_count(cfg, 0); /* layer 0 is an MoE layer if any is */
    const double table = (double)max_rank_layers * per_layer * sizeof(ParamInfo);
    return params * ((double)act_elem_bytes + sizeof(float)) + table;
}

void param_init_values(const ParamInfo *p, uint64_t seed, float *out) {
    switch (p->init) {
    case PARAM_INIT_ZEROS:
        memset(out, 0, (size_t)p->local_numel * sizeof *out);
        return;
    case PARAM_INIT_ONES:
        for (int64_t i = 0; i < p->local_numel; i++) out[i] = 1.0f;
        return;
    case PARAM_INIT_NORMAL: {
        rng_normal_fill(out, (size_t)p->local_numel, seed, rng_stream_from_name(p->name),
                        (uint64_t)p->local_begin, p->init_std, host_thread_count());
        return;
    }
    }
}
