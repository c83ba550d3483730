/* optimizer/distrib_optimizer.h — the distributed optimizer (ZeRO-1), with
 * Megatron-core's distrib_optimizer as the model.
 *
 * Contract. The DistributedOptimizer owns a rank's flat parameter (act dtype)
 * and gradient (fp32) buffers, their cut into buckets, the shard map, the
 * fp32 master weights and Adam moments of the shard, and every byte of
 * gradient and parameter traffic over the data-parallel group. The model
 * only binds views into the two buffers (gpt_model_bind_buffers); it does
 * not know the data-parallel size.
 *
 * Layout. Buffer offsets are the ParamTable's (gradient-ready order: last
 * layer first, word embedding last). The buffers are padded at the tail so
 * that every bucket's length is a multiple of DP x DIST_OPT_ALIGN elements;
 * a bucket is the range [begin, end) of the flat buffers and DP rank d owns
 * the d-th of its DP equal parts. A rank's shard is the union of its parts
 * of every bucket; its master weights and moments are one contiguous
 * allocation in bucket order ("state offsets"). Buckets need not follow
 * parameter boundaries: the shard intervals below split parameters where
 * needed. Without --overlap-grad-reduce all parameters share one bucket (as
 * Megatron); with it, buckets hold at most bucket_numel elements.
 *
 * Two parameter groups: dense parameters over GROUP_DATA_CONTEXT (DP x CP;
 * the data-parallel group when CP = 1) and the routed experts' over
 * GROUP_EXPERT_DATA (the ranks holding the same experts). The table puts
 * the experts in regions of their own (ParamInfo.expert, consecutive
 * parameters), beginning at multiples of DP x CP x DIST_OPT_ALIGN; each
 * region is cut into buckets of its own group, so a bucket never mixes
 * the two and every bucket's arithmetic is the same.
 *
 * Shard intervals: the one iterator from the shard to canonical
 * (parameter, [begin, end)) intervals, with each interval's buffer offset
 * and state offset. Checkpointing and initialisation use it; nothing else
 * repeats the overlap arithmetic.
 *
 * A step. distrib_optimizer_grads_ready() during the last micro-batch's
 * backward (overlap) starts the reduce-scatter of every bucket whose
 * gradients are final; distrib_optimizer_reduce_grads() starts the rest and
 * completes all of them (each rank then holds, at its shard's positions of
 * the gradient buffer, the sum over DP of those gradients); before a bucket
 * is reduced, the finalize callback completes its gradients across the other
 * groups (sequence-parallel and tied-embedding sums). grad_norm is the
 * global norm (each unique parameter counted once); step() clips, runs AdamW
 * on the shard, writes the act-dtype parameters of the shard and starts the
 * all-gather of every bucket; with --overlap-param-gather it returns at once
 * and params_needed() waits for the buckets a forward is about to read,
 * otherwise it waits for all of them. Everything is deterministic: the same
 * layout and bucket size give bitwise the same result. */
#ifndef GPT3D_DISTRIB_OPTIMIZER_H
#define GPT3D_DISTRIB_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "model/gpt_model.h"
#include "optimizer/optimizer.h"
#include "parallel_state/collectives.h"

/* Every bucket is a multiple of DP x this many elements (vector-friendly
 * chunk boundaries on both backends). */
#define DIST_OPT_ALIGN 64

/* Where a parameter region may begin and the buffer ends: a multiple of
 * both groups' bucket units (DIST_OPT_ALIGN x the group size). */
size_t distrib_optimizer_region_align(int dense_group_size, int expert_group_size);

/* Megatron-core's default bucket size with overlap: max(40M, 1M x DP). */
size_t distrib_optimizer_default_bucket_numel(int dp_size);

/* Gradients of the buffer range [begin, end) are about to be reduced over
 * DP: complete them across the other groups first. */
typedef void (*GradFinalizeFn)(void *ctx, size_t begin, size_t end);

typedef struct {
    AdamWConfig adamw;
    size_t bucket_numel;       /* with overlap_grad_reduce; 0: the default above */
    bool overlap_grad_reduce;  /* --overlap-grad-reduce */
    bool overlap_param_gather; /* --overlap-param-gather */
    /* DTYPE_F32 (default), or the backend's act dtype to halve the bytes
     * (--grad-reduce-in-bf16): each bucket is cast before its
     * reduce-scatter and the reduced shard cast back into the fp32 buffer. */
    DType grad_reduce_dtype;
    GradFinalizeFn finalize;   /* may be NULL */
    void *finalize_ctx;
    FILE *trace; /* when set: one line per bucket reduce/gather start and wait */
} DistOptConfig;

typedef struct {
    size_t begin, end;             /* flat buffer range */
    size_t shard_begin, shard_end; /* this rank's part of it */
    size_t state_offset;           /* of shard_begin in the state arrays */
    GroupKind group;               /* sharded over: the data-context or expert-data group */
} GradBucket;

typedef struct {
    int param;                              /* index in the ParamTable */
    int64_t canonical_begin, canonical_end; /* flat canonical element range */
    size_t buffer_offset;                   /* flat buffer offset of canonical_begin */
    size_t state_offset;                    /* offset in master / exp_avg / exp_avg_sq */
} ShardInterval;

typedef struct DistributedOptimizer DistributedOptimizer;

/* Collective-free. `table` must outlive the optimizer. Allocates the
 * parameter and gradient buffers (zeroed) and the shard state. */
DistributedOptimizer *distrib_optimizer_create(Backend *be, Comm *comm, const ParamTable *table,
                                               const DistOptConfig *cfg);
void distrib_optimizer_free(DistributedOptimizer *o);

void *distrib_optimizer_param_buffer(DistributedOptimizer *o);
float *distrib_optimizer_grad_buffer(DistributedOptimizer *o);
size_t distrib_optimizer_buffer_numel(const DistributedOptimizer *o);

int distrib_optimizer_num_buckets(const DistributedOptimizer *o);
const GradBucket *distrib_optimizer_bucket(const DistributedOptimizer *o, int k);
/* The shard's canonical intervals, in state order. */
const ShardInterval *distrib_optimizer_intervals(const DistributedOptimizer *o, int *count);
size_t distrib_optimizer_shard_numel(const DistributedOptimizer *o);

/* Device fp32 arrays of the shard, indexed by state offset. On an fp32
 * backend the parameters are their own master copy, so the master weights
 * are not contiguous: master_at() gives the master of one interval on every
 * backend, master_is_params() tells which case holds. */
float *distrib_optimizer_exp_avg(DistributedOptimizer *o);
float *distrib_optimizer_exp_avg_sq(DistributedOptimizer *o);
bool distrib_optimizer_master_is_params(const DistributedOptimizer *o);
float *distrib_optimizer_master(DistributedOptimizer *o); /* contiguous; NULL when master_is_params */
float *distrib_optimizer_master_at(DistributedOptimizer *o, const ShardInterval *iv);
/* The master ranges for gpt_model_init_params (none when master_is_params). */
const GPTMasterRange *distrib_optimizer_master_ranges(const DistributedOptimizer *o, int *count);

int64_t distrib_optimizer_step_count(const DistributedOptimizer *o);
void distrib_optimizer_set_step_count(DistributedOptimizer *o, int64_t step);
size_t distrib_optimizer_state_bytes(const DistributedOptimizer *o);
/* State bytes per element of the flat buffer without sharding (for the
 * "plain data parallel" figure and the memory plan). */
size_t distrib_optimizer_state_bytes_per_element(const DistributedOptimizer *o);
/* The same before the optimizer exists (for the start-up memory plan). */
size_t distrib_optimizer_planned_bytes_per_element(const Backend *be);

/* Backward of the last micro-batch has made the gradients of the buffer
 * prefix [0, ready_numel) final: start every bucket inside it (overlap only;
 * a no-op otherwise) and drive the ones in flight. */
void distrib_optimizer_grads_ready(DistributedOptimizer *o, size_t ready_numel);
/* Starts every bucket not started yet and completes all of them. */
void distrib_optimizer_reduce_grads(DistributedOptimizer *o);
/* Global gradient norm after reduce_grads (collective over the world). */
double distrib_optimizer_grad_norm(DistributedOptimizer *o);
/* The L2 norm of all parameters, each counted once (collective over the
 * world). */
double distrib_optimizer_param_norm(DistributedOptimizer *o);
/* Zero elements among the reduced gradients, each parameter counted once
 * (collective over the world; after reduce_grads). */
int64_t distrib_optimizer_grad_zeros(DistributedOptimizer *o);
/* The decoupled weight decay of the next steps (a schedule may change it
 * every iteration; parameters without decay keep none). */
void distrib_optimizer_set_weight_decay(DistributedOptimizer *o, double weight_decay);
/* The learning rate of the word embedding and output layer weights in the
 * next steps (Megatron's --decoupled-lr group); negative: the step's. */
void distrib_optimizer_set_embedding_lr(DistributedOptimizer *o, double lr);
/* Clip by grad_norm, AdamW on the shard, then the parameter all-gather.
 * The gradients are loss_scale times the true ones (1 without loss
 * scaling), grad_norm the true one's norm. */
void distrib_optimizer_step(DistributedOptimizer *o, double lr, double grad_norm,
                            double loss_scale);
/* Overwrites element i of this rank's gradient shard (its first interval's
 * buffer): how tests plant an overflow. */
void distrib_optimizer_set_grad_element(DistributedOptimizer *o, size_t i, float value);
/* Rewrites the shard's act-dtype parameters from the master weights and
 * all-gathers them (after a load or initialisation), waiting for all. */
void distrib_optimizer_publish_params(DistributedOptimizer *o);
/* A forward is about to read the parameters of [begin, end): waits for the
 * all-gathers of the buckets it touches (drives the others). */
void distrib_optimizer_params_needed(DistributedOptimizer *o, size_t begin, size_t end);
/* Completes every parameter all-gather in flight (before anything but a
 * forward reads the parameters, and before shutdown). */
void distrib_optimizer_finish_param_gather(DistributedOptimizer *o);

#endif
