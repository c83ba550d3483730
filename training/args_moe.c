/* The mixture-of-experts flags (args_internal.h): Megatron's names and
 * defaults, its rules (top-k at most the experts, a capacity for padding,
 * experts divisible by EP), and the limits of this build: expert tensor
 * parallelism TP or 1, the latter with sequence parallelism and dropless. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "training/args_internal.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool resolve_words(TrainArgs *a, char *err, size_t err_size) {
    TransformerConfig *m = &a->model;
    const int score = transformer_choice_index(MOE_SCORE_FUNCTION_NAMES, a->moe_router_score_function);
    if (score < 0)
        FAIL("--moe-router-score-function %s: use softmax or sigmoid", a->moe_router_score_function);
    m->moe_router_score_function = score;
    const int balance =
        transformer_choice_index(MOE_LOAD_BALANCING_NAMES, a->moe_router_load_balancing_type);
    if (balance < 0)
        FAIL("--moe-router-load-balancing-type %s: use aux_loss, seq_aux_loss or none",
             a->moe_router_load_balancing_type);
    m->moe_load_balancing = balance;
    const int drop = transformer_choice_index(MOE_DROP_POLICY_NAMES, a->moe_token_drop_policy);
    if (drop < 0) FAIL("--moe-token-drop-policy %s: use probs or position", a->moe_token_drop_policy);
    m->moe_token_drop_policy = drop;
    if (strcmp(a->moe_token_dispatcher_type, "allgather") &&
        strcmp(a->moe_token_dispatcher_type, "alltoall")) {
        if (!strcmp(a->moe_token_dispatcher_type, "flex"))
            FAIL("--moe-token-dispatcher-type flex (DeepEP) is not built; use alltoall or "
                 "allgather");
        FAIL("--moe-token-dispatcher-type %s: use alltoall or allgather",
             a->moe_token_dispatcher_type);
    }
    return true;
}

static bool check_sizes(const TrainArgs *a, char *err, size_t err_size) {
    const TransformerConfig *m = &a->model;
    const int tp = a->tensor_model_parallel_size;
    if (m->moe_router_topk < 1) FAIL("--moe-router-topk must be >= 1 (got %d)", m->moe_router_topk);
    if (m->moe_layer_freq < 1) FAIL("--moe-layer-freq must be >= 1 (got %d)", m->moe_layer_freq);
    if (m->moe_ffn_hidden_size < 1)
        FAIL("--moe-ffn-hidden-size must be >= 1 (got %d)", m->moe_ffn_hidden_size);
    const int etp = a->expert_tensor_parallel_size ? a->expert_tensor_parallel_size : tp;
    if (m->moe_ffn_hidden_size % etp)
        FAIL("--moe-ffn-hidden-size %d is not divisible by --expert-tensor-parallel-size %d (the "
             "tensor-parallel size unless given): each rank holds an equal share of every "
             "expert's features",
             m->moe_ffn_hidden_size, etp);
    if (m->moe_shared_expert_intermediate_size < 0)
        FAIL("--moe-shared-expert-intermediate-size must be >= 0 (got %d)",
             m->moe_shared_expert_intermediate_size);
    if (m->moe_shared_expert_intermediate_size % tp)
        FAIL("--moe-shared-expert-intermediate-size %d is not divisible by "
             "--tensor-model-parallel-size %d",
             m->moe_shared_expert_intermediate_size, tp);
    if (!(isfinite(m->moe_aux_loss_coeff) && m->moe_aux_loss_coeff >= 0))
        FAIL("--moe-aux-loss-coeff must be a finite number >= 0 (got %g)", m->moe_aux_loss_coeff);
    if (!(isfinite(m->moe_z_loss_coeff) && m->moe_z_loss_coeff >= 0))
        FAIL("--moe-z-loss-coeff must be a finite number >= 0 (got %g)", m->moe_z_loss_coeff);
    if (!(isfinite(m->moe_expert_rows_factor) && m->moe_expert_rows_factor > 0))
        FAIL("--moe-expert-rows-factor must be a finite number above 0 (got %g)",
             m->moe_expert_rows_factor);
    if (!(isfinite(m->moe_expert_capacity_factor) && m->moe_expert_capacity_factor >= 0))
        FAIL("--moe-expert-capacity-factor must be a finite number >= 0 (got %g; 0 is dropless)",
             m->moe_expert_capacity_factor);
    return true;
}

static bool check_layout(const TrainArgs *a, char *err, size_t err_size) {
    const TransformerConfig *m = &a->model;
    const int tp = a->tensor_model_parallel_size;
    const int etp = a->expert_tensor_parallel_size ? a->expert_tensor_parallel_size : tp;
    if (etp != tp && etp != 1)
        FAIL("--expert-tensor-parallel-size %d: 1 (whole experts) or the tensor-parallel size "
             "%d (the default) are built",
             etp, tp);
    if (etp < tp && !a->sequence_parallel)
        FAIL("--expert-tensor-parallel-size 1 with --tensor-model-parallel-size %d needs "
             "--sequence-parallel: each rank dispatches its own share of the tokens (Megatron's "
             "rule for MoE with TP)",
             tp);
    if (etp < tp && m->moe_expert_capacity_factor > 0)
        FAIL("--moe-expert-capacity-factor with --expert-tensor-parallel-size 1 under "
             "--tensor-model-parallel-size %d is not built yet; leave the capacity out "
             "(dropless) or the expert tensor parallelism at TP",
             tp);
    if (m->moe_pad_expert_input_to_capacity && m->moe_expert_capacity_factor == 0)
        FAIL("--moe-pad-expert-input-to-capacity pads each expert to its capacity, and there is "
             "none: give --moe-expert-capacity-factor F");
    return true;
}

bool args_resolve_moe(TrainArgs *a, const FlagParser *parser, char *err, size_t err_size) {
    TransformerConfig *m = &a->model;
    if (m->num_experts < 0) FAIL("--num-experts must be >= 0 (got %d; 0 is a dense model)", m->num_experts);
    if (m->num_experts == 0) {
        if (a->expert_model_parallel_size > 1)
            FAIL("--expert-model-parallel-size %d splits the experts of an MoE model, and this "
                 "one has none; give --num-experts or leave the flag out",
                 a->expert_model_parallel_size);
        transformer_config_set_dense(m);
        return true;
    }
    if (m->num_experts % a->expert_model_parallel_size)
        FAIL("--num-experts %d is not divisible by --expert-model-parallel-size %d: each "
             "expert-parallel rank holds the same number of experts",
             m->num_experts, a->expert_model_parallel_size);
    if (!flags_was_set(parser, "moe-ffn-hidden-size")) m->moe_ffn_hidden_size = m->ffn_hidden_size;
    return resolve_words(a, err, err_size) && check_sizes(a, err, err_size) &&
           check_layout(a, err, err_size);
}
