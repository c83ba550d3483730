/* The start-up memory check's inputs: host memory from /proc/meminfo and
 * cgroup files (faked here), and the model plan against what creation then
 * allocates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/host_memory.h"
#include "model/gpt_model.h"
#include "test_util.h"

static char dir[] = "/tmp/gpt3d_memplan_XXXXXX";

static const char *put(const char *name, const char *text) {
    static char paths[32][256];
    static int next = 0;
    char *p = paths[next++ % 32];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
    return p;
}

static void check_host_memory(void) {
    uint64_t bytes = 0;
    const char *meminfo = put("meminfo", "MemTotal: 8000 kB\nMemFree: 100 kB\nMemAvailable: 4000 kB\n");
    CHECK(host_memory_available_from(meminfo, NULL, NULL, NULL, &bytes) && bytes == 4000 * 1024);
    /* A cgroup with less room wins; one with more (or "max") does not. */
    const char *max = put("max", "2048000\n"), *cur = put("cur", "1024000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, NULL, &bytes) && bytes == 1024000);
    max = put("max", "max\n");
    CHECK(host_memory_available_from(meminfo, max, cur, NULL, &bytes) && bytes == 4000 * 1024);
    /* Usage above the limit leaves no room, rather than wrapping around. */
    max = put("max", "1000\n");
    cur = put("cur", "5000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, NULL, &bytes) && bytes == 0);
    /* The cgroup's inactive page cache is room, not use (v2 and v1 keys);
     * active cache and other keys are not; more cache than usage is no use. */
    max = put("max", "2048000\n");
    cur = put("cur", "2000000\n");
    const char *stat = put("stat", "anon 100\nactive_file 500000\ninactive_file 1500000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, stat, &bytes) && bytes == 1548000);
    stat = put("stat", "cache 9\ntotal_active_file 7\ntotal_inactive_file 1000000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, stat, &bytes) && bytes == 1048000);
    stat = put("stat", "anon 100\nactive_file 1900000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, stat, &bytes) && bytes == 48000);
    stat = put("stat", "inactive_file 9000000\n");
    CHECK(host_memory_available_from(meminfo, max, cur, stat, &bytes) && bytes == 2048000);
    /* Nothing readable: unknown, and the value is left alone. */
    bytes = 7;
    CHECK(!host_memory_available_from("/nonexistent/meminfo", NULL, NULL, NULL, &bytes) && bytes == 7);
    const char *garbage = put("meminfo", "MemTotal: 8000 kB\n");
    CHECK(!host_memory_available_from(garbage, NULL, NULL, NULL, &bytes));
    CHECK(host_memory_available(&bytes) && bytes > 0); /* this machine has /proc */
}

/* The plan is what creation allocates: measured by the same code. */
static void check_plan_matches_create(void) {
    char err[256];
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK(be);
    TransformerConfig cfg = {.num_layers = 3, .hidden_size = 32, .num_attention_heads = 4,
                     .ffn_hidden_size = 128, .vocab_size = 100, .padded_vocab_size = 128,
                     .max_position_embeddings = 64, .seq_length = 16, .init_method_std = 0.02,
                     .seed = 1};
    transformer_config_set_gpt2_variant(&cfg);
    ModelPartition part = {.tp_size = 1, .tp_rank = 0, .first_layer = 0, .num_local_layers = 3,
                           .has_embedding = true, .has_head = true};
    for (int slots = 1; slots <= 2; slots++) {
        GPTMemoryPlan plan;
        const size_t before = be->bytes_in_use;
        gpt_model_plan(be, &cfg, &part, 2, NULL, NULL, slots, &plan);
        CHECK(be->bytes_in_use == before); /* planning allocates nothing */
        GPTModel *m = gpt_model_create(be, &cfg, &part, 2, NULL, NULL, slots);
        CHECK(plan.flat_numel == gpt_model_params(m)->total_numel);
        CHECK(plan.param_bytes == plan.flat_numel * sizeof(float));
        CHECK(plan.grad_bytes == plan.flat_numel * sizeof(float));
        CHECK(plan.activation_bytes == gpt_model_activation_bytes(m));
        CHECK(plan.param_bytes + plan.grad_bytes + plan.activation_bytes <=
              be->bytes_in_use - before);
        gpt_model_free(m);
    }
    /* The closed-form bound never exceeds the real weights + gradients. */
    GPTMemoryPlan plan;
    gpt_model_plan(be, &cfg, &part, 2, NULL, NULL, 1, &plan);
    const double bound = gpt_model_min_rank_bytes(&cfg, 1, 1, 1, 1, cfg.num_layers, sizeof(float));
    CHECK(bound >= (double)gpt_canonical_param_count(&cfg) * 8.0);
    CHECK(bound - (double)(plan.param_bytes + plan.grad_bytes) <
          (double)cfg.num_layers * 12 * sizeof(ParamInfo) + 1.0);
    backend_destroy(be);
}

int main(void) {
    CHECK(mkdtemp(dir));
    check_host_memory();
    check_plan_matches_create();
    test_remove_dir(dir);
    printf("test_memory_plan: ok\n");
    return 0;
}
