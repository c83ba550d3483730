/* pipeline_parallel/layer_split.h — which transformer layers each pipeline
 * rank (and each of its virtual chunks) holds.
 *
 * Contract. This is the one owner of the layer split; the trainer (each
 * rank's model chunks, the start-up log) and the memory bound ask it
 * instead of dividing (checkpoints hold canonical tensors and need no
 * split: any split loads any other). The
 * rules are Megatron-core's (get_num_layers_to_build and
 * get_transformer_layer_offset, validated as TransformerConfig and
 * arguments.py do):
 * - Even: every chunk of every rank holds num_layers / (P * V) layers.
 * - --decoder-first/last-pipeline-num-layers: the first (last) pipeline
 *   rank holds the given number, split evenly over its V chunks; the other
 *   ("middle") ranks share the remaining layers evenly.
 * - --account-for-embedding/loss-in-pipeline-split: the embedding (loss)
 *   counts as one layer of the split, so the first chunk of the first rank
 *   (the last chunk of the last rank) holds one transformer layer fewer;
 *   that chunk may hold none.
 * Layers are numbered in the order the data flows: virtual stage
 * g = chunk * P + pp_rank holds the layers after those of stages 0..g-1.
 * Validation gives one message naming the flags and the fix. */
#ifndef GPT3D_PIPELINE_LAYER_SPLIT_H
#define GPT3D_PIPELINE_LAYER_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int num_layers;
    int pp_size;
    int vp_size;            /* model chunks per pipeline rank; 1 without interleaving */
    int first_stage_layers; /* --decoder-first-pipeline-num-layers; 0: not given */
    int last_stage_layers;  /* --decoder-last-pipeline-num-layers; 0: not given */
    bool account_for_embedding, account_for_loss;
} PipelineLayerSplit;

typedef struct {
    int first_layer; /* global index of the chunk's first layer */
    int num_layers;  /* may be 0 only for a chunk that holds the embedding or the loss */
} PipelineLayerRange;

/* True when the split is one Megatron accepts; otherwise false with the
 * reason in err. */
bool pipeline_split_check(const PipelineLayerSplit *s, char *err, size_t err_size);

/* The layers of chunk `vp_stage` of pipeline rank `pp_rank` (a checked split). */
PipelineLayerRange pipeline_split_chunk(const PipelineLayerSplit *s, int pp_rank, int vp_stage);

/* The most layers any one pipeline rank holds over all its chunks. */
int pipeline_split_max_rank_layers(const PipelineLayerSplit *s);

/* --num-layers-per-virtual-pipeline-stage N: the chunks per pipeline rank it
 * means for this split (vp_size ignored), or 0 with the reason in err. */
int pipeline_split_chunks_from_layers_per_chunk(const PipelineLayerSplit *s, int layers_per_chunk,
                                                char *err, size_t err_size);

#endif
