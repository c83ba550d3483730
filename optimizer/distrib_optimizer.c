/* The distributed optimizer: buffers, buckets, shard map, and the step. */
#include "optimizer/distrib_optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/timer.h"

typedef struct {
    GroupKind group; /* the group the parameters are sharded over */
    int size, rank;
} ShardGroup;

struct DistributedOptimizer {
    Backend *be;
    Comm *comm;
    const ParamTable *table;
    DistOptConfig cfg;
    ShardGroup dp, expert_dp; /* dense parameters' group, the routed experts' */
    size_t buffer_numel;
    void *params;
    float *grads;

    GradBucket *buckets;
    int num_buckets;
    ShardInterval *intervals;
    int num_intervals;
    GPTMasterRange *master_ranges; /* one per bucket; none when master_is_params */
    size_t shard_numel;

    float *state;  /* one allocation: exp_avg | exp_avg_sq [| master] */
    float *master; /* contiguous master, NULL when the fp32 params are their own */
    void *reduce_scratch; /* reduce-scatter outputs, by state offset (DP > 1) */
    void *reduce_input;   /* the buffer cast to a narrower reduce dtype, or NULL */
    int64_t step;
    double embedding_lr; /* < 0: the step's learning rate */

    /* Communication in flight, one handle per bucket. */
    CommHandle *grad_reduce, *param_gather;
    int next_reduce;       /* buckets [0, next_reduce) have started their reduce-scatter */
    bool gathers_inflight; /* some param_gather handle may be active */
    double exposed_reduce_s, exposed_gather_s; /* waited for, this step */
};

size_t distrib_optimizer_default_bucket_numel(int dp_size) {
    const size_t scaled = (size_t)1000000 * (size_t)(dp_size > 0 ? dp_size : 1);
    return scaled > 40000000 ? scaled : 40000000;
}

static size_t round_up(size_t n, size_t unit) { return (n + unit - 1) / unit * unit; }

static size_t gcd(size_t a, size_t b) { return b ? gcd(b, a % b) : a; }

size_t distrib_optimizer_region_align(int dense_group_size, int expert_group_size) {
    const size_t a = (size_t)dense_group_size, b = (size_t)expert_group_size;
    return a / gcd(a, b) * b * DIST_OPT_ALIGN;
}

/* Buckets of at most bucket_numel elements (a multiple of the group's
 * chunk unit) covering [begin, end) of the buffer, sharded over g. */
static void cut_region(DistributedOptimizer *o, size_t begin, size_t end, const ShardGroup *g,
                       int *cap) {
    const size_t unit = (size_t)g->size * DIST_OPT_ALIGN;
    size_t per = end - begin;
    if (o->cfg.overlap_grad_reduce) {
        per = o->cfg.bucket_numel ? o->cfg.bucket_numel
                                  : distrib_optimizer_default_bucket_numel(g->size);
        per = round_up(per, unit);
    }
    for (size_t at = begin; at < end; at += per) {
        if (o->num_buckets == *cap) {
            *cap = *cap ? 2 * *cap : 8;
            o->buckets = xrealloc(o->buckets, (size_t)*cap * sizeof *o->buckets);
        }
        GradBucket *b = &o->buckets[o->num_buckets++];
        b->begin = at;
        b->end = at + per < end ? at + per : end;
        const size_t part = (b->end - b->begin) / (size_t)g->size;
        b->shard_begin = b->begin + (size_t)g->rank * part;
        b->shard_end = b->shard_begin + part;
        b->state_offset = o->shard_numel;
        b->group = g->group;
        o->shard_numel += part;
    }
}

/* The buffer in regions of dense and of expert parameters (a region
 * begins at its first parameter and ends where the next begins), each
 * cut into its group's buckets. */
static void cut_buckets(DistributedOptimizer *o) {
    const ParamTable *t = o->table;
    const size_t unit = distrib_optimizer_region_align(o->dp.size, o->expert_dp.size);
    int cap = 0;
    size_t region = 0;
    bool expert = t->count > 0 && t->params[0].expert;
    for (int i = 1; i <= t->count; i++) {
        if (i < t->count && t->params[i].expert == expert) continue;
        const size_t end = i < t->count ? t->params[i].offset : o->buffer_numel;
        GPT3D_CHECK(end % unit == 0, "a parameter region ends at %zu, not a multiple of %zu "
                    "(ModelPartition.region_align)", end, unit);
        cut_region(o, region, end, expert ? &o->expert_dp : &o->dp, &cap);
        region = end;
        if (i < t->count) expert = t->params[i].expert;
    }
    if (t->count == 0) cut_region(o, 0, o->buffer_numel, &o->dp, &cap);
}

/* The one place that intersects parameters with the shard: every other
 * user walks the resulting intervals. */
static void map_shard(DistributedOptimizer *o) {
    const ParamTable *t = o->table;
    o->intervals = xcalloc((size_t)t->count * (size_t)o->num_buckets + 1, sizeof *o->intervals);
    for (int k = 0; k < o->num_buckets; k++) {
        const GradBucket *b = &o->buckets[k];
        for (int i = 0; i < t->count; i++) {
            const ParamInfo *p = &t->params[i];
            const size_t pb = p->offset, pe = p->offset + (size_t)p->local_numel;
            const size_t lo = pb > b->shard_begin ? pb : b->shard_begin;
            const size_t hi = pe < b->shard_end ? pe : b->shard_end;
            if (lo >= hi) continue;
            ShardInterval *iv = &o->intervals[o->num_intervals++];
            iv->param = i;
            iv->canonical_begin = p->local_begin + (int64_t)(lo - pb);
            iv->canonical_end = iv->canonical_begin + (int64_t)(hi - lo);
            iv->buffer_offset = lo;
            iv->state_offset = b->state_offset + (lo - b->shard_begin);
        }
    }
}

DistributedOptimizer *distrib_optimizer_create(Backend *be, Comm *comm, const ParamTable *table,
                                               const DistOptConfig *cfg) {
    DistributedOptimizer *o = xcalloc(1, sizeof *o);
    o->be = be;
    o->comm = comm;
    o->table = table;
    o->cfg = *cfg;
    o->embedding_lr = -1;
    /* Megatron's data-parallel group "with context parallel": CP ranks hold
     * the same parameters, each with the gradient of its part of the sequence. */
    o->dp = (ShardGroup){GROUP_DATA_CONTEXT, comm_group_size(comm, GROUP_DATA_CONTEXT),
                         comm_group_rank(comm, GROUP_DATA_CONTEXT)};
    o->expert_dp = (ShardGroup){GROUP_EXPERT_DATA, comm_group_size(comm, GROUP_EXPERT_DATA),
                                comm_group_rank(comm, GROUP_EXPERT_DATA)};
    const size_t unit = distrib_optimizer_region_align(o->dp.size, o->expert_dp.size);
    o->buffer_numel = round_up(table->total_numel ? table->total_numel : 1, unit);
    cut_buckets(o);
    map_shard(o);

    o->params = be->ops->alloc(be, backend_act_bytes(be, o->buffer_numel));
    o->grads = be->ops->alloc(be, o->buffer_numel * sizeof(float));
    /* fp32 parameters are their own master copy: no second fp32 copy. */
    const bool master_is_params = be->act_dtype == DTYPE_F32;
    o->state = be->ops->alloc(be, (master_is_params ? 2 : 3) * o->shard_numel * sizeof(float));
    if (!master_is_params) {
        o->master = o->state + 2 * o->shard_numel;
        o->master_ranges = xcalloc((size_t)o->num_buckets, sizeof *o->master_ranges);
        for (int k = 0; k < o->num_buckets; k++)
            o->master_ranges[k] = (GPTMasterRange){o->buckets[k].shard_begin,
                                                   o->buckets[k].shard_end,
                                                   o->master + o->buckets[k].state_offset};
    }
    const DType rt = cfg->grad_reduce_dtype;
    GPT3D_CHECK(rt == DTYPE_F32 || rt == be->act_dtype,
                "gradients reduce in fp32 or in the backend's %s, not %s", dtype_name(be->act_dtype),
                dtype_name(rt));
    if (o->dp.size > 1 || o->expert_dp.size > 1) {
        o->reduce_scratch = be->ops->alloc(be, o->shard_numel * dtype_size(rt));
        if (rt != DTYPE_F32) o->reduce_input = be->ops->alloc(be, o->buffer_numel * dtype_size(rt));
    }
    o->grad_reduce = xcalloc((size_t)o->num_buckets, sizeof *o->grad_reduce);
    o->param_gather = xcalloc((size_t)o->num_buckets, sizeof *o->param_gather);
    return o;
}

void distrib_optimizer_free(DistributedOptimizer *o) {
    if (!o) return;
    distrib_optimizer_finish_param_gather(o);
    for (int k = 0; k < o->num_buckets; k++) comm_wait(o->comm, &o->grad_reduce[k]);
    Backend *be = o->be;
    be->ops->free(be, o->params);
    be->ops->free(be, o->grads);
    be->ops->free(be, o->state);
    if (o->reduce_scratch) be->ops->free(be, o->reduce_scratch);
    if (o->reduce_input) be->ops->free(be, o->reduce_input);
    free(o->buckets);
    free(o->intervals);
    free(o->master_ranges);
    free(o->grad_reduce);
    free(o->param_gather);
    free(o);
}

void *distrib_optimizer_param_buffer(DistributedOptimizer *o) { return o->params; }
float *distrib_optimizer_grad_buffer(DistributedOptimizer *o) { return o->grads; }
size_t distrib_optimizer_buffer_numel(const DistributedOptimizer *o) { return o->buffer_numel; }
int distrib_optimizer_num_buckets(const DistributedOptimizer *o) { return o->num_buckets; }
const GradBucket *distrib_optimizer_bucket(const DistributedOptimizer *o, int k) {
    GPT3D_CHECK(k >= 0 && k < o->num_buckets, "bucket %d of %d", k, o->num_buckets);
    return &o->buckets[k];
}
const ShardInterval *distrib_optimizer_intervals(const DistributedOptimizer *o, int *count) {
    *count = o->num_intervals;
    return o->intervals;
}
size_t distrib_optimizer_shard_numel(const DistributedOptimizer *o) { return o->shard_numel; }
float *distrib_optimizer_exp_avg(DistributedOptimizer *o) { return o->state; }
float *distrib_optimizer_exp_avg_sq(DistributedOptimizer *o) { return o->state + o->shard_numel; }
bool distrib_optimizer_master_is_params(const DistributedOptimizer *o) { return !o->master; }
float *distrib_optimizer_master(DistributedOptimizer *o) { return o->master; }
float *distrib_optimizer_master_at(DistributedOptimizer *o, const ShardInterval *iv) {
    return o->master ? o->master + iv->state_offset : (float *)o->params + iv->buffer_offset;
}
const GPTMasterRange *distrib_optimizer_master_ranges(const DistributedOptimizer *o, int *count) {
    *count = o->master_ranges ? o->num_buckets : 0;
    return o->master_ranges;
}
int64_t distrib_optimizer_step_count(const DistributedOptimizer *o) { return o->step; }
void distrib_optimizer_set_step_count(DistributedOptimizer *o, int64_t step) { o->step = step; }
size_t distrib_optimizer_state_bytes_per_element(const DistributedOptimizer *o) {
    return (o->master ? 3 : 2) * sizeof(float);
}
size_t distrib_optimizer_state_bytes(const DistributedOptimizer *o) {
    return distrib_optimizer_state_bytes_per_element(o) * o->shard_numel;
}

static void trace(const DistributedOptimizer *o, const char *what, int k) {
    if (!o->cfg.trace) return;
    const GradBucket *b = &o->buckets[k];
    fprintf(o->cfg.trace, "%s bucket %d [%zu, %zu) %.6f\n", what, k, b->begin, b->end,
            timer_now_s());
}

/* ------------------------------------------------------------ gradients */

/* A bucket of a one-rank group is its own shard: nothing to reduce. */
static bool bucket_is_shard(const GradBucket *b) {
    return b->shard_end - b->shard_begin == b->end - b->begin;
}

static void start_grad_reduce(DistributedOptimizer *o, int k) {
    const GradBucket *b = &o->buckets[k];
    if (o->cfg.finalize) o->cfg.finalize(o->cfg.finalize_ctx, b->begin, b->end);
    if (bucket_is_shard(b)) return;
    trace(o, "grad_reduce_start", k);
    const DType rt = o->cfg.grad_reduce_dtype;
    const size_t elt = dtype_size(rt);
    const void *src = o->grads + b->begin;
    if (o->reduce_input) {
        src = (char *)o->reduce_input + b->begin * elt;
        o->be->ops->f32_to_act(o->be, (void *)src, o->grads + b->begin, b->end - b->begin);
    }
    comm_reduce_scatter_start(o->comm, b->group, (char *)o->reduce_scratch + b->state_offset * elt,
                              src, b->shard_end - b->shard_begin, rt, &o->grad_reduce[k]);
}

/* MPI progresses nonblocking collectives only inside MPI calls: testing
 * the handles in flight whenever the model reports progress keeps them
 * moving while it computes. */
static void drive(DistributedOptimizer *o, CommHandle *handles) {
    for (int k = 0; k < o->num_buckets; k++) comm_test(o->comm, &handles[k]);
}

void distrib_optimizer_grads_ready(DistributedOptimizer *o, size_t ready_numel) {
    if (!o->cfg.overlap_grad_reduce) return;
    while (o->next_reduce < o->num_buckets && o->buckets[o->next_reduce].end <= ready_numel)
        start_grad_reduce(o, o->next_reduce++);
    drive(o, o->grad_reduce);
}

void distrib_optimizer_reduce_grads(DistributedOptimizer *o) {
    while (o->next_reduce < o->num_buckets) start_grad_reduce(o, o->next_reduce++);
    o->next_reduce = 0;
    const double start = timer_now_s();
    for (int k = 0; k < o->num_buckets; k++) {
        const GradBucket *b = &o->buckets[k];
        if (bucket_is_shard(b)) continue;
        comm_wait(o->comm, &o->grad_reduce[k]);
        trace(o, "grad_reduce_done", k);
        /* The reduced shard goes back to its place in the buffer, where the
         * norm and AdamW read every gradient. */
        const size_t n = b->shard_end - b->shard_begin;
        if (o->reduce_input)
            o->be->ops->act_to_f32(o->be, o->grads + b->shard_begin,
                                   (char *)o->reduce_scratch + b->state_offset * dtype_size(o->cfg.grad_reduce_dtype), n);
        else
            o->be->ops->copy_device(o->be, o->grads + b->shard_begin,
                                    (float *)o->reduce_scratch + b->state_offset, n * sizeof(float));
    }
    o->exposed_reduce_s = timer_now_s() - start;
    if (o->cfg.trace) fprintf(o->cfg.trace, "grad_reduce_exposed %.6f\n", o->exposed_reduce_s);
}

double distrib_optimizer_grad_norm(DistributedOptimizer *o) {
    double sum = 0.0;
    for (int i = 0; i < o->num_intervals; i++) {
        const ShardInterval *iv = &o->intervals[i];
        if (!o->table->params[iv->param].counts_in_grad_norm) continue;
        sum += o->be->ops->sum_squares_f32(o->be, o->grads + iv->buffer_offset,
                                           (size_t)(iv->canonical_end - iv->canonical_begin));
    }
    /* Shards are disjoint over DP, stages hold different parameters and
     * counts_in_grad_norm drops TP and tied copies: the world sum counts
     * each parameter once. */
    comm_host_all_reduce(o->comm, GROUP_WORLD, &sum, 1, HOST_F64, REDUCE_SUM);
    return sqrt(sum);
}

/* Megatron's --log-params-norm: the L2 norm of every parameter once (the
 * fp32 master weights of the shards, deduplicated as the gradient norm). */
double distrib_optimizer_param_norm(DistributedOptimizer *o) {
    double sum = 0.0;
    for (int i = 0; i < o->num_intervals; i++) {
        const ShardInterval *iv = &o->intervals[i];
        if (!o->table->params[iv->param].counts_in_grad_norm) continue;
        sum += o->be->ops->sum_squares_f32(o->be, distrib_optimizer_master_at(o, iv),
                                           (size_t)(iv->canonical_end - iv->canonical_begin));
    }
    comm_host_all_reduce(o->comm, GROUP_WORLD, &sum, 1, HOST_F64, REDUCE_SUM);
    return sqrt(sum);
}

/* Megatron's --log-num-zeros-in-grad, counted on the device: only one
 * number per interval crosses to the host. */
int64_t distrib_optimizer_grad_zeros(DistributedOptimizer *o) {
    int64_t zeros = 0;
    for (int i = 0; i < o->num_intervals; i++) {
        const ShardInterval *iv = &o->intervals[i];
        if (!o->table->params[iv->param].counts_in_grad_norm) continue;
        zeros += (int64_t)o->be->ops->count_zeros_f32(
            o->be, o->grads + iv->buffer_offset, (size_t)(iv->canonical_end - iv->canonical_begin));
    }
    comm_host_all_reduce(o->comm, GROUP_WORLD, &zeros, 1, HOST_I64, REDUCE_SUM);
    return zeros;
}

/* ----------------------------------------------------------- parameters */

static void start_param_gather(DistributedOptimizer *o) {
    Backend *be = o->be;
    /* Forward reads the buffer from its end (embedding first): gather the
     * last bucket first. */
    for (int k = o->num_buckets - 1; k >= 0; k--) {
        const GradBucket *b = &o->buckets[k];
        if (bucket_is_shard(b)) continue;
        trace(o, "param_gather_start", k);
        comm_all_gather_start(o->comm, b->group, (char *)o->params + backend_act_bytes(be, b->begin),
                              (char *)o->params + backend_act_bytes(be, b->shard_begin),
                              b->shard_end - b->shard_begin, be->act_dtype, &o->param_gather[k]);
    }
    o->gathers_inflight = true;
    o->exposed_gather_s = 0;
}

void distrib_optimizer_finish_param_gather(DistributedOptimizer *o) {
    if (!o->gathers_inflight) return;
    const double start = timer_now_s();
    for (int k = o->num_buckets - 1; k >= 0; k--) comm_wait(o->comm, &o->param_gather[k]);
    o->exposed_gather_s += timer_now_s() - start;
    o->gathers_inflight = false;
    if (o->cfg.trace) fprintf(o->cfg.trace, "param_gather_exposed %.6f\n", o->exposed_gather_s);
}

void distrib_optimizer_params_needed(DistributedOptimizer *o, size_t begin, size_t end) {
    if (!o->gathers_inflight) return;
    const double start = timer_now_s();
    bool all_done = true;
    for (int k = o->num_buckets - 1; k >= 0; k--) {
        const GradBucket *b = &o->buckets[k];
        if (b->begin < end && begin < b->end) {
            if (!comm_handle_active(&o->param_gather[k])) continue;
            comm_wait(o->comm, &o->param_gather[k]);
            trace(o, "param_gather_done", k);
        } else if (!comm_test(o->comm, &o->param_gather[k])) {
            all_done = false;
        }
    }
    o->exposed_gather_s += timer_now_s() - start;
    if (all_done) distrib_optimizer_finish_param_gather(o);
}

static void write_params(DistributedOptimizer *o) {
    if (!o->master) return;
    Backend *be = o->be;
    for (int i = 0; i < o->num_intervals; i++) {
        const ShardInterval *iv = &o->intervals[i];
        be->ops->f32_to_act(be, (char *)o->params + backend_act_bytes(be, iv->buffer_offset),
                            o->master + iv->state_offset,
                            (size_t)(iv->canonical_end - iv->canonical_begin));
    }
}

void distrib_optimizer_publish_params(DistributedOptimizer *o) {
    distrib_optimizer_finish_param_gather(o);
    write_params(o);
    start_param_gather(o);
    distrib_optimizer_finish_param_gather(o);
}

void distrib_optimizer_set_weight_decay(DistributedOptimizer *o, double weight_decay) {
    o->cfg.adamw.weight_decay = weight_decay;
}

void distrib_optimizer_set_embedding_lr(DistributedOptimizer *o, double lr) { o->embedding_lr = lr; }

void distrib_optimizer_step(DistributedOptimizer *o, double lr, double grad_norm,
                            double loss_scale) {
    Backend *be = o->be;
    const AdamWConfig *c = &o->cfg.adamw;
    distrib_optimizer_finish_param_gather(o);
    /* One multiplier unscales and clips (both exact for a power-of-two
     * loss scale). */
    const float scale = (float)(optimizer_clip_coefficient(c->clip_grad, grad_norm) / loss_scale);
    o->step++;
    float *m = distrib_optimizer_exp_avg(o), *v = distrib_optimizer_exp_avg_sq(o);
    for (int i = 0; i < o->num_intervals; i++) {
        const ShardInterval *iv = &o->intervals[i];
        const ParamInfo *p = &o->table->params[iv->param];
        const size_t n = (size_t)(iv->canonical_end - iv->canonical_begin);
        const double param_lr = p->embedding_or_output && o->embedding_lr >= 0 ? o->embedding_lr : lr;
        void *param =
            o->master ? (char *)o->params + backend_act_bytes(be, iv->buffer_offset) : NULL;
        be->ops->adamw_update(be, param, distrib_optimizer_master_at(o, iv),
                              o->grads + iv->buffer_offset, m + iv->state_offset,
                              v + iv->state_offset, n, (float)param_lr, (float)c->beta1, (float)c->beta2,
                              (float)c->eps, p->weight_decay ? (float)c->weight_decay : 0.0f,
                              scale, (int)o->step);
    }
    start_param_gather(o);
    if (!o->cfg.overlap_param_gather) distrib_optimizer_finish_param_gather(o);
}

void distrib_optimizer_set_grad_element(DistributedOptimizer *o, size_t i, float value) {
    if (o->num_intervals == 0) return;
    o->be->ops->copy_to_device(o->be, o->grads + o->intervals[0].buffer_offset + i, &value,
                               sizeof value);
}

double optimizer_clip_coefficient(double clip_grad, double grad_norm) {
    if (clip_grad <= 0.0) return 1.0;
    double c = clip_grad / (grad_norm + 1.0e-6);
    return c < 1.0 ? c : 1.0;
}

size_t distrib_optimizer_planned_bytes_per_element(const Backend *be) {
    return (be->act_dtype == DTYPE_F32 ? 2 : 3) * sizeof(float);
}
