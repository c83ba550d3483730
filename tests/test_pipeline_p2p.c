/* pipeline_run's nonblocking exchanges between real ranks (one stage per
 * rank): every message a stage receives holds exactly what its neighbour
 * computed for that micro-batch, although sends are left in flight while the
 * next compute overwrites buffers of other micro-batches. Messages are past
 * Open MPI's eager limit, so a send whose buffer were rewritten before it
 * completed would deliver the new values. Output activations live in
 * min(P - stage, M) slots, the gradient buffer is shared (as in the model's
 * stage API); each stage also checks that it got every message in order.
 * Comm.guard_sends makes a buffer written too early fail deterministically. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "parallel_state/collectives.h"
#include "parallel_state/parallel_state.h"
#include "test_mpi_util.h"
#include "pipeline_parallel/schedules.h"


#define NUMEL 50000
#define MICRO_BATCHES 8
#define MAX_SLOTS 16

typedef struct {
    int stage, stages, slots;
    float *input[MAX_SLOTS], *output[MAX_SLOTS], *grad;
    int forwards, backwards;
} Stage;

/* What stage s computes for micro-batch mb: activation forward, gradient backward. */
static float activation(int s, int mb, size_t i) { return (float)(s * 1000 + mb * 10) + (float)(i % 7); }
static float gradient(int s, int mb, size_t i) { return -(float)(s * 1000 + mb * 10) - (float)(i % 5); }

static int slot(const Stage *st, int mb) { return mb % st->slots; }

static void forward(void *ctx, int mb) {
    Stage *st = ctx;
    MPI_TEST_CHECK(mb == st->forwards++);
    if (st->stage > 0)
        for (size_t i = 0; i < NUMEL; i++)
            MPI_TEST_CHECK(st->input[slot(st, mb)][i] == activation(st->stage - 1, mb, i));
    for (size_t i = 0; i < NUMEL; i++) st->output[slot(st, mb)][i] = activation(st->stage, mb, i);
}

static void backward(void *ctx, int mb) {
    Stage *st = ctx;
    MPI_TEST_CHECK(mb == st->backwards++);
    if (st->stage < st->stages - 1)
        for (size_t i = 0; i < NUMEL; i++) MPI_TEST_CHECK(st->grad[i] == gradient(st->stage + 1, mb, i));
    /* The input gradient overwrites the output gradient: one shared buffer. */
    for (size_t i = 0; i < NUMEL; i++) st->grad[i] = gradient(st->stage, mb, i);
}

static void *input_buffer(void *ctx, int mb) { return ((Stage *)ctx)->input[slot(ctx, mb)]; }
static void *output_buffer(void *ctx, int mb) { return ((Stage *)ctx)->output[slot(ctx, mb)]; }
static void *grad_buffer(void *ctx, int mb) {
    (void)mb;
    return ((Stage *)ctx)->grad;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    gpt3d_set_exit_hook(mpi_test_abort_job);
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    ParallelState ps;
    char err[256];
    MPI_TEST_CHECK(parallel_state_init(&ps, MPI_COMM_WORLD, 1, world, err, sizeof err));
    Backend *be = backend_create("cpu", ps.local_rank, err, sizeof err);
    MPI_TEST_CHECK(be != NULL);
    Comm comm;
    comm_init(&comm, &ps, be);
    /* Sends stay in flight until the executor waits for them, and a buffer
     * written before then fails the wait: the rule is checked whatever the
     * timing of MPI's transfers (without this, a machine whose receiver
     * copies early hides the bug). */
    comm.guard_sends = true;

    Stage st = {.stage = ps.pp_rank, .stages = ps.pp_size};
    st.slots = ps.pp_size - ps.pp_rank < MICRO_BATCHES ? ps.pp_size - ps.pp_rank : MICRO_BATCHES;
    MPI_TEST_CHECK(st.slots <= MAX_SLOTS);
    for (int k = 0; k < st.slots; k++) {
        st.input[k] = xcalloc(NUMEL, sizeof(float));
        st.output[k] = xcalloc(NUMEL, sizeof(float));
    }
    st.grad = xcalloc(NUMEL, sizeof(float));
    const PipelineStageFns fns = {.ctx = &st,
                                  .forward = forward,
                                  .backward = backward,
                                  .input_buffer = input_buffer,
                                  .output_buffer = output_buffer,
                                  .output_grad_buffer = grad_buffer,
                                  .input_grad_buffer = grad_buffer,
                                  .numel = NUMEL,
                                  .dtype = DTYPE_F32};
    PipelineOp ops[6 * MICRO_BATCHES + 2];
    const int count = pipeline_1f1b_plan(ps.pp_size, ps.pp_rank, MICRO_BATCHES, ops);
    const int prev = ps.pp_rank == 0 ? -1 : parallel_state_prev_stage_rank(&ps);
    const int next = ps.pp_rank == ps.pp_size - 1 ? -1 : parallel_state_next_stage_rank(&ps);
    PipelineStats stats;
    /* Twice: the second run reuses the buffers the first one's sends read. */
    for (int run = 0; run < 2; run++) {
        st.forwards = st.backwards = 0;
        pipeline_run(&comm, ops, count, &fns, prev, next, NULL, &stats);
        MPI_TEST_CHECK(st.forwards == MICRO_BATCHES && st.backwards == MICRO_BATCHES);
        MPI_TEST_CHECK(stats.peak_live_microbatches == st.slots);
    }
    /* Every stage but the last sends each activation once per run, every
     * stage but the first each gradient. */
    const uint64_t sends = 2u * MICRO_BATCHES * (uint64_t)((next >= 0) + (prev >= 0));
    MPI_TEST_CHECK(comm.counters.calls[GROUP_PIPELINE][COLL_SEND] == sends);
    MPI_TEST_CHECK(comm.counters.calls[GROUP_PIPELINE][COLL_RECV] == sends);
    for (int k = 0; k < st.slots; k++) free(st.input[k]), free(st.output[k]);
    free(st.grad);
    comm_destroy(&comm);
    backend_destroy(be);
    if (ps.rank == 0) printf("test_pipeline_p2p: %d stages, %d micro-batches ok\n", world, MICRO_BATCHES);
    parallel_state_destroy(&ps);
    MPI_Finalize();
    (void)argc, (void)argv;
    return 0;
}
