#include "pipeline_parallel/layer_split.h"

#include <stdio.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool uneven(const PipelineLayerSplit *s) {
    return s->first_stage_layers > 0 || s->last_stage_layers > 0;
}

/* Ranks other than an explicitly sized first or last one. */
static int middle_stages(const PipelineLayerSplit *s) {
    return s->pp_size - (s->first_stage_layers > 0) - (s->last_stage_layers > 0);
}

static int middle_layers(const PipelineLayerSplit *s) {
    return s->num_layers - s->first_stage_layers - s->last_stage_layers;
}

/* The layer count the even rule divides: the embedding and the loss count
 * as layers when the flags say so. */
static int counted_layers(const PipelineLayerSplit *s) {
    return s->num_layers + s->account_for_embedding + s->account_for_loss;
}

static const char *VIRTUAL_FLAGS =
    "--num-layers-per-virtual-pipeline-stage / --num-virtual-stages-per-pipeline-rank";

static bool check_uneven(const PipelineLayerSplit *s, char *err, size_t err_size) {
    const int f = s->first_stage_layers, l = s->last_stage_layers, V = s->vp_size;
    if (s->account_for_embedding || s->account_for_loss)
        FAIL("--decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers exclude "
             "--account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split "
             "(Megatron's rule): size the end stages one way or the other");
    if (s->pp_size < 2)
        FAIL("--decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers need "
             "--pipeline-model-parallel-size of at least 2 (got %d)",
             s->pp_size);
    if (f % V)
        FAIL("--decoder-first-pipeline-num-layers %d is not divisible by the %d virtual stages "
             "per pipeline rank (%s)",
             f, V, VIRTUAL_FLAGS);
    if (l % V)
        FAIL("--decoder-last-pipeline-num-layers %d is not divisible by the %d virtual stages "
             "per pipeline rank (%s)",
             l, V, VIRTUAL_FLAGS);
    const int rest = middle_layers(s), stages = middle_stages(s);
    if (rest < 0 || (stages == 0 && rest > 0))
        FAIL("--decoder-first-pipeline-num-layers %d and --decoder-last-pipeline-num-layers %d "
             "must add up to %s --num-layers %d",
             f, l, stages == 0 ? "exactly" : "less than", s->num_layers);
    if (stages > 0 && rest == 0)
        FAIL("--decoder-first-pipeline-num-layers %d and --decoder-last-pipeline-num-layers %d "
             "take all %d layers and leave none for the other %d pipeline stage%s; lower them",
             f, l, s->num_layers, stages, stages == 1 ? "" : "s");
    if (stages > 0 && rest % stages)
        FAIL("the %d layers left by --decoder-first-pipeline-num-layers %d and "
             "--decoder-last-pipeline-num-layers %d do not split evenly over the other %d "
             "pipeline stages; change one of them or --num-layers",
             rest, f, l, stages);
    if (stages > 0 && rest / stages % V)
        FAIL("the %d layers of each middle pipeline stage are not divisible by the %d virtual "
             "stages per pipeline rank (%s)",
             rest / stages, V, VIRTUAL_FLAGS);
    return true;
}

/* "--num-layers N" or "--num-layers N plus the embedding and the loss". */
static void counted_text(const PipelineLayerSplit *s, char *out, size_t size) {
    if (!s->account_for_embedding && !s->account_for_loss) {
        snprintf(out, size, "--num-layers %d", s->num_layers);
        return;
    }
    snprintf(out, size, "--num-layers %d plus %s (%s) = %d", s->num_layers,
             s->account_for_embedding && s->account_for_loss ? "the embedding and the loss"
             : s->account_for_embedding                      ? "the embedding"
                                                             : "the loss",
             s->account_for_embedding && s->account_for_loss
                 ? "--account-for-embedding-in-pipeline-split, --account-for-loss-in-pipeline-split"
             : s->account_for_embedding ? "--account-for-embedding-in-pipeline-split"
                                        : "--account-for-loss-in-pipeline-split",
             counted_layers(s));
}

static bool check_even(const PipelineLayerSplit *s, char *err, size_t err_size) {
    char counted[256];
    counted_text(s, counted, sizeof counted);
    const int n = counted_layers(s), P = s->pp_size, V = s->vp_size;
    if (n % P)
        FAIL("%s is not divisible by --pipeline-model-parallel-size %d; change the layer count, "
             "or size the end stages with --decoder-first-pipeline-num-layers / "
             "--decoder-last-pipeline-num-layers",
             counted, P);
    if (n / P % V)
        FAIL("the %d layers per pipeline rank (%s over %d stages) are not divisible by the %d "
             "virtual stages per pipeline rank (%s)",
             n / P, counted, P, V, VIRTUAL_FLAGS);
    return true;
}

bool pipeline_split_check(const PipelineLayerSplit *s, char *err, size_t err_size) {
    if (s->num_layers < 1) FAIL("--num-layers must be >= 1 (got %d)", s->num_layers);
    if (s->pp_size < 1 || s->vp_size < 1)
        FAIL("--pipeline-model-parallel-size and the virtual stages per rank must be >= 1");
    if (s->first_stage_layers < 0 || s->last_stage_layers < 0)
        FAIL("--decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers must be "
             "larger than 0");
    if (s->vp_size > 1 && s->pp_size < 2)
        FAIL("%s: interleaving needs --pipeline-model-parallel-size of at least 2 (got %d)",
             VIRTUAL_FLAGS, s->pp_size);
    return uneven(s) ? check_uneven(s, err, err_size) : check_even(s, err, err_size);
}

/* Layers of chunk v of rank r before any offset is known. */
static int chunk_layers(const PipelineLayerSplit *s, int r, int v) {
    const int P = s->pp_size, V = s->vp_size;
    if (uneven(s)) {
        const int stages = middle_stages(s);
        int rank_layers = stages > 0 ? middle_layers(s) / stages : 0;
        if (r == 0 && s->first_stage_layers > 0) rank_layers = s->first_stage_layers;
        if (r == P - 1 && s->last_stage_layers > 0) rank_layers = s->last_stage_layers;
        return rank_layers / V;
    }
    int n = counted_layers(s) / (P * V);
    if (s->account_for_embedding && r == 0 && v == 0) n--;
    if (s->account_for_loss && r == P - 1 && v == V - 1) n--;
    return n;
}

PipelineLayerRange pipeline_split_chunk(const PipelineLayerSplit *s, int pp_rank, int vp_stage) {
    PipelineLayerRange range = {.first_layer = 0,
                                .num_layers = chunk_layers(s, pp_rank, vp_stage)};
    /* The data visits virtual stage g = v * P + r after stages 0 .. g-1. */
    const int g = vp_stage * s->pp_size + pp_rank;
    for (int h = 0; h < g; h++)
        range.first_layer += chunk_layers(s, h % s->pp_size, h / s->pp_size);
    return range;
}

int pipeline_split_max_rank_layers(const PipelineLayerSplit *s) {
    int most = 0;
    for (int r = 0; r < s->pp_size; r++) {
        int n = 0;
        for (int v = 0; v < s->vp_size; v++) n += chunk_layers(s, r, v);
        if (n > most) most = n;
    }
    return most;
}

int pipeline_split_chunks_from_layers_per_chunk(const PipelineLayerSplit *s, int layers_per_chunk,
                                                char *err, size_t err_size) {
    char counted[256];
    counted_text(s, counted, sizeof counted);
    const int n = counted_layers(s), P = s->pp_size;
    if (layers_per_chunk < 1) {
        snprintf(err, err_size, "--num-layers-per-virtual-pipeline-stage must be >= 1 (got %d)",
                 layers_per_chunk);
        return 0;
    }
    if (uneven(s)) {
        snprintf(err, err_size,
                 "with --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers "
                 "give the chunks per rank with --num-virtual-stages-per-pipeline-rank instead "
                 "of --num-layers-per-virtual-pipeline-stage (Megatron's rule)");
        return 0;
    }
    if (P < 1 || n % P || n / P % layers_per_chunk) {
        snprintf(err, err_size,
                 "--num-layers-per-virtual-pipeline-stage %d: %s over "
                 "--pipeline-model-parallel-size %d does not give a whole number of chunks of %d "
                 "layers per pipeline rank",
                 layers_per_chunk, counted, P, layers_per_chunk);
        return 0;
    }
    return n / P / layers_per_chunk;
}
