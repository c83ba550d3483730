#!/usr/bin/env bash
# The Hugging Face and llm.c converters end to end: round trips bitwise in
# both directions, GPT-2's names, shapes and layouts checked on the files
# themselves (by a helper that parses them independently of interop/), a
# reference forward of the exported models against gpt3d's loss, half
# precision and GPT-2's released-file naming, every malformed input (one
# "error:" line naming the file, exit 2, nothing written), and the loss of
# an imported model equal at TP=1 and at TP=2 x PP=2.
# Usage: test_interop.sh MPIEXEC PRETRAIN PREPROCESS EXPORT_HF IMPORT_HF EXPORT_LLMC IMPORT_LLMC
#                        HELPER FORWARD
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
EXPORT_HF=$4
IMPORT_HF=$5
EXPORT_LLMC=$6
IMPORT_LLMC=$7
HELPER=$8
FORWARD=$9
source "$(dirname "$0")/e2e_common.sh"

# ------------------------------------------------ a trained checkpoint (TP=2)
for i in $(seq 1 16); do
    for j in $(seq 1 20); do echo "document $i line $j: weights move $(( (i * j) % 11 )) ways"; done > "$WORK/d$i.txt"
done
ok preprocess "$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" \
    --tokenizer-type ByteTokenizer --append-eod || exit 1
SHARD="$WORK/c_text_document.h5"
# 2 layers, hidden 32, 4 heads, ffn 128 (4C, so llm.c can hold it), vocab 257 -> 384, 24 positions
MODEL=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 16
       --max-position-embeddings 24 --micro-batch-size 2 --global-batch-size 4
       --tokenizer-type ByteTokenizer --data-path "$SHARD" --split 90,10,0 --eval-iters 0
       --device cpu --log-interval 1)
SHAPE=(2 32 4 128 257 384 24) # L C H F V VP P for the helper
ok train "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${MODEL[@]}" --tensor-model-parallel-size 2 \
    --train-iters 3 --lr 1e-3 --save "$WORK/trained" || exit 1

# ------------------------------------------------ Hugging Face round trip
ok export1 "$EXPORT_HF" --load "$WORK/trained" --out "$WORK/hf1"
ok header "$HELPER" check-hf-header "$WORK/hf1" "${SHAPE[@]}" && cat "$WORK/header.log"
ok import1 "$IMPORT_HF" --hf "$WORK/hf1" --save "$WORK/from_hf"
ok export2 "$EXPORT_HF" --load "$WORK/from_hf" --out "$WORK/hf2"
cmp -s "$WORK/hf1/model.safetensors" "$WORK/hf2/model.safetensors" || fail "HF export -> import -> export changed model.safetensors"
cmp -s "$WORK/hf1/config.json" "$WORK/hf2/config.json" || fail "HF export -> import -> export changed config.json"
ok compare_hf "$HELPER" compare-ckpt "$WORK/trained" "$WORK/from_hf" padded-zero && echo "HF round trip: $(cat "$WORK/compare_hf.log")"
grep -Eq '"tokenizer_type":[[:space:]]*"ByteTokenizer"' "$WORK/from_hf/iter_0000000/metadata.json" || fail "import did not record the tokenizer"

# GPT-2's released naming (no prefix, mask buffers, tied lm_head, sorted), BF16 and F16.
mkdir -p "$WORK/released" "$WORK/bf16" "$WORK/f16"
ok released "$HELPER" variant "$WORK/hf1" "$WORK/released" unprefixed
ok import_released "$IMPORT_HF" --hf "$WORK/released" --save "$WORK/from_released"
ok compare_released "$HELPER" compare-ckpt "$WORK/from_hf" "$WORK/from_released" && echo "released naming: $(cat "$WORK/compare_released.log")"
for dtype in bf16 f16; do
    ok "$dtype" "$HELPER" variant "$WORK/hf1" "$WORK/$dtype" "$dtype"
    ok "import_$dtype" "$IMPORT_HF" --hf "$WORK/$dtype" --save "$WORK/from_$dtype"
    ok "export_$dtype" "$EXPORT_HF" --load "$WORK/from_$dtype" --out "$WORK/${dtype}_back"
    ok "widened_$dtype" "$HELPER" check-widened "$WORK/$dtype" "$WORK/${dtype}_back" && cat "$WORK/widened_$dtype.log"
done

# ------------------------------------------------ malformed Hugging Face input
echo "rejected Hugging Face input:"
for kind in truncated bad-json unknown-dtype offsets-outside missing-tensor extra-tensor untied-head \
            config-positions config-layers config-activation; do
    mkdir -p "$WORK/bad_$kind"
    ok "make_$kind" "$HELPER" variant "$WORK/hf1" "$WORK/bad_$kind" "$kind" || continue
done
ST="model.safetensors"
expect_error truncated "bad_truncated/$ST.*outside the data section" "$WORK/o1" "$IMPORT_HF" --hf "$WORK/bad_truncated" --save "$WORK/o1"
expect_error bad-json "bad_bad-json/$ST.*not valid JSON" "$WORK/o2" "$IMPORT_HF" --hf "$WORK/bad_bad-json" --save "$WORK/o2"
expect_error unknown-dtype "bad_unknown-dtype/$ST.*unknown dtype 'Q8'" "$WORK/o3" "$IMPORT_HF" --hf "$WORK/bad_unknown-dtype" --save "$WORK/o3"
expect_error offsets-outside "bad_offsets-outside/$ST.*data_offsets .*outside the data section" "$WORK/o4" "$IMPORT_HF" --hf "$WORK/bad_offsets-outside" --save "$WORK/o4"
expect_error missing-tensor "bad_missing-tensor/$ST.*has no tensor 'transformer.h.1.mlp.c_fc.bias'" "$WORK/o5" "$IMPORT_HF" --hf "$WORK/bad_missing-tensor" --save "$WORK/o5"
expect_error extra-tensor "bad_extra-tensor/$ST.*holds tensor 'transformer.h.7.attn.c_attn.weight'" "$WORK/o6" "$IMPORT_HF" --hf "$WORK/bad_extra-tensor" --save "$WORK/o6"
expect_error untied-head "bad_untied-head/$ST.*lm_head.weight differs" "$WORK/o7" "$IMPORT_HF" --hf "$WORK/bad_untied-head" --save "$WORK/o7"
expect_error config-positions "transformer.wpe.weight' has shape \[24, 32\], but config.json implies \[25, 32\]" "$WORK/o8" "$IMPORT_HF" --hf "$WORK/bad_config-positions" --save "$WORK/o8"
expect_error config-layers "has no tensor 'transformer.h.2.ln_1.weight'" "$WORK/o9" "$IMPORT_HF" --hf "$WORK/bad_config-layers" --save "$WORK/o9"
expect_error config-activation "config.json': activation_function must be \"gelu_new\"" "$WORK/o10" "$IMPORT_HF" --hf "$WORK/bad_config-activation" --save "$WORK/o10"
expect_error no-hf-dir "cannot open '.*nowhere/config.json'" "$WORK/o11" "$IMPORT_HF" --hf "$WORK/nowhere" --save "$WORK/o11"
expect_error long-seq "--seq-length 25 exceeds the model's n_positions 24" "$WORK/o12" "$IMPORT_HF" --hf "$WORK/hf1" --save "$WORK/o12" --seq-length 25
before=$(cd "$WORK/from_hf" && find . -type f -exec sha1sum {} + | sort)
expect_error existing-save "already holds a checkpoint \(iteration 0\)" "$WORK/from_hf/iter_0000000.tmp" "$IMPORT_HF" --hf "$WORK/hf1" --save "$WORK/from_hf"
[ "$before" = "$(cd "$WORK/from_hf" && find . -type f -exec sha1sum {} + | sort)" ] || fail "refused import changed the existing checkpoint"
expect_error no-checkpoint "holds no checkpoint" "$WORK/o13" "$EXPORT_HF" --load "$WORK/nowhere" --out "$WORK/o13"

# ------------------------------------------------ layouts on known values
# Coordinate checkpoints (element k of parameter p holds p*4096+k) saved in
# two rank files: every exported element must sit where GPT-2's layout puts it.
ok coord "$HELPER" coord-ckpt "$WORK/coord" 2 8 2 24 20 32 8            # ffn 3C: n_inner 24
ok coord_export "$EXPORT_HF" --load "$WORK/coord" --out "$WORK/coord_hf"
ok coord_hf "$HELPER" check-hf-coords "$WORK/coord_hf" 2 8 2 24 20 32 8 && cat "$WORK/coord_hf.log"
expect_error llmc-ffn "ffn_hidden_size 24, but llm.c's GPT-2 always has 4 x hidden_size = 32" "$WORK/coord.bin" \
    "$EXPORT_LLMC" --load "$WORK/coord" --out "$WORK/coord.bin"
ok coord4 "$HELPER" coord-ckpt "$WORK/coord4" 2 8 2 32 20 32 8
ok coord4_export "$EXPORT_LLMC" --load "$WORK/coord4" --out "$WORK/coord4.bin"
ok coord4_llmc "$HELPER" check-llmc-coords "$WORK/coord4.bin" 2 8 2 32 20 32 8 128 && cat "$WORK/coord4_llmc.log"
ok coord4_export32 "$EXPORT_LLMC" --load "$WORK/coord4" --out "$WORK/coord4_32.bin" --make-vocab-size-divisible-by 16
ok coord4_llmc32 "$HELPER" check-llmc-coords "$WORK/coord4_32.bin" 2 8 2 32 20 32 8 32

# Random weights large enough that every parameter matters: gpt3d's loss on
# the checkpoint equals a reference forward of the exported HF and llm.c files.
ok random "$HELPER" random-ckpt "$WORK/random" 2 16 4 64 20 32 12 7
ok random_hf "$EXPORT_HF" --load "$WORK/random" --out "$WORK/random_hf"
ok forward_hf "$FORWARD" forward-hf "$WORK/random" "$WORK/random_hf" && echo "HF: $(cat "$WORK/forward_hf.log")"
ok random_llmc "$EXPORT_LLMC" --load "$WORK/random" --out "$WORK/random.bin"
ok forward_llmc "$FORWARD" forward-llmc "$WORK/random" "$WORK/random.bin" && echo "llm.c: $(cat "$WORK/forward_llmc.log")"

# ------------------------------------------------ llm.c round trips
ok llmc_export1 "$EXPORT_LLMC" --load "$WORK/trained" --out "$WORK/a.bin"
ok llmc_import1 "$IMPORT_LLMC" --llmc "$WORK/a.bin" --save "$WORK/from_llmc"
ok llmc_export2 "$EXPORT_LLMC" --load "$WORK/from_llmc" --out "$WORK/b.bin"
cmp -s "$WORK/a.bin" "$WORK/b.bin" || fail "llm.c export -> import -> export changed the file"
ok compare_llmc "$HELPER" compare-ckpt "$WORK/trained" "$WORK/from_llmc" && echo "llm.c round trip: $(cat "$WORK/compare_llmc.log")"
# A file llm.c could have written (random values, non-zero padded rows): llm.c -> gpt3d -> llm.c.
ok make_llmc "$HELPER" make-llmc "$WORK/m.bin" 2 32 4 257 384 24 3 11
ok llmc_import_m "$IMPORT_LLMC" --llmc "$WORK/m.bin" --save "$WORK/from_m"
ok llmc_export_m "$EXPORT_LLMC" --load "$WORK/from_m" --out "$WORK/m2.bin"
cmp -s "$WORK/m.bin" "$WORK/m2.bin" || fail "llm.c file -> gpt3d -> llm.c is not byte-identical"
ok make_llmc5 "$HELPER" make-llmc "$WORK/m5.bin" 2 32 4 257 384 24 5 12
ok llmc_import_m5 "$IMPORT_LLMC" --llmc "$WORK/m5.bin" --save "$WORK/from_m5"
ok llmc_export_m5 "$EXPORT_LLMC" --load "$WORK/from_m5" --out "$WORK/m5_back.bin"
ok llmc_widened "$HELPER" check-llmc-widened "$WORK/m5.bin" "$WORK/m5_back.bin" && cat "$WORK/llmc_widened.log"
# --dtype bf16 writes version 5: exact for bf16 values, nearest-even rounding otherwise.
ok llmc_export_m5_bf16 "$EXPORT_LLMC" --load "$WORK/from_m5" --out "$WORK/m5_again.bin" --dtype bf16
cmp -s "$WORK/m5.bin" "$WORK/m5_again.bin" || fail "llm.c bf16 file -> gpt3d -> bf16 is not byte-identical"
ok llmc_export_bf16 "$EXPORT_LLMC" --load "$WORK/from_m" --out "$WORK/m_bf16.bin" --dtype bf16
ok llmc_rounded "$HELPER" check-llmc-rounded "$WORK/m.bin" "$WORK/m_bf16.bin" && cat "$WORK/llmc_rounded.log"

echo "rejected llm.c input:"
for kind in version2 version4 magic tokens layers heads padded-small truncated short; do
    ok "make_bad_$kind" "$HELPER" bad-llmc "$WORK/m.bin" "$WORK/bad_$kind.bin" "$kind"
done
expect_error version2 "bad_version2.bin' is an llm.c model file of version 2; gpt3d reads version 3 \(fp32\) and 5 \(bf16\)" "$WORK/p1" "$IMPORT_LLMC" --llmc "$WORK/bad_version2.bin" --save "$WORK/p1"
expect_error version4 "bad_version4.bin' is an llm.c model file of version 4" "$WORK/p2" "$IMPORT_LLMC" --llmc "$WORK/bad_version4.bin" --save "$WORK/p2"
expect_error magic "bad_magic.bin' is not an llm.c model file: magic 12345, want 20240326" "$WORK/p3" "$IMPORT_LLMC" --llmc "$WORK/bad_magic.bin" --save "$WORK/p3"
expect_error tokens "bad_tokens.bin' is an llm.c token file" "$WORK/p4" "$IMPORT_LLMC" --llmc "$WORK/bad_tokens.bin" --save "$WORK/p4"
expect_error layers "bad_layers.bin' is [0-9]+ bytes, but its header \(3 layers.*implies" "$WORK/p5" "$IMPORT_LLMC" --llmc "$WORK/bad_layers.bin" --save "$WORK/p5"
expect_error heads "bad_heads.bin'.*not divisible by the 31 attention heads" "$WORK/p6" "$IMPORT_LLMC" --llmc "$WORK/bad_heads.bin" --save "$WORK/p6"
expect_error padded-small "bad_padded-small.bin': header padded_vocab_size 256 is smaller than vocab_size 257" "$WORK/p7" "$IMPORT_LLMC" --llmc "$WORK/bad_padded-small.bin" --save "$WORK/p7"
expect_error truncated-bin "bad_truncated.bin' is [0-9]+ bytes, but its header .* implies" "$WORK/p8" "$IMPORT_LLMC" --llmc "$WORK/bad_truncated.bin" --save "$WORK/p8"
expect_error short-bin "bad_short.bin' is 100 bytes, shorter than llm.c's 1024-byte model header" "$WORK/p9" "$IMPORT_LLMC" --llmc "$WORK/bad_short.bin" --save "$WORK/p9"

# ------------------------------------------------ imported models train at any layout
LOSS=("${MODEL[@]}" --train-iters 1 --lr 0 --lr-warmup-iters 0)
ok loss_llmc_tp1 "$PRETRAIN" "${LOSS[@]}" --load "$WORK/from_llmc" --no-load-optim --metrics-file "$WORK/l1.jsonl"
ok loss_llmc_tp2pp2 "$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${LOSS[@]}" --load "$WORK/from_llmc" \
    --no-load-optim --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --metrics-file "$WORK/l4.jsonl"
ok loss_hf_tp1 "$PRETRAIN" "${LOSS[@]}" --load "$WORK/from_hf" --finetune --metrics-file "$WORK/h1.jsonl"
a=$(lm_loss "$WORK/l1.jsonl"); b=$(lm_loss "$WORK/l4.jsonl"); c=$(lm_loss "$WORK/h1.jsonl")
echo "first lm loss of the imported model: llm.c import TP=1 $a, TP=2 PP=2 $b; HF import TP=1 $c"
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }' \
    || fail "imported llm.c model: loss $a at TP=1 but $b at TP=2 PP=2"
# Padded vocabulary rows (zero after the HF import, trained values after the
# llm.c one) are masked out of the loss, so both imports give the same loss.
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-7 * a) }' \
    || fail "HF and llm.c imports of the same weights give losses $c and $a"
[ "$(first_iteration "$WORK/l1.jsonl")" = 1 ] && [ "$(first_iteration "$WORK/h1.jsonl")" = 1 ] \
    || fail "an imported checkpoint did not start at iteration 0"

finish test_interop
