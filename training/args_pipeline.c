/* The pipeline flags: uneven first and last stages, the embedding and the
 * loss counted in the split, virtual chunks (interleaved 1F1B). The rules
 * of the split itself live in pipeline_parallel/layer_split.c. */
#include <stdio.h>

#include "training/args_internal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static const char *VIRTUAL_FLAG_NAMES =
    "--num-layers-per-virtual-pipeline-stage / --num-virtual-stages-per-pipeline-rank";

/* Megatron's "not given" is None; a given size must be a real one. */
static bool stage_size(const FlagParser *parser, const char *flag, int value, int *out, char *err,
                       size_t err_size) {
    *out = 0;
    if (!flags_was_set(parser, flag)) return true;
    if (value < 1)
        FAIL("--%s must be larger than 0 (got %d); leave it out for an even split", flag, value);
    *out = value;
    return true;
}

static bool resolve_chunks(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size) {
    PipelineLayerSplit *s = &a->pipeline_split;
    const bool by_layers = flags_was_set(parser, "num-layers-per-virtual-pipeline-stage");
    const bool by_count = flags_was_set(parser, "num-virtual-stages-per-pipeline-rank");
    s->vp_size = 1;
    if (by_layers && by_count)
        FAIL("--num-layers-per-virtual-pipeline-stage and --num-virtual-stages-per-pipeline-rank "
             "exclude each other: give the chunks one way");
    if (by_count) {
        if (a->num_virtual_stages_per_pipeline_rank < 1)
            FAIL("--num-virtual-stages-per-pipeline-rank must be >= 1 (got %d)",
                 a->num_virtual_stages_per_pipeline_rank);
        s->vp_size = a->num_virtual_stages_per_pipeline_rank;
    }
    if (by_layers) {
        s->vp_size = pipeline_split_chunks_from_layers_per_chunk(
            s, a->num_layers_per_virtual_pipeline_stage, err, err_size);
        if (s->vp_size == 0) return false;
    }
    return true;
}

/* Megatron's interleaved schedule runs the micro-batches in groups of P
 * per chunk, so every iteration's count must be a multiple of P (with a
 * batch ramp, the first batch and each increment). */
static bool check_interleaved_batches(const TrainArgs *a, char *err, size_t err_size) {
    const int P = a->pipeline_model_parallel_size;
    const int per_micro_batch = a->micro_batch_size * a->data_parallel_size;
    if (a->num_microbatches % P)
        FAIL("interleaved 1F1B (%s) needs the micro-batches per iteration to be a multiple of "
             "--pipeline-model-parallel-size %d, but --global-batch-size %d / (--micro-batch-size "
             "%d x data-parallel %d) = %d; pick a global batch of a multiple of %d samples",
             VIRTUAL_FLAG_NAMES, P, a->global_batch_size, a->micro_batch_size,
             a->data_parallel_size, a->num_microbatches, P * per_micro_batch);
    const int start = a->batch.rampup_start, increment = a->batch.rampup_increment;
    if (start > 0 && (start / per_micro_batch % P || increment / per_micro_batch % P))
        FAIL("interleaved 1F1B (%s) needs every iteration's micro-batches to be a multiple of "
             "--pipeline-model-parallel-size %d: give --rampup-batch-size a start and increment "
             "of multiples of %d samples (got %d and %d)",
             VIRTUAL_FLAG_NAMES, P, P * per_micro_batch, start, increment);
    return true;
}

bool args_resolve_pipeline(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size) {
    PipelineLayerSplit *s = &a->pipeline_split;
    *s = (PipelineLayerSplit){.num_layers = a->model.num_layers,
                              .pp_size = a->pipeline_model_parallel_size,
                              .account_for_embedding = a->account_for_embedding_in_pipeline_split,
                              .account_for_loss = a->account_for_loss_in_pipeline_split};
    if (!stage_size(parser, "decoder-first-pipeline-num-layers",
                    a->decoder_first_pipeline_num_layers, &s->first_stage_layers, err, err_size) ||
        !stage_size(parser, "decoder-last-pipeline-num-layers",
                    a->decoder_last_pipeline_num_layers, &s->last_stage_layers, err, err_size) ||
        !resolve_chunks(a, parser, err, err_size) || !pipeline_split_check(s, err, err_size))
        return false;
    if (s->vp_size == 1) return true;
    return check_interleaved_batches(a, err, err_size);
}
