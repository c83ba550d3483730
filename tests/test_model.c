/* GPT model on the CPU backend: parameter table, counter-based init, and a
 * whole-model gradient check against central finite differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "core/rng.h"
#include "data/data.h"
#include "model/gpt_model.h"
#include "test_util.h"

static TransformerConfig tiny_config(uint64_t seed) {
    TransformerConfig c = {.num_layers = 2,
                   .hidden_size = 8,
                   .num_attention_heads = 2,
                   .ffn_hidden_size = 12,
                   .vocab_size = 13,
                   .max_position_embeddings = 6,
                   .seq_length = 5,
                   .init_method_std = 0.3,
                   .seed = seed};
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 8);
    transformer_config_set_gpt2_variant(&c);
    return c;
}

static const ModelPartition WHOLE = {.tp_size = 1, .tp_rank = 0, .first_layer = 0,
                                     .num_local_layers = 2, .has_embedding = true,
                                     .has_head = true};

static void test_param_table(void) {
    TransformerConfig c = tiny_config(1);
    ParamTable t;
    param_table_build(&t, &c, &WHOLE);
    CHECK(t.count == 2 + 2 * 12 + 2);
    /* Gradients become ready from the head backwards: final layernorm first,
     * word embedding last. */
    CHECK(!strcmp(t.params[0].name, "decoder.final_layernorm.bias"));
    CHECK(!strcmp(t.params[t.count - 1].name, "embedding.word_embeddings.weight"));
    int qkv = param_table_find(&t, "decoder.layers.1.self_attention.linear_qkv.weight");
    CHECK(qkv >= 0 && t.params[qkv].ndim == 4 && t.params[qkv].shape[0] == 2 &&
          t.params[qkv].shape[1] == 3 && t.params[qkv].shape[2] == 4 && t.params[qkv].shape[3] == 8);
    int wte = param_table_find(&t, "embedding.word_embeddings.weight");
    CHECK(t.params[wte].shape[0] == 16 && t.params[wte].weight_decay);
    CHECK(!t.params[param_table_find(&t, "decoder.layers.0.mlp.linear_fc1.bias")].weight_decay);
    int64_t total = 0;
    for (int i = 0; i < t.count; i++) {
        total += t.params[i].canonical_numel;
        CHECK(t.params[i].offset % 64 == 0);
        if (i) CHECK(t.params[i].offset >= t.params[i - 1].offset + (size_t)t.params[i - 1].local_numel);
    }
    CHECK(total == gpt_canonical_param_count(&c));

    /* A TP=2 rank holds one contiguous half of every split parameter. */
    ModelPartition half = WHOLE;
    half.tp_size = 2;
    half.tp_rank = 1;
    ParamTable h;
    param_table_build(&h, &c, &half);
    int hq = param_table_find(&h, "decoder.layers.1.self_attention.linear_qkv.weight");
    CHECK(h.params[hq].local_numel == t.params[qkv].canonical_numel / 2);
    CHECK(h.params[hq].local_begin == h.params[hq].local_numel);
    int hl = param_table_find(&h, "decoder.layers.1.input_layernorm.weight");
    CHECK(h.params[hl].local_numel == 8 && h.params[hl].local_begin == 0);
    param_table_free(&h);
    param_table_free(&t);
}

static void test_init(void) {
    TransformerConfig c = tiny_config(7);
    c.hidden_size = 64;
    c.num_attention_heads = 4;
    c.ffn_hidden_size = 256;
    c.num_layers = 4;
    c.init_method_std = 0.02;
    ParamTable t;
    ModelPartition part = WHOLE;
    part.num_local_layers = 4;
    param_table_build(&t, &c, &part);
    for (int i = 0; i < t.count; i++) {
        const ParamInfo *p = &t.params[i];
        float *a = xmalloc((size_t)p->local_numel * sizeof(float));
        float *b = xmalloc((size_t)p->local_numel * sizeof(float));
        param_init_values(p, 7, a);
        param_init_values(p, 7, b);
        CHECK(memcmp(a, b, (size_t)p->local_numel * sizeof(float)) == 0);
        double mean = 0, sq = 0;
        for (int64_t k = 0; k < p->local_numel; k++) {
            mean += a[k];
            sq += (double)a[k] * a[k];
        }
        mean /= (double)p->local_numel;
        double std = sqrt(sq / (double)p->local_numel - mean * mean);
        const char *n = p->name;
        size_t len = strlen(n);
        if (len > 5 && !strcmp(n + len - 5, ".bias")) {
            CHECK_MSG(mean == 0 && std == 0, "%s", n);
        } else if (strstr(n, "layernorm")) {
            CHECK_MSG(mean == 1 && std == 0, "%s", n);
        } else {
            double want = 0.02;
            if (strstr(n, "linear_proj") || strstr(n, "linear_fc2")) want = 0.02 / sqrt(2.0 * 4);
            double se = want / sqrt((double)p->local_numel);
            CHECK_MSG(fabs(mean) < 5 * se, "%s mean %g", n, mean);
            CHECK_MSG(fabs(std / want - 1) < 0.05 + 5 / sqrt((double)p->local_numel), "%s std %g want %g", n, std, want);
            /* Another seed gives other values. */
            param_init_values(p, 8, b);
            CHECK(memcmp(a, b, (size_t)p->local_numel * sizeof(float)) != 0);
        }
        free(a);
        free(b);
    }
    /* The TP=2 shard of a parameter equals the same slice of the whole. */
    ModelPartition half = part;
    half.tp_size = 2;
    half.tp_rank = 1;
    ParamTable h;
    param_table_build(&h, &c, &half);
    const char *name = "decoder.layers.2.mlp.linear_fc1.weight";
    const ParamInfo *pw = &t.params[param_table_find(&t, name)];
    const ParamInfo *ph = &h.params[param_table_find(&h, name)];
    float *whole = xmalloc((size_t)pw->local_numel * sizeof(float));
    float *shard = xmalloc((size_t)ph->local_numel * sizeof(float));
    param_init_values(pw, 7, whole);
    param_init_values(ph, 7, shard);
    CHECK(memcmp(whole + ph->local_begin, shard, (size_t)ph->local_numel * sizeof(float)) == 0);
    free(whole);
    free(shard);
    param_table_free(&h);
    param_table_free(&t);
}

/* Loss of the model on a fixed batch, in double (sum over tokens). */
static double batch_loss(GPTModel *m, const int32_t *tok, const int32_t *tgt) {
    return gpt_model_forward(m, tok, tgt);
}

/* Every element of a few parameters of each kind against central
 * differences of the summed loss. The constant-initialised ones (norms,
 * biases) are offset first, so a weight of one or a bias of zero hides
 * nothing. */
static void check_model_gradient_docs(const TransformerConfig *cfg, const char *const *names,
                                      size_t count, const char *what, const DocumentMasking *docs) {
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be);
    const TransformerConfig c = *cfg;
    const int B = 2, T = c.seq_length, N = B * T;
    GPTModel *m = gpt_model_create(be, &c, &WHOLE, B, NULL, NULL, 1);
    gpt_model_init_params(m, NULL, 0);
    int32_t tok[10], tgt[10], position_ids[10], key_start[10];
    for (int i = 0; i < N; i++) {
        tok[i] = (i * 7 + 3) % (int)c.vocab_size;
        tgt[i] = (i * 5 + 1) % (int)c.vocab_size;
    }
    if (docs) { /* documents end at positions 1 and 3 of sequence 0, and 2 of sequence 1 */
        tok[1] = tok[3] = tok[T + 2] = (int32_t)docs->eod_token;
        for (int b = 0; b < B; b++)
            document_masks_apply(docs, tok + b * T, tgt + b * T, T, position_ids + b * T,
                                 key_start + b * T);
        gpt_model_set_documents(m, 0, docs->reset_position_ids ? position_ids : NULL,
                                docs->reset_attention_mask ? key_start : NULL);
    }
    const ParamTable *t = gpt_model_params(m);
    float *params = gpt_model_param_buffer(m); /* CPU: host memory, fp32 */
    for (int i = 0; i < t->count; i++)
        if (t->params[i].init != PARAM_INIT_NORMAL)
            for (int64_t e = 0; e < t->params[i].local_numel; e++)
                params[t->params[i].offset + e] += 0.2f * sinf((float)(3 * i + e));
    gpt_model_zero_grad(m);
    batch_loss(m, tok, tgt);
    gpt_model_backward(m, 1.0f);
    const float *grads = gpt_model_grad_buffer(m);

    double worst = 0;
    for (size_t k = 0; k < count; k++) {
        const int index = param_table_find(t, names[k]);
        CHECK_MSG(index >= 0, "%s: no parameter %s", what, names[k]);
        const ParamInfo *p = &t->params[index];
        double num2 = 0, diff2 = 0;
        for (int64_t e = 0; e < p->local_numel; e += 1 + p->local_numel / 40) {
            float *w = params + p->offset + e;
            const float saved = *w, h = 1e-2f;
            *w = saved + h;
            double up = batch_loss(m, tok, tgt);
            *w = saved - h;
            double down = batch_loss(m, tok, tgt);
            *w = saved;
            double numeric = (up - down) / (2.0 * h);
            double analytic = grads[p->offset + e];
            num2 += numeric * numeric;
            diff2 += (numeric - analytic) * (numeric - analytic);
        }
        double rel = sqrt(diff2 / (num2 + 1e-30));
        if (rel > worst) worst = rel;
        CHECK_MSG(num2 > 1e-8, "%s: gradient unexpectedly ~0", names[k]);
        CHECK_MSG(rel < 2e-3, "%s: relative gradient error %g", names[k], rel);
    }
    printf("whole-model gradient check (%s): worst relative error %.2e\n", what, worst);
    gpt_model_free(m);
    backend_destroy(be);
}

static void check_model_gradient(const TransformerConfig *cfg, const char *const *names,
                                 size_t count, const char *what) {
    check_model_gradient_docs(cfg, names, count, what, NULL);
}

static void test_whole_model_gradient(void) {
    const TransformerConfig c = tiny_config(3);
    const char *const names[] = {"embedding.word_embeddings.weight",
                                 "embedding.position_embeddings.weight",
                                 "decoder.layers.0.input_layernorm.weight",
                                 "decoder.layers.0.self_attention.linear_qkv.weight",
                                 "decoder.layers.1.self_attention.linear_qkv.bias",
                                 "decoder.layers.1.self_attention.linear_proj.weight",
                                 "decoder.layers.0.mlp.linear_fc1.weight",
                                 "decoder.layers.1.mlp.linear_fc2.bias",
                                 "decoder.final_layernorm.bias"};
    check_model_gradient(&c, names, sizeof names / sizeof *names, "GPT-2");
}

/* With all three document switches: the loss leaves out the targets after
 * an EOD, positions restart and attention stays inside documents; the
 * gradients of the learned position embedding (GPT-2) and of the layers
 * under RoPE with query groups (Llama-style) are those of that loss. */
static void test_document_gradients(void) {
    const DocumentMasking docs = {.eod_mask_loss = true,
                                  .reset_position_ids = true,
                                  .reset_attention_mask = true,
                                  .eod_token = 12};
    const TransformerConfig gpt2 = tiny_config(5);
    const char *const names[] = {"embedding.word_embeddings.weight",
                                 "embedding.position_embeddings.weight",
                                 "decoder.layers.0.self_attention.linear_qkv.weight",
                                 "decoder.layers.1.self_attention.linear_proj.weight"};
    check_model_gradient_docs(&gpt2, names, 4, "GPT-2, documents", &docs);
    TransformerConfig llama = tiny_config(6);
    llama.num_attention_heads = 4;
    llama.num_query_groups = 2;
    llama.kv_channels = 4;
    llama.position_embedding_type = POSITION_ROPE;
    check_model_gradient_docs(&llama, names + 2, 2, "GQA, rope, documents", &docs);
}

/* A document packed after another gives the logits it gives alone at the
 * start of a sample (positions from 0, nothing earlier seen), for learned
 * positions and for RoPE; without the masks it does not. */
static double document_logit_error(const TransformerConfig *c, bool masks) {
    enum { B = 2, T = 10, FIRST = 4 };
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be);
    GPTModel *m = gpt_model_create(be, c, &WHOLE, B, NULL, NULL, 1);
    gpt_model_init_params(m, NULL, 0);
    const DocumentMasking docs = {.reset_position_ids = masks, .reset_attention_mask = masks,
                                  .eod_token = 12};
    /* sequence 0: a document of FIRST tokens (its last the EOD), then
     * document D; sequence 1: D first, then other tokens */
    int32_t tok[B * T], tgt[B * T], position_ids[B * T], key_start[B * T];
    for (int t = 0; t < T; t++) {
        const int32_t d = (int32_t)((t * 5 + 2) % 11);
        if (t >= FIRST) tok[t] = d, tok[T + t - FIRST] = d; /* D's token t - FIRST */
        if (t < FIRST) tok[t] = (int32_t)(t + 3), tok[T + T - FIRST + t] = (int32_t)(9 - t);
    }
    tok[FIRST - 1] = 12;
    for (int i = 0; i < B * T; i++) tgt[i] = (i * 3 + 1) % 11;
    for (int b = 0; b < B; b++)
        document_masks_apply(&docs, tok + b * T, tgt + b * T, T, position_ids + b * T,
                             key_start + b * T);
    gpt_model_set_documents(m, 0, masks ? position_ids : NULL, masks ? key_start : NULL);
    gpt_model_forward(m, tok, tgt);
    int V = 0;
    const float *logits = gpt_model_last_logits(m, &V);
    double worst = 0.0, scale = 0.0;
    for (int t = 0; t < T - FIRST; t++)
        for (int v = 0; v < V; v++) {
            const double packed = logits[(size_t)(FIRST + t) * V + v];
            const double alone = logits[(size_t)(T + t) * V + v];
            CHECK(isfinite(packed) && isfinite(alone));
            if (fabs(alone) > scale) scale = fabs(alone);
            if (fabs(packed - alone) > worst) worst = fabs(packed - alone);
        }
    gpt_model_free(m);
    backend_destroy(be);
    CHECK(scale > 0.1);
    return worst / scale;
}

static void test_document_isolation(void) {
    TransformerConfig gpt2 = tiny_config(8);
    gpt2.seq_length = 10;
    gpt2.max_position_embeddings = 10;
    TransformerConfig llama = gpt2;
    llama.num_attention_heads = 4;
    llama.num_query_groups = 2;
    llama.kv_channels = 4;
    llama.position_embedding_type = POSITION_ROPE;
    for (int k = 0; k < 2; k++) {
        const TransformerConfig *c = k ? &llama : &gpt2;
        const double with = document_logit_error(c, true), without = document_logit_error(c, false);
        printf("document isolation (%s): packed vs alone %.2e with masks, %.2e without\n",
               k ? "rope" : "learned positions", with, without);
        CHECK_MSG(with < 1e-5, "a packed document's logits differ from its own by %.3g", with);
        CHECK_MSG(without > 1e-3, "without masks the logits should differ (%.3g)", without);
    }
}

/* Both norms of --qk-layernorm, and what feeds them and what they feed
 * (RoPE after them, with query groups). */
static void test_qk_layernorm_gradient(void) {
    TransformerConfig c = tiny_config(4);
    c.num_attention_heads = 4;
    c.num_query_groups = 2;
    c.kv_channels = 4;
    c.qk_layernorm = true;
    c.position_embedding_type = POSITION_ROPE;
    const char *const names[] = {"decoder.layers.0.self_attention.q_layernorm.weight",
                                 "decoder.layers.0.self_attention.q_layernorm.bias",
                                 "decoder.layers.1.self_attention.k_layernorm.weight",
                                 "decoder.layers.1.self_attention.k_layernorm.bias",
                                 "decoder.layers.0.self_attention.linear_qkv.weight",
                                 "decoder.layers.1.self_attention.linear_qkv.bias",
                                 "decoder.layers.0.input_layernorm.weight"};
    check_model_gradient(&c, names, sizeof names / sizeof *names, "qk layernorm, GQA, rope");
    c.normalization = NORM_RMSNORM;
    c.apply_layernorm_1p = true;
    check_model_gradient(&c, names, 1, "qk RMSNorm 1p");
    check_model_gradient(&c, names + 2, 1, "qk RMSNorm 1p");
}

/* The QK-norm parameters: [HS] each, replicated over TP, no weight decay,
 * ones (zeros with 1p) and zero biases, in reverse order of use after the
 * projection; their TP-partial gradients marked for the TP sum (and only
 * at TP > 1), counted in the norm on TP rank 0 only. */
static void test_qk_layernorm_params(void) {
    TransformerConfig c = tiny_config(1);
    const int64_t plain = gpt_canonical_param_count(&c);
    c.qk_layernorm = true;
    CHECK(gpt_canonical_param_count(&c) == plain + c.num_layers * 4 * c.kv_channels);
    static const char *const order[] = {
        "decoder.layers.1.self_attention.linear_proj.weight",
        "decoder.layers.1.self_attention.k_layernorm.bias",
        "decoder.layers.1.self_attention.k_layernorm.weight",
        "decoder.layers.1.self_attention.q_layernorm.bias",
        "decoder.layers.1.self_attention.q_layernorm.weight",
        "decoder.layers.1.self_attention.linear_qkv.bias"};
    for (int tp_rank = 0; tp_rank < 3; tp_rank++) {
        ModelPartition part = WHOLE; /* rank 0 of TP 1, then ranks 0, 1 of TP 2 */
        part.tp_size = tp_rank ? 2 : 1;
        part.tp_rank = tp_rank ? tp_rank - 1 : 0;
        ParamTable t;
        param_table_build(&t, &c, &part);
        CHECK(t.count == 2 + 2 * gpt_layer_param_count(&c, 0) + 2);
        CHECK(gpt_layer_param_count(&c, 0) == 12 + 4);
        for (int k = 0; k < 6; k++) {
            const int i = param_table_find(&t, order[k]);
            CHECK_MSG(i >= 0 && (k == 0 || !strcmp(t.params[i - 1].name, order[k - 1])),
                      "%s out of order", order[k]);
            const ParamInfo *p = &t.params[i];
            if (k == 0 || k == 5) continue;
            CHECK(p->ndim == 1 && p->shape[0] == c.kv_channels && !p->tensor_parallel_split);
            CHECK(p->local_numel == c.kv_channels && !p->weight_decay);
            CHECK(p->init == (k % 2 ? PARAM_INIT_ZEROS : PARAM_INIT_ONES));
            CHECK(p->grad_partial_over_heads == (part.tp_size > 1));
            CHECK(p->counts_in_grad_norm == (part.tp_rank == 0));
        }
        for (int i = 0; i < t.count; i++) /* nothing else is partial over heads */
            CHECK(!t.params[i].grad_partial_over_heads || strstr(t.params[i].name, "k_layernorm") ||
                  strstr(t.params[i].name, "q_layernorm"));
        param_table_free(&t);
    }
    c.apply_layernorm_1p = true;
    c.normalization = NORM_RMSNORM;
    ParamTable t;
    param_table_build(&t, &c, &WHOLE);
    const int q = param_table_find(&t, "decoder.layers.0.self_attention.q_layernorm.weight");
    CHECK(q >= 0 && t.params[q].init == PARAM_INIT_ZEROS);
    CHECK(param_table_find(&t, "decoder.layers.0.self_attention.q_layernorm.bias") < 0);
    CHECK(gpt_layer_param_count(&c, 0) == 4 + 4 + 3 + 1);
    param_table_free(&t);
    printf("qk layernorm: parameters, order, TP marks and counts\n");
}

/* Every recomputation mode (Megatron's selective; full uniform in units of
 * 1, 2 and all 5 layers, the last unit short at 2; full block of 1 and 3
 * layers): bitwise the loss and gradients of no recomputation, with two
 * micro-batches in flight as a pipeline stage holds them, and less
 * activation memory, the less the more is recomputed. */
static void test_recompute(bool qk_layernorm) {
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be);
    TransformerConfig c = tiny_config(5);
    c.num_layers = 5;
    c.qk_layernorm = qk_layernorm;
    c.attention_dropout = 0.2; /* the recomputed attention must draw the same mask */
    ModelPartition part = WHOLE;
    part.num_local_layers = 5;
    int32_t tok[10], tgt[10];
    for (int i = 0; i < 10; i++) tok[i] = (i * 3 + 1) % 13, tgt[i] = (i * 7 + 2) % 13;
    static const struct {
        RecomputeGranularity granularity;
        RecomputeMethod method;
        int layers;
        const char *name;
    } modes[] = {{RECOMPUTE_NONE, RECOMPUTE_UNIFORM, 0, "none"},
                 {RECOMPUTE_SELECTIVE, RECOMPUTE_UNIFORM, 0, "selective"},
                 {RECOMPUTE_FULL, RECOMPUTE_BLOCK, 3, "full block 3"},
                 {RECOMPUTE_FULL, RECOMPUTE_BLOCK, 1, "full block 1"},
                 {RECOMPUTE_FULL, RECOMPUTE_UNIFORM, 5, "full uniform 5"},
                 {RECOMPUTE_FULL, RECOMPUTE_UNIFORM, 2, "full uniform 2"},
                 {RECOMPUTE_FULL, RECOMPUTE_UNIFORM, 1, "full uniform 1"}};
    enum { MODES = sizeof modes / sizeof *modes };
    double loss[MODES];
    float *grads[MODES];
    size_t bytes[MODES], n = 0;
    for (int r = 0; r < MODES; r++) {
        c.recompute_granularity = modes[r].granularity;
        c.recompute_method = modes[r].method;
        c.recompute_num_layers = modes[r].layers;
        GPTModel *m = gpt_model_create(be, &c, &part, 2, NULL, NULL, 2);
        gpt_model_init_params(m, NULL, 0);
        gpt_model_set_step(m, 3, true);
        gpt_model_set_first_sample(m, 0, 0);
        gpt_model_set_first_sample(m, 1, 2);
        gpt_model_zero_grad(m);
        loss[r] = gpt_model_stage_forward(m, 0, tok, tgt) + gpt_model_stage_forward(m, 1, tgt, tok);
        gpt_model_stage_backward(m, 0, 0.1f);
        gpt_model_stage_backward(m, 1, 0.1f);
        n = gpt_model_params(m)->total_numel;
        grads[r] = xmalloc(n * sizeof(float));
        memcpy(grads[r], gpt_model_grad_buffer(m), n * sizeof(float));
        bytes[r] = gpt_model_activation_bytes(m);
        gpt_model_free(m);
        CHECK_MSG(loss[r] == loss[0], "%s: loss %.17g vs %.17g", modes[r].name, loss[r], loss[0]);
        CHECK_MSG(memcmp(grads[r], grads[0], n * sizeof(float)) == 0, "%s: gradients differ",
                  modes[r].name);
        if (r) CHECK_MSG(bytes[r] < bytes[0], "%s keeps %zu activation bytes, none %zu",
                         modes[r].name, bytes[r], bytes[0]);
        printf("recompute%s %-15s activations %7zu bytes, bitwise equal loss and gradients\n",
               qk_layernorm ? " (qk layernorm)" : "", modes[r].name, bytes[r]);
    }
    /* More recomputed, less kept: block 1 > block 3 > uniform 1, and units
     * of 5 > 2 > 1 layers (a unit's activations are held while it runs). */
    static const int more[][2] = {{3, 2}, {2, 6}, {4, 5}, {5, 6}};
    for (size_t k = 0; k < sizeof more / sizeof *more; k++)
        CHECK_MSG(bytes[more[k][0]] > bytes[more[k][1]], "%s keeps %zu bytes, %s %zu",
                  modes[more[k][0]].name, bytes[more[k][0]], modes[more[k][1]].name,
                  bytes[more[k][1]]);
    for (int r = 0; r < MODES; r++) free(grads[r]);
    backend_destroy(be);
}

/* The multithreaded fill gives rng_normal's values bitwise, for any thread
 * count and any range split (n is not a multiple of the batch or of the
 * thread counts, and starts at an odd index). */
static void test_normal_fill_threads(void) {
    const size_t n = 300001;
    float *ref = xmalloc(n * sizeof *ref), *got = xmalloc(n * sizeof *got);
    const uint64_t stream = rng_stream_from_name("decoder.layers.0.mlp.linear_fc1.weight");
    for (size_t i = 0; i < n; i++) ref[i] = (float)(0.02 * rng_normal(11, stream, 12345 + i));
    const int threads[] = {1, 2, 3, 8};
    for (int k = 0; k < 4; k++) {
        memset(got, 0, n * sizeof *got);
        rng_normal_fill(got, n, 11, stream, 12345, 0.02, threads[k]);
        CHECK_MSG(memcmp(ref, got, n * sizeof *ref) == 0, "rng_normal_fill on %d threads differs",
                  threads[k]);
    }
    free(ref);
    free(got);
}

/* Model init with GPT3D_THREADS=1 and =4 (the env var host_thread_count()
 * reads, documented for tests) gives bitwise the same parameters, and the
 * master copy equals them whether a parameter lies inside the master shard,
 * straddles its edge or the model has no master. */
static void test_init_threads(void) {
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be);
    TransformerConfig c = tiny_config(5);
    c.hidden_size = 64;
    c.num_attention_heads = 2;
    c.ffn_hidden_size = 128;
    c.vocab_size = 4000; /* word embedding 4096 x 64: split over threads */
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 128);
    float *params[2];
    size_t n = 0;
    for (int r = 0; r < 2; r++) {
        setenv("GPT3D_THREADS", r == 0 ? "1" : "4", 1);
        GPTModel *m = gpt_model_create(be, &c, &WHOLE, 1, NULL, NULL, 1);
        n = gpt_model_params(m)->total_numel;
        /* Run 0: master over the whole buffer; run 1: a shard from the middle
         * of the word embedding (the last parameter) to the end. */
        const size_t begin = r == 0 ? 0 : n - 100000;
        float *master = be->ops->alloc(be, (n - begin) * sizeof(float));
        const GPTMasterRange range = {begin, n, master};
        gpt_model_init_params(m, &range, 1);
        params[r] = xmalloc(n * sizeof(float));
        memcpy(params[r], gpt_model_param_buffer(m), n * sizeof(float));
        CHECK_MSG(memcmp(master, params[r] + begin, (n - begin) * sizeof(float)) == 0,
                  "run %d: the master shard differs from the parameters", r);
        be->ops->free(be, master);
        gpt_model_free(m);
    }
    unsetenv("GPT3D_THREADS");
    CHECK_MSG(memcmp(params[0], params[1], n * sizeof(float)) == 0,
              "init on 1 and 4 threads differs");
    printf("init: %zu parameters bitwise equal on 1 and 4 threads\n", n);
    free(params[0]);
    free(params[1]);
    backend_destroy(be);
}

/* The lists of architecture fields drive validation and comparison:
 * every field, changed alone, is the difference reported (with its flag
 * and both values as text), run settings are not, and each bound is
 * enforced. */
static void test_transformer_config(void) {
    const TransformerConfig base = tiny_config(1);
    char err[256], ta[TRANSFORMER_FIELD_TEXT_MAX], tb[TRANSFORMER_FIELD_TEXT_MAX];
    CHECK_MSG(transformer_config_check(&base, "tiny", err, sizeof err), "%s", err);
    CHECK(transformer_config_difference(&base, &base, ta, tb, sizeof ta) == NULL);
    TransformerConfig run = base;
    run.seq_length = 3;
    run.seed = 99;
    run.init_method_std = 1.0;
    run.recompute_granularity = RECOMPUTE_FULL;
    run.recompute_num_layers = 2;
    run.hidden_dropout = run.attention_dropout = 0.5;
    CHECK(transformer_config_difference(&base, &run, ta, tb, sizeof ta) == NULL);
    int fields = 0;
#define ONE_CHANGED(f, kind, max, what)                                                            \
    {                                                                                              \
        TransformerConfig c = base;                                                                \
        c.f += 1;                                                                                  \
        const char *d = transformer_config_difference(&base, &c, ta, tb, sizeof ta);               \
        CHECK_MSG(d && !strcmp(d, what) && atoll(ta) == (long long)base.f &&                       \
                      atoll(tb) == (long long)base.f + 1,                                          \
                  "%s: %s", #f, d ? d : "no difference");                                         \
        c.f = 0;                                                                                   \
        CHECK_MSG(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, #f),     \
                  "%s = 0 accepted", #f);                                                          \
        fields++;                                                                                  \
    }
    TRANSFORMER_ARCH_FIELDS(ONE_CHANGED)
#undef ONE_CHANGED
    CHECK(fields == 7);
    /* Each variant field: a change is the reported difference; a bad value
     * (out of range, not a choice) is refused naming the field. */
#define BAD_int(f) c.f = 0;
#define BAD_count(f) c.f = -1;
#define BAD_f64(f) c.f = -1.0;
#define BAD_choice(f) c.f = 99;
#define BAD_bool(f) c.f = c.f;
#define CHANGE_int(f) c.f = c.f == 1 ? 2 : 1;
#define CHANGE_count(f) c.f = c.f == 1 ? 2 : 1;
#define CHANGE_f64(f) c.f = c.f * 0.5;
#define CHANGE_choice(f) c.f = c.f == 0 ? 1 : 0;
#define CHANGE_bool(f) c.f = !c.f;
#define VARIANT_CHANGED(f, kind, names, what)                                                      \
    {                                                                                              \
        TransformerConfig c = base;                                                                \
        CHANGE_##kind(f);                                                                          \
        const char *d = transformer_config_difference(&base, &c, ta, tb, sizeof ta);               \
        CHECK_MSG(d && !strcmp(d, what) && strcmp(ta, tb), "%s: %s (%s vs %s)", #f,              \
                  d ? d : "no difference", ta, tb);                                                \
        c = base;                                                                                  \
        BAD_##kind(f);                                                                             \
        if (strcmp(#kind, "bool"))                                                                 \
            CHECK_MSG(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, #f), \
                      "bad %s accepted", #f);                                                      \
        fields++;                                                                                  \
    }
    TRANSFORMER_VARIANT_FIELDS(VARIANT_CHANGED)
#undef VARIANT_CHANGED
    CHECK(fields == 7 + 14 + 7);
    transformer_config_field_text(&base, "normalization", ta, sizeof ta);
    CHECK(!strcmp(ta, "LayerNorm"));
    transformer_config_field_text(&base, "norm_epsilon", ta, sizeof ta);
    CHECK(!strcmp(ta, "1.0000000000000001e-05") || !strcmp(ta, "1e-05"));
    TransformerConfig c = base;
    c.num_query_groups = 2;
    c.num_attention_heads = 3;
    CHECK(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, "divisible"));
    c = base;
    c.padded_vocab_size = c.vocab_size - 1;
    CHECK(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, "smaller"));
    c = base;
    c.num_layers = (1 << 16) + 1;
    CHECK(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, "num_layers"));
    c = base;
    c.position_embedding_type = POSITION_ROPE;
    c.rotary_percent = 0.1; /* 0.4 of a feature of the head dimension 4 */
    CHECK(!transformer_config_check(&c, "tiny", err, sizeof err) && strstr(err, "rotary"));
    printf("transformer config: %d architecture fields compared and bounded\n", fields);
}

/* The counts follow the variant: Llama-3 8B's shape has its published
 * 8,030,261,248 parameters, and the FLOPs per token are Megatron's
 * expression (GQA, SwiGLU and the output layer terms; the attention
 * scores counted at half for the causal mask, as gpt3d always has). */
static void test_llama_counts(void) {
    TransformerConfig c = {.num_layers = 32, .hidden_size = 4096, .num_attention_heads = 32,
                           .ffn_hidden_size = 14336, .vocab_size = 128256,
                           .padded_vocab_size = 128256, .max_position_embeddings = 8192,
                           .seq_length = 8192, .init_method_std = 0.02};
    transformer_config_set_gpt2_variant(&c);
    c.position_embedding_type = POSITION_ROPE;
    c.normalization = NORM_RMSNORM;
    c.activation = ACTIVATION_SWIGLU;
    c.num_query_groups = 8;
    c.untie_embeddings_and_output_weights = true;
    c.add_bias_linear = false;
    char err[256];
    CHECK_MSG(transformer_config_check(&c, "llama", err, sizeof err), "%s", err);
    CHECK(gpt_canonical_param_count(&c) == INT64_C(8030261248));
    const double L = 32, C = 4096, F = 14336, T = 8192, V = 128256, NH = 32, NG = 8;
    const double megatron = 12.0 * L * C * C *
                                ((1 + NG / NH + T / C / 2) * 1.0 /* kv_channels * heads / C */ +
                                 F / C * 1.5) +
                            6.0 * C * V;
    CHECK_MSG(fabs(gpt_flops_per_token(&c) / megatron - 1) < 1e-12, "flops %.6g vs %.6g",
              gpt_flops_per_token(&c), megatron);
    /* GPT-2 124M keeps its count. */
    TransformerConfig g = {.num_layers = 12, .hidden_size = 768, .num_attention_heads = 12,
                           .ffn_hidden_size = 3072, .vocab_size = 50257, .padded_vocab_size = 50304,
                           .max_position_embeddings = 1024, .seq_length = 1024};
    transformer_config_set_gpt2_variant(&g);
    CHECK(gpt_canonical_param_count(&g) == INT64_C(124475904));
    printf("counts: Llama-3 8B shape %lld parameters, %.4g model FLOPs per token\n",
           (long long)gpt_canonical_param_count(&c), gpt_flops_per_token(&c));
    /* Mixtral 8x7B is that shape with a 32000-token vocabulary and 8
     * experts, 2 per token: its published 46.7B parameters, 12.9B active;
     * its FLOPs add a second expert and the router to each layer. */
    const double dense_flops = gpt_flops_per_token(&c);
    c.vocab_size = c.padded_vocab_size = 32000;
    const double vocab_flops = 6.0 * C * (128256 - 32000);
    c.num_experts = 8;
    c.moe_router_topk = 2;
    c.moe_ffn_hidden_size = 14336;
    CHECK(gpt_canonical_param_count(&c) == INT64_C(46702792704));
    CHECK(gpt_active_param_count(&c) == INT64_C(12879925248));
    const double extra = 3.0 * L * 2.0 * (3.0 * C * F + C * 8);
    CHECK_MSG(fabs(gpt_flops_per_token(&c) - (dense_flops - vocab_flops + extra)) <
                  1e-12 * gpt_flops_per_token(&c),
              "MoE flops %.9g", gpt_flops_per_token(&c));
    printf("counts: Mixtral 8x7B shape %lld parameters, %lld active, %.4g FLOPs per token\n",
           (long long)gpt_canonical_param_count(&c), (long long)gpt_active_param_count(&c),
           gpt_flops_per_token(&c));
}

int main(void) {
    test_transformer_config();
    test_llama_counts();
    test_param_table();
    test_init();
    test_normal_fill_threads();
    test_init_threads();
    test_whole_model_gradient();
    test_qk_layernorm_params();
    test_qk_layernorm_gradient();
    test_recompute(false);
    test_recompute(true);
    test_document_gradients();
    test_document_isolation();
    printf("test_model: ok\n");
    return 0;
}
