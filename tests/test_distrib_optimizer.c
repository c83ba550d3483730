/* The distributed optimizer on its own, over a data-parallel group of all
 * ranks (run under mpirun): bucket layout and shard map against their
 * definition, the reduce-scatter, norm, AdamW step and all-gather against
 * the same arithmetic done on one rank over the whole buffer, with and
 * without overlap and for several bucket sizes, and the exact number of
 * collectives. Gradients are small multiples of 1/16, so their sums are
 * exact in any order and the comparisons can be bitwise. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "optimizer/distrib_optimizer.h"
#include "parallel_state/collectives.h"
#include "test_util.h"

static TransformerConfig tiny_config(void) {
    TransformerConfig c = {.num_layers = 2, .hidden_size = 16, .num_attention_heads = 2,
                   .ffn_hidden_size = 40, .vocab_size = 70, .max_position_embeddings = 12,
                   .seq_length = 12, .init_method_std = 0.02, .seed = 7};
    c.padded_vocab_size = gpt_padded_vocab_size(c.vocab_size, 128);
    transformer_config_set_gpt2_variant(&c);
    return c;
}

/* Gradient element i of DP rank r: exact in fp32 and summed exactly. */
static float grad_value(int r, size_t i) { return (float)((int)((i * 7 + (size_t)r * 13) % 17) - 8) / 16.0f; }
static float param_value(size_t i) { return (float)((int)(i % 29) - 14) / 64.0f; }

typedef struct {
    int calls;
    size_t last_end;
    bool in_order;
} FinalizeLog;

static void on_finalize(void *ctx, size_t begin, size_t end) {
    FinalizeLog *l = ctx;
    if (begin != l->last_end) l->in_order = false;
    l->last_end = end;
    l->calls++;
}

static const AdamWConfig ADAMW = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1,
                                  .clip_grad = 0.5};

static size_t round_up(size_t n, size_t unit) { return (n + unit - 1) / unit * unit; }

/* Buckets tile the padded buffer, each a multiple of DP x 64 and at most the
 * requested size; every parameter element belongs to exactly one rank. */
static void check_layout(Comm *comm, const ParamTable *pt, DistributedOptimizer *o, size_t bucket,
                         bool overlap) {
    const int dp = comm_group_size(comm, GROUP_DATA_CONTEXT);
    const size_t unit = (size_t)dp * DIST_OPT_ALIGN, n = distrib_optimizer_buffer_numel(o);
    CHECK(n % unit == 0 && n >= pt->total_numel && n < pt->total_numel + unit);
    const size_t per = overlap ? round_up(bucket, unit) : n;
    const int K = distrib_optimizer_num_buckets(o);
    CHECK_MSG(K == (int)((n + per - 1) / per), "%d buckets for %zu elements of at most %zu", K, n,
              per);
    size_t at = 0, state = 0;
    for (int k = 0; k < K; k++) {
        const GradBucket *b = distrib_optimizer_bucket(o, k);
        CHECK(b->begin == at && b->end > b->begin && b->end - b->begin <= per);
        CHECK((b->end - b->begin) % unit == 0);
        const size_t part = (b->end - b->begin) / (size_t)dp;
        CHECK(b->shard_begin == b->begin + (size_t)comm_group_rank(comm, GROUP_DATA_CONTEXT) * part);
        CHECK(b->shard_end == b->shard_begin + part && b->state_offset == state);
        at = b->end;
        state += part;
    }
    CHECK(at == n && state == distrib_optimizer_shard_numel(o));

    int count;
    const ShardInterval *iv = distrib_optimizer_intervals(o, &count);
    int64_t *owned = xcalloc((size_t)pt->count, sizeof *owned);
    size_t prev_state_end = 0;
    for (int i = 0; i < count; i++) {
        const ParamInfo *p = &pt->params[iv[i].param];
        const int64_t len = iv[i].canonical_end - iv[i].canonical_begin;
        CHECK(len > 0 && iv[i].canonical_begin >= p->local_begin);
        CHECK(iv[i].canonical_end <= p->local_begin + p->local_numel);
        CHECK(iv[i].buffer_offset == p->offset + (size_t)(iv[i].canonical_begin - p->local_begin));
        CHECK(iv[i].state_offset >= prev_state_end); /* state order, disjoint */
        prev_state_end = iv[i].state_offset + (size_t)len;
        owned[iv[i].param] += len;
    }
    CHECK(prev_state_end <= distrib_optimizer_shard_numel(o));
    comm_host_all_reduce(comm, GROUP_DATA_CONTEXT, owned, (size_t)pt->count, HOST_I64, REDUCE_SUM);
    for (int i = 0; i < pt->count; i++)
        CHECK_MSG(owned[i] == pt->params[i].local_numel, "%s: %lld of %lld elements owned",
                  pt->params[i].name, (long long)owned[i], (long long)pt->params[i].local_numel);
    free(owned);
}

/* The whole-buffer result one rank computes alone: summed gradients, their
 * norm over the parameters the table counts, and one AdamW step. */
static void reference_step(Backend *be, const ParamTable *pt, int dp, double lr, float *params,
                           float *grads, double *norm) {
    double sum = 0;
    for (int i = 0; i < pt->count; i++) {
        const ParamInfo *p = &pt->params[i];
        for (int64_t j = 0; j < p->local_numel; j++) {
            float g = 0;
            for (int r = 0; r < dp; r++) g += grad_value(r, p->offset + (size_t)j);
            grads[p->offset + (size_t)j] = g;
            params[p->offset + (size_t)j] = param_value(p->offset + (size_t)j);
            if (p->counts_in_grad_norm) sum += (double)g * g;
        }
    }
    *norm = sqrt(sum);
    const float scale = (float)optimizer_clip_coefficient(ADAMW.clip_grad, *norm);
    for (int i = 0; i < pt->count; i++) {
        const ParamInfo *p = &pt->params[i];
        const size_t n = (size_t)p->local_numel;
        float *m = xcalloc(n, sizeof *m), *v = xcalloc(n, sizeof *v);
        be->ops->adamw_update(be, NULL, params + p->offset, grads + p->offset, m, v, n, (float)lr,
                              (float)ADAMW.beta1, (float)ADAMW.beta2, (float)ADAMW.eps,
                              p->weight_decay ? (float)ADAMW.weight_decay : 0.0f, scale, 1);
        free(m);
        free(v);
    }
}

static void run_case(Comm *comm, Backend *be, const ParamTable *pt, size_t bucket, bool overlap) {
    const int dp = comm_group_size(comm, GROUP_DATA_CONTEXT), rank = comm_group_rank(comm, GROUP_DATA_CONTEXT);
    FinalizeLog log = {.in_order = true};
    const DistOptConfig cfg = {.adamw = ADAMW,
                               .bucket_numel = bucket,
                               .overlap_grad_reduce = overlap,
                               .overlap_param_gather = overlap,
                               .finalize = on_finalize,
                               .finalize_ctx = &log};
    DistributedOptimizer *o = distrib_optimizer_create(be, comm, pt, &cfg);
    check_layout(comm, pt, o, bucket, overlap);
    const int K = distrib_optimizer_num_buckets(o);
    float *params = distrib_optimizer_param_buffer(o), *grads = distrib_optimizer_grad_buffer(o);
    const size_t n = distrib_optimizer_buffer_numel(o);
    for (size_t i = 0; i < n; i++) {
        grads[i] = grad_value(rank, i);
        params[i] = param_value(i);
    }
    comm_reset_counters(comm);
    if (overlap) /* the backward's reports: growing prefixes, at parameter ends */
        for (int i = 0; i < pt->count; i++)
            distrib_optimizer_grads_ready(o, pt->params[i].offset + (size_t)pt->params[i].local_numel);
    distrib_optimizer_reduce_grads(o);
    CHECK_MSG(log.calls == K && log.in_order && log.last_end == n,
              "finalize ran %d times for %d buckets (in order: %d)", log.calls, K, log.in_order);
    const uint64_t rs = comm->counters.calls[GROUP_DATA_CONTEXT][COLL_REDUCE_SCATTER];
    CHECK_MSG(rs == (uint64_t)(dp > 1 ? K : 0), "%llu reduce-scatters for %d buckets",
              (unsigned long long)rs, K);

    float *ref_params = xcalloc(n, sizeof *ref_params), *ref_grads = xcalloc(n, sizeof *ref_grads);
    double ref_norm;
    reference_step(be, pt, dp, 1e-2, ref_params, ref_grads, &ref_norm);
    int count;
    const ShardInterval *iv = distrib_optimizer_intervals(o, &count);
    for (int i = 0; i < count; i++)
        for (int64_t j = 0; j < iv[i].canonical_end - iv[i].canonical_begin; j++) {
            const size_t at = iv[i].buffer_offset + (size_t)j;
            CHECK_MSG(grads[at] == ref_grads[at], "reduced gradient %zu: %g, expected %g", at,
                      grads[at], ref_grads[at]);
        }
    const double norm = distrib_optimizer_grad_norm(o);
    CHECK_MSG(fabs(norm - ref_norm) <= 1e-12 * ref_norm && norm > 0, "grad norm %.17g vs %.17g",
              norm, ref_norm);

    distrib_optimizer_step(o, 1e-2, norm, 1.0);
    const uint64_t ag = comm->counters.calls[GROUP_DATA_CONTEXT][COLL_ALL_GATHER];
    CHECK(ag == (uint64_t)(dp > 1 ? K : 0));
    if (overlap && K > 1) { /* the last bucket alone, then everything */
        const GradBucket *last = distrib_optimizer_bucket(o, K - 1);
        distrib_optimizer_params_needed(o, last->begin, last->end);
        for (int i = 0; i < pt->count; i++) {
            const ParamInfo *p = &pt->params[i];
            for (size_t at = p->offset; at < p->offset + (size_t)p->local_numel; at++)
                if (at >= last->begin && at < last->end)
                    CHECK_MSG(params[at] == ref_params[at], "gathered %zu before the others", at);
        }
    }
    distrib_optimizer_finish_param_gather(o);
    for (int i = 0; i < pt->count; i++) {
        const ParamInfo *p = &pt->params[i];
        for (int64_t j = 0; j < p->local_numel; j++) {
            const size_t at = p->offset + (size_t)j;
            CHECK_MSG(params[at] == ref_params[at] && !isnan(params[at]),
                      "%s[%lld] after the step: %.9g, one rank: %.9g", p->name, (long long)j,
                      params[at], ref_params[at]);
        }
    }
    free(ref_params);
    free(ref_grads);
    distrib_optimizer_free(o);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    char err[512];
    ParallelState ps;
    CHECK_MSG(parallel_state_init(&ps, MPI_COMM_WORLD, 1, 1, err, sizeof err), "%s", err);
    Backend *be = backend_create("cpu", 0, err, sizeof err);
    CHECK_MSG(be, "%s", err);
    Comm comm;
    comm_init(&comm, &ps, be);
    const TransformerConfig cfg = tiny_config();
    const ModelPartition whole = {.tp_size = 1, .num_local_layers = cfg.num_layers,
                                  .has_embedding = true, .has_head = true};
    ParamTable pt;
    param_table_build(&pt, &cfg, &whole);
    /* One bucket; buckets smaller than a parameter (the word embedding is
     * 2048 elements); exactly the chunk unit; a size that is not a multiple. */
    const size_t sizes[] = {0, 1000, (size_t)ps.dp_size * DIST_OPT_ALIGN, 3333};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        run_case(&comm, be, &pt, sizes[s], sizes[s] > 0);
        if (ps.rank == 0) printf("bucket size %zu: ok\n", sizes[s]);
    }
    param_table_free(&pt);
    backend_destroy(be);
    parallel_state_destroy(&ps);
    MPI_Finalize();
    return 0;
}
