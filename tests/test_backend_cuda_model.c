/* tests/test_backend_cuda_model.c — a whole tiny GPT on the CUDA backend
 * (bf16 weights and activations) against the same model on the CPU backend.
 *
 * Both models get the same weights: the CUDA model's bf16 initial values,
 * converted to fp32 and copied into the CPU model, so the comparison
 * measures the bf16 activations and kernels, not the weight rounding. One
 * micro-batch forward and backward:
 * - loss within 1e-2 relative of the CPU's (the bar),
 * - logits within 5e-2 of the largest logit (the init is wide enough that
 *   the logits, and so the loss, depend on every layer),
 * - the gradient buffer within 5e-2 relative L2 overall, and every weight
 *   matrix's gradient within 1e-1 relative L2,
 * - a second forward/backward on CUDA gives bitwise the same loss and
 *   gradients.
 * For GPT-2 and for three modern variants (tiny_config): RoPE, RMSNorm,
 * SwiGLU, squared ReLU, 1p LayerNorm, query groups, QK-norm, and dropout,
 * whose masks are the same on both backends.
 * Exits 77 without a GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "data/data.h"
#include "model/gpt_model.h"
#include "test_backend_cuda_util.h"

enum { B = 2, T = 32 };

typedef enum { VARIANT_GPT2, VARIANT_LLAMA, VARIANT_NEMOTRON, VARIANT_LLAMA_QK } Variant;

static const char *const VARIANT_NAMES[] = {"GPT-2", "Llama", "Nemotron-like",
                                            "Llama with QK-norm"};

/* GPT-2; Llama (RoPE, RMSNorm, SwiGLU, two query groups, untied, no
 * biases); Nemotron-like (interleaved RoPE on half of each head, 1p
 * LayerNorm, squared ReLU, one query group) with hidden and attention
 * dropout while training; Llama with --qk-layernorm and RoPE on half of
 * each head (issue 16's variant b). */
static TransformerConfig tiny_config(Variant v) {
    TransformerConfig c = {.num_layers = 2,
                   .hidden_size = 64,
                   .num_attention_heads = 4,
                   .ffn_hidden_size = 256,
                   .vocab_size = 300,
                   .max_position_embeddings = T,
                   .seq_length = T,
                   .init_method_std = 0.2,
                   .seed = 1234};
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 128);
    transformer_config_set_gpt2_variant(&c);
    if (v == VARIANT_LLAMA || v == VARIANT_LLAMA_QK) {
        c.position_embedding_type = POSITION_ROPE;
        c.normalization = NORM_RMSNORM;
        c.activation = ACTIVATION_SWIGLU;
        c.ffn_hidden_size = 128;
        c.num_query_groups = 2;
        c.untie_embeddings_and_output_weights = true;
        c.add_bias_linear = false;
        c.qk_layernorm = v == VARIANT_LLAMA_QK;
        c.rotary_percent = v == VARIANT_LLAMA_QK ? 0.5 : 1.0;
    } else if (v == VARIANT_NEMOTRON) {
        c.position_embedding_type = POSITION_ROPE;
        c.rotary_percent = 0.5;
        c.rotary_interleaved = true;
        c.apply_layernorm_1p = true;
        c.norm_epsilon = 1e-6;
        c.activation = ACTIVATION_SQUARED_RELU;
        c.num_query_groups = 1;
        c.hidden_dropout = 0.1;
        c.attention_dropout = 0.1;
    }
    return c;
}

/* Training mode (dropout on) at iteration 5, the micro-batch starting at
 * sample 8: the same masks on both backends. */
static void set_step(GPTModel *m) {
    gpt_model_set_step(m, 5, true);
    gpt_model_set_first_sample(m, 0, 8);
}

static const ModelPartition WHOLE = {.tp_size = 1, .tp_rank = 0, .first_layer = 0,
                                     .num_local_layers = 2, .has_embedding = true,
                                     .has_head = true};

/* The CUDA model's bf16 parameters, as fp32, into the CPU model. */
static void copy_params(GPTModel *cpu_model, Backend *cpu, GPTModel *cu_model, Backend *cu) {
    const size_t n = gpt_model_params(cu_model)->total_numel;
    float *host = act_download(cu, gpt_model_param_buffer(cu_model), n);
    cpu->ops->copy_to_device(cpu, gpt_model_param_buffer(cpu_model), host, n * sizeof(float));
    free(host);
}

static int compare_grads(const ParamTable *t, const float *got, const float *want) {
    const double total = l2_distance(got, want, t->total_numel) / l2_norm(want, t->total_numel);
    fprintf(stderr, "  gradient buffer: relative L2 error %.3e\n", total);
    int rc = !(total <= 5e-2);
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->params[i];
        const size_t n = (size_t)p->local_numel;
        const double ref = l2_norm(want + p->offset, n);
        const double e = l2_distance(got + p->offset, want + p->offset, n) / (ref + 1e-30);
        const bool enforced = p->ndim >= 2;
        if (enforced && !(e <= 1e-1)) rc = 1;
        fprintf(stderr, "    %-52s rel L2 %.3e (|g| %.3e)%s\n", p->name, e, ref,
                enforced && !(e <= 1e-1) ? "  <-- too large" : "");
    }
    return rc;
}

/* documents: every 5th token an EOD, with all three document switches
 * (ignored targets, restarting positions, attention inside documents). */
static int test_whole_model(Pair *p, Variant v, bool documents) {
    Backend *cpu = p->cpu, *cu = p->cu;
    fprintf(stderr, "  %s%s\n", VARIANT_NAMES[v], documents ? ", documents" : "");
    TransformerConfig cfg = tiny_config(v);
    char err[256];
    if (!transformer_config_check(&cfg, "tiny_config", err, sizeof err)) {
        fprintf(stderr, "  %s\n", err);
        return 1;
    }
    GPTModel *mc = gpt_model_create(cpu, &cfg, &WHOLE, B, NULL, NULL, 1);
    GPTModel *mg = gpt_model_create(cu, &cfg, &WHOLE, B, NULL, NULL, 1);
    if (v == VARIANT_NEMOTRON) set_step(mc), set_step(mg);
    gpt_model_init_params(mg, NULL, 0);
    copy_params(mc, cpu, mg, cu);
    gpt_model_zero_grad(mc);
    gpt_model_zero_grad(mg);

    TestRng rng = {77};
    int32_t tokens[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = test_rng_below(&rng, (int)cfg.vocab_size);
        targets[i] = test_rng_below(&rng, (int)cfg.vocab_size);
    }
    if (documents) {
        const DocumentMasking dm = {.eod_mask_loss = true, .reset_position_ids = true,
                                    .reset_attention_mask = true, .eod_token = 0};
        int32_t position_ids[B * T], key_start[B * T];
        for (int i = 0; i < B * T; i++)
            if (i % 5 == 3) tokens[i] = 0;
        for (int b = 0; b < B; b++)
            document_masks_apply(&dm, tokens + b * T, targets + b * T, T, position_ids + b * T,
                                 key_start + b * T);
        gpt_model_set_documents(mc, 0, position_ids, key_start);
        gpt_model_set_documents(mg, 0, position_ids, key_start);
    }
    const double loss_cpu = gpt_model_forward(mc, tokens, targets) / (B * T);
    const double loss_cu = gpt_model_forward(mg, tokens, targets) / (B * T);
    fprintf(stderr, "  loss: cpu %.6f cuda %.6f (uniform would be %.4f)\n", loss_cpu, loss_cu,
            log((double)cfg.vocab_size));
    CHECK(isfinite(loss_cu));
    CHECK(fabs(loss_cu - loss_cpu) <= 1e-2 * fabs(loss_cpu));

    int vc = 0, vg = 0;
    const float *logits_cpu = gpt_model_last_logits(mc, &vc);
    const float *logits_cu = gpt_model_last_logits(mg, &vg);
    CHECK(vc == vg);
    /* In the first GPU run (H200) the worst single logit of the Llama
     * variants was off by 0.1 (|want| + mean|want|) (GPT-2's within 0.05)
     * while the losses agreed to 2e-4: the per-element bound is twice that
     * worst, the norm bound below the whole gradient's 5e-2. */
    CHECK(!compare_chain("logits", logits_cu, logits_cpu, (size_t)B * T * vc, 3e-2, 2e-1));

    const float scale = 1.0f / (B * T);
    gpt_model_backward(mc, scale);
    gpt_model_backward(mg, scale);
    const ParamTable *t = gpt_model_params(mg);
    float *g_cpu = download(cpu, gpt_model_grad_buffer(mc), t->total_numel);
    float *g_cu = download(cu, gpt_model_grad_buffer(mg), t->total_numel);
    CHECK(!compare_grads(t, g_cu, g_cpu));

    /* Determinism: the same micro-batch again on fresh gradients. */
    gpt_model_zero_grad(mg);
    const double again = gpt_model_forward(mg, tokens, targets) / (B * T);
    gpt_model_backward(mg, scale);
    float *g_again = download(cu, gpt_model_grad_buffer(mg), t->total_numel);
    CHECK(again == loss_cu);
    CHECK(!same_bytes("gradient buffer", g_cu, g_again, t->total_numel * sizeof(float)));

    free(g_cpu), free(g_cu), free(g_again);
    gpt_model_free(mc);
    gpt_model_free(mg);
    return 0;
}

int main(int argc, char **argv) {
    Pair p;
    const bool standin = cpu_standin(argc, argv);
    int rc = pair_create(&p, standin);
    if (rc) return rc;
    int failures = 0;
    RUN(failures, test_whole_model(&p, VARIANT_GPT2, false));
    RUN(failures, test_whole_model(&p, VARIANT_LLAMA, false));
    RUN(failures, test_whole_model(&p, VARIANT_NEMOTRON, false));
    RUN(failures, test_whole_model(&p, VARIANT_LLAMA_QK, false));
    RUN(failures, test_whole_model(&p, VARIANT_GPT2, true));
    RUN(failures, test_whole_model(&p, VARIANT_LLAMA, true));
    pair_destroy(&p);
    /* The stand-in compares the CPU backend with itself: say so, so a pass
     * here is never read as the CUDA ops passing. */
    if (standin && !failures)
        fprintf(stderr, "harness self-test passed: CPU backend against itself; this checks the "
                        "test program, no CUDA op was compared\n");
    return failures ? 1 : 0;
}
