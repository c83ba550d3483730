/* Mixture of experts on the CPU backend (issue 19): the router's and the
 * combine's gradients against central differences, the load-balancing and
 * z-losses against their formulas on a model's own router logits, the
 * dropped tokens against a direct count (the load-balancing loss per
 * micro-batch and per sequence), a whole MoE model's gradient
 * (routed, shared and router weights, through the aux and z-losses)
 * against central differences, and the parameter table of MoE layers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/rng.h"
#include "model/gpt_model.h"
#include "model/gpt_model_internal.h"
#include "test_util.h"

static Backend *cpu(void) {
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK_MSG(be != NULL, "%s", err);
    return be;
}

static float uniform(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*state >> 40) & 0xffffff) / (float)0x1000000 - 0.5f;
}

/* Router logits whose values in a row are at least 0.05 apart (a shuffled
 * grid plus a small jitter), so a difference step cannot change the top-k. */
static void separated_logits(float *x, int R, int E, uint64_t seed) {
    uint64_t s = seed;
    for (int r = 0; r < R; r++) {
        for (int e = 0; e < E; e++) x[r * E + e] = 0.1f * (float)e - 0.05f * (float)E;
        for (int e = E - 1; e > 0; e--) { /* Fisher-Yates */
            const int j = (int)((uniform(&s) + 0.5f) * (float)(e + 1)) % (e + 1);
            const float t = x[r * E + e];
            x[r * E + e] = x[r * E + j];
            x[r * E + j] = t;
        }
        for (int e = 0; e < E; e++) x[r * E + e] = 3.0f * x[r * E + e] + 0.01f * uniform(&s);
    }
}

typedef struct {
    int R, E, K;
    bool sigmoid, pre_softmax;
} RouterCase;

/* The objective whose gradient moe_router_backward gives: sum w * probs +
 * sum_e aux_grad_e * stats_e + z_grad * stats_E. */
static double router_objective(Backend *be, const RouterCase *c, const float *logits,
                               const float *w, const float *aux_grad, float z_grad) {
    int32_t *ids = malloc((size_t)c->R * c->K * sizeof *ids);
    float *probs = malloc((size_t)c->R * c->K * sizeof *probs);
    float *stats = malloc((size_t)(c->E + 1) * sizeof *stats);
    be->ops->moe_router_forward(be, ids, probs, stats, logits, c->R, c->E, c->K, c->sigmoid,
                                c->pre_softmax);
    double f = 0.0;
    for (int i = 0; i < c->R * c->K; i++) f += (double)w[i] * probs[i];
    for (int e = 0; e < c->E; e++) f += (double)aux_grad[e] * stats[e];
    f += (double)z_grad * stats[c->E];
    free(ids);
    free(probs);
    free(stats);
    return f;
}

static void test_router_gradient(const RouterCase *c, const char *what) {
    Backend *be = cpu();
    const int R = c->R, E = c->E, K = c->K;
    float *x = malloc((size_t)R * E * sizeof *x), *g = malloc((size_t)R * E * sizeof *g);
    float *w = malloc((size_t)R * K * sizeof *w), aux[64];
    int32_t *ids = malloc((size_t)R * K * sizeof *ids);
    float *probs = malloc((size_t)R * K * sizeof *probs), stats[65];
    separated_logits(x, R, E, 17 + (uint64_t)E * 3 + (uint64_t)K);
    uint64_t s = 5;
    for (int i = 0; i < R * K; i++) w[i] = uniform(&s);
    for (int e = 0; e < E; e++) aux[e] = uniform(&s);
    const float z = 0.3f;
    be->ops->moe_router_forward(be, ids, probs, stats, x, R, E, K, c->sigmoid, c->pre_softmax);
    /* The choices: the K largest logits, best first, and probabilities
     * that sum to one (softmax, or sigmoid with K > 1). */
    for (int r = 0; r < R; r++) {
        for (int k = 0; k + 1 < K; k++) CHECK(x[r * E + ids[r * K + k]] > x[r * E + ids[r * K + k + 1]]);
        int above = 0;
        for (int e = 0; e < E; e++) above += x[r * E + e] > x[r * E + ids[r * K + K - 1]];
        CHECK(above == K - 1);
        double sum = 0;
        for (int k = 0; k < K; k++) sum += probs[r * K + k];
        if (!c->pre_softmax && (!c->sigmoid || K > 1)) CHECK_MSG(fabs(sum - 1.0) < 1e-6, "%s: probs sum %.9f", what, sum);
    }
    be->ops->moe_router_backward(be, g, w, x, ids, probs, aux, z, R, E, K, c->sigmoid,
                                 c->pre_softmax);
    double num2 = 0, diff2 = 0;
    for (int i = 0; i < R * E; i++) {
        const float saved = x[i], h = 1e-2f;
        x[i] = saved + h;
        const double up = router_objective(be, c, x, w, aux, z);
        x[i] = saved - h;
        const double down = router_objective(be, c, x, w, aux, z);
        x[i] = saved;
        const double numeric = (up - down) / (2.0 * h);
        num2 += numeric * numeric;
        diff2 += (numeric - g[i]) * (numeric - g[i]);
    }
    const double rel = sqrt(diff2 / (num2 + 1e-30));
    CHECK_MSG(num2 > 1e-6 && rel < 1e-3, "%s: router gradient relative error %g", what, rel);
    printf("router gradient (%s): relative error %.2e\n", what, rel);
    free(x), free(g), free(w), free(ids), free(probs);
    backend_destroy(be);
}

/* A tie goes to the lower expert index. */
static void test_router_ties(void) {
    Backend *be = cpu();
    const float x[2 * 4] = {1, 2, 2, 0, 5, 5, 5, 5};
    int32_t ids[4];
    float probs[4], stats[5];
    be->ops->moe_router_forward(be, ids, probs, stats, x, 2, 4, 2, false, false);
    CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == 0 && ids[3] == 1);
    CHECK(probs[0] == 0.5f && probs[1] == 0.5f);
    backend_destroy(be);
}

/* The combine against its definition and its backward against central
 * differences of sum(dout * out); the dispatch as a row gather. */
static void test_combine(void) {
    Backend *be = cpu();
    enum { N = 5, K = 2, P = 8, C = 3 };
    const int32_t slot[N * K] = {0, 4, 1, -1, 2, 5, 3, 6, -1, 7};
    const int32_t rows[P] = {0, 1, 2, 3, 0, 2, 3, 4};
    float in[N * C], eo[P * C], probs[N * K], dout[N * C], out[N * C], d_eo[P * C], dprobs[N * K];
    uint64_t s = 9;
    for (int i = 0; i < N * C; i++) in[i] = uniform(&s), dout[i] = uniform(&s);
    for (int i = 0; i < P * C; i++) eo[i] = uniform(&s);
    for (int i = 0; i < N * K; i++) probs[i] = uniform(&s) + 0.5f;
    float gathered[P * C];
    const int32_t pad_rows[P] = {0, -1, 2, 3, 0, 2, 3, 4};
    be->ops->moe_gather_rows(be, gathered, in, pad_rows, P, C);
    for (int p = 0; p < P; p++)
        for (int c = 0; c < C; c++)
            CHECK(gathered[p * C + c] == (pad_rows[p] < 0 ? 0.0f : in[pad_rows[p] * C + c]));
    (void)rows;
    be->ops->moe_combine_forward(be, out, eo, probs, slot, N, K, C, false);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float want = 0;
            for (int k = 0; k < K; k++)
                if (slot[n * K + k] >= 0) want += probs[n * K + k] * eo[slot[n * K + k] * C + c];
            CHECK(fabsf(out[n * C + c] - want) < 1e-6f);
        }
    float again[N * C];
    memcpy(again, out, sizeof again);
    be->ops->moe_combine_forward(be, again, eo, probs, slot, N, K, C, true); /* accumulate */
    for (int i = 0; i < N * C; i++) CHECK(fabsf(again[i] - 2 * out[i]) < 1e-6f);
    be->ops->moe_combine_backward(be, d_eo, dprobs, dout, eo, probs, slot, N, K, P, C);
    double worst = 0;
    for (int which = 0; which < 2; which++) {
        float *x = which ? probs : eo;
        const float *g = which ? dprobs : d_eo;
        const int n = which ? N * K : P * C;
        for (int i = 0; i < n; i++) {
            const float saved = x[i], h = 1e-2f;
            double f[2];
            for (int side = 0; side < 2; side++) {
                x[i] = saved + (side ? -h : h);
                be->ops->moe_combine_forward(be, out, eo, probs, slot, N, K, C, false);
                f[side] = 0;
                for (int j = 0; j < N * C; j++) f[side] += (double)dout[j] * out[j];
            }
            x[i] = saved;
            const double err = fabs((f[0] - f[1]) / (2.0 * h) - g[i]);
            if (err > worst) worst = err;
        }
    }
    CHECK_MSG(worst < 1e-4, "combine gradient error %g", worst);
    for (int k = 0; k < N * K; k++)
        if (slot[k] < 0) CHECK(dprobs[k] == 0.0f);
    printf("combine: definition, accumulation, gradient (max error %.1e), gather with padding\n",
           worst);
    backend_destroy(be);
}

/* ---- a whole MoE model ---- */

static TransformerConfig moe_config(uint64_t seed) {
    TransformerConfig c = {.num_layers = 2,
                           .hidden_size = 8,
                           .num_attention_heads = 2,
                           .ffn_hidden_size = 12,
                           .vocab_size = 13,
                           .max_position_embeddings = 6,
                           .seq_length = 6,
                           .init_method_std = 0.5,
                           .seed = seed};
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 8);
    transformer_config_set_gpt2_variant(&c);
    c.position_embedding_type = POSITION_ROPE;
    c.normalization = NORM_RMSNORM;
    c.activation = ACTIVATION_SWIGLU;
    c.add_bias_linear = false;
    c.num_experts = 4;
    c.moe_router_topk = 2;
    c.moe_ffn_hidden_size = 6;
    c.moe_shared_expert_intermediate_size = 4;
    c.moe_load_balancing = MOE_BALANCE_AUX_LOSS;
    c.moe_aux_loss_coeff = 4.0; /* large: their gradients must show in the router's */
    c.moe_z_loss_coeff = 0.4;
    return c;
}

enum { MB = 3 }; /* sequences per micro-batch */

typedef struct {
    Backend *be;
    GPTModel *m;
    int32_t tok[MB * 6], tgt[MB * 6];
} MoEModel;

static void model_open(MoEModel *x, const TransformerConfig *c) {
    const ModelPartition whole = {.tp_size = 1, .num_local_layers = c->num_layers,
                                  .has_embedding = true, .has_head = true};
    x->be = cpu();
    x->m = gpt_model_create(x->be, c, &whole, MB, NULL, NULL, 1);
    gpt_model_init_params(x->m, NULL, 0);
    gpt_model_set_step(x->m, 0, true); /* training: the MoE losses are counted */
    for (int i = 0; i < MB * c->seq_length; i++) {
        x->tok[i] = (i * 7 + 3) % (int)c->vocab_size;
        x->tgt[i] = (i * 5 + 1) % (int)c->vocab_size;
    }
}

static void model_close(MoEModel *x) {
    gpt_model_free(x->m);
    backend_destroy(x->be);
}

/* The objective: the summed LM loss plus each MoE layer's aux and z-loss
 * (weight 1, the model's default). */
static double objective(MoEModel *x, double *moe) {
    double stats[3];
    gpt_model_take_moe_stats(x->m, stats);
    const double lm = gpt_model_forward(x->m, x->tok, x->tgt);
    gpt_model_take_moe_stats(x->m, stats);
    if (moe) memcpy(moe, stats, sizeof stats);
    return lm + stats[0] + stats[1];
}

/* The routing of every layer of the last forward, to notice a difference
 * step that changed it (the objective is piecewise smooth). */
static void routing_of(MoEModel *x, int32_t *out) {
    const GPTModel *m = x->m;
    const int NK = m->B * m->T * m->cfg.moe_router_topk;
    for (int l = 0; l < m->part.num_local_layers; l++) {
        memcpy(out + 2 * l * NK, m->slots[0].la[l].moe.expert_ids, (size_t)NK * sizeof *out);
        memcpy(out + (2 * l + 1) * NK, m->slots[0].la[l].moe.slot_of, (size_t)NK * sizeof *out);
    }
}

static void check_moe_gradient(const TransformerConfig *c, const char *const *names, int count,
                               const char *what) {
    MoEModel x;
    model_open(&x, c);
    GPTModel *m = x.m;
    const ParamTable *t = gpt_model_params(m);
    float *params = gpt_model_param_buffer(m);
    for (int i = 0; i < t->count; i++) /* norms away from one */
        if (t->params[i].init != PARAM_INIT_NORMAL)
            for (int64_t e = 0; e < t->params[i].local_numel; e++)
                params[t->params[i].offset + e] += 0.2f * sinf((float)(3 * i + e));
    gpt_model_zero_grad(m);
    objective(&x, NULL);
    const size_t route_n = (size_t)2 * c->num_layers * MB * c->seq_length * c->moe_router_topk;
    int32_t *base = malloc(route_n * sizeof *base), *now = malloc(route_n * sizeof *now);
    routing_of(&x, base);
    gpt_model_backward(m, 1.0f);
    const float *grads = gpt_model_grad_buffer(m);
    int skipped = 0, used = 0;
    double worst = 0;
    for (int k = 0; k < count; k++) {
        const int index = param_table_find(t, names[k]);
        CHECK_MSG(index >= 0, "%s: no parameter %s", what, names[k]);
        const ParamInfo *p = &t->params[index];
        double num2 = 0, diff2 = 0;
        for (int64_t e = 0; e < p->local_numel; e += 1 + p->local_numel / 24) {
            float *w = params + p->offset + e;
            const float saved = *w, h = 2e-3f;
            *w = saved + h;
            const double up = objective(&x, NULL);
            routing_of(&x, now);
            bool same = !memcmp(now, base, route_n * sizeof *now);
            *w = saved - h;
            const double down = objective(&x, NULL);
            routing_of(&x, now);
            same = same && !memcmp(now, base, route_n * sizeof *now);
            *w = saved;
            if (!same) { /* a kink of the routing between the two points */
                skipped++;
                continue;
            }
            used++;
            const double numeric = (up - down) / (2.0 * h), analytic = grads[p->offset + e];
            num2 += numeric * numeric;
            diff2 += (numeric - analytic) * (numeric - analytic);
        }
        const double rel = sqrt(diff2 / (num2 + 1e-30));
        if (rel > worst) worst = rel;
        CHECK_MSG(num2 > 1e-10, "%s: %s gradient unexpectedly ~0", what, names[k]);
        CHECK_MSG(rel < 5e-3, "%s: %s relative gradient error %g", what, names[k], rel);
    }
    CHECK_MSG(skipped * 10 <= used, "%s: %d of %d points changed the routing", what, skipped,
              skipped + used);
    printf("whole MoE model gradient (%s): worst relative error %.2e (%d points, %d skipped at a "
           "routing change)\n",
           what, worst, used, skipped);
    free(base);
    free(now);
    model_close(&x);
}

static void test_moe_model_gradients(void) {
    const char *const names[] = {"decoder.layers.0.mlp.router.weight",
                                 "decoder.layers.1.mlp.router.weight",
                                 "decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.weight",
                                 "decoder.layers.0.mlp.experts.local_experts.3.linear_fc2.weight",
                                 "decoder.layers.1.mlp.experts.local_experts.2.linear_fc1.weight",
                                 "decoder.layers.0.mlp.shared_experts.linear_fc1.weight",
                                 "decoder.layers.1.mlp.shared_experts.linear_fc2.weight",
                                 "decoder.layers.0.pre_mlp_layernorm.weight",
                                 "decoder.layers.0.self_attention.linear_qkv.weight",
                                 "embedding.word_embeddings.weight"};
    const int all = (int)(sizeof names / sizeof *names);
    TransformerConfig c = moe_config(11);
    check_moe_gradient(&c, names, all, "softmax top-2, shared expert, aux + z");
    c.moe_router_pre_softmax = true;
    check_moe_gradient(&c, names, 5, "pre-softmax");
    c = moe_config(12);
    c.moe_router_score_function = MOE_SCORE_SIGMOID;
    c.moe_router_topk = 1;
    c.moe_shared_expert_intermediate_size = 0;
    check_moe_gradient(&c, names, 5, "sigmoid top-1");
    c.moe_router_topk = 3;
    check_moe_gradient(&c, names, 5, "sigmoid top-3");
    c = moe_config(14);
    c.moe_load_balancing = MOE_BALANCE_SEQ_AUX_LOSS;
    check_moe_gradient(&c, names, 2, "sequence-level aux loss");
    c = moe_config(13);
    c.moe_expert_capacity_factor = 0.75;
    check_moe_gradient(&c, names, 5, "capacity 0.75, tokens dropped");
    c.moe_token_drop_policy = MOE_DROP_POSITION;
    c.moe_pad_expert_input_to_capacity = true;
    check_moe_gradient(&c, names, 5, "capacity 0.75, position policy, padded");
}

/* The aux and z-losses and the dropped tokens of a forward against their
 * formulas, from each layer's own router logits: aux = coeff E / (K T^2)
 * sum_e count_e sum_t softmax_t,e; z = coeff_z mean_t lse_t^2; an expert
 * over its capacity ceil(factor T K / E) drops the difference. */
static void test_losses_and_drops(bool sigmoid, bool per_sequence) {
    TransformerConfig c = moe_config(21);
    c.moe_router_score_function = sigmoid ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX;
    c.moe_expert_capacity_factor = 0.6;
    if (per_sequence) c.moe_load_balancing = MOE_BALANCE_SEQ_AUX_LOSS;
    MoEModel x;
    model_open(&x, &c);
    double moe[3];
    objective(&x, moe);
    const int E = c.num_experts, K = c.moe_router_topk, S = c.seq_length, T = MB * S;
    const int cap = (int)ceil(0.6 * T * K / E);
    /* Balance slots: the micro-batch, or each sequence (the loss their mean). */
    const int slots = per_sequence ? MB : 1, slot_len = T / slots;
    double aux = 0, z = 0;
    int64_t dropped = 0;
    for (int l = 0; l < c.num_layers; l++) {
        const float *logits = x.m->slots[0].la[l].moe.logits;
        double total[8] = {0};
        for (int b = 0; b < slots; b++) {
            double counts[8] = {0}, scores[8] = {0};
            for (int t = b * slot_len; t < (b + 1) * slot_len; t++) {
                const float *row = logits + t * E;
                double mx = row[0], sum = 0, ssum = 0;
                for (int e = 1; e < E; e++) mx = row[e] > mx ? row[e] : mx;
                for (int e = 0; e < E; e++) sum += exp(row[e] - mx), ssum += 1 / (1 + exp(-row[e]));
                for (int e = 0; e < E; e++) {
                    int rank = 0; /* how many beat expert e (ties to the lower index) */
                    for (int j = 0; j < E; j++) rank += row[j] > row[e] || (row[j] == row[e] && j < e);
                    if (rank < K) counts[e] += 1;
                    scores[e] += sigmoid ? 1 / (1 + exp(-row[e])) / (ssum + 1e-20)
                                         : exp(row[e] - mx) / sum;
                }
                const double lse = mx + log(sum);
                z += c.moe_z_loss_coeff * lse * lse / T;
            }
            double dot = 0;
            for (int e = 0; e < E; e++) dot += counts[e] * scores[e], total[e] += counts[e];
            aux += c.moe_aux_loss_coeff * E / ((double)K * slot_len * slot_len) * dot / slots;
        }
        for (int e = 0; e < E; e++) dropped += total[e] > cap ? (int64_t)total[e] - cap : 0;
    }
    CHECK_MSG(fabs(moe[0] - aux) <= 1e-6 * aux, "aux loss %.9g, formula %.9g", moe[0], aux);
    CHECK_MSG(fabs(moe[1] - z) <= 1e-6 * z, "z-loss %.9g, formula %.9g", moe[1], z);
    CHECK_MSG(moe[2] == (double)dropped && dropped > 0, "dropped %.0f, counted %lld", moe[2],
              (long long)dropped);
    /* The probs policy kept each full expert's most probable choices. */
    const MoEActs *a = &x.m->slots[0].la[0].moe;
    for (int e = 0; e < E; e++) {
        float kept_min = INFINITY, dropped_max = -INFINITY;
        for (int i = 0; i < T * K; i++) {
            if (a->expert_ids[i] != e) continue;
            if (a->slot_of[i] >= 0) kept_min = fminf(kept_min, a->probs[i]);
            else dropped_max = fmaxf(dropped_max, a->probs[i]);
        }
        CHECK(kept_min >= dropped_max);
    }
    printf("losses and drops (%s%s): aux %.6g, z %.6g, %lld dropped, as the formulas\n",
           sigmoid ? "sigmoid" : "softmax", per_sequence ? ", per sequence" : "", aux, z,
           (long long)dropped);
    model_close(&x);
}

/* ---- the parameter table ---- */

static void test_moe_table(void) {
    TransformerConfig c = moe_config(1);
    c.num_layers = 3;
    c.moe_layer_freq = 2; /* layers 0 and 2 */
    const ModelPartition whole = {.tp_size = 2, .tp_rank = 1, .num_local_layers = 3,
                                  .has_embedding = true, .has_head = true};
    ParamTable t;
    param_table_build(&t, &c, &whole);
    int64_t canonical = 0;
    for (int i = 0; i < t.count; i++) canonical += t.params[i].canonical_numel;
    CHECK(canonical == gpt_canonical_param_count(&c));
    CHECK(param_table_find(&t, "decoder.layers.1.mlp.linear_fc1.weight") >= 0);
    CHECK(param_table_find(&t, "decoder.layers.1.mlp.router.weight") < 0);
    CHECK(param_table_find(&t, "decoder.layers.2.mlp.linear_fc1.weight") < 0);
    const int router = param_table_find(&t, "decoder.layers.2.mlp.router.weight");
    CHECK(router >= 0 && t.params[router].shape[0] == 4 && t.params[router].shape[1] == 8);
    CHECK(!t.params[router].tensor_parallel_split && t.params[router].weight_decay);
    const int fc1 = param_table_find(&t, "decoder.layers.0.mlp.experts.local_experts.3.linear_fc1.weight");
    CHECK(fc1 >= 0 && t.params[fc1].ndim == 3 && t.params[fc1].shape[0] == 6);
    CHECK(t.params[fc1].tensor_parallel_split && t.params[fc1].local_numel == 3 * 2 * 8);
    CHECK(t.params[fc1].local_begin == t.params[fc1].local_numel); /* TP rank 1's half */
    const int fc2 = param_table_find(&t, "decoder.layers.0.mlp.experts.local_experts.0.linear_fc2.weight");
    CHECK(fc2 >= 0 && t.params[fc2].shape[0] == 6 && t.params[fc2].shape[1] == 8);
    CHECK(fc2 > fc1); /* reverse order of use: the last expert first */
    CHECK(param_table_find(&t, "decoder.layers.0.mlp.shared_experts.linear_fc2.weight") >= 0);
    CHECK(gpt_layer_param_count(&c, 0) == 2 + 2 + 1 + 2 * 4 + 2);
    CHECK(gpt_layer_param_count(&c, 1) == 2 + 2 + 2);
    param_table_free(&t);
    printf("MoE parameter table: names, shapes, TP shares, counts\n");
}

int main(void) {
    const RouterCase cases[] = {{7, 4, 2, false, false}, {7, 6, 3, false, true},
                                {7, 5, 1, true, false},  {7, 8, 3, true, false},
                                {5, 3, 1, false, false}};
    const char *const what[] = {"softmax top-2", "pre-softmax top-3", "sigmoid top-1",
                                "sigmoid top-3", "softmax top-1"};
    for (int i = 0; i < 5; i++) test_router_gradient(&cases[i], what[i]);
    test_router_ties();
    test_combine();
    test_losses_and_drops(false, false);
    test_losses_and_drops(true, false);
    test_losses_and_drops(false, true);
    test_losses_and_drops(true, true);
    test_moe_model_gradients();
    test_moe_table();
    printf("test_moe: ok\n");
    return 0;
}
