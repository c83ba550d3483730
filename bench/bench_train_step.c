/* Training-step throughput of the model on one rank: forward + backward +
 * AdamW over random tokens, with the share of time spent in GEMM calls.
 * Usage: bench_train_step [--device cpu] [--num-layers 6] [--hidden-size 384]
 *        [--num-attention-heads 6] [--seq-length 256] [--micro-batch-size 4]
 *        [--vocab-size 50257] [--iters 5] [--warmup 1] [--peak-tflops 989]
 * The last line, "result: {...}", is one JSON object for scripts
 * (scripts/run_gpu_checks.sh): tokens/s, model TFLOP/s, MFU against
 * --peak-tflops (the H100/H200 dense bf16 peak by default) and the device
 * allocator's peak next to the planned buffers. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "core/flags.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/gpt_model.h"
#include "optimizer/distrib_optimizer.h"
#include "parallel_state/collectives.h"

typedef struct {
    char *device;
    int num_layers, hidden_size, heads, seq_length, micro_batch_size, iters, warmup;
    int64_t vocab_size;
    double peak_tflops;
} BenchArgs;

#define OPT(f) offsetof(BenchArgs, f)
static const FlagSpec FLAGS[] = {
    {"device", FLAG_STRING, OPT(device), "cpu", "DEV", "cpu or cuda.", "benchmark", false},
    {"num-layers", FLAG_INT, OPT(num_layers), "6", "N", "Layers.", "benchmark", false},
    {"hidden-size", FLAG_INT, OPT(hidden_size), "384", "C", "Hidden size.", "benchmark", false},
    {"num-attention-heads", FLAG_INT, OPT(heads), "6", "H", "Heads.", "benchmark", false},
    {"seq-length", FLAG_INT, OPT(seq_length), "256", "T", "Sequence length.", "benchmark", false},
    {"micro-batch-size", FLAG_INT, OPT(micro_batch_size), "4", "B", "Micro-batch size.", "benchmark", false},
    {"vocab-size", FLAG_INT64, OPT(vocab_size), "50257", "V", "Vocabulary (GPT-2's by default).", "benchmark", false},
    {"iters", FLAG_INT, OPT(iters), "5", "N", "Timed steps.", "benchmark", false},
    {"warmup", FLAG_INT, OPT(warmup), "1", "N", "Untimed steps first.", "benchmark", false},
    {"peak-tflops", FLAG_DOUBLE, OPT(peak_tflops), "989", "F",
     "Dense peak TFLOP/s that MFU is measured against (H100/H200 SXM bf16: 989).", "benchmark",
     false},
};

int main(int argc, char **argv) {
    BenchArgs a;
    FlagParser fp;
    bool help;
    if (!flags_parse(&fp, FLAGS, (int)(sizeof FLAGS / sizeof *FLAGS), &a, argc, argv, &help)) {
        fprintf(stderr, "error: %s\n", fp.error);
        return 2;
    }
    if (help) {
        flags_print_help(FLAGS, (int)(sizeof FLAGS / sizeof *FLAGS), "bench_train_step",
                         "Time forward+backward+AdamW steps of one micro-batch.", stdout);
        return 0;
    }
    char err[512];
    Backend *be = backend_create(a.device, 0, err, sizeof err);
    if (!be) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    TransformerConfig cfg = {.num_layers = a.num_layers, .hidden_size = a.hidden_size,
                     .num_attention_heads = a.heads, .ffn_hidden_size = 4 * a.hidden_size,
                     .vocab_size = a.vocab_size, .max_position_embeddings = a.seq_length,
                     .seq_length = a.seq_length, .init_method_std = 0.02, .seed = 1234};
    cfg.padded_vocab_size = gpt_padded_vocab_size(cfg.vocab_size, 128);
    transformer_config_set_gpt2_variant(&cfg);
    ModelPartition part = {.tp_size = 1, .num_local_layers = a.num_layers,
                           .has_embedding = true, .has_head = true};
    /* One rank: the distributed optimizer over a data-parallel group of one,
     * as pretrain_gpt runs it. */
    MPI_Init(&argc, &argv);
    ParallelState ps;
    if (!parallel_state_init(&ps, MPI_COMM_WORLD, 1, 1, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    Comm comm;
    comm_init(&comm, &ps, be);
    GPTModel *m = gpt_model_create_unbound(be, &cfg, &part, a.micro_batch_size, NULL, NULL, 1);
    const DistOptConfig oc = {
        .adamw = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .clip_grad = 1.0}};
    DistributedOptimizer *opt = distrib_optimizer_create(be, &comm, gpt_model_params(m), &oc);
    gpt_model_bind_buffers(m, distrib_optimizer_param_buffer(opt), distrib_optimizer_grad_buffer(opt));
    int num_masters;
    const GPTMasterRange *masters = distrib_optimizer_master_ranges(opt, &num_masters);
    gpt_model_init_params(m, masters, num_masters);

    const size_t N = (size_t)a.micro_batch_size * a.seq_length;
    int32_t *tok = xmalloc(N * sizeof *tok), *tgt = xmalloc(N * sizeof *tgt);
    for (size_t i = 0; i < N; i++) {
        tok[i] = (int32_t)rng_below(1, 1, i, (uint64_t)cfg.vocab_size);
        tgt[i] = (int32_t)rng_below(1, 2, i, (uint64_t)cfg.vocab_size);
    }
    const char *core = getenv("OPENBLAS_CORETYPE");
    const char *threads = getenv("OPENBLAS_NUM_THREADS");
    printf("config: %d layers, hidden %d, %d heads, seq %d, micro-batch %d, vocab %lld, %lld "
           "parameters; device %s; OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%s\n",
           a.num_layers, a.hidden_size, a.heads, a.seq_length, a.micro_batch_size,
           (long long)a.vocab_size, (long long)gpt_canonical_param_count(&cfg), a.device,
           core ? core : "(unset: auto-detected)", threads ? threads : "(unset)");
    double total = 0, gemm = 0, loss = 0;
    for (int it = 0; it < a.warmup + a.iters; it++) {
        const double g0 = be->gemm_seconds, t0 = timer_now_s();
        gpt_model_zero_grad(m);
        loss = gpt_model_forward(m, tok, tgt) / (double)N;
        gpt_model_backward(m, (float)(1.0 / (double)N));
        distrib_optimizer_reduce_grads(opt);
        distrib_optimizer_step(opt, 1e-4, distrib_optimizer_grad_norm(opt), 1.0);
        be->ops->synchronize(be);
        const double dt = timer_now_s() - t0;
        if (it >= a.warmup) {
            total += dt;
            gemm += be->gemm_seconds - g0;
        }
    }
    const double tps = (double)N * a.iters / total;
    const double tflops = gpt_flops_per_token(&cfg) * tps / 1e12;
    const double mfu = a.peak_tflops > 0 ? tflops / a.peak_tflops : 0.0;
    /* The buffers the model and optimizer plan for; the allocator's peak
     * above them is scratch nobody accounted for (workspaces, temporaries). */
    const double MiB = 1024.0 * 1024.0;
    const size_t numel = distrib_optimizer_buffer_numel(opt);
    const double planned = (double)backend_act_bytes(be, numel) + (double)numel * sizeof(float) +
                           (double)distrib_optimizer_state_bytes(opt) +
                           (double)gpt_model_activation_bytes(m);
    printf("step %.1f ms, %.0f tokens/s, %.2f GFLOP/s model, %.1f%% of the step in GEMM calls "
           "(loss %.3f)\n",
           1000.0 * total / a.iters, tps, tflops * 1e3, 100.0 * gemm / total, loss);
    printf("model %.2f TFLOP/s, MFU %.1f%% of %.0f TFLOP/s; peak %s memory %.1f MiB (planned "
           "buffers %.1f MiB)\n",
           tflops, 100.0 * mfu, a.peak_tflops, be->name, (double)be->peak_bytes_in_use / MiB,
           planned / MiB);
    printf("result: {\"device\": \"%s\", \"num_layers\": %d, \"hidden_size\": %d, "
           "\"seq_length\": %d, \"micro_batch_size\": %d, \"parameters\": %lld, "
           "\"step_ms\": %.3f, \"tokens_per_s\": %.1f, \"model_tflops\": %.4f, \"mfu\": %.5f, "
           "\"peak_mib\": %.2f, \"planned_mib\": %.2f, \"loss\": %.5f}\n",
           be->name, a.num_layers, a.hidden_size, a.seq_length, a.micro_batch_size,
           (long long)gpt_canonical_param_count(&cfg), 1000.0 * total / a.iters, tps, tflops, mfu,
           (double)be->peak_bytes_in_use / MiB, planned / MiB, loss);
    free(tok);
    free(tgt);
    distrib_optimizer_free(opt);
    gpt_model_free(m);
    backend_destroy(be);
    parallel_state_destroy(&ps);
    MPI_Finalize();
    flags_free(&fp, &a);
    return 0;
}
