#!/usr/bin/env bash
# Hugging Face Mixtral (MixtralForCausalLM) export and import end to end: a
# Mixtral-style model (every MLP a mixture of experts, softmax top-k router)
# trained at TP=2 exports with Mixtral's config and names, round-trips
# bitwise (files and checkpoint), and its import trains with the first loss
# of the trained checkpoint at 1x1x1 and at TP=2 x PP=2 with sequence
# parallelism; random models (top-1, top-2, all experts chosen; tied and
# untied; grouped and multi-query attention) give gpt3d's loss to 1e-6 in a
# reference forward written from Hugging Face's MixtralSparseMoeBlock; every
# MoE model or config Mixtral cannot express is refused with one error
# naming the flag or field.
# Usage: test_interop_mixtral.sh MPIEXEC PRETRAIN PREPROCESS EXPORT_HF IMPORT_HF
#                                LLAMA_HELPER GPT2_HELPER
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
EXPORT_HF=$4
IMPORT_HF=$5
LLAMA=$6
HELPER=$7
source "$(dirname "$0")/e2e_common.sh"
source "$(dirname "$0")/interop_hf_common.sh"
make_corpus "$PREPROCESS" "mixtral"

# Llama's model with every MLP 4 experts, 2 per token. --ffn-hidden-size
# (HF_LLAMA_MODEL's 48), which no layer of an all-MoE model uses, is what
# the import sets it to: the experts' intermediate_size.
MODEL=("${HF_LLAMA_MODEL[@]}" --num-experts 4 --moe-router-topk 2 --moe-ffn-hidden-size 48
       --moe-aux-loss-coeff 0)

# ------------------------------------------------ trained at TP=2: round trip
ok train "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${MODEL[@]}" --tensor-model-parallel-size 2 \
    --train-iters 3 --lr 1e-2 --save "$WORK/trained" || exit 1
hf_round_trip MixtralForCausalLM \
    'MixtralForCausalLM: 2 layers, hidden 32, 4 heads in 2 groups, ffn 48, 4 experts of ffn 48 (top 2)' \
    || exit 1
for field in 'model_type "mixtral"' 'architectures \["MixtralForCausalLM"\]' \
             'num_hidden_layers 2' 'hidden_size 32' 'num_attention_heads 4' \
             'num_key_value_heads 2' 'head_dim 8' 'intermediate_size 48' \
             'num_local_experts 4' 'num_experts_per_tok 2' 'max_position_embeddings 32' \
             'vocab_size 257' 'rope_theta 500000' 'rms_norm_eps 1e-05' 'hidden_act "silu"' \
             'tie_word_embeddings false' 'sliding_window null' 'attention_dropout 0' \
             'output_router_logits false'; do
    has_field "$WORK/hf1/config.json" $field || fail "config.json lacks $field"
done
for absent in attention_bias mlp_bias rope_scaling pretraining_tp; do
    grep -q "\"$absent\"" "$WORK/hf1/config.json" && fail "config.json has LlamaConfig's $absent"
done
for name in model.layers.1.block_sparse_moe.gate.weight model.layers.1.block_sparse_moe.experts.3.w1.weight \
            model.layers.0.block_sparse_moe.experts.0.w2.weight model.layers.0.block_sparse_moe.experts.2.w3.weight \
            model.layers.1.post_attention_layernorm.weight lm_head.weight; do
    grep -q "\"$name\"" "$WORK/hf1/model.safetensors" || fail "model.safetensors lacks $name"
done
grep -q '"model.layers.0.mlp.' "$WORK/hf1/model.safetensors" && fail "model.safetensors has a dense Llama MLP"

# ------------------------------------------------ the import trains at any layout
hf_import_trains --sequence-parallel

# ------------------------------------------------ random models: reference forward
#                  name      L  C  H NG HS  F  V  P seed tied bias E K FM
hf_random_models "top2      2 32 4 2  8 48 70 16 3 0 0 4 2 48" \
                 "top1_mqa  1 24 2 1 12 36 50 16 5 1 0 3 1 36" \
                 "all_tied  2 32 4 4  8 40 70 16 6 1 0 3 3 40"
has_field "$WORK/rhf_all_tied/config.json" tie_word_embeddings true || fail "a tied model exported untied"
grep -q '"lm_head.weight"' "$WORK/rhf_all_tied/model.safetensors" && fail "a tied model exported an lm_head.weight"

# ------------------------------------------------ what Mixtral cannot express
echo "refused:"
# refuse_export NAME REGEX FLAGS...: a model of MODEL + FLAGS that export_hf refuses.
refuse_export() {
    local name=$1 regex=$2
    shift 2
    ok "model_$name" "$PRETRAIN" "${MODEL[@]}" "$@" --train-iters 1 --lr 1e-3 --save "$WORK/m_$name" || return
    expect_error "export_$name" "$regex" "$WORK/export_$name.out_dir" \
        "$EXPORT_HF" --load "$WORK/m_$name" --out "$WORK/export_$name.out_dir"
}
refuse_export sigmoid "not LlamaForCausalLM \(it has --num-experts 4 .*\), not MixtralForCausalLM \(it has --moe-router-score-function sigmoid" \
    --moe-router-score-function sigmoid
refuse_export layer_freq "not MixtralForCausalLM \(it has --moe-layer-freq 2" --moe-layer-freq 2
refuse_export shared "not MixtralForCausalLM \(it has --moe-shared-expert-intermediate-size 32" \
    --moe-shared-expert-intermediate-size 32
refuse_export pre_softmax "not MixtralForCausalLM \(it has --moe-router-pre-softmax" --moe-router-pre-softmax
edit topk num_experts_per_tok '5'
refuse topk "config.json': num_experts_per_tok 5 is larger than num_local_experts 4"
edit window sliding_window '16'
refuse window "config.json': sliding_window 16 is shorter than max_position_embeddings 32"
edit experts num_local_experts '5'
refuse experts "tensor 'model.layers.0.block_sparse_moe.gate.weight' has shape \[4, 32\], but config.json implies \[5, 32\]"
edit activation hidden_act '"gelu"'
refuse activation "config.json': hidden_act must be \"silu\""
# A window covering every position is full attention: it converts.
edit wide_window sliding_window '32'
ok import_wide_window "$IMPORT_HF" --hf "$WORK/bad_wide_window" --save "$WORK/from_wide_window"

finish test_interop_mixtral
