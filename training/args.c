#include "training/args.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "optimizer/optimizer.h"
#include "training/args_internal.h"
#include "data/tokenizer_flags.h"
#include "parallel_state/parallel_state.h"

#define OPT(field) offsetof(TrainArgs, field)

static const FlagSpec TRAIN_FLAGS[] = {
    /* model */
    {"num-layers", FLAG_INT, OPT(model.num_layers), NULL, "N", "Number of transformer layers.", "model", true},
    {"hidden-size", FLAG_INT, OPT(model.hidden_size), NULL, "C", "Transformer hidden size.", "model", true},
    {"num-attention-heads", FLAG_INT, OPT(model.num_attention_heads), NULL, "H", "Number of attention heads.", "model", true},
    {"ffn-hidden-size", FLAG_INT, OPT(model.ffn_hidden_size), NULL, "F", "MLP hidden size; 4 x hidden-size when not given.", "model", false},
    {"seq-length", FLAG_INT, OPT(model.seq_length), NULL, "T", "Tokens per sample.", "model", true},
    {"max-position-embeddings", FLAG_INT, OPT(model.max_position_embeddings), NULL, "P", "Rows of the position embedding; seq-length when not given.", "model", false},
    {"make-vocab-size-divisible-by", FLAG_INT, OPT(make_vocab_size_divisible_by), "128", "K", "Pad the vocabulary to a multiple of K (padded logits are masked out of the loss).", "model", false},
    {"init-method-std", FLAG_DOUBLE, OPT(model.init_method_std), "0.02", "S", "Std of the normal init; output projections use S/sqrt(2*num-layers).", "model", false},
    {"position-embedding-type", FLAG_STRING, OPT(position_embedding_type), "learned_absolute", "TYPE", "learned_absolute (a learned table, GPT-2), rope (rotary embeddings on queries and keys, Llama) or none.", "model", false},
    {"rotary-base", FLAG_DOUBLE, OPT(model.rotary_base), "10000", "B", "RoPE base: pair i of a head turns by position x B^(-2i/d).", "model", false},
    {"rotary-percent", FLAG_DOUBLE, OPT(model.rotary_percent), "1.0", "P", "Fraction of each head's features that RoPE rotates (the rest pass unchanged).", "model", false},
    {"rotary-interleaved", FLAG_SWITCH, OPT(model.rotary_interleaved), NULL, NULL, "Rotate features (2i, 2i+1) together instead of (i, i + d/2), the rotate-half default of Megatron and Hugging Face.", "model", false},
    {"normalization", FLAG_STRING, OPT(normalization), "LayerNorm", "NORM", "LayerNorm (mean and variance, weight and bias) or RMSNorm (root mean square, weight only).", "model", false},
    {"norm-epsilon", FLAG_DOUBLE, OPT(model.norm_epsilon), "1e-05", "EPS", "Epsilon of every LayerNorm/RMSNorm.", "model", false},
    {"apply-layernorm-1p", FLAG_SWITCH, OPT(model.apply_layernorm_1p), NULL, NULL, "Store each norm weight minus one (initialised to zero, so weight decay pulls it to one).", "model", false},
    {"swiglu", FLAG_SWITCH, OPT(swiglu), NULL, NULL, "SwiGLU MLP: silu(gate) x up, gate and up from one linear_fc1 of twice the width; ffn-hidden-size defaults to 8h/3 rounded down to a multiple of 64.", "model", false},
    {"squared-relu", FLAG_SWITCH, OPT(squared_relu), NULL, NULL, "Squared ReLU MLP activation instead of GELU.", "model", false},
    {"group-query-attention", FLAG_SWITCH, OPT(group_query_attention), NULL, NULL, "Grouped-query attention: the heads share --num-query-groups key/value heads.", "model", false},
    {"num-query-groups", FLAG_INT, OPT(num_query_groups), "1", "G", "Key/value heads with --group-query-attention (1: multi-query attention).", "model", false},
    {"kv-channels", FLAG_INT, OPT(model.kv_channels), NULL, "D", "Head dimension; hidden-size / num-attention-heads when not given.", "model", false},
    {"untie-embeddings-and-output-weights", FLAG_SWITCH, OPT(model.untie_embeddings_and_output_weights), NULL, NULL, "Give the output layer its own weight (output_layer.weight) instead of the word embedding.", "model", false},
    {"disable-bias-linear", FLAG_SWITCH, OPT(disable_bias_linear), NULL, NULL, "No biases in the linear layers (QKV keeps one with --add-qkv-bias).", "model", false},
    {"add-qkv-bias", FLAG_SWITCH, OPT(model.add_qkv_bias), NULL, NULL, "Keep the QKV bias even with --disable-bias-linear (Qwen-style).", "model", false},
    {"qk-layernorm", FLAG_SWITCH, OPT(model.qk_layernorm), NULL, NULL, "Normalise each query and key head over the head dimension after linear_qkv and before RoPE, with the --normalization norm (weights q_layernorm and k_layernorm of size kv-channels).", "model", false},
    /* mixture of experts (args_moe.c) */
    {"num-experts", FLAG_INT, OPT(model.num_experts), "0", "E", "Mixture of experts: E experts in each MoE layer's MLP (0: a dense model). Needs --disable-bias-linear.", "mixture of experts", false},
    {"moe-ffn-hidden-size", FLAG_INT, OPT(model.moe_ffn_hidden_size), NULL, "F", "Hidden size of each expert's MLP; --ffn-hidden-size when not given.", "mixture of experts", false},
    {"moe-router-topk", FLAG_INT, OPT(model.moe_router_topk), "2", "K", "Experts each token is routed to: the K largest router logits, a tie going to the lower expert index.", "mixture of experts", false},
    {"moe-router-score-function", FLAG_STRING, OPT(moe_router_score_function), "softmax", "F", "softmax: the routing weights are a softmax over the K chosen logits (over all experts with --moe-router-pre-softmax); sigmoid: the chosen logits' sigmoids, divided by their sum when K > 1.", "mixture of experts", false},
    {"moe-router-pre-softmax", FLAG_SWITCH, OPT(model.moe_router_pre_softmax), NULL, NULL, "With the softmax score function: take the chosen experts' entries of the softmax over all experts.", "mixture of experts", false},
    {"moe-router-load-balancing-type", FLAG_STRING, OPT(moe_router_load_balancing_type), "aux_loss", "T", "aux_loss (the switch-transformer loss over each micro-batch, weighted by --moe-aux-loss-coeff), seq_aux_loss (the same over each sequence, averaged: DeepSeek's) or none.", "mixture of experts", false},
    {"moe-aux-loss-coeff", FLAG_DOUBLE, OPT(model.moe_aux_loss_coeff), "0", "A", "Weight of the load-balancing loss E / (K T^2) sum_e count_e x sum_t score_t,e of each MoE layer and micro-batch of T tokens (Megatron's; 1e-2 is common).", "mixture of experts", false},
    {"moe-z-loss-coeff", FLAG_DOUBLE, OPT(model.moe_z_loss_coeff), "0", "Z", "Weight of the router z-loss, the mean over tokens of logsumexp(router logits)^2 (0: off; 1e-3 is common).", "mixture of experts", false},
    {"moe-layer-freq", FLAG_INT, OPT(model.moe_layer_freq), "1", "N", "Layer l (from 0) has an MoE MLP when l is a multiple of N, the others a dense one.", "mixture of experts", false},
    {"moe-shared-expert-intermediate-size", FLAG_INT, OPT(model.moe_shared_expert_intermediate_size), "0", "F", "A shared expert of F features that every token passes through, added to the routed experts' output (0: none).", "mixture of experts", false},
    {"moe-token-dispatcher-type", FLAG_STRING, OPT(moe_token_dispatcher_type), "allgather", "T", "allgather or alltoall: how tokens reach the experts of other expert-parallel ranks; without expert parallelism both are the same.", "mixture of experts", false},
    {"moe-expert-capacity-factor", FLAG_DOUBLE, OPT(model.moe_expert_capacity_factor), "0", "F", "Each expert takes at most ceil(F x T x K / E) of a micro-batch's T tokens, the rest dropped by --moe-token-drop-policy (0: dropless).", "mixture of experts", false},
    {"moe-pad-expert-input-to-capacity", FLAG_SWITCH, OPT(model.moe_pad_expert_input_to_capacity), NULL, NULL, "With --moe-expert-capacity-factor: every expert computes exactly its capacity of rows (zero rows padding).", "mixture of experts", false},
    {"moe-token-drop-policy", FLAG_STRING, OPT(moe_token_drop_policy), "probs", "P", "Which tokens an expert over capacity keeps: probs (the most probable, ties in token order) or position (the first in token order).", "mixture of experts", false},
    {"moe-expert-rows-factor", FLAG_DOUBLE, OPT(model.moe_expert_rows_factor), "2", "F", "gpt3d's own: with --expert-model-parallel-size, the buffers of the rows a rank's experts receive are planned (and counted in the memory plan) for F times the balanced load, and grow when a step brings more.", "mixture of experts", false},
    {"moe-per-layer-logging", FLAG_SWITCH, OPT(moe_per_layer_logging), NULL, NULL, "Print each MoE layer's load-balancing loss, z-loss and tokens per expert at every log line.", "mixture of experts", false},
    {"moe-grouped-gemm", FLAG_SWITCH, OPT(moe_grouped_gemm), NULL, NULL, "Megatron's grouped GEMM switch: the experts here always run as one matrix product per expert on its rows.", "mixture of experts", false},
    {"expert-tensor-parallel-size", FLAG_INT, OPT(expert_tensor_parallel_size), NULL, "ETP", "Tensor-parallel ranks that split each expert: --tensor-model-parallel-size (the default: the experts run on the TP group's tokens) or 1 (whole experts; each rank dispatches its own sequence-parallel tokens, and the TP ranks join the expert-parallel and expert-data groups).", "mixture of experts", false},
    {"hidden-dropout", FLAG_DOUBLE, OPT(model.hidden_dropout), "0.1", "P", "Dropout on the embedding output and on each attention and MLP output before its residual add (Megatron's default 0.1; 0 disables). Masks depend only on global coordinates: every layout draws the same ones.", "model", false},
    {"attention-dropout", FLAG_DOUBLE, OPT(model.attention_dropout), "0.1", "P", "Dropout on the attention probabilities (Megatron's default 0.1; 0 disables).", "model", false},
    {"recompute-activations", FLAG_SWITCH, OPT(recompute_activations), NULL, NULL, "Selective recomputation, as Megatron means it: --recompute-granularity selective.", "model", false},
    {"recompute-granularity", FLAG_STRING, OPT(recompute_granularity), NULL, "G", "selective: recompute each layer's core attention (softmax, dropout, probabilities x values) in backward from its saved queries, keys and values; full: keep only the inputs of units of layers and recompute their whole forward (with --recompute-method and --recompute-num-layers). The numbers are bitwise those without.", "model", false},
    {"recompute-method", FLAG_STRING, OPT(recompute_method), NULL, "M", "With --recompute-granularity full: uniform (every layer, in units of --recompute-num-layers consecutive layers, each unit's input kept) or block (the first --recompute-num-layers layers of each pipeline stage, the rest not recomputed).", "model", false},
    {"recompute-num-layers", FLAG_INT, OPT(recompute_num_layers), NULL, "N", "With --recompute-granularity full: layers per unit (uniform) or per stage (block), 1 to the layers of a pipeline stage.", "model", false},
    /* parallelism */
    {"tensor-model-parallel-size", FLAG_INT, OPT(tensor_model_parallel_size), "1", "TP", "Ranks that split each layer.", "parallelism", false},
    {"pipeline-model-parallel-size", FLAG_INT, OPT(pipeline_model_parallel_size), "1", "PP", "Pipeline stages.", "parallelism", false},
    {"decoder-first-pipeline-num-layers", FLAG_INT, OPT(decoder_first_pipeline_num_layers), NULL, "N", "Transformer layers on the first pipeline stage (split evenly over its virtual chunks); the stages without a size of their own share the rest evenly. Not given: an even split.", "parallelism", false},
    {"decoder-last-pipeline-num-layers", FLAG_INT, OPT(decoder_last_pipeline_num_layers), NULL, "N", "Transformer layers on the last pipeline stage, as --decoder-first-pipeline-num-layers for the first.", "parallelism", false},
    {"account-for-embedding-in-pipeline-split", FLAG_SWITCH, OPT(account_for_embedding_in_pipeline_split), NULL, NULL, "Count the embedding as one layer of the even split: the first stage holds one transformer layer fewer (num-layers + 1 must divide by the stages).", "parallelism", false},
    {"account-for-loss-in-pipeline-split", FLAG_SWITCH, OPT(account_for_loss_in_pipeline_split), NULL, NULL, "Count the output layer and loss as one layer of the even split: the last stage holds one transformer layer fewer.", "parallelism", false},
    {"num-layers-per-virtual-pipeline-stage", FLAG_INT, OPT(num_layers_per_virtual_pipeline_stage), NULL, "N", "Interleaved 1F1B: each pipeline rank holds chunks of N layers (virtual stages), cutting the bubble by the number of chunks. Needs micro-batches a multiple of the pipeline size; not yet with --overlap-grad-reduce / --overlap-param-gather.", "parallelism", false},
    {"num-virtual-stages-per-pipeline-rank", FLAG_INT, OPT(num_virtual_stages_per_pipeline_rank), NULL, "V", "Interleaved 1F1B with V model chunks per pipeline rank (instead of --num-layers-per-virtual-pipeline-stage; the form uneven splits need).", "parallelism", false},
    {"context-parallel-size", FLAG_INT, OPT(context_parallel_size), "1", "CP", "Ranks that share each sequence: it is cut into 2 x CP chunks, rank r holding chunks r and 2CP-1-r, and attention passes key/value blocks around the CP ring.", "parallelism", false},
    {"expert-model-parallel-size", FLAG_INT, OPT(expert_model_parallel_size), "1", "EP", "Ranks that split each MoE layer's experts (E / EP each), carved from the data-parallel x context-parallel ranks; tokens reach their experts by all-to-all, and expert gradients are reduced over the ranks holding the same experts.", "parallelism", false},
    {"cp-comm-type", FLAG_STRING, OPT(cp_comm_type), "p2p", "TYPE", "How context-parallel attention communicates: p2p (the ring of key/value blocks) is the one built.", "parallelism", false},
    {"sequence-parallel", FLAG_SWITCH, OPT(sequence_parallel), NULL, NULL, "Shard layernorm and residual regions along the sequence (needs TP > 1).", "parallelism", false},
    {"distributed-timeout-minutes", FLAG_DOUBLE, OPT(distributed_timeout_minutes), "10", "MIN", "Stop the job, naming the operation and the ranks it waits for, when one collective or send/receive does not complete within MIN minutes (a stopped or dead rank); fractions allowed. The limit applies to each operation, including the wait for the slowest rank's checkpoint write.", "parallelism", false},
    {"overlap-grad-reduce", FLAG_SWITCH, OPT(overlap_grad_reduce), NULL, NULL, "Cut the gradient buffer into buckets of --ddp-bucket-size and start each bucket's data-parallel reduce-scatter as soon as the last micro-batch's backward has finished its gradients, while backward goes on.", "parallelism", false},
    {"overlap-param-gather", FLAG_SWITCH, OPT(overlap_param_gather), NULL, NULL, "All-gather the updated parameters per bucket in the background; the next forward waits only for the bucket it reads.", "parallelism", false},
    {"ddp-bucket-size", FLAG_INT64, OPT(ddp_bucket_size), NULL, "N", "Elements per gradient bucket with --overlap-grad-reduce (rounded up to a multiple of 64 x DP); max(40000000, 1000000 x DP) when not given, as Megatron. Without overlap all gradients form one bucket.", "parallelism", false},
    {"grad-reduce-in-bf16", FLAG_SWITCH, OPT(grad_reduce_in_bf16), NULL, NULL, "Reduce gradients over data parallelism in bf16 (CUDA with NCCL): half the bytes; fp32 reduction is the default.", "parallelism", false},
    {"use-distributed-optimizer", FLAG_SWITCH, OPT(use_distributed_optimizer), NULL, NULL, "Accepted for Megatron compatibility: the optimizer is always ZeRO-1 sharded over DP.", "parallelism", false},
    /* training */
    {"micro-batch-size", FLAG_INT, OPT(micro_batch_size), NULL, "B", "Samples per micro-batch per data-parallel rank.", "training", true},
    {"global-batch-size", FLAG_INT, OPT(global_batch_size), NULL, "G", "Samples per iteration over all ranks; micro-batch-size x DP when not given (then no accumulation).", "training", false},
    {"train-iters", FLAG_INT64, OPT(train_iters), NULL, "N", "Iterations to train for (or --train-samples).", "training", false},
    {"train-samples", FLAG_INT64, OPT(train_samples), NULL, "N", "Samples to train for instead of --train-iters: the schedules below then count samples; with --rampup-batch-size the iterations follow the ramp.", "training", false},
    {"rampup-batch-size", FLAG_LIST, OPT(rampup_batch_size), NULL, "START INCR SAMPLES", "Ramp the global batch from START by INCR up to --global-batch-size over SAMPLES consumed samples (needs --train-samples; START and INCR multiples of micro-batch-size x DP).", "training", false},
    {"step-batch-size-schedule", FLAG_LIST, OPT(step_batch_size_schedule), NULL, "T:B ...", "Step the global batch up as training goes on: from T tokens consumed (T / seq-length samples; suffixes K, M, B, T for 1e3 ... 1e12, e.g. \"0:16 2.4B:320 12B:1536\") each iteration takes B samples. The first step starts at 0; every B a multiple of micro-batch-size x DP. Replaces --global-batch-size (Megatron refuses both); an iteration-based run counts its learning-rate lengths in micro-batch-size x DP samples per iteration, as Megatron does. Words may be separated by spaces or commas, in one argument or several.", "training", false},
    {"lr", FLAG_DOUBLE, OPT(lr), NULL, "LR", "Peak learning rate.", "training", true},
    {"decoupled-lr", FLAG_DOUBLE, OPT(decoupled_lr), NULL, "LR", "Peak learning rate of the word embedding and the output layer (the input and output layers), which otherwise follow --lr; the same warmup and decay.", "training", false},
    {"decoupled-min-lr", FLAG_DOUBLE, OPT(decoupled_min_lr), NULL, "LR", "With --decoupled-lr: the floor of its decay (--min-lr when not given).", "training", false},
    {"min-lr", FLAG_DOUBLE, OPT(min_lr), "0.0", "LR", "Learning rate at the end of the decay.", "training", false},
    {"lr-decay-style", FLAG_STRING, OPT(lr_decay_style), "linear", "STYLE", "constant, linear, cosine, inverse-square-root (lr x sqrt(warmup / step)) or WSD (warmup-stable-decay: constant, then --lr-wsd-decay-style over the last --lr-wsd-decay-iters/-samples).", "training", false},
    {"lr-decay-iters", FLAG_INT64, OPT(lr_decay_iters), NULL, "N", "Iterations until min-lr; train-iters when not given.", "training", false},
    {"lr-decay-samples", FLAG_INT64, OPT(lr_decay_samples), NULL, "N", "Samples until min-lr with --train-samples; train-samples when not given.", "training", false},
    {"lr-warmup-iters", FLAG_INT64, OPT(lr_warmup_iters), "0", "N", "Iterations of linear warmup.", "training", false},
    {"lr-warmup-samples", FLAG_INT64, OPT(lr_warmup_samples), "0", "N", "Samples of linear warmup with --train-samples.", "training", false},
    {"lr-warmup-fraction", FLAG_DOUBLE, OPT(lr_warmup_fraction), NULL, "F", "Warm up over this fraction of the decay instead of --lr-warmup-iters/-samples.", "training", false},
    {"lr-warmup-init", FLAG_DOUBLE, OPT(lr_warmup_init), "0.0", "LR", "Learning rate the warmup starts from.", "training", false},
    {"lr-wsd-decay-style", FLAG_STRING, OPT(lr_wsd_decay_style), "exponential", "STYLE", "The anneal of --lr-decay-style WSD: exponential, linear, cosine or minus_sqrt.", "training", false},
    {"lr-wsd-decay-iters", FLAG_INT64, OPT(lr_wsd_decay_iters), NULL, "N", "Iterations of WSD's final anneal.", "training", false},
    {"lr-wsd-decay-samples", FLAG_INT64, OPT(lr_wsd_decay_samples), NULL, "N", "Samples of WSD's final anneal with --train-samples.", "training", false},
    {"weight-decay", FLAG_DOUBLE, OPT(weight_decay), "0.01", "WD", "Decoupled AdamW weight decay (not applied to biases and layernorms).", "training", false},
    {"weight-decay-incr-style", FLAG_STRING, OPT(weight_decay_incr_style), "constant", "STYLE", "constant (--weight-decay throughout), linear or cosine from --start-weight-decay to --end-weight-decay over the run.", "training", false},
    {"start-weight-decay", FLAG_DOUBLE, OPT(start_weight_decay), NULL, "WD", "Weight decay at the start with --weight-decay-incr-style linear/cosine.", "training", false},
    {"end-weight-decay", FLAG_DOUBLE, OPT(end_weight_decay), NULL, "WD", "Weight decay at the end with --weight-decay-incr-style linear/cosine.", "training", false},
    {"adam-beta1", FLAG_DOUBLE, OPT(adam_beta1), "0.9", "B1", "Adam beta1.", "training", false},
    {"adam-beta2", FLAG_DOUBLE, OPT(adam_beta2), "0.999", "B2", "Adam beta2.", "training", false},
    {"adam-eps", FLAG_DOUBLE, OPT(adam_eps), "1e-08", "EPS", "Adam epsilon.", "training", false},
    {"clip-grad", FLAG_DOUBLE, OPT(clip_grad), "1.0", "NORM", "Clip the global gradient norm to NORM (0 disables).", "training", false},
    {"seed", FLAG_INT64, OPT(seed), "1234", "S", "Seed of the initialisation and of data shuffling.", "training", false},
    {"no-check-for-nan-in-loss-and-grad", FLAG_SWITCH_OFF, OPT(check_for_nan_in_loss_and_grad), NULL, NULL, "Do not stop when the loss or gradient norm is NaN or inf.", "training", false},
    {"bf16", FLAG_SWITCH, OPT(bf16), NULL, NULL, "bf16 parameters and activations (CUDA; the CPU backend is fp32).", "training", false},
    {"fp16", FLAG_SWITCH, OPT(fp16), NULL, NULL, "fp16 with dynamic loss scaling (CUDA).", "training", false},
    {"loss-scale", FLAG_DOUBLE, OPT(loss_scale), NULL, "S", "A constant loss scale instead of the dynamic one (--fp16, or --bf16 where it is also used); a power of two keeps gradients exact.", "training", false},
    {"initial-loss-scale", FLAG_DOUBLE, OPT(initial_loss_scale), "4294967296", "S", "The dynamic loss scale's start (2^32).", "training", false},
    {"min-loss-scale", FLAG_DOUBLE, OPT(min_loss_scale), "1.0", "S", "The dynamic loss scale is never halved below S.", "training", false},
    {"loss-scale-window", FLAG_INT, OPT(loss_scale_window), "1000", "N", "The dynamic loss scale doubles after N iterations in a row without an overflow.", "training", false},
    {"hysteresis", FLAG_INT, OPT(hysteresis), "2", "N", "Overflows tolerated before the dynamic loss scale halves (restored when it grows).", "training", false},
    {"fp8-format", FLAG_STRING, OPT(fp8_format), NULL, "FORMAT", "Megatron's FP8 GEMMs through Transformer Engine (e4m3, or hybrid: e4m3 forward, e5m2 backward). Not built: the CPU backend notes it and computes in fp32; --device cuda refuses it (use --bf16).", "training", false},
    {"fp8-amax-history-len", FLAG_INT, OPT(fp8_amax_history_len), "1", "N", "With --fp8-format: the amax history of its scaling factors (checked, not used: fp8 is not built).", "training", false},
    {"fp8-amax-compute-algo", FLAG_STRING, OPT(fp8_amax_compute_algo), "most_recent", "ALGO", "With --fp8-format: most_recent or max of the amax history (checked, not used: fp8 is not built).", "training", false},
    {"fp8-param-gather", FLAG_SWITCH, OPT(fp8_param_gather), NULL, NULL, "With --fp8-format: all-gather parameters in fp8 (not used: fp8 is not built).", "training", false},
    {"device", FLAG_STRING, OPT(device), "auto", "DEV", "cpu, cuda, or auto (cuda when a GPU and a complete CUDA backend are present).", "training", false},
    {"comm", FLAG_STRING, OPT(comm), "auto", "IMPL", "How ranks exchange device buffers: nccl (one GPU per rank), mpi (host memory; on cuda several ranks may share a GPU), or auto (nccl for --device cuda, mpi for cpu).", "training", false},
    /* data */
    {"data-path", FLAG_LIST, OPT(data_path), NULL, "[W] PATH", "Token shards (.h5, made by tools/preprocess_data), globs, or Megatron prefixes: PREFIX names PREFIX.bin + PREFIX.idx (Megatron's indexed dataset, read in place), else PREFIX.h5, else numbered shards PREFIX_00000.h5, ...; divided by --split. Weighted (0.7 web-*.h5 0.3 books_text_document), each entry is one component of a blend sampled by weight, as Megatron's BlendedDataset; formats may be mixed.", "data", false},
    {"train-data-path", FLAG_LIST, OPT(train_data_path), NULL, "[W] PATH", "Training shards, used whole (--split is ignored); same syntax as --data-path, which it excludes.", "data", false},
    {"valid-data-path", FLAG_LIST, OPT(valid_data_path), NULL, "[W] PATH", "Validation shards, used whole; same syntax as --data-path, which it excludes.", "data", false},
    {"test-data-path", FLAG_LIST, OPT(test_data_path), NULL, "[W] PATH", "Test shards, used whole, evaluated once after the last iteration; same syntax as --data-path, which it excludes.", "data", false},
    {"mock-data", FLAG_SWITCH, OPT(mock_data), NULL, NULL, "Skip data loading and train on synthetic data: documents of seeded random tokens (from --seed) in the vocabulary of --tokenizer-type, split by --split, the same at every parallel layout. For benchmarks without a corpus; excludes --data-path.", "data", false},
    {"calculate-per-token-loss", FLAG_SWITCH, OPT(calculate_per_token_loss), NULL, NULL, "Normalise the gradients by the tokens in the loss of the whole global batch instead of each micro-batch's own (Megatron's default). Without --eod-mask-loss every micro-batch has micro-batch-size x seq-length of them and the two are the same.", "data", false},
    {"eod-mask-loss", FLAG_SWITCH, OPT(eod_mask_loss), NULL, NULL, "Leave out of the loss the positions whose input is an end-of-document token (they would predict the next, unrelated document's first token); the loss is then the mean over the tokens kept.", "data", false},
    {"reset-position-ids", FLAG_SWITCH, OPT(reset_position_ids), NULL, NULL, "Restart position ids (learned or RoPE) at 0 after each end-of-document token inside a sample.", "data", false},
    {"reset-attention-mask", FLAG_SWITCH, OPT(reset_attention_mask), NULL, NULL, "Keep attention inside each document of a sample: a token attends to no token at or before an earlier end-of-document token.", "data", false},
    {"data-cache-path", FLAG_STRING, OPT(data_cache_path), NULL, "DIR", "Keep the dataset indices (document and sample shuffles, blend tables) in DIR, keyed by a hash of their inputs; rebuilt when an input changes.", "data", false},
    {"split", FLAG_STRING, OPT(split), "969,30,1", "W,W,W", "Train/valid/test weights; documents are split in this ratio (quotes around the value, as bash arrays leave them, are ignored).", "data", false},
    {"tokenizer-type", FLAG_STRING, OPT(tokenizer.tokenizer_type), NULL, "TYPE", TOKENIZER_TYPES "; must match the shards (Megatron .bin/.idx data and --mock-data, which record no tokenizer, take its vocabulary), which carry the vocabulary size (given the tokenizer's files, the tokenizer is loaded and must agree).", "data", true},
    TOKENIZER_FILE_FLAGS(TrainArgs, tokenizer, "data"),
    TOKENIZER_VOCAB_SIZE_FLAG(TrainArgs, tokenizer, "data"),
    /* checkpoints */
    {"save", FLAG_STRING, OPT(save), NULL, "DIR", "Directory to save checkpoints in.", "checkpointing", false},
    {"load", FLAG_STRING, OPT(load), NULL, "DIR", "Directory to resume from (its latest checkpoint); a fresh start when it holds none.", "checkpointing", false},
    {"save-interval", FLAG_INT64, OPT(save_interval), "0", "N", "Save every N iterations (and at the end) when --save is given.", "checkpointing", false},
    {"exit-interval", FLAG_INT64, OPT(exit_interval), "0", "N", "Save (with --save) and exit 0 after an iteration divisible by N.", "checkpointing", false},
    {"async-save", FLAG_SWITCH, OPT(async_save), NULL, NULL, "Write checkpoints in a background thread while training goes on (each rank first copies its shard to host memory); published once every rank has finished.", "checkpointing", false},
    {"exit-signal-handler", FLAG_SWITCH, OPT(exit_signal_handler), NULL, NULL, "On SIGTERM, finish the current iteration on every rank, save (with --save) and exit 0.", "checkpointing", false},
    {"exit-duration-in-mins", FLAG_DOUBLE, OPT(exit_duration_in_mins), "0", "MIN", "Save (with --save) and exit 0 once training has run this long (0: no limit).", "checkpointing", false},
    {"no-load-optim", FLAG_SWITCH, OPT(no_load_optim), NULL, NULL, "Load weights and iteration but not the optimizer state.", "checkpointing", false},
    {"finetune", FLAG_SWITCH, OPT(finetune), NULL, NULL, "Load weights only and start at iteration 0 with fresh optimizer state.", "checkpointing", false},
    {"no-save-optim", FLAG_SWITCH, OPT(no_save_optim), NULL, NULL, "Save weights only (a third of the bytes); resuming such a checkpoint needs --no-load-optim or --finetune.", "checkpointing", false},
    {"no-load-rng", FLAG_SWITCH, OPT(no_load_rng), NULL, NULL, "Accepted for Megatron compatibility: gpt3d's random numbers are pure functions of (--seed, iteration, coordinates), so a checkpoint holds no RNG state to load.", "checkpointing", false},
    {"ckpt-step", FLAG_INT64, OPT(ckpt_step), NULL, "N", "Load the checkpoint of iteration N from --load instead of the newest.", "checkpointing", false},
    {"ckpt-format", FLAG_STRING, OPT(ckpt_format), "gpt3d", "FORMAT", "gpt3d only: HDF5 rank files in canonical layout that load at any TP/PP/DP (Megatron's torch, torch_dist, zarr, ... are not read or written; bring Megatron-trained weights over through Hugging Face with tools/import_hf).", "checkpointing", false},
    /* logging */
    {"log-interval", FLAG_INT64, OPT(log_interval), "100", "N", "Print a progress line every N iterations.", "logging", false},
    {"eval-interval", FLAG_INT64, OPT(eval_interval), "1000", "N", "Evaluate on the validation split every N iterations (and at the end).", "logging", false},
    {"eval-iters", FLAG_INT64, OPT(eval_iters), "100", "N", "Global batches per evaluation (0 disables evaluation). After the last iteration the test split (--split's third share, or --test-data-path), when it holds a sample, is evaluated on as many batches.", "logging", false},
    {"skip-train", FLAG_SWITCH, OPT(skip_train), NULL, NULL, "Do not train: evaluate the model (from --load, else the initialisation) on the validation and test splits, print Megatron's blocks and exit; nothing is saved or written to TensorBoard.", "logging", false},
    {"trace-schedule", FLAG_STRING, OPT(trace_schedule), NULL, "PREFIX", "Write each rank's pipeline operations (forward/backward/send/receive with micro-batch ids) to PREFIX.rank<R>.", "logging", false},
    {"metrics-file", FLAG_STRING, OPT(metrics_file), NULL, "PATH", "Append one JSON object per iteration to PATH.", "logging", false},
    {"tensorboard-dir", FLAG_STRING, OPT(tensorboard_dir), NULL, "DIR", "Write TensorBoard event files (Megatron's scalar tags: lm loss, learning-rate, grad-norm, batch-size, validation loss, each also 'vs samples') into DIR.", "logging", false},
    {"tensorboard-log-interval", FLAG_INT64, OPT(tensorboard_log_interval), "1", "N", "Write the per-iteration TensorBoard scalars every N iterations.", "logging", false},
    {"tensorboard-queue-size", FLAG_INT, OPT(tensorboard_queue_size), "1000", "N", "Accepted for Megatron compatibility: events are written as they come and flushed every --log-interval.", "logging", false},
    {"log-timers-to-tensorboard", FLAG_SWITCH, OPT(log_timers_to_tensorboard), NULL, NULL, "Add iteration-time (seconds per iteration over the log interval, from the second log line on) and, with --log-throughput, throughput (TFLOP/s per GPU) to TensorBoard.", "logging", false},
    {"log-validation-ppl-to-tensorboard", FLAG_SWITCH, OPT(log_validation_ppl_to_tensorboard), NULL, NULL, "Add the validation perplexity (exp of the loss capped at 20, as the log's PPL) to TensorBoard.", "logging", false},
    {"no-log-loss-scale-to-tensorboard", FLAG_SWITCH, OPT(no_log_loss_scale_to_tensorboard), NULL, NULL, "Leave the loss scale out of TensorBoard.", "logging", false},
    {"log-world-size-to-tensorboard", FLAG_SWITCH, OPT(log_world_size_to_tensorboard), NULL, NULL, "Add the world size to TensorBoard.", "logging", false},
    {"log-throughput", FLAG_SWITCH, OPT(log_throughput), NULL, NULL, "Add the model TFLOP/s per GPU to the log line.", "logging", false},
    {"log-params-norm", FLAG_SWITCH, OPT(log_params_norm), NULL, NULL, "Add the L2 norm of all parameters to the log line (one more reduction per iteration).", "logging", false},
    {"log-num-zeros-in-grad", FLAG_SWITCH, OPT(log_num_zeros_in_grad), NULL, NULL, "Add the number of zero gradient elements to the log line (one more reduction per iteration, on the device).", "logging", false},
    /* Megatron's implementation switches: accepted, no effect (MegatronCompatArgs) */
#define COMPAT(field) OPT(compat.field)
#define NO_EFFECT "megatron switches without effect here"
    {"use-mcore-models", FLAG_SWITCH, COMPAT(use_mcore_models), NULL, NULL, "Megatron-core's GPT model is the only one gpt3d has (its parameter names, its layouts).", NO_EFFECT, false},
    {"transformer-impl", FLAG_STRING, COMPAT(transformer_impl), "transformer_engine", "IMPL", "local, transformer_engine or inference_optimized: gpt3d's layers are its own C and CUDA code either way.", NO_EFFECT, false},
    {"use-flash-attn", FLAG_SWITCH, COMPAT(use_flash_attn), NULL, NULL, "The attention kernel is the backend's own; no external flash-attention library is used.", NO_EFFECT, false},
    {"attention-backend", FLAG_STRING, COMPAT(attention_backend), "auto", "B", "flash, fused, unfused, local or auto: the backend has one attention implementation.", NO_EFFECT, false},
    {"no-masked-softmax-fusion", FLAG_SWITCH, COMPAT(no_masked_softmax_fusion), NULL, NULL, "PyTorch kernel fusion switch: the kernels here are fixed, and results do not depend on fusion.", NO_EFFECT, false},
    {"no-bias-gelu-fusion", FLAG_SWITCH, COMPAT(no_bias_gelu_fusion), NULL, NULL, "PyTorch kernel fusion switch (see --no-masked-softmax-fusion).", NO_EFFECT, false},
    {"no-bias-swiglu-fusion", FLAG_SWITCH, COMPAT(no_bias_swiglu_fusion), NULL, NULL, "PyTorch kernel fusion switch (see --no-masked-softmax-fusion).", NO_EFFECT, false},
    {"no-bias-dropout-fusion", FLAG_SWITCH, COMPAT(no_bias_dropout_fusion), NULL, NULL, "PyTorch kernel fusion switch (see --no-masked-softmax-fusion).", NO_EFFECT, false},
    {"no-rope-fusion", FLAG_SWITCH, COMPAT(no_rope_fusion), NULL, NULL, "PyTorch kernel fusion switch (see --no-masked-softmax-fusion).", NO_EFFECT, false},
    {"no-gradient-accumulation-fusion", FLAG_SWITCH, COMPAT(no_gradient_accumulation_fusion), NULL, NULL, "Weight gradients always accumulate into the fp32 gradient buffer.", NO_EFFECT, false},
    {"no-gradient-reduce-div-fusion", FLAG_SWITCH, COMPAT(no_gradient_reduce_div_fusion), NULL, NULL, "The loss is scaled by the global batch before backward, so no division follows the reduction.", NO_EFFECT, false},
    {"cross-entropy-loss-fusion", FLAG_SWITCH, COMPAT(cross_entropy_loss_fusion), NULL, NULL, "The cross entropy is always the backend's own vocabulary-parallel kernel.", NO_EFFECT, false},
    {"profile", FLAG_SWITCH, COMPAT(profile), NULL, NULL, "Megatron starts and stops a profiler (Nsight Systems' capture range or PyTorch's) at --profile-step-start/-end; gpt3d has no profiler hooks: profile it whole, e.g. nsys profile mpirun ...", NO_EFFECT, false},
    {"profile-step-start", FLAG_INT64, COMPAT(profile_step_start), "10", "N", "With --profile: the iteration Megatron's profiling starts at (see --profile).", NO_EFFECT, false},
    {"profile-step-end", FLAG_INT64, COMPAT(profile_step_end), "12", "N", "With --profile: the iteration Megatron's profiling ends at (see --profile).", NO_EFFECT, false},
    {"no-position-embedding", FLAG_SWITCH, COMPAT(no_position_embedding), NULL, NULL, "Megatron's deprecated switch: accepted with --position-embedding-type rope (which has no position table), refused otherwise, as Megatron does.", NO_EFFECT, false},
    {"no-persist-layer-norm", FLAG_SWITCH, COMPAT(no_persist_layer_norm), NULL, NULL, "Apex's persistent layer-norm kernel does not exist here.", NO_EFFECT, false},
    {"num-workers", FLAG_INT, COMPAT(num_workers), "2", "N", "PyTorch data-loader worker processes: samples are read from memory-mapped shards in the training process.", NO_EFFECT, false},
    {"no-mmap-bin-files", FLAG_SWITCH, COMPAT(no_mmap_bin_files), NULL, NULL, "Token data is read by gpt3d's own data module; there is no choice of reader to make.", NO_EFFECT, false},
    {"no-create-attention-mask-in-dataloader", FLAG_SWITCH, COMPAT(no_create_attention_mask_in_dataloader), NULL, NULL, "The causal mask is implied by the attention kernel; none is built in the data path.", NO_EFFECT, false},
    {"manual-gc", FLAG_SWITCH, COMPAT(manual_gc), NULL, NULL, "Python garbage collection: C has none.", NO_EFFECT, false},
    {"manual-gc-interval", FLAG_INT64, COMPAT(manual_gc_interval), "0", "N", "Python garbage collection (see --manual-gc).", NO_EFFECT, false},
    {"empty-unused-memory-level", FLAG_INT, COMPAT(empty_unused_memory_level), "0", "L", "0, 1 or 2: PyTorch's caching allocator; buffers here are allocated once at start.", NO_EFFECT, false},
    {"distributed-backend", FLAG_STRING, COMPAT(distributed_backend), "nccl", "B", "nccl or gloo: torch.distributed's backend; gpt3d's ranks communicate as --comm says.", NO_EFFECT, false},
#undef NO_EFFECT
#undef COMPAT
};

#define NUM_TRAIN_FLAGS ((int)(sizeof TRAIN_FLAGS / sizeof TRAIN_FLAGS[0]))

static const char *SUMMARY =
    "Pretrain a GPT model with data, pipeline, context and tensor parallelism. Launch with mpirun, "
    "one rank per GPU; world size = DP x PP x CP x TP. Flags follow Megatron-LM's names.";

void args_print_help(FILE *out) {
    flags_print_help(TRAIN_FLAGS, NUM_TRAIN_FLAGS, "pretrain_gpt", SUMMARY, out);
}

void args_free(TrainArgs *a, FlagParser *parser) { flags_free(parser, a); }

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

static bool check_model(const TrainArgs *a, char *err, size_t err_size) {
    if (a->model.num_layers < 1) FAIL("--num-layers must be >= 1 (got %d)", a->model.num_layers);
    if (a->model.hidden_size < 1) FAIL("--hidden-size must be >= 1 (got %d)", a->model.hidden_size);
    if (a->model.num_attention_heads < 1)
        FAIL("--num-attention-heads must be >= 1 (got %d)", a->model.num_attention_heads);
    if (a->model.ffn_hidden_size < 1) FAIL("--ffn-hidden-size must be >= 1 (got %d)", a->model.ffn_hidden_size);
    if (a->model.seq_length < 1) FAIL("--seq-length must be >= 1 (got %d)", a->model.seq_length);
    if (a->model.seq_length > a->model.max_position_embeddings)
        FAIL("--seq-length %d exceeds --max-position-embeddings %d; raise "
             "--max-position-embeddings or shorten --seq-length",
             a->model.seq_length, a->model.max_position_embeddings);
    if (a->make_vocab_size_divisible_by < 1)
        FAIL("--make-vocab-size-divisible-by must be >= 1 (got %d)",
             a->make_vocab_size_divisible_by);
    if (!(a->model.init_method_std > 0)) FAIL("--init-method-std must be > 0");
    const int tp = a->tensor_model_parallel_size;
    if (a->model.num_attention_heads % tp)
        FAIL("--num-attention-heads %d is not divisible by --tensor-model-parallel-size %d",
             a->model.num_attention_heads, tp);
    if (a->model.ffn_hidden_size % tp)
        FAIL("--ffn-hidden-size %d is not divisible by --tensor-model-parallel-size %d",
             a->model.ffn_hidden_size, tp);
    if (a->sequence_parallel && a->model.seq_length % tp)
        FAIL("--sequence-parallel needs --seq-length %d divisible by "
             "--tensor-model-parallel-size %d",
             a->model.seq_length, tp);
    return true;
}

/* Turns Megatron's architecture flags into the model's variant fields and
 * refuses the combinations that cannot be built, naming the flags. */
static bool resolve_architecture(TrainArgs *a, const FlagParser *parser, char *err,
                                 size_t err_size) {
    TransformerConfig *m = &a->model;
    const TransformerConfig given = *m;
    const int pos = transformer_choice_index(POSITION_EMBEDDING_NAMES, a->position_embedding_type);
    if (pos < 0)
        FAIL("--position-embedding-type %s: use learned_absolute, rope or none",
             a->position_embedding_type);
    const int norm = transformer_choice_index(NORMALIZATION_NAMES, a->normalization);
    if (norm < 0) FAIL("--normalization %s: use LayerNorm or RMSNorm", a->normalization);
    if (a->swiglu && a->squared_relu)
        FAIL("--swiglu and --squared-relu exclude each other: pick one MLP activation");
    if (a->num_query_groups_given && !a->group_query_attention)
        FAIL("--num-query-groups %d needs --group-query-attention", a->num_query_groups);
    if (!a->kv_channels_given && m->hidden_size % m->num_attention_heads)
        FAIL("--hidden-size %d is not divisible by --num-attention-heads %d; pick sizes whose "
             "ratio (the head size) is an integer, or give the head size with --kv-channels",
             m->hidden_size, m->num_attention_heads);
    if (a->compat.no_position_embedding && pos != POSITION_ROPE)
        FAIL("--no-position-embedding is deprecated (as in Megatron) and means nothing without "
             "--position-embedding-type rope; use --position-embedding-type none for no positions");
    transformer_config_set_gpt2_variant(m);
    m->position_embedding_type = pos;
    m->normalization = norm;
    m->norm_epsilon = given.norm_epsilon;
    m->apply_layernorm_1p = given.apply_layernorm_1p;
    m->activation = a->swiglu ? ACTIVATION_SWIGLU : a->squared_relu ? ACTIVATION_SQUARED_RELU
                                                                   : ACTIVATION_GELU;
    if (a->group_query_attention) m->num_query_groups = a->num_query_groups;
    if (a->kv_channels_given) m->kv_channels = given.kv_channels;
    m->untie_embeddings_and_output_weights = given.untie_embeddings_and_output_weights;
    m->add_bias_linear = !a->disable_bias_linear;
    m->add_qkv_bias = given.add_qkv_bias;
    m->qk_layernorm = given.qk_layernorm;
#define KEEP_GIVEN(f, kind, names, what) m->f = given.f;
    TRANSFORMER_MOE_FIELDS(KEEP_GIVEN)
#undef KEEP_GIVEN
    if (!args_resolve_moe(a, parser, err, err_size)) return false;
    /* RoPE's settings mean nothing without RoPE: they keep their defaults,
     * so a resume compares only what the model computes with. */
    if (pos == POSITION_ROPE) {
        m->rotary_base = given.rotary_base;
        m->rotary_percent = given.rotary_percent;
        m->rotary_interleaved = given.rotary_interleaved;
        if (!(isfinite(m->rotary_base) && m->rotary_base > 1))
            FAIL("--rotary-base must be a finite number above 1 (got %g); Llama uses 10000 or "
                 "500000",
                 m->rotary_base);
    }
    if (!(isfinite(m->norm_epsilon) && m->norm_epsilon > 0 && m->norm_epsilon < 1))
        FAIL("--norm-epsilon must be in (0, 1) (got %g)", m->norm_epsilon);
    if (m->kv_channels < 1) FAIL("--kv-channels must be >= 1 (got %d)", m->kv_channels);
    const int heads = m->num_attention_heads, groups = m->num_query_groups;
    const int tp = a->tensor_model_parallel_size;
    if (groups < 1 || groups > heads || heads % groups)
        FAIL("--num-query-groups %d must divide --num-attention-heads %d (each key/value head "
             "serves the same number of query heads)",
             groups, heads);
    if (groups % tp)
        FAIL("--num-query-groups %d is not divisible by --tensor-model-parallel-size %d: each "
             "tensor-parallel rank needs whole query groups; use at least %d groups or a smaller "
             "TP",
             groups, tp, tp);
    const double drops[2] = {m->hidden_dropout, m->attention_dropout};
    const char *drop_flags[2] = {"--hidden-dropout", "--attention-dropout"};
    for (int i = 0; i < 2; i++)
        if (!(drops[i] >= 0 && drops[i] < 1))
            FAIL("%s must be in [0, 1) (got %g); 0 disables dropout", drop_flags[i], drops[i]);
    char where[] = "the model flags";
    TransformerConfig check = *m;
    check.vocab_size = check.padded_vocab_size = 1; /* known once the data is open */
    return transformer_config_check_variant(&check, where, err, err_size);
}

static bool check_training(const TrainArgs *a, char *err, size_t err_size) {
    if (a->micro_batch_size < 1) FAIL("--micro-batch-size must be >= 1 (got %d)", a->micro_batch_size);
    const int per_step = a->micro_batch_size * a->data_parallel_size;
    if (a->global_batch_size < 1 || a->global_batch_size % per_step)
        FAIL("--global-batch-size %d is not a positive multiple of --micro-batch-size %d x "
             "data-parallel size %d = %d; use e.g. --global-batch-size %d",
             a->global_batch_size, a->micro_batch_size, a->data_parallel_size, per_step,
             per_step * (a->global_batch_size / per_step > 0 ? a->global_batch_size / per_step : 1));
    if (!(a->adam_beta1 >= 0 && a->adam_beta1 < 1)) FAIL("--adam-beta1 must be in [0, 1)");
    if (!(a->adam_beta2 >= 0 && a->adam_beta2 < 1)) FAIL("--adam-beta2 must be in [0, 1)");
    if (!(a->adam_eps > 0)) FAIL("--adam-eps must be > 0");
    if (!(a->clip_grad >= 0)) FAIL("--clip-grad must be >= 0 (0 disables clipping)");
    /* Checkpoint metadata is JSON, whose numbers are exact only below 2^53. */
    if (a->seed < 0 || a->seed >= (int64_t)1 << 53)
        FAIL("--seed must be between 0 and 2^53 - 1 (got %lld)", (long long)a->seed);
    if (!(isfinite(a->distributed_timeout_minutes) && a->distributed_timeout_minutes > 0))
        FAIL("--distributed-timeout-minutes must be a positive number of minutes (got %g); "
             "e.g. 10, or 0.5 for 30 seconds",
             a->distributed_timeout_minutes);
    if (a->bf16 && a->fp16) FAIL("--bf16 and --fp16 exclude each other; pick one");
    if (a->loss_scale < 0)
        FAIL("--loss-scale must be positive (got %g); leave it out for the dynamic scale",
             a->loss_scale);
    if (!(a->initial_loss_scale > 0 && a->min_loss_scale > 0 &&
          a->min_loss_scale <= a->initial_loss_scale))
        FAIL("--initial-loss-scale %g and --min-loss-scale %g must be positive with the minimum "
             "at most the initial scale",
             a->initial_loss_scale, a->min_loss_scale);
    if (a->loss_scale_window < 1)
        FAIL("--loss-scale-window must be >= 1 (got %d)", a->loss_scale_window);
    if (a->hysteresis < 1) FAIL("--hysteresis must be >= 1 (got %d)", a->hysteresis);
    static const char *const FP8_FORMATS[] = {"e4m3", "hybrid", NULL};
    static const char *const AMAX_ALGOS[] = {"most_recent", "max", NULL};
    if (a->fp8_format && transformer_choice_index(FP8_FORMATS, a->fp8_format) < 0)
        FAIL("--fp8-format %s: Megatron's choices are e4m3, hybrid", a->fp8_format);
    if (transformer_choice_index(AMAX_ALGOS, a->fp8_amax_compute_algo) < 0)
        FAIL("--fp8-amax-compute-algo %s: Megatron's choices are most_recent, max",
             a->fp8_amax_compute_algo);
    if (a->fp8_amax_history_len < 1)
        FAIL("--fp8-amax-history-len must be >= 1 (got %d)", a->fp8_amax_history_len);
    if (a->ddp_bucket_size < 0 || (a->ddp_bucket_size == 0 && a->ddp_bucket_size_given))
        FAIL("--ddp-bucket-size must be a positive number of elements (got %lld); leave it out "
             "for Megatron's default max(40000000, 1000000 x DP)",
             (long long)a->ddp_bucket_size);
    if (strcmp(a->device, "auto") && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
        FAIL("--device %s: use cpu, cuda or auto", a->device);
    if (strcmp(a->comm, "auto") && strcmp(a->comm, "nccl") && strcmp(a->comm, "mpi"))
        FAIL("--comm %s: unknown communication; use auto, nccl or mpi", a->comm);
    return true;
}

/* The accepted Megatron switches still take only Megatron's values. */
static bool check_compat(const MegatronCompatArgs *c, char *err, size_t err_size) {
    static const char *const BACKENDS[] = {"flash", "fused", "unfused", "local", "auto", NULL};
    static const char *const IMPLS[] = {"local", "transformer_engine", "inference_optimized", NULL};
    static const char *const DIST[] = {"nccl", "gloo", NULL};
    if (transformer_choice_index(BACKENDS, c->attention_backend) < 0)
        FAIL("--attention-backend %s: Megatron's choices are flash, fused, unfused, local, auto",
             c->attention_backend);
    if (transformer_choice_index(IMPLS, c->transformer_impl) < 0)
        FAIL("--transformer-impl %s: Megatron's choices are local, transformer_engine, "
             "inference_optimized",
             c->transformer_impl);
    if (transformer_choice_index(DIST, c->distributed_backend) < 0)
        FAIL("--distributed-backend %s: Megatron's choices are nccl, gloo (gpt3d's own choice "
             "is --comm)",
             c->distributed_backend);
    if (c->num_workers < 0) FAIL("--num-workers must be >= 0 (got %d)", c->num_workers);
    if (c->empty_unused_memory_level < 0 || c->empty_unused_memory_level > 2)
        FAIL("--empty-unused-memory-level must be 0, 1 or 2 (got %d)", c->empty_unused_memory_level);
    if (c->profile_step_start < 0 || c->profile_step_end < c->profile_step_start)
        FAIL("--profile-step-start %lld and --profile-step-end %lld must satisfy 0 <= start <= end",
             (long long)c->profile_step_start, (long long)c->profile_step_end);
    return true;
}

static bool check_io(const TrainArgs *a, char *err, size_t err_size) {
    const bool per_split = a->train_data_path.count > 0 || a->valid_data_path.count > 0 ||
                           a->test_data_path.count > 0;
    if (a->mock_data && (a->data_path.count > 0 || per_split))
        FAIL("--mock-data replaces the data: give either --mock-data or "
             "--data-path/--train-data-path/--valid-data-path/--test-data-path");
    if (!a->mock_data && a->data_path.count == 0 && a->train_data_path.count == 0)
        FAIL("no training data: give --data-path (divided by --split), --train-data-path, or "
             "--mock-data for synthetic tokens");
    if (a->data_path.count > 0 && per_split)
        FAIL("--data-path and --train-data-path/--valid-data-path/--test-data-path exclude each "
             "other: give either --data-path (divided by --split) or a path per split");
    if (!tokenizer_type_known(a->tokenizer.tokenizer_type))
        FAIL("--tokenizer-type %s: use " TOKENIZER_TYPES, a->tokenizer.tokenizer_type);
    if (a->save_interval < 0) FAIL("--save-interval must be >= 0");
    if (a->save_interval > 0 && !a->save)
        FAIL("--save-interval %lld needs --save DIR (where to write the checkpoints)",
             (long long)a->save_interval);
    if (a->async_save && !a->save)
        FAIL("--async-save needs --save DIR (where to write the checkpoints)");
    if (a->exit_interval < 0) FAIL("--exit-interval must be >= 0");
    if (!(a->exit_duration_in_mins >= 0)) FAIL("--exit-duration-in-mins must be >= 0");
    if (strcmp(a->ckpt_format, "gpt3d"))
        FAIL("--ckpt-format %s: gpt3d reads and writes only its own format (HDF5 rank files that "
             "load at any layout); drop the flag, and bring Megatron-trained weights over through "
             "their Hugging Face form with tools/import_hf",
             a->ckpt_format);
    if (a->ckpt_step_given && (!a->load || a->ckpt_step < 0))
        FAIL("--ckpt-step %lld needs --load DIR and an iteration >= 0", (long long)a->ckpt_step);
    if ((a->finetune || a->no_load_optim) && !a->load)
        FAIL("--%s needs --load DIR (the checkpoint to start from)",
             a->finetune ? "finetune" : "no-load-optim");
    if (a->log_interval < 1) FAIL("--log-interval must be >= 1");
    if (a->tensorboard_log_interval < 1) FAIL("--tensorboard-log-interval must be >= 1");
    if (a->eval_interval < 1) FAIL("--eval-interval must be >= 1");
    if (a->eval_iters < 0) FAIL("--eval-iters must be >= 0");
    if (a->skip_train && a->eval_iters == 0)
        FAIL("--skip-train only evaluates, and --eval-iters 0 turns evaluation off; give "
             "--eval-iters N (global batches per split) or leave out --skip-train");
    if (a->test_data_path.count > 0 && a->eval_iters == 0)
        FAIL("--test-data-path is evaluated on --eval-iters batches, and --eval-iters is 0; give "
             "--eval-iters N or leave out --test-data-path");
    return true;
}

bool args_parse(TrainArgs *a, FlagParser *parser, int argc, char **argv, int world_size,
                bool *wants_help, char *err, size_t err_size) {
    memset(a, 0, sizeof *a);
    if (!flags_parse(parser, TRAIN_FLAGS, NUM_TRAIN_FLAGS, a, argc, argv, wants_help)) {
        snprintf(err, err_size, "%s", parser->error);
        return false;
    }
    if (*wants_help) return true;

    if (!parallel_state_check_sizes(world_size, args_parallel_sizes(a), err, err_size))
        return false;
    a->data_parallel_size = world_size / (a->tensor_model_parallel_size * a->context_parallel_size *
                                          a->pipeline_model_parallel_size);
    if (!flags_was_set(parser, "ffn-hidden-size"))
        a->model.ffn_hidden_size = a->swiglu ? a->model.hidden_size * 8 / 3 / 64 * 64
                                             : 4 * a->model.hidden_size;
    a->kv_channels_given = flags_was_set(parser, "kv-channels");
    a->num_query_groups_given = flags_was_set(parser, "num-query-groups");
    if (!flags_was_set(parser, "max-position-embeddings"))
        a->model.max_position_embeddings = a->model.seq_length;
    if (!flags_was_set(parser, "global-batch-size"))
        a->global_batch_size = a->micro_batch_size * a->data_parallel_size;
    a->ddp_bucket_size_given = flags_was_set(parser, "ddp-bucket-size");
    a->ckpt_step_given = flags_was_set(parser, "ckpt-step");
    if (!check_model(a, err, err_size) || !resolve_architecture(a, parser, err, err_size) ||
        !check_training(a, err, err_size) || !args_resolve_schedule(a, parser, err, err_size) ||
        !args_resolve_recompute(a, parser, err, err_size) ||
        !args_resolve_context(a, err, err_size) ||
        !check_compat(&a->compat, err, err_size) ||
        !check_io(a, err, err_size))
        return false;
    a->num_microbatches = a->global_batch_size / (a->micro_batch_size * a->data_parallel_size);
    return args_resolve_pipeline(a, parser, err, err_size);
}
