/* The pipeline layer split: hand-worked cases of Megatron's rules (even,
 * first/last stage sizes, embedding and loss counted as layers, with and
 * without virtual chunks), Megatron-core's own offset and count formulas
 * (get_transformer_layer_offset, get_num_layers_to_build, restated below
 * from their definition) over a grid of valid splits, the chunks tiling
 * [0, num_layers) in data order, and the refusals naming the flags. */
#include <stdio.h>
#include <string.h>

#include "pipeline_parallel/layer_split.h"
#include "test_util.h"

typedef struct {
    PipelineLayerSplit s;
    int want[16][2]; /* (first_layer, num_layers) of virtual stage g = v * P + r */
} Case;

static void check_case(const Case *c) {
    char err[512] = "";
    const PipelineLayerSplit *s = &c->s;
    CHECK_MSG(pipeline_split_check(s, err, sizeof err), "L=%d P=%d V=%d: %s", s->num_layers,
              s->pp_size, s->vp_size, err);
    for (int g = 0; g < s->pp_size * s->vp_size; g++) {
        const PipelineLayerRange r = pipeline_split_chunk(s, g % s->pp_size, g / s->pp_size);
        CHECK_MSG(r.first_layer == c->want[g][0] && r.num_layers == c->want[g][1],
                  "L=%d P=%d V=%d f=%d l=%d e=%d loss=%d stage %d chunk %d: [%d, +%d), want "
                  "[%d, +%d)",
                  s->num_layers, s->pp_size, s->vp_size, s->first_stage_layers,
                  s->last_stage_layers, s->account_for_embedding, s->account_for_loss,
                  g % s->pp_size, g / s->pp_size, r.first_layer, r.num_layers, c->want[g][0],
                  c->want[g][1]);
    }
}

static void hand_worked(void) {
    const Case cases[] = {
        {{8, 4, 1, 0, 0, false, false}, {{0, 2}, {2, 2}, {4, 2}, {6, 2}}},
        /* 6 layers on 3 stages, 1 first and 1 last: the middle stage holds 4. */
        {{6, 3, 1, 1, 1, false, false}, {{0, 1}, {1, 4}, {5, 1}}},
        {{6, 4, 1, 1, 1, false, false}, {{0, 1}, {1, 2}, {3, 2}, {5, 1}}},
        /* Only the first given: the last stage is a middle one. */
        {{5, 3, 1, 1, 0, false, false}, {{0, 1}, {1, 2}, {3, 2}}},
        {{5, 3, 1, 0, 3, false, false}, {{0, 1}, {1, 1}, {2, 3}}},
        /* The embedding counts as a layer: (5 + 1) / 3 = 2, the first holds 1. */
        {{5, 3, 1, 0, 0, true, false}, {{0, 1}, {1, 2}, {3, 2}}},
        {{4, 3, 1, 0, 0, true, true}, {{0, 1}, {1, 2}, {3, 1}}},
        {{7, 4, 1, 0, 0, false, true}, {{0, 2}, {2, 2}, {4, 2}, {6, 1}}},
        /* A first stage of the embedding alone. */
        {{1, 2, 1, 0, 0, true, false}, {{0, 0}, {0, 1}}},
        /* Megatron's own example: 8 layers, 2 stages, 2 chunks: [0 1] [4 5] / [2 3] [6 7]. */
        {{8, 2, 2, 0, 0, false, false}, {{0, 2}, {2, 2}, {4, 2}, {6, 2}}},
        {{8, 2, 4, 0, 0, false, false},
         {{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}, {7, 1}}},
        /* Uneven and interleaved: 2 | 6 | 2 layers over 2 chunks: 1 | 3 | 1 per chunk. */
        {{10, 3, 2, 2, 2, false, false}, {{0, 1}, {1, 3}, {4, 1}, {5, 1}, {6, 3}, {9, 1}}},
        /* Embedding counted, interleaved: (7 + 1) / 4 = 2 per chunk, the very first holds 1. */
        {{7, 2, 2, 0, 0, true, false}, {{0, 1}, {1, 2}, {3, 2}, {5, 2}}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
}

/* Megatron-core's offset of chunk v on rank r, case by case as it computes it. */
static int megatron_offset(const PipelineLayerSplit *s, int r, int v) {
    const int P = s->pp_size, V = s->vp_size;
    if (P == 1) return 0;
    if (s->first_stage_layers || s->last_stage_layers) {
        const int middle_stages = P - !!s->first_stage_layers - !!s->last_stage_layers;
        const int middle = s->num_layers - s->first_stage_layers - s->last_stage_layers;
        const int middle_rank = s->first_stage_layers ? r - 1 : r;
        const int first_chunk = s->first_stage_layers / V, last_chunk = s->last_stage_layers / V;
        const int middle_chunk = middle / V;
        const int total = first_chunk + middle_chunk + last_chunk;
        if (r == 0) return v * total;
        return v * total + first_chunk +
               middle_rank * (middle_stages ? middle_chunk / middle_stages : 0);
    }
    const int n = s->num_layers + s->account_for_embedding + s->account_for_loss;
    const int per_chunk = n / P / V;
    int offset = v * (n / V) + r * per_chunk;
    if (s->account_for_embedding && !(v == 0 && r == 0)) offset--;
    return offset;
}

static int megatron_count(const PipelineLayerSplit *s, int r, int v) {
    const int P = s->pp_size, V = s->vp_size;
    int per_rank;
    if (s->first_stage_layers || s->last_stage_layers) {
        const int stages = P - !!s->first_stage_layers - !!s->last_stage_layers;
        const int rest = s->num_layers - s->first_stage_layers - s->last_stage_layers;
        per_rank = stages > 0 ? rest / stages : 0;
        if (r == 0 && s->first_stage_layers) per_rank = s->first_stage_layers;
        if (r == P - 1 && s->last_stage_layers) per_rank = s->last_stage_layers;
    } else {
        per_rank = (s->num_layers + s->account_for_embedding + s->account_for_loss) / P;
    }
    int n = per_rank / V;
    if (s->account_for_embedding && v == 0 && r == 0) n--;
    if (s->account_for_loss && v == V - 1 && r == P - 1) n--;
    return n;
}

/* Every valid split of a grid: Megatron's numbers, and chunks that tile
 * the layers in the order g = v * P + r. */
static void grid(void) {
    int valid = 0;
    for (int L = 1; L <= 24; L++)
        for (int P = 1; P <= 6; P++)
            for (int V = 1; V <= 4; V++)
                for (int f = 0; f <= 6; f++)
                    for (int l = 0; l <= 6; l++)
                        for (int acc = 0; acc < 4; acc++) {
                            const PipelineLayerSplit s = {L, P, V, f, l, acc & 1, acc >> 1};
                            char err[512];
                            if (!pipeline_split_check(&s, err, sizeof err)) {
                                CHECK_MSG(err[0] == '-' || strstr(err, "--"),
                                          "a refusal names no flag: %s", err);
                                continue;
                            }
                            valid++;
                            int next = 0, most = 0, per_rank[6] = {0};
                            for (int g = 0; g < P * V; g++) {
                                const int r = g % P, v = g / P;
                                const PipelineLayerRange c = pipeline_split_chunk(&s, r, v);
                                CHECK_MSG(c.first_layer == next && c.num_layers >= 0,
                                          "L=%d P=%d V=%d f=%d l=%d acc=%d g=%d: [%d, +%d) "
                                          "after %d",
                                          L, P, V, f, l, acc, g, c.first_layer, c.num_layers, next);
                                CHECK_MSG(c.first_layer == megatron_offset(&s, r, v) &&
                                              c.num_layers == megatron_count(&s, r, v),
                                          "L=%d P=%d V=%d f=%d l=%d acc=%d r=%d v=%d: [%d, +%d) "
                                          "but Megatron [%d, +%d)",
                                          L, P, V, f, l, acc, r, v, c.first_layer, c.num_layers,
                                          megatron_offset(&s, r, v), megatron_count(&s, r, v));
                                /* Only the chunk that holds the embedding or the loss may be empty. */
                                CHECK(c.num_layers > 0 || (g == 0 && s.account_for_embedding) ||
                                      (g == P * V - 1 && s.account_for_loss));
                                next += c.num_layers;
                                per_rank[r] += c.num_layers;
                                if (per_rank[r] > most) most = per_rank[r];
                            }
                            CHECK_MSG(next == L, "L=%d P=%d V=%d f=%d l=%d acc=%d: %d layers", L,
                                      P, V, f, l, acc, next);
                            CHECK(pipeline_split_max_rank_layers(&s) == most);
                        }
    CHECK_MSG(valid > 500, "only %d valid splits in the grid", valid);
}

static void refused(PipelineLayerSplit s, const char *needle) {
    char err[512] = "";
    CHECK_MSG(!pipeline_split_check(&s, err, sizeof err), "accepted, want '%s'", needle);
    CHECK_HAS(err, needle);
}

static void refusals(void) {
    refused((PipelineLayerSplit){6, 4, 1, 0, 0, false, false},
            "--num-layers 6 is not divisible by --pipeline-model-parallel-size 4");
    refused((PipelineLayerSplit){6, 4, 1, 0, 0, true, false},
            "--num-layers 6 plus the embedding (--account-for-embedding-in-pipeline-split) = 7 "
            "is not divisible by --pipeline-model-parallel-size 4");
    refused((PipelineLayerSplit){6, 3, 1, 4, 3, false, false}, "must add up to less than --num-layers 6");
    refused((PipelineLayerSplit){6, 2, 1, 2, 2, false, false}, "must add up to exactly --num-layers 6");
    refused((PipelineLayerSplit){6, 3, 1, 3, 3, false, false}, "leave none for the other 1 pipeline stage");
    refused((PipelineLayerSplit){7, 4, 1, 1, 1, false, false}, "do not split evenly over the other 2");
    refused((PipelineLayerSplit){6, 3, 1, 1, 0, true, false}, "exclude --account-for-embedding");
    refused((PipelineLayerSplit){6, 1, 1, 2, 0, false, false}, "need --pipeline-model-parallel-size of at least 2");
    refused((PipelineLayerSplit){8, 2, 2, 1, 0, false, false},
            "--decoder-first-pipeline-num-layers 1 is not divisible by the 2 virtual stages");
    refused((PipelineLayerSplit){8, 1, 2, 0, 0, false, false}, "interleaving needs --pipeline-model-parallel-size");
    refused((PipelineLayerSplit){5, 2, 2, 0, 0, true, false}, "the 3 layers per pipeline rank");
    refused((PipelineLayerSplit){11, 3, 2, 2, 2, false, false},
            "the 7 layers of each middle pipeline stage are not divisible by the 2 virtual");
}

static void layers_per_chunk(void) {
    char err[512] = "";
    const PipelineLayerSplit even = {8, 2, 1, 0, 0, false, false};
    CHECK(pipeline_split_chunks_from_layers_per_chunk(&even, 2, err, sizeof err) == 2);
    CHECK(pipeline_split_chunks_from_layers_per_chunk(&even, 1, err, sizeof err) == 4);
    CHECK(pipeline_split_chunks_from_layers_per_chunk(&even, 3, err, sizeof err) == 0);
    CHECK_HAS(err, "--num-layers-per-virtual-pipeline-stage 3");
    const PipelineLayerSplit with_embedding = {7, 2, 1, 0, 0, true, false};
    CHECK(pipeline_split_chunks_from_layers_per_chunk(&with_embedding, 2, err, sizeof err) == 2);
    const PipelineLayerSplit first = {8, 2, 1, 2, 0, false, false};
    CHECK(pipeline_split_chunks_from_layers_per_chunk(&first, 2, err, sizeof err) == 0);
    CHECK_HAS(err, "--num-virtual-stages-per-pipeline-rank");
}

int main(void) {
    hand_worked();
    grid();
    refusals();
    layers_per_chunk();
    printf("test_layer_split: ok\n");
    return 0;
}
