/* A small, complete CheckpointMeta for checkpoint-module tests: a 1-layer
 * model saved at TP = world, so tests build rank files without a trainer. */
#ifndef GPT3D_TEST_CHECKPOINT_META_H
#define GPT3D_TEST_CHECKPOINT_META_H

#include <stdio.h>
#include <string.h>

#include "checkpoint/checkpoint.h"

static inline CheckpointMeta test_checkpoint_meta(int64_t iteration, int world) {
    CheckpointMeta m;
    memset(&m, 0, sizeof m);
    m.iteration = iteration;
    m.consumed_train_samples = iteration * 16;
    m.optimizer_step = iteration;
    m.scheduler_num_steps = iteration * 16;
    m.loss_scale = 1.0;
    m.model.num_layers = 1;
    m.model.hidden_size = 4;
    m.model.num_attention_heads = 1;
    m.model.ffn_hidden_size = 8;
    m.model.vocab_size = 256;
    m.model.padded_vocab_size = 256;
    m.model.max_position_embeddings = 16;
    m.model.seq_length = 16;
    transformer_config_set_gpt2_variant(&m.model);
    m.tensor_model_parallel_size = world;
    m.pipeline_model_parallel_size = 1;
    m.data_parallel_size = 1;
    m.world_size = world;
    m.context_parallel_size = 1;
    m.model.seed = 1234;
    m.has_optimizer_state = true;
    snprintf(m.data_description, sizeof m.data_description, "--data-path fake.h5");
    snprintf(m.tokenizer_type, sizeof m.tokenizer_type, "ByteTokenizer");
    return m;
}

#endif
