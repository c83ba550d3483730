/* AdamW over one contiguous shard of the flat parameter buffer. */
#include <math.h>
#include <stdlib.h>

#include "core/errors.h"
#include "optimizer/optimizer.h"

struct Optimizer {
    Backend *be;
    const ParamTable *table;
    AdamWConfig cfg;
    size_t begin, end;
    float *state;  /* one allocation: [master |] exp_avg | exp_avg_sq */
    float *master; /* the fp32 params themselves when the backend computes in fp32 */
    bool master_is_params;
    int64_t step;
};

Optimizer *optimizer_create(Backend *be, const ParamTable *table, const AdamWConfig *cfg,
                            size_t shard_begin, size_t shard_end, void *params) {
    GPT3D_CHECK(shard_begin <= shard_end && shard_end <= table->total_numel,
                "bad optimizer shard [%zu, %zu) of %zu", shard_begin, shard_end,
                table->total_numel);
    Optimizer *o = xcalloc(1, sizeof *o);
    o->be = be;
    o->table = table;
    o->cfg = *cfg;
    o->begin = shard_begin;
    o->end = shard_end;
    const size_t len = shard_end - shard_begin;
    /* fp32 parameters are their own master copy: no second fp32 copy. */
    o->master_is_params = params && be->act_dtype == DTYPE_F32;
    o->state = be->ops->alloc(be, (o->master_is_params ? 2 : 3) * len * sizeof(float));
    o->master = o->master_is_params ? (float *)params + shard_begin : o->state + 2 * len;
    return o;
}

void optimizer_free(Optimizer *o) {
    if (!o) return;
    o->be->ops->free(o->be, o->state);
    free(o);
}

static size_t shard_len(const Optimizer *o) { return o->end - o->begin; }
float *optimizer_master(Optimizer *o) { return o->master; }
float *optimizer_exp_avg(Optimizer *o) { return o->state; }
float *optimizer_exp_avg_sq(Optimizer *o) { return o->state + shard_len(o); }
size_t optimizer_shard_begin(const Optimizer *o) { return o->begin; }
size_t optimizer_shard_end(const Optimizer *o) { return o->end; }
int64_t optimizer_step_count(const Optimizer *o) { return o->step; }
void optimizer_set_step_count(Optimizer *o, int64_t step) { o->step = step; }
size_t optimizer_state_bytes(const Optimizer *o) {
    return (o->master_is_params ? 2 : 3) * shard_len(o) * sizeof(float);
}
size_t optimizer_state_bytes_per_element(const Optimizer *o) {
    return (o->master_is_params ? 2 : 3) * sizeof(float);
}
size_t optimizer_planned_bytes_per_element(const Backend *be) {
    return (be->act_dtype == DTYPE_F32 ? 2 : 3) * sizeof(float);
}

/* The part of parameter p's buffer range that lies in the shard. */
static bool shard_overlap(const Optimizer *o, const ParamInfo *p, size_t *lo, size_t *hi) {
    size_t b = p->offset, e = p->offset + (size_t)p->local_numel;
    *lo = b > o->begin ? b : o->begin;
    *hi = e < o->end ? e : o->end;
    return *lo < *hi;
}

double optimizer_grad_sum_squares(Optimizer *o, const float *grads) {
    double sum = 0.0;
    for (int i = 0; i < o->table->count; i++) {
        size_t lo, hi;
        const ParamInfo *p = &o->table->params[i];
        if (p->counts_in_grad_norm && shard_overlap(o, p, &lo, &hi))
            sum += o->be->ops->sum_squares_f32(o->be, grads + lo, hi - lo);
    }
    return sum;
}

double optimizer_clip_coefficient(double clip_grad, double grad_norm) {
    if (clip_grad <= 0.0) return 1.0;
    double c = clip_grad / (grad_norm + 1.0e-6);
    return c < 1.0 ? c : 1.0;
}

void optimizer_step(Optimizer *o, void *params, const float *grads, double lr, double grad_norm) {
    Backend *be = o->be;
    const float scale = (float)optimizer_clip_coefficient(o->cfg.clip_grad, grad_norm);
    o->step++;
    float *master = optimizer_master(o), *m = optimizer_exp_avg(o), *v = optimizer_exp_avg_sq(o);
    for (int i = 0; i < o->table->count; i++) {
        const ParamInfo *p = &o->table->params[i];
        size_t lo, hi;
        if (!shard_overlap(o, p, &lo, &hi)) continue;
        const size_t s = lo - o->begin;
        void *param = o->master_is_params ? NULL : (char *)params + backend_act_bytes(be, lo);
        be->ops->adamw_update(be, param, master + s,
                              grads + lo, m + s, v + s, hi - lo, (float)lr, (float)o->cfg.beta1,
                              (float)o->cfg.beta2, (float)o->cfg.eps,
                              p->weight_decay ? (float)o->cfg.weight_decay : 0.0f, scale,
                              (int)o->step);
    }
}

void optimizer_write_params(Optimizer *o, void *params) {
    Backend *be = o->be;
    if (o->master_is_params) return;
    float *master = optimizer_master(o);
    for (int i = 0; i < o->table->count; i++) {
        size_t lo, hi;
        if (!shard_overlap(o, &o->table->params[i], &lo, &hi)) continue;
        be->ops->f32_to_act(be, (char *)params + backend_act_bytes(be, lo), master + (lo - o->begin),
                            hi - lo);
    }
}
