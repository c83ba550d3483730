#!/usr/bin/env bash
# Hugging Face Llama (LlamaForCausalLM) export and import end to end: a
# Llama-style model trained at TP=2 exports with Llama's config and names,
# round-trips bitwise (files and checkpoint), and its import trains with the
# same first loss at 1x1x1 and TP=2 x PP=2; random models (grouped and
# multi-query attention, tied and untied, with and without biases, a head
# dimension other than hidden / heads) give gpt3d's loss to 1e-6 in a
# reference forward written from Hugging Face's definitions; sharded files
# import; every model or config Llama cannot express is refused with one
# error naming the field.
# Usage: test_interop_llama.sh MPIEXEC PRETRAIN PREPROCESS EXPORT_HF IMPORT_HF EXPORT_LLMC
#                              LLAMA_HELPER GPT2_HELPER
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
EXPORT_HF=$4
IMPORT_HF=$5
EXPORT_LLMC=$6
LLAMA=$7
HELPER=$8
source "$(dirname "$0")/e2e_common.sh"
source "$(dirname "$0")/interop_hf_common.sh"
make_corpus "$PREPROCESS" "llama"

MODEL=("${HF_LLAMA_MODEL[@]}")

# ------------------------------------------------ trained at TP=2: round trip
ok train "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${MODEL[@]}" --tensor-model-parallel-size 2 \
    --train-iters 3 --lr 1e-2 --save "$WORK/trained" || exit 1
hf_round_trip LlamaForCausalLM 'LlamaForCausalLM: 2 layers, hidden 32, 4 heads in 2 groups' || exit 1
for field in 'model_type "llama"' 'num_key_value_heads 2' 'head_dim 8' 'intermediate_size 48' \
             'rope_theta 500000' 'rms_norm_eps 1e-05' 'tie_word_embeddings false' \
             'attention_bias false' 'mlp_bias false'; do
    has_field "$WORK/hf1/config.json" $field || fail "config.json lacks $field"
done

# ------------------------------------------------ the import trains at any layout
hf_import_trains

# ------------------------------------------------ random models: reference forward
#                  name     L  C  H NG HS  F  V  P seed tied bias
hf_random_models "gqa      2 32 4 2  8 48 70 16 3 0 0" \
                 "mqa_bias 2 32 4 1 12 40 70 16 4 1 1" \
                 "mha_tied 1 24 2 2 12 36 50 16 5 1 0"
has_field "$WORK/rhf_mqa_bias/config.json" tie_word_embeddings true || fail "a tied model exported untied"
grep -q '"lm_head.weight"' "$WORK/rhf_mqa_bias/model.safetensors" && fail "a tied model exported an lm_head.weight"

# ------------------------------------------------ sharded files
ok shard "$LLAMA" shard "$WORK/rhf_mqa_bias" "$WORK/sharded"
ok import_sharded "$IMPORT_HF" --hf "$WORK/sharded" --save "$WORK/from_sharded" --make-vocab-size-divisible-by 16
ok compare_sharded "$HELPER" compare-ckpt "$WORK/rback_mqa_bias" "$WORK/from_sharded" && echo "sharded import: $(cat "$WORK/compare_sharded.log")"

# ------------------------------------------------ what Llama cannot express
echo "refused:"
ok interleaved "$PRETRAIN" "${MODEL[@]}" --rotary-interleaved --train-iters 1 --lr 1e-3 --save "$WORK/interleaved"
expect_error export_interleaved "not GPT2LMHeadModel \(it has --position-embedding-type rope, GPT-2 has learned_absolute\), not LlamaForCausalLM \(it has --rotary-interleaved" \
    "$WORK/export_interleaved.out_dir" "$EXPORT_HF" --load "$WORK/interleaved" --out "$WORK/export_interleaved.out_dir"
expect_error export_llmc "is not the GPT-2 block llm.c holds: it has --position-embedding-type rope.*export_hf" \
    "$WORK/export_llmc.out_dir" "$EXPORT_LLMC" --load "$WORK/trained" --out "$WORK/export_llmc.out_dir"
edit rope_scaling rope_scaling '{"rope_type": "llama3", "factor": 8.0}'
refuse rope_scaling "rope_scaling of type 'llama3' .* is not implemented"
edit activation hidden_act '"gelu"'
refuse activation "config.json': hidden_act must be \"silu\""
edit bias_mix attention_bias 'true'
refuse bias_mix "attention_bias true with mlp_bias false"
edit model_type model_type '"mistral"'
refuse model_type "model_type \"mistral\" does not convert; gpt3d reads \"gpt2\" .*\"llama\" .*\"mixtral\""
edit pretraining_tp pretraining_tp '2'
refuse pretraining_tp "pretraining_tp must be 1"
edit layers num_hidden_layers '3'
refuse layers "has no tensor 'model.layers.2.self_attn.q_proj.weight', which config.json's LlamaForCausalLM"
edit groups num_key_value_heads '4'
refuse groups "tensor 'model.layers.0.self_attn.k_proj.weight' has shape \[16, 32\], but config.json implies \[32, 32\]"
edit tied tie_word_embeddings 'true'
refuse tied "lm_head.weight differs from the word embedding"
edit head_dim head_dim '"8"'
refuse head_dim "\"head_dim\" must be a positive integer"

finish test_interop_llama
