/* The model chunks of a pipeline rank. Without interleaving there is one,
 * the model itself. With V chunks (interleaved 1F1B) each is a GPTModel of
 * its own layers, and the distributed optimizer owns one pair of buffers
 * for all of them: chunk v computes on the range from chunk_base[v], and
 * the joint table lists every parameter at its offset there, so the
 * optimizer, the gradient norm and the checkpoints (canonical intervals)
 * see one rank's parameters as at any other layout. */
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "training/trainer.h"

void trainer_partition_chunks(Trainer *t) {
    const PipelineLayerSplit *s = &t->args->pipeline_split;
    const ParallelState *ps = t->ps;
    const int V = s->vp_size;
    t->num_chunks = V;
    t->chunk_parts = xcalloc((size_t)V, sizeof *t->chunk_parts);
    for (int v = 0; v < V; v++) {
        const PipelineLayerRange layers = pipeline_split_chunk(s, ps->pp_rank, v);
        t->chunk_parts[v] = (ModelPartition){
            .tp_size = ps->tp_size,
            .tp_rank = ps->tp_rank,
            .first_layer = layers.first_layer,
            .num_local_layers = layers.num_layers,
            /* The model's ends: the first rank's first chunk, the last rank's last. */
            .has_embedding = parallel_state_is_first_stage(ps) && v == 0,
            .has_head = parallel_state_is_last_stage(ps) && v == V - 1,
            .cp_size = ps->cp_size,
            .cp_rank = ps->cp_rank,
            .ep_size = ps->ep_size,
            .ep_rank = ps->ep_rank,
            .etp_size = ps->etp_size,
            .region_align = distrib_optimizer_region_align(parallel_state_data_context_size(ps),
                                                           ps->edp_size),
        };
    }
    t->part = t->chunk_parts[0];
}

/* The chunks' tables one after another, last chunk first (the order the
 * last micro-batch's backward finalises them, trainer.h), offsets shifted
 * to the joint buffer. */
static void join_tables(Trainer *t) {
    ParamTable *joint = &t->chunk_table;
    int count = 0;
    for (int v = 0; v < t->num_chunks; v++) count += gpt_model_params(t->chunks[v])->count;
    joint->params = xcalloc((size_t)count, sizeof *joint->params);
    for (int v = t->num_chunks - 1; v >= 0; v--) {
        const ParamTable *own = gpt_model_params(t->chunks[v]);
        t->chunk_base[v] = joint->total_numel;
        for (int i = 0; i < own->count; i++) {
            ParamInfo p = own->params[i];
            p.offset += joint->total_numel;
            joint->params[joint->count++] = p;
        }
        joint->total_numel += own->total_numel;
    }
}

void trainer_create_chunks(Trainer *t, const DistOptConfig *oc) {
    const TrainArgs *a = t->args;
    Backend *be = t->be;
    const int V = t->num_chunks, M = a->num_microbatches;
    t->chunks = xcalloc((size_t)V, sizeof *t->chunks);
    t->chunk_base = xcalloc((size_t)V, sizeof *t->chunk_base);
    /* Every micro-batch of a chunk may be alive at once in the warmup. */
    for (int v = 0; v < V; v++)
        t->chunks[v] = gpt_model_create_unbound(be, &t->cfg, &t->chunk_parts[v],
                                                a->micro_batch_size, &t->tp, &t->comm, M);
    join_tables(t);
    t->opt = distrib_optimizer_create(be, &t->comm, &t->chunk_table, oc);
    char *params = distrib_optimizer_param_buffer(t->opt);
    float *grads = distrib_optimizer_grad_buffer(t->opt);
    for (int v = 0; v < V; v++)
        gpt_model_bind_buffers(t->chunks[v], params + backend_act_bytes(be, t->chunk_base[v]),
                               grads + t->chunk_base[v]);
    trainer_set_buffer_hooks(t);
    /* A received output gradient waits for its backward, and a leading
     * rank receives several per chunk before the first of them runs. */
    const size_t bytes = backend_act_bytes(be, gpt_model_stage_activation_numel(t->chunks[0]));
    t->chunk_grad_in = xcalloc((size_t)(V * M), sizeof *t->chunk_grad_in);
    for (int i = 0; i < V * M; i++) t->chunk_grad_in[i] = be->ops->alloc(be, bytes);
}

const ParamTable *trainer_param_table(const Trainer *t) {
    return t->num_chunks > 1 ? &t->chunk_table : gpt_model_params(t->model);
}

size_t trainer_activation_bytes(const Trainer *t) {
    if (t->num_chunks == 1) return gpt_model_activation_bytes(t->model);
    size_t bytes = 0;
    for (int v = 0; v < t->num_chunks; v++) bytes += gpt_model_activation_bytes(t->chunks[v]);
    const size_t numel = gpt_model_stage_activation_numel(t->chunks[0]);
    return bytes + (size_t)(t->num_chunks * t->args->num_microbatches) *
                       backend_act_bytes(t->be, numel);
}

void trainer_init_params(Trainer *t) {
    int n;
    const GPTMasterRange *masters = distrib_optimizer_master_ranges(t->opt, &n);
    if (t->num_chunks == 1) {
        gpt_model_init_params(t->model, masters, n);
        return;
    }
    /* Each chunk sees the master ranges in its own buffer coordinates. */
    GPTMasterRange *own = xcalloc((size_t)n + 1, sizeof *own);
    for (int v = 0; v < t->num_chunks; v++) {
        const size_t lo = t->chunk_base[v], hi = lo + gpt_model_params(t->chunks[v])->total_numel;
        int k = 0;
        for (int i = 0; i < n; i++) {
            const size_t b = masters[i].begin > lo ? masters[i].begin : lo;
            const size_t e = masters[i].end < hi ? masters[i].end : hi;
            if (b >= e) continue;
            own[k++] = (GPTMasterRange){b - lo, e - lo, masters[i].master + (b - masters[i].begin)};
        }
        gpt_model_init_params(t->chunks[v], own, k);
    }
    free(own);
}

void trainer_free_models(Trainer *t) {
    if (t->num_chunks > 1) {
        /* A set-up that failed before the chunks existed frees none. */
        for (int v = 0; t->chunks && v < t->num_chunks; v++) gpt_model_free(t->chunks[v]);
        for (int i = 0; t->chunk_grad_in && i < t->num_chunks * t->args->num_microbatches; i++)
            t->be->ops->free(t->be, t->chunk_grad_in[i]);
        free(t->chunk_table.params);
    } else {
        gpt_model_free(t->model);
    }
    free(t->chunk_grad_in);
    free(t->chunks);
    free(t->chunk_base);
    free(t->chunk_hooks);
    free(t->chunk_parts);
}
