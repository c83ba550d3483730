/* pipeline_parallel/schedules.h — pipeline schedules and their p2p exchange.
 *
 * Contract. pipeline_1f1b_plan() lists, for one stage, the operations of
 * Megatron's non-interleaved 1F1B schedule over M micro-batches: warmup of
 * min(P - stage - 1, M) forwards, a steady state alternating one forward
 * and one backward, a cooldown of the remaining backwards; receives and
 * sends of activations (forward) and their gradients (backward) with the
 * neighbouring stages, sends and receives paired into one exchange where
 * Megatron pairs them, so that no P and M deadlock. P = 1 degenerates to
 * forward, backward per micro-batch with no exchange. pipeline_run()
 * executes a plan with a stage's callbacks, over the Comm's world ranks of
 * the previous and next stage, optionally tracing every operation; it
 * counts the micro-batches whose activations are alive (forward done,
 * backward not yet), whose peak is min(P - stage, M). Each exchange is one
 * batched nonblocking p2p (collectives.h): the run waits for its receives
 * at once and for its send only before something writes the sent buffer
 * (a forward into the same output slot, the next backward into the shared
 * input-gradient buffer, a receive into it) or at the end of the run, so a
 * send overlaps the compute that follows it; the results are bitwise those
 * of blocking exchanges. */
#ifndef GPT3D_PIPELINE_SCHEDULES_H
#define GPT3D_PIPELINE_SCHEDULES_H

#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>

#include "backend/backend.h"
#include "parallel_state/collectives.h"

typedef enum {
    PIPE_RECV_FORWARD,
    PIPE_FORWARD,
    PIPE_SEND_FORWARD,
    PIPE_RECV_BACKWARD,
    PIPE_BACKWARD,
    PIPE_SEND_BACKWARD,
    PIPE_SEND_FORWARD_RECV_BACKWARD, /* send mb's output, receive recv_mb's output gradient */
    PIPE_SEND_BACKWARD_RECV_FORWARD, /* send mb's input gradient, receive recv_mb's input */
} PipelineOpKind;

typedef struct {
    PipelineOpKind kind;
    int mb;      /* micro-batch computed or sent */
    int recv_mb; /* micro-batch received by a paired exchange */
} PipelineOp;

const char *pipeline_op_name(PipelineOpKind k);

/* Fills ops (capacity >= 6*M + 2) for `stage` of P over M micro-batches;
 * returns the number of operations. The first stage has no receive of
 * activations, the last no send; paired exchanges with a missing side
 * become the single operation left (or vanish). */
int pipeline_1f1b_plan(int P, int stage, int M, PipelineOp *ops);

typedef struct {
    void *ctx;
    void (*forward)(void *ctx, int mb);
    void (*backward)(void *ctx, int mb);
    void *(*input_buffer)(void *ctx, int mb);       /* receive mb's input activation here */
    void *(*output_buffer)(void *ctx, int mb);      /* mb's output activation, to send */
    void *(*output_grad_buffer)(void *ctx, int mb); /* receive d(output) of mb here */
    void *(*input_grad_buffer)(void *ctx, int mb);  /* d(input) of mb, to send */
    size_t numel;                                   /* elements of every p2p message */
    DType dtype;
} PipelineStageFns;

typedef struct {
    int peak_live_microbatches;
} PipelineStats;

/* Runs the plan. prev_rank / next_rank are world ranks (-1 when absent).
 * trace, when non-NULL, gets one line per operation. */
void pipeline_run(Comm *comm, const PipelineOp *ops, int count, const PipelineStageFns *fns,
                  int prev_rank, int next_rank, FILE *trace, PipelineStats *stats);

/* ---- interleaved 1F1B (virtual pipeline stages) ----
 * pipeline_interleaved_plan() lists, for pipeline rank `stage` of P ranks
 * holding V model chunks each, the operations of Megatron's interleaved
 * schedule over M micro-batches (P >= 2, M a multiple of P: Megatron's
 * micro-batch groups of P per chunk). The forwards run in the order
 * (group of P micro-batches) x (chunk 0..V-1) x (micro-batch in the group);
 * the k-th backward is the k-th forward's micro-batch in chunk V-1-chunk.
 * Warmup runs min(2 (P - stage - 1) + (V - 1) P, V M) forwards, the steady
 * state alternates forward and backward, the cooldown runs the remaining
 * backwards. Every compute step is followed by one batched exchange (as
 * Megatron's send_forward_backward_recv_forward_backward and its one- and
 * two-sided forms): the output of forward k, the input gradient of
 * backward k, and the tensors the next steps consume. The activation of
 * chunk c goes to the next rank's chunk c, the last rank's to the first
 * rank's chunk c + 1; gradients go back the same way. Receives are
 * labelled with the chunk that consumes them and, per chunk, in
 * micro-batch order. */
typedef struct {
    int chunk, mb; /* mb < 0: no such message */
} PipelineTensorRef;

typedef enum { PIPE_CHUNK_FORWARD, PIPE_CHUNK_BACKWARD, PIPE_CHUNK_EXCHANGE } PipelineChunkOpKind;

typedef struct {
    PipelineChunkOpKind kind;
    int chunk, mb;                   /* FORWARD and BACKWARD: what is computed */
    PipelineTensorRef send_forward;  /* EXCHANGE: an output to the next rank */
    PipelineTensorRef send_backward; /* an input gradient to the previous rank */
    PipelineTensorRef recv_forward;  /* an input from the previous rank */
    PipelineTensorRef recv_backward; /* an output gradient from the next rank */
} PipelineChunkOp;

/* A pipeline rank's V chunks for pipeline_run_chunks: compute and the
 * buffers each (chunk, micro-batch) sends from or receives into. */
typedef struct {
    void *ctx;
    void (*forward)(void *ctx, int chunk, int mb);
    void (*backward)(void *ctx, int chunk, int mb);
    void *(*input_buffer)(void *ctx, int chunk, int mb);       /* receive the input here */
    void *(*output_buffer)(void *ctx, int chunk, int mb);      /* the output, to send */
    void *(*output_grad_buffer)(void *ctx, int chunk, int mb); /* receive d(output) here */
    void *(*input_grad_buffer)(void *ctx, int chunk, int mb);  /* d(input), to send */
    size_t numel;
    DType dtype;
} PipelineChunkFns;

/* The messages of one EXCHANGE in a fixed order: its sends (the output to
 * the next rank, then the input gradient to the previous one), then its
 * receives (the input from the previous rank, then the output gradient
 * from the next one); the executor posts them so (Comm posts the receives
 * of a batch before its sends, which keeps each kind's order). NCCL has no
 * tags and pairs the sends of a rank to a peer with the peer's receives
 * from it in posting order, so exchange after exchange the sender's and
 * the receiver's sequences must be alike; at P = 2, where the previous and
 * the next rank are one, both streams share them
 * (tests/test_pipeline_interleaved.c checks it for every rank pair). */
typedef struct {
    bool send;            /* else a receive */
    bool to_next;         /* the peer is the next rank, else the previous one */
    bool gradient;        /* the gradient stream, else the activations */
    PipelineTensorRef ref; /* the chunk and micro-batch of the buffer */
} PipelineMessage;
/* Fills out (room for 4) and returns the count. */
int pipeline_exchange_messages(const PipelineChunkOp *op, PipelineMessage *out);

/* Runs an interleaved plan; prev_rank / next_rank are the world ranks of
 * the neighbouring pipeline ranks on the ring (the first rank's previous
 * is the last). Each exchange is one batched p2p, completed before the
 * next operation. trace, when non-NULL, gets one line per operation. */
void pipeline_run_chunks(Comm *comm, const PipelineChunkOp *ops, int count,
                         const PipelineChunkFns *fns, int prev_rank, int next_rank, FILE *trace);

/* Forward only (evaluation): each micro-batch through chunk 0, 1, ...,
 * V - 1, each chunk receiving its input, computing and sending its output
 * (it fits in pipeline_interleaved_plan_capacity). Returns the number of
 * operations. */
int pipeline_interleaved_forward_plan(int P, int V, int M, int stage, PipelineChunkOp *ops);

/* Operations a plan of V chunks over M micro-batches can hold, at most. */
int pipeline_interleaved_plan_capacity(int V, int M);
/* Fills ops and returns their number. */
int pipeline_interleaved_plan(int P, int V, int M, int stage, PipelineChunkOp *ops);

#endif
