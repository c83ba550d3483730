/* The start-up memory check: what this rank will allocate, against what its
 * device (or the host, shared by every rank on the node) has free, decided
 * before anything large is built or allocated. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "training/trainer.h"

static double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

/* Ranks that draw on the same memory as this one: on the CPU every rank of
 * the node shares the host; a GPU rank owns its device. */
static int ranks_sharing_memory(const Trainer *t) {
    return !strcmp(t->be->name, "cpu") ? t->ps->local_size : 1;
}

static void describe_memory(const Trainer *t, char *out, size_t size) {
    const int sharing = ranks_sharing_memory(t);
    if (sharing > 1)
        snprintf(out, size, "host memory (MemAvailable and the cgroup limit), shared by the %d ranks "
                            "on this node",
                 sharing);
    else
        snprintf(out, size, "%s memory", strcmp(t->be->name, "cpu") ? "GPU" : "host");
}

/* The buffers of every model chunk of this rank (interleaving holds every
 * micro-batch of each chunk). */
static GPTMemoryPlan planned_chunks(const Trainer *t, int num_slots) {
    GPTMemoryPlan sum = {0};
    const int slots = t->num_chunks > 1 ? t->args->num_microbatches : num_slots;
    for (int v = 0; v < t->num_chunks; v++) {
        GPTMemoryPlan p;
        gpt_model_plan(t->be, &t->cfg, &t->chunk_parts[v], t->args->micro_batch_size, &t->tp,
                       (Comm *)&t->comm, slots, &p);
        sum.param_bytes += p.param_bytes;
        sum.grad_bytes += p.grad_bytes;
        sum.activation_bytes += p.activation_bytes;
        sum.flat_numel += p.flat_numel;
        sum.expert_numel += p.expert_numel;
    }
    return sum;
}

bool trainer_check_memory(const Trainer *t, int num_slots, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    const size_t available = t->be->ops->memory_available(t->be);
    if (available == SIZE_MAX) return true;
    const double sharing = ranks_sharing_memory(t);
    char where[160];
    describe_memory(t, where, sizeof where);

    /* The closed-form bound first: a shape that cannot fit is refused before
     * its parameter table is built, which for absurd shapes alone would take
     * minutes and all of memory. */
    const double bound = gpt_model_min_rank_bytes(
        &t->cfg, t->ps->tp_size, t->ps->pp_size, t->ps->ep_size, t->ps->etp_size,
        pipeline_split_max_rank_layers(&a->pipeline_split),
        backend_act_bytes(t->be, 1));
    if (bound * sharing > (double)available) {
        snprintf(err, err_size,
                 "the model's %lld parameters (--num-layers %d, --hidden-size %d, "
                 "--ffn-hidden-size %d, vocabulary %lld) need at least %.1f GiB per rank for "
                 "weights and gradients alone, but only %.1f GiB of %s is free; use a smaller "
                 "model or more --tensor-model-parallel-size / --pipeline-model-parallel-size",
                 (long long)gpt_canonical_param_count(&t->cfg), a->model.num_layers, a->model.hidden_size,
                 a->model.ffn_hidden_size, (long long)t->cfg.padded_vocab_size, gib(bound),
                 gib((double)available), where);
        return false;
    }

    const GPTMemoryPlan plan = planned_chunks(t, num_slots);
    const int shards = parallel_state_data_context_size(t->ps);
    /* Dense parameters sharded over DP x CP, the experts' over the ranks
     * holding the same experts. */
    const double shard = (double)(plan.flat_numel - plan.expert_numel) / shards +
                         (double)plan.expert_numel / t->ps->edp_size;
    const double optimizer = shard * (double)distrib_optimizer_planned_bytes_per_element(t->be);
    const double scratch = shards > 1 ? shard * sizeof(float) : 0.0;
    const double total = (double)plan.param_bytes + (double)plan.grad_bytes + optimizer +
                         scratch + (double)plan.activation_bytes;
    if (total * sharing <= (double)available) return true;
    snprintf(err, err_size,
             "the memory plan needs %.2f GiB per rank (parameters %.2f, gradients %.2f, "
             "optimizer state %.2f, activations %.2f GiB for --micro-batch-size %d x "
             "--seq-length %d) but only %.2f GiB of %s is free; lower --micro-batch-size or "
             "--seq-length, recompute activations (--recompute-granularity full --recompute-method uniform --recompute-num-layers 1), or spread the model over more ranks",
             gib(total), gib((double)plan.param_bytes), gib((double)plan.grad_bytes),
             gib(optimizer + scratch), gib((double)plan.activation_bytes), a->micro_batch_size,
             a->model.seq_length, gib((double)available), where);
    return false;
}
