/* Helper of test_interop_llama.sh and test_interop_mixtral.sh.
 *
 *   random DIR L C H NG HS F V P SEED TIED BIAS [E K FM]
 *       a one-rank Llama-style checkpoint of random weights (rope base 50000,
 *       RMSNorm eps 1e-5: neither is LlamaConfig's default, so a converter
 *       that drops them is caught); with E > 0 every MLP is a mixture of E
 *       experts of FM features, K per token (Mixtral's)
 *   forward CKPT HFDIR
 *       gpt3d's loss on CKPT against a reference forward of LlamaForCausalLM
 *       or MixtralForCausalLM (as config.json names) written here from
 *       Hugging Face's modeling_llama and modeling_mixtral definitions,
 *       reading HFDIR's config.json and model.safetensors independently of
 *       interop/; also checks the file holds exactly the architecture's
 *       tensor names and shapes, and that misreading RoPE's pairing, the
 *       query groups, the gate and up projections or (Mixtral) the
 *       renormalisation of the routing weights would have been noticed
 *   shard SRC DST        SRC's model.safetensors as two shards and an index
 *   edit-config SRC DST KEY JSON
 *       DST = SRC with config.json's KEY set to JSON ("delete" removes it) */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "interop/interop.h"
#include "model/gpt_model.h"
#include "test_interop_formats.h"
#include "test_interop_reference.h"
#include "test_util.h"

/* ------------------------------------------------------------ random */

static double fan_in_scale(const ParamInfo *p) {
    if (strstr(p->name, "word_embeddings")) return 1.0;
    /* linear_proj and linear_fc2 are stored input-major: fan-in is dim 0. */
    if (strstr(p->name, "linear_proj.weight") || strstr(p->name, "linear_fc2.weight"))
        return 1.0 / sqrt((double)p->shape[0]);
    return 1.0 / sqrt((double)p->shape[p->ndim - 1]);
}

static void write_random(char **argv) {
    const char *dir = argv[0];
    TransformerConfig c = {0};
    c.num_layers = atoi(argv[1]);
    c.hidden_size = atoi(argv[2]);
    c.num_attention_heads = atoi(argv[3]);
    c.ffn_hidden_size = atoi(argv[6]);
    c.vocab_size = atoi(argv[7]);
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 16);
    c.max_position_embeddings = c.seq_length = atoi(argv[8]);
    transformer_config_set_gpt2_variant(&c);
    c.position_embedding_type = POSITION_ROPE;
    c.rotary_base = 50000.0;
    c.normalization = NORM_RMSNORM;
    c.norm_epsilon = 1e-5;
    c.activation = ACTIVATION_SWIGLU;
    c.num_query_groups = atoi(argv[4]);
    c.kv_channels = atoi(argv[5]);
    c.untie_embeddings_and_output_weights = !atoi(argv[10]);
    c.add_bias_linear = atoi(argv[11]) != 0;
    c.init_method_std = 0.02;
    if (argv[12]) { /* a mixture of experts in every layer, Mixtral's router */
        c.num_experts = atoi(argv[12]);
        c.moe_router_topk = atoi(argv[13]);
        c.moe_ffn_hidden_size = atoi(argv[14]);
    }
    char err[2048];
    CHECK_MSG(transformer_config_check(&c, "random", err, sizeof err), "%s", err);
    ModelWeights *w = model_weights_create(&c);
    ParamTable t;
    const ModelPartition whole = {.tp_size = 1, .num_local_layers = c.num_layers,
                                  .has_embedding = true, .has_head = true};
    param_table_build(&t, &c, &whole);
    const uint64_t seed = (uint64_t)atoll(argv[9]);
    for (int i = 0; i < t.count; i++) {
        const ParamInfo *p = &t.params[i];
        int64_t n = 0;
        float *v = model_weights_param(w, p->name, &n);
        CHECK(v != NULL && n == p->canonical_numel);
        const bool norm = strstr(p->name, "layernorm") != NULL, bias = strstr(p->name, ".bias");
        for (int64_t k = 0; k < n; k++) {
            const double z = rng_normal(seed, (uint64_t)i, (uint64_t)k);
            v[k] = (float)(norm ? 1.0 + 0.3 * z : bias ? 0.2 * z : fan_in_scale(p) * z);
        }
    }
    param_table_free(&t);
    const WeightsSaveInfo info = {.seq_length = c.seq_length, .source = "test_interop_llama"};
    CHECK_MSG(model_weights_save(w, dir, &info, err, sizeof err), "%s", err);
    model_weights_free(w);
}

/* ------------------------------------------------- reference forward */

typedef struct {
    int L, C, H, KV, HS, F, V;
    int E, K; /* Mixtral: experts, chosen per token; 0 for Llama */
    double eps, theta;
    bool tied, bias;
    /* Deliberate misreadings for the sensitivity check. */
    bool interleaved_rope, kv_modulo, gate_up_swapped, unnormalised_routing;
    TfFile *file;
} Llama;

static cJSON *read_config(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t size;
    unsigned char *text = tf_slurp(path, &size);
    cJSON *root = cJSON_ParseWithLength((const char *)text, size);
    free(text);
    CHECK_MSG(root != NULL, "%s is not JSON", path);
    return root;
}

static double config_number(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    CHECK_MSG(cJSON_IsNumber(v), "config.json has no number %s", key);
    return v->valuedouble;
}

static bool config_bool(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    CHECK_MSG(cJSON_IsBool(v), "config.json has no boolean %s", key);
    return cJSON_IsTrue(v);
}

static void read_llama_config(const char *dir, Llama *m) {
    cJSON *root = read_config(dir);
    const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "architectures"), 0);
    const cJSON *type = cJSON_GetObjectItem(root, "model_type");
    CHECK(cJSON_IsString(arch) && cJSON_IsString(type));
    const bool mixtral = !strcmp(type->valuestring, "mixtral");
    CHECK_MSG(!strcmp(arch->valuestring, mixtral ? "MixtralForCausalLM" : "LlamaForCausalLM") &&
                  (mixtral || !strcmp(type->valuestring, "llama")),
              "config.json names neither LlamaForCausalLM nor MixtralForCausalLM");
    const cJSON *act = cJSON_GetObjectItem(root, "hidden_act");
    CHECK(cJSON_IsString(act) && !strcmp(act->valuestring, "silu"));
    if (!mixtral) CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "rope_scaling")));
    m->L = (int)config_number(root, "num_hidden_layers");
    m->C = (int)config_number(root, "hidden_size");
    m->H = (int)config_number(root, "num_attention_heads");
    m->KV = (int)config_number(root, "num_key_value_heads");
    m->HS = (int)config_number(root, "head_dim");
    m->F = (int)config_number(root, "intermediate_size");
    m->V = (int)config_number(root, "vocab_size");
    m->eps = config_number(root, "rms_norm_eps");
    m->theta = config_number(root, "rope_theta");
    m->tied = config_bool(root, "tie_word_embeddings");
    if (mixtral) { /* MixtralConfig: no biases, full attention */
        m->E = (int)config_number(root, "num_local_experts");
        m->K = (int)config_number(root, "num_experts_per_tok");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "sliding_window")));
        CHECK(m->K >= 1 && m->K <= m->E);
        cJSON_Delete(root);
        return;
    }
    m->bias = config_bool(root, "attention_bias");
    CHECK(config_bool(root, "mlp_bias") == m->bias);
    cJSON_Delete(root);
}

/* The tensor NAME with exactly the shape Llama gives it (as doubles). */
static double *tensor(const Llama *m, const char *name, int64_t d0, int64_t d1) {
    const TfTensor *t = tf_find(m->file, name);
    CHECK_MSG(t != NULL, "no tensor %s", name);
    CHECK_MSG(t->ndim == (d1 ? 2 : 1) && t->shape[0] == d0 && (!d1 || t->shape[1] == d1),
              "%s has the wrong shape", name);
    double *out = malloc((size_t)tf_numel(t) * sizeof *out);
    for (int64_t k = 0; k < tf_numel(t); k++) out[k] = tf_f32(t, k);
    return out;
}

static double *layer_tensor(const Llama *m, int l, const char *suffix, int64_t d0, int64_t d1) {
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);
    return tensor(m, name, d0, d1);
}

/* nn.Linear: out[t, o] = b[o] + sum_i in[t, i] W[o, i]. */
static void linear(double *out, const double *in, const double *w, const double *b, int T, int I,
                   int O) {
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double acc = b ? b[o] : 0;
            for (int i = 0; i < I; i++) acc += in[(size_t)t * I + i] * w[(size_t)o * I + i];
            out[(size_t)t * O + o] = acc;
        }
}

/* LlamaRMSNorm: x / sqrt(mean(x^2) + eps) * weight. */
static void rmsnorm(double *out, const double *in, const double *w, int T, int C, double eps) {
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += in[t * C + c] * in[t * C + c];
        const double r = 1.0 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++) out[t * C + c] = in[t * C + c] * r * w[c];
    }
}

/* apply_rotary_pos_emb with rotate_half: feature i < HS/2 pairs with
 * i + HS/2, both at frequency theta^(-2i/HS); the misreading pairs 2i with
 * 2i + 1 instead. */
static void rope(const Llama *m, double *x, int T, int heads) {
    const int HS = m->HS, half = HS / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++) {
            double *v = &x[((size_t)t * heads + h) * HS];
            for (int i = 0; i < half; i++) {
                const double angle = t * pow(m->theta, -2.0 * i / HS);
                const int a = m->interleaved_rope ? 2 * i : i;
                const int b = m->interleaved_rope ? 2 * i + 1 : i + half;
                const double x1 = v[a], x2 = v[b];
                v[a] = x1 * cos(angle) - x2 * sin(angle);
                v[b] = x2 * cos(angle) + x1 * sin(angle);
            }
        }
}

/* Causal attention; query head h reads key/value head h / (H / KV)
 * (repeat_kv), the misreading h % KV. */
static void attention(const Llama *m, double *y, const double *q, const double *k,
                      const double *v, int T) {
    const int HS = m->HS, rep = m->H / m->KV;
    double *p = malloc((size_t)T * sizeof *p);
    for (int h = 0; h < m->H; h++) {
        const int g = m->kv_modulo ? h % m->KV : h / rep;
        for (int t = 0; t < T; t++) {
            double max = -INFINITY, sum = 0;
            for (int u = 0; u <= t; u++) {
                double s = 0;
                for (int d = 0; d < HS; d++)
                    s += q[((size_t)t * m->H + h) * HS + d] * k[((size_t)u * m->KV + g) * HS + d];
                p[u] = s / sqrt((double)HS);
                if (p[u] > max) max = p[u];
            }
            for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - max));
            for (int d = 0; d < HS; d++) {
                double acc = 0;
                for (int u = 0; u <= t; u++) acc += p[u] / sum * v[((size_t)u * m->KV + g) * HS + d];
                y[((size_t)t * m->H + h) * HS + d] = acc;
            }
        }
    }
    free(p);
}

static void attention_block(const Llama *m, int l, double *x, double *a, int T) {
    const int C = m->C, Q = m->H * m->HS, K = m->KV * m->HS;
    double *wq = layer_tensor(m, l, "self_attn.q_proj.weight", Q, C);
    double *wk = layer_tensor(m, l, "self_attn.k_proj.weight", K, C);
    double *wv = layer_tensor(m, l, "self_attn.v_proj.weight", K, C);
    double *wo = layer_tensor(m, l, "self_attn.o_proj.weight", C, Q);
    double *bq = m->bias ? layer_tensor(m, l, "self_attn.q_proj.bias", Q, 0) : NULL;
    double *bk = m->bias ? layer_tensor(m, l, "self_attn.k_proj.bias", K, 0) : NULL;
    double *bv = m->bias ? layer_tensor(m, l, "self_attn.v_proj.bias", K, 0) : NULL;
    double *bo = m->bias ? layer_tensor(m, l, "self_attn.o_proj.bias", C, 0) : NULL;
    double *norm = layer_tensor(m, l, "input_layernorm.weight", C, 0);
    double *q = malloc((size_t)T * Q * 8), *k = malloc((size_t)T * K * 8);
    double *v = malloc((size_t)T * K * 8), *y = malloc((size_t)T * Q * 8);
    double *o = malloc((size_t)T * C * 8);
    rmsnorm(a, x, norm, T, C, m->eps);
    linear(q, a, wq, bq, T, C, Q);
    linear(k, a, wk, bk, T, C, K);
    linear(v, a, wv, bv, T, C, K);
    rope(m, q, T, m->H);
    rope(m, k, T, m->KV);
    attention(m, y, q, k, v, T);
    linear(o, y, wo, bo, T, Q, C);
    for (int i = 0; i < T * C; i++) x[i] += o[i];
    double *owned[] = {wq, wk, wv, wo, bq, bk, bv, bo, norm, q, k, v, y, o};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
}

/* LlamaMLP: down(silu(gate(x)) * up(x)). */
static void mlp_block(const Llama *m, int l, double *x, double *a, int T) {
    const int C = m->C, F = m->F;
    double *wg = layer_tensor(m, l, m->gate_up_swapped ? "mlp.up_proj.weight" : "mlp.gate_proj.weight", F, C);
    double *wu = layer_tensor(m, l, m->gate_up_swapped ? "mlp.gate_proj.weight" : "mlp.up_proj.weight", F, C);
    double *wd = layer_tensor(m, l, "mlp.down_proj.weight", C, F);
    double *bg = m->bias ? layer_tensor(m, l, m->gate_up_swapped ? "mlp.up_proj.bias" : "mlp.gate_proj.bias", F, 0) : NULL;
    double *bu = m->bias ? layer_tensor(m, l, m->gate_up_swapped ? "mlp.gate_proj.bias" : "mlp.up_proj.bias", F, 0) : NULL;
    double *bd = m->bias ? layer_tensor(m, l, "mlp.down_proj.bias", C, 0) : NULL;
    double *norm = layer_tensor(m, l, "post_attention_layernorm.weight", C, 0);
    double *g = malloc((size_t)T * F * 8), *u = malloc((size_t)T * F * 8);
    double *o = malloc((size_t)T * C * 8);
    rmsnorm(a, x, norm, T, C, m->eps);
    linear(g, a, wg, bg, T, C, F);
    linear(u, a, wu, bu, T, C, F);
    for (int i = 0; i < T * F; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    linear(o, g, wd, bd, T, F, C);
    for (int i = 0; i < T * C; i++) x[i] += o[i];
    double *owned[] = {wg, wu, wd, bg, bu, bd, norm, g, u, o};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
}

/* MixtralSparseMoeBlock: router logits = gate(x); softmax over all
 * experts; the top K (torch.topk); those K weights renormalised to sum to
 * one (the misreading keeps the softmax's); the output is the sum of each
 * chosen expert's w2(silu(w1 x) * w3 x) times its weight. */
static void moe_block(const Llama *m, int l, double *x, double *a, int T) {
    const int C = m->C, F = m->F, E = m->E;
    double *norm = layer_tensor(m, l, "post_attention_layernorm.weight", C, 0);
    double *gate = layer_tensor(m, l, "block_sparse_moe.gate.weight", E, C);
    double *logits = malloc((size_t)T * E * 8), *p = malloc((size_t)E * 8);
    double *g = malloc((size_t)F * 8), *u = malloc((size_t)F * 8), *o = malloc((size_t)C * 8);
    double **w[3] = {0};
    for (int k = 0; k < 3; k++) w[k] = malloc((size_t)E * sizeof(double *));
    for (int e = 0; e < E; e++) { /* w1 and w3 [F, C], w2 [C, F] */
        char name[96];
        static const char *const NAMES[3] = {"w1", "w3", "w2"};
        for (int k = 0; k < 3; k++) {
            const int wanted = m->gate_up_swapped && k < 2 ? 1 - k : k;
            snprintf(name, sizeof name, "block_sparse_moe.experts.%d.%s.weight", e, NAMES[wanted]);
            w[k][e] = layer_tensor(m, l, name, k < 2 ? F : C, k < 2 ? C : F);
        }
    }
    rmsnorm(a, x, norm, T, C, m->eps);
    linear(logits, a, gate, NULL, T, C, E);
    for (int t = 0; t < T; t++) {
        const double *z = &logits[(size_t)t * E];
        double max = -INFINITY, sum = 0, chosen_sum = 0;
        for (int e = 0; e < E; e++) max = z[e] > max ? z[e] : max;
        for (int e = 0; e < E; e++) sum += (p[e] = exp(z[e] - max));
        for (int e = 0; e < E; e++) p[e] /= sum;
        int chosen[64];
        CHECK(m->K <= 64);
        for (int k = 0; k < m->K; k++) { /* the largest remaining, the lower index on ties */
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken = taken || chosen[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            chosen[k] = best;
            chosen_sum += p[best];
        }
        for (int k = 0; k < m->K; k++) {
            const int e = chosen[k];
            const double weight = m->unnormalised_routing ? p[e] : p[e] / chosen_sum;
            linear(g, &a[(size_t)t * C], w[0][e], NULL, 1, C, F);
            linear(u, &a[(size_t)t * C], w[1][e], NULL, 1, C, F);
            for (int f = 0; f < F; f++) g[f] = g[f] / (1.0 + exp(-g[f])) * u[f];
            linear(o, g, w[2][e], NULL, 1, F, C);
            for (int c = 0; c < C; c++) x[(size_t)t * C + c] += weight * o[c];
        }
    }
    for (int k = 0; k < 3; k++) {
        for (int e = 0; e < E; e++) free(w[k][e]);
        free(w[k]);
    }
    double *owned[] = {norm, gate, logits, p, g, u, o};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
}

static double llama_loss(const Llama *m, const int32_t *tokens, const int32_t *targets, int T) {
    const int C = m->C;
    double *embed = tensor(m, "model.embed_tokens.weight", m->V, C);
    double *head = m->tied ? embed : tensor(m, "lm_head.weight", m->V, C);
    double *norm = tensor(m, "model.norm.weight", C, 0);
    double *x = malloc((size_t)T * C * 8), *a = malloc((size_t)T * C * 8);
    for (int t = 0; t < T; t++) memcpy(&x[t * C], &embed[(size_t)tokens[t] * C], (size_t)C * 8);
    for (int l = 0; l < m->L; l++) {
        attention_block(m, l, x, a, T);
        if (m->E) moe_block(m, l, x, a, T);
        else mlp_block(m, l, x, a, T);
    }
    rmsnorm(a, x, norm, T, C, m->eps);
    double loss = 0, *logits = malloc((size_t)m->V * 8);
    for (int t = 0; t < T; t++) {
        double max = -INFINITY, sum = 0;
        for (int v = 0; v < m->V; v++) {
            double acc = 0;
            for (int c = 0; c < C; c++) acc += a[t * C + c] * head[(size_t)v * C + c];
            logits[v] = acc;
            if (acc > max) max = acc;
        }
        for (int v = 0; v < m->V; v++) sum += exp(logits[v] - max);
        loss += max + log(sum) - logits[targets[t]];
    }
    free(logits), free(x), free(a), free(norm), free(embed);
    if (!m->tied) free(head);
    return loss / T;
}

/* Llama's tensors: 9 per layer (+7 biases), embedding, norm, untied head;
 * Mixtral's layers: 4 attention, 2 norms, the router, 3 per expert. */
static int expected_tensors(const Llama *m) {
    const int layer = m->E ? 7 + 3 * m->E : 9 + (m->bias ? 7 : 0);
    return m->L * layer + 2 + (m->tied ? 0 : 1);
}

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void check_forward(const char *ckpt, const char *hf_dir) {
    Llama m = {0};
    read_llama_config(hf_dir, &m);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", hf_dir);
    m.file = calloc(1, sizeof *m.file);
    tf_read(m.file, path);
    CHECK_MSG(m.file->count == expected_tensors(&m), "%s holds %d tensors, the model has %d",
              path, m.file->count, expected_tensors(&m));
    const int T = 12;
    int32_t tokens[12], targets[12];
    uint64_t s = 7;
    for (int t = 0; t < T; t++) {
        tokens[t] = (int32_t)(lcg(&s) % (uint64_t)m.V);
        targets[t] = (int32_t)(lcg(&s) % (uint64_t)m.V);
    }
    const double ours = gpt3d_loss(ckpt, tokens, targets, T), ref = llama_loss(&m, tokens, targets, T);
    m.interleaved_rope = true;
    const double interleaved = llama_loss(&m, tokens, targets, T);
    m.interleaved_rope = false, m.kv_modulo = m.KV > 1 && m.KV < m.H;
    const double modulo = m.kv_modulo ? llama_loss(&m, tokens, targets, T) : NAN;
    m.kv_modulo = false, m.gate_up_swapped = true;
    const double swapped = llama_loss(&m, tokens, targets, T);
    /* Choosing every expert, the weights sum to one either way. */
    m.gate_up_swapped = false, m.unnormalised_routing = m.K < m.E;
    const double unnormalised = m.K < m.E ? llama_loss(&m, tokens, targets, T) : NAN;
    printf("mean loss over %d positions: gpt3d %.9f, reference %.9f (misread: interleaved RoPE "
           "%.6f, query groups %.6f, gate/up %.6f, routing not renormalised %.6f)\n",
           T, ours, ref, interleaved, modulo, swapped, unnormalised);
    CHECK_MSG(isfinite(ours) && isfinite(ref) && fabs(ours - ref) <= 1e-6 * fabs(ref),
              "gpt3d and the reference disagree");
    CHECK_MSG(fabs(interleaved - ref) > 1e-3, "the check cannot tell RoPE's pairings apart");
    /* With one group or one head per group both readings are the same. */
    if (m.KV > 1 && m.KV < m.H)
        CHECK_MSG(fabs(modulo - ref) > 1e-3, "the check cannot tell query groupings apart");
    CHECK_MSG(fabs(swapped - ref) > 1e-3, "the check cannot tell gate from up");
    if (m.K < m.E)
        CHECK_MSG(fabs(unnormalised - ref) > 1e-3, "the check cannot tell the routing weights");
    tf_free(m.file);
    free(m.file);
}

/* ------------------------------------------------------ file variants */

static void copy_file(const char *from, const char *to) {
    size_t size;
    unsigned char *data = tf_slurp(from, &size);
    tf_spit(to, data, size);
    free(data);
}

static void make_shards(const char *src, const char *dst) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    TfFile *f = calloc(1, sizeof *f);
    tf_read(f, path);
    CHECK(mkdir(dst, 0755) == 0);
    const int half = f->count / 2;
    const char *names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    cJSON *index = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(index, "weight_map");
    cJSON_AddObjectToObject(index, "metadata");
    for (int s = 0; s < 2; s++) {
        const int begin = s ? half : 0, end = s ? f->count : half;
        snprintf(path, sizeof path, "%s/%s", dst, names[s]);
        tf_write(path, f->tensors + begin, end - begin);
        for (int i = begin; i < end; i++) cJSON_AddStringToObject(map, f->tensors[i].name, names[s]);
    }
    char *text = cJSON_Print(index);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dst);
    tf_spit(path, text, strlen(text));
    free(text);
    cJSON_Delete(index);
    char from[4096];
    snprintf(from, sizeof from, "%s/config.json", src);
    snprintf(path, sizeof path, "%s/config.json", dst);
    copy_file(from, path);
    tf_free(f);
    free(f);
}

static void edit_config(const char *src, const char *dst, const char *key, const char *json) {
    cJSON *root = read_config(src);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (strcmp(json, "delete")) {
        cJSON *value = cJSON_Parse(json);
        CHECK_MSG(value != NULL, "not JSON: %s", json);
        cJSON_AddItemToObject(root, key, value);
    }
    CHECK(mkdir(dst, 0755) == 0);
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/model.safetensors", src);
    snprintf(to, sizeof to, "%s/model.safetensors", dst);
    copy_file(from, to);
    char *text = cJSON_Print(root);
    snprintf(to, sizeof to, "%s/config.json", dst);
    tf_spit(to, text, strlen(text));
    free(text);
    cJSON_Delete(root);
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "random") && (argc == 14 || argc == 17)) write_random(argv + 2);
    else if (!strcmp(cmd, "forward") && argc == 4) check_forward(argv[2], argv[3]);
    else if (!strcmp(cmd, "shard") && argc == 4) make_shards(argv[2], argv[3]);
    else if (!strcmp(cmd, "edit-config") && argc == 6) edit_config(argv[2], argv[3], argv[4], argv[5]);
    else {
        fprintf(stderr, "usage: test_interop_llama random DIR L C H NG HS F V P SEED TIED BIAS "
                        "[E K FM] | "
                        "forward CKPT HFDIR | shard SRC DST | edit-config SRC DST KEY JSON\n");
        return 2;
    }
    return 0;
}
