/* context_parallel/context_parallel.h — context parallelism: CP ranks share
 * each sequence, and attention runs as a ring over them.
 *
 * Contract. The sequence of T tokens is cut into 2 * CP chunks of
 * T / (2 CP); CP rank r holds chunks r and 2 CP - 1 - r, in that order, as
 * its T / CP local rows (Megatron's load balance: under the causal mask
 * chunk r has little to attend to and chunk 2 CP - 1 - r much, so every
 * rank does the same work). This module is the one owner of that
 * placement: context_parallel_coordinate() maps a local row to its place
 * in the sequence, and everything else (positions, masks, dropout keys)
 * asks it.
 *
 * Attention. Every rank keeps its own rows' queries and passes its keys and
 * values around the CP group (to cp_rank + 1, from cp_rank - 1): after CP
 * steps every query block has met every key block, each merged by the
 * online softmax (backend attention_block_forward). The backward sends the
 * keys and values around again, with their gradient accumulators, which
 * come home after the last step. The order of the blocks is fixed (own
 * block first, then the ranks below in ring order), so the results are
 * deterministic; they equal one rank's attention up to the order of the
 * softmax sums. Each ring step's transfer of the next block is started
 * before the step's compute and completed after it.
 *
 * Memory. Only the own rows' activations are kept; the visiting blocks
 * and gradient accumulators live in four ring buffers of B x T/CP rows of
 * qkv, shared by every layer, which the model carves with its gradient
 * scratch (context_parallel_ring_bytes). The coordinates of every CP
 * rank's rows live on the device for the kernels. */
#ifndef GPT3D_CONTEXT_PARALLEL_H
#define GPT3D_CONTEXT_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "parallel_state/collectives.h"

typedef struct {
    Backend *be;
    Comm *comm; /* NULL when size == 1 */
    int size, rank;
    int seq_length; /* T, the whole sequence */
    int local_rows; /* T / CP rows of each sequence on this rank */
    int B, qkv_width;
    int32_t *coords_dev;  /* [size][local_rows]: the sequence coordinate of each rank's rows */
    int32_t *positions_dev; /* [B][local_rows]: this rank's coordinates, once per sequence */
    void *ring_kv[2], *ring_dkv[2]; /* [B, local_rows, qkv_width] act dtype each */
} ContextParallel;

/* Sequence coordinate of local row i of CP rank `rank` (0 <= i < T / CP). */
int context_parallel_coordinate(int size, int rank, int seq_length, int i);

/* Bytes of the ring buffers and of the device coordinates (what the model
 * carves for context_parallel_bind); 0 when size == 1. */
size_t context_parallel_ring_bytes(Backend *be, int size, int seq_length, int B, int qkv_width);
size_t context_parallel_coord_bytes(int size, int seq_length, int B);

/* A context of `size` ranks (1: none); comm must carry GROUP_CONTEXT when
 * size > 1. Binds nothing yet. */
void context_parallel_init(ContextParallel *cp, Backend *be, Comm *comm, int size, int rank,
                           int seq_length, int B, int qkv_width);
/* Gives the context its ring buffers (ring_bytes) and coordinate storage
 * (coord_bytes), and writes the coordinates. */
void context_parallel_bind(ContextParallel *cp, void *ring, int32_t *coords);

/* dst [B * T/CP] = this rank's rows of each of the B sequences in src [B * T]
 * (host arrays). */
void context_parallel_take_rows(const ContextParallel *cp, int32_t *dst, const int32_t *src);

/* Ring attention over this rank's rows: qkv [B, T/CP, W] (this rank's
 * rows, rotated), out [B, T/CP, NH * HS], lse [B, NH, T/CP]; key_start as
 * backend attention_block_forward (this rank's rows, sequence
 * coordinates). Backward overwrites dqkv, from the forward's out and lse. */
void context_parallel_attention_forward(ContextParallel *cp, void *out, float *lse,
                                        const void *qkv, int NH, int NG, int HS,
                                        const int32_t *key_start,
                                        const AttentionDropout *dropout);
void context_parallel_attention_backward(ContextParallel *cp, void *dqkv, const void *dout,
                                         const void *qkv, const void *out, const float *lse,
                                         int NH, int NG, int HS, const int32_t *key_start,
                                         const AttentionDropout *dropout);

#endif
