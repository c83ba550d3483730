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
make_corpus "$PREPROCESS" "llama"

MODEL=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 16
       --max-position-embeddings 32 --micro-batch-size 2 --global-batch-size 4
       --position-embedding-type rope --rotary-base 500000 --normalization RMSNorm --norm-epsilon 1e-5
       --swiglu --ffn-hidden-size 48 --group-query-attention --num-query-groups 2
       --untie-embeddings-and-output-weights --disable-bias-linear
       --hidden-dropout 0 --attention-dropout 0
       --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
       --eval-iters 0 --device cpu --log-interval 1)

# ------------------------------------------------ trained at TP=2: round trip
ok train "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${MODEL[@]}" --tensor-model-parallel-size 2 \
    --train-iters 3 --lr 1e-2 --save "$WORK/trained" || exit 1
ok export1 "$EXPORT_HF" --load "$WORK/trained" --out "$WORK/hf1" || exit 1
grep -q 'as LlamaForCausalLM' "$WORK/export1.log" || fail "export did not report LlamaForCausalLM"
# has_field FILE KEY VALUE: config.json's KEY is VALUE (cJSON indents with tabs).
has_field() { grep -Eq "^[[:space:]]*\"$2\":[[:space:]]*$3,?\$" "$1"; }
for field in 'model_type "llama"' 'num_key_value_heads 2' 'head_dim 8' 'intermediate_size 48' \
             'rope_theta 500000' 'rms_norm_eps 1e-05' 'tie_word_embeddings false' \
             'attention_bias false' 'mlp_bias false'; do
    has_field "$WORK/hf1/config.json" $field || fail "config.json lacks $field"
done
ok import1 "$IMPORT_HF" --hf "$WORK/hf1" --save "$WORK/from_hf"
grep -q 'LlamaForCausalLM: 2 layers, hidden 32, 4 heads in 2 groups' "$WORK/import1.log" || fail "import did not report the Llama shape"
ok export2 "$EXPORT_HF" --load "$WORK/from_hf" --out "$WORK/hf2"
cmp -s "$WORK/hf1/model.safetensors" "$WORK/hf2/model.safetensors" || fail "export -> import -> export changed model.safetensors"
cmp -s "$WORK/hf1/config.json" "$WORK/hf2/config.json" || fail "export -> import -> export changed config.json"
ok compare "$HELPER" compare-ckpt "$WORK/trained" "$WORK/from_hf" padded-zero && echo "round trip: $(cat "$WORK/compare.log")"

# ------------------------------------------------ the import trains at any layout
LOSS=("${MODEL[@]}" --train-iters 1 --lr 0 --lr-warmup-iters 0)
ok loss_tp1 "$PRETRAIN" "${LOSS[@]}" --load "$WORK/from_hf" --finetune --metrics-file "$WORK/i1.jsonl"
ok loss_tp2pp2 "$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${LOSS[@]}" --load "$WORK/from_hf" --finetune \
    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --metrics-file "$WORK/i4.jsonl"
ok loss_trained "$PRETRAIN" "${LOSS[@]}" --load "$WORK/trained" --finetune --metrics-file "$WORK/t1.jsonl"
a=$(lm_loss "$WORK/i1.jsonl"); b=$(lm_loss "$WORK/i4.jsonl"); c=$(lm_loss "$WORK/t1.jsonl")
echo "first lm loss: import at 1x1x1 $a, at TP=2 PP=2 $b; the trained checkpoint $c"
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }' \
    || fail "imported model: loss $a at 1x1x1 but $b at TP=2 PP=2"
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-7 * a) }' \
    || fail "the import's loss $a differs from the trained checkpoint's $c"

# ------------------------------------------------ random models: reference forward
#        name     L  C  H NG HS  F  V  P seed tied bias
for spec in "gqa      2 32 4 2  8 48 70 16 3 0 0" \
            "mqa_bias 2 32 4 1 12 40 70 16 4 1 1" \
            "mha_tied 1 24 2 2 12 36 50 16 5 1 0"; do
    read -r name L C H NG HS F V P seed tied bias <<< "$spec"
    ok "random_$name" "$LLAMA" random "$WORK/r_$name" "$L" "$C" "$H" "$NG" "$HS" "$F" "$V" "$P" "$seed" "$tied" "$bias" || continue
    ok "export_$name" "$EXPORT_HF" --load "$WORK/r_$name" --out "$WORK/rhf_$name" || continue
    ok "forward_$name" "$LLAMA" forward "$WORK/r_$name" "$WORK/rhf_$name" && echo "$name: $(cat "$WORK/forward_$name.log")"
    ok "import_$name" "$IMPORT_HF" --hf "$WORK/rhf_$name" --save "$WORK/rback_$name" --make-vocab-size-divisible-by 16
    ok "compare_$name" "$HELPER" compare-ckpt "$WORK/r_$name" "$WORK/rback_$name" padded-zero
done
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
# edit KIND KEY JSON: a copy of hf1 with one config.json field changed
edit() { ok "edit_$1" "$LLAMA" edit-config "$WORK/hf1" "$WORK/bad_$1" "$2" "$3"; }
refuse() { expect_error "$1" "$2" "$WORK/$1.out_dir" "$IMPORT_HF" --hf "$WORK/bad_$1" --save "$WORK/$1.out_dir"; }
edit rope_scaling rope_scaling '{"rope_type": "llama3", "factor": 8.0}'
refuse rope_scaling "rope_scaling of type 'llama3' .* is not implemented"
edit activation hidden_act '"gelu"'
refuse activation "config.json': hidden_act must be \"silu\""
edit bias_mix attention_bias 'true'
refuse bias_mix "attention_bias true with mlp_bias false"
edit model_type model_type '"mistral"'
refuse model_type "model_type \"mistral\" does not convert; gpt3d reads \"gpt2\" .* and \"llama\""
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
