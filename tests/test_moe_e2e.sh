#!/usr/bin/env bash
# Mixture of experts end to end (issue 19). For each router, one rank
# against TP 2, TP 2 with sequence parallelism, PP 2, DP 2, CP 2 and 2x2x2:
# the first iteration's lm loss, grad norm, load-balancing and z-loss within
# 1e-5 relative, 20 iterations within 1e-4 (tests/metrics_compare.c compares
# the moe_* fields wherever the reference has them). Routers:
#   top2     softmax top-2 of 4 SwiGLU experts, aux loss 1e-2, z-loss 1e-3,
#            a shared expert
#   sigmoid  sigmoid top-1 of 4 experts, aux loss 1e-2, MoE every other layer
#   prebig   softmax top-2 with --moe-router-pre-softmax and 8 GELU experts
#   capped   top2 with --moe-expert-capacity-factor 1 (tokens dropped, the
#            same ones at every layout: under CP the decision is over every
#            CP rank's choices, in sequence order)
#   seqaux   top2 with the sequence-level loss (--moe-router-load-balancing-type
#            seq_aux_loss), micro-batches of 2 sequences
# Then: a capacity large enough to drop nothing gives top2's dropless numbers
# (padded to the capacity as well); a checkpoint saved at 2x2x2 resumes at
# one rank and at TP 2 on the one-rank trajectory; bad flags get one error.
# Usage: test_moe_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "experts"

# Llama-style layers with MoE MLPs, micro-batches of 2 sequences.
ARGS=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --seq-length 32 --micro-batch-size 2
      --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2 --log-interval 10
      --position-embedding-type rope --no-position-embedding --normalization RMSNorm --disable-bias-linear
      --hidden-dropout 0 --attention-dropout 0 --eval-iters 1 --eval-interval 10 --device cpu
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0)
TOP2="--swiglu --num-experts 4 --moe-ffn-hidden-size 32 --moe-router-topk 2 --moe-aux-loss-coeff 1e-2 --moe-z-loss-coeff 1e-3 --moe-shared-expert-intermediate-size 16"
declare -A VARIANT=(
    [top2]="$TOP2"
    [sigmoid]="--swiglu --num-experts 4 --moe-ffn-hidden-size 32 --moe-router-topk 1 --moe-router-score-function sigmoid --moe-aux-loss-coeff 1e-2 --moe-layer-freq 2"
    [prebig]="--num-experts 8 --moe-ffn-hidden-size 16 --moe-router-topk 2 --moe-router-pre-softmax --moe-aux-loss-coeff 1e-2 --moe-z-loss-coeff 1e-3"
    [capped]="$TOP2 --moe-expert-capacity-factor 1"
    [seqaux]="$TOP2 --moe-router-load-balancing-type seq_aux_loss"
)

# Layouts as "RANKS|FLAGS": tensor, sequence, pipeline, data and context
# parallelism, then expert parallelism over the data-parallel and
# context-parallel ranks (EP 2 and 4, with TP, PP, CP, and at 8 ranks with
# TP 2 x DP 4, whose experts are also reduced over 2 expert-data ranks),
# EP 4 with the received rows planned for a quarter of the balanced load
# (so every step grows them), then whole experts
# (--expert-tensor-parallel-size 1) under TP 2: EP 1
# (the TP ranks an expert-data group), EP 4 over TP x DP, TP 2 x PP 2 x EP 2.
LAYOUTS=("2|--tensor-model-parallel-size 2"
         "2|--tensor-model-parallel-size 2 --sequence-parallel"
         "2|--pipeline-model-parallel-size 2"
         "2|"
         "2|--context-parallel-size 2"
         "8|--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --sequence-parallel"
         "2|--expert-model-parallel-size 2"
         "4|--expert-model-parallel-size 4"
         "4|--expert-model-parallel-size 2 --tensor-model-parallel-size 2 --sequence-parallel"
         "4|--expert-model-parallel-size 2 --pipeline-model-parallel-size 2"
         "8|--expert-model-parallel-size 2 --tensor-model-parallel-size 2"
         "2|--expert-model-parallel-size 2 --context-parallel-size 2"
         "4|--expert-model-parallel-size 4 --moe-expert-rows-factor 0.25"
         "4|--expert-model-parallel-size 2 --overlap-grad-reduce --overlap-param-gather --ddp-bucket-size 2000"
         "2|--tensor-model-parallel-size 2 --sequence-parallel --expert-tensor-parallel-size 1"
         "4|--tensor-model-parallel-size 2 --sequence-parallel --expert-tensor-parallel-size 1 --expert-model-parallel-size 4"
         "8|--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --sequence-parallel --expert-tensor-parallel-size 1 --expert-model-parallel-size 2")

for v in top2 sigmoid prebig capped seqaux; do
    read -r -a extra <<< "${VARIANT[$v]}"
    ref="$WORK/$v.ref"
    if ! "$PRETRAIN" "${ARGS[@]}" "${extra[@]}" --metrics-file "$ref.jsonl" > "$ref.log" 2>&1; then
        cat "$ref.log"; fail "$v: one-rank run"; continue
    fi
    grep -q '"moe_aux_loss"' "$ref.jsonl" || fail "$v: no moe_aux_loss in the metrics"
    grep -q 'load_balancing_loss: ' "$ref.log" || fail "$v: no load_balancing_loss in the log line"
    k=0
    for layout in "${LAYOUTS[@]}"; do
        np=${layout%%|*}
        read -r -a flags <<< "${layout#*|}"
        # Whole experts under TP are dropless only.
        [ "$v" = capped ] && [[ "${layout#*|}" == *expert-tensor-parallel-size* ]] && continue
        name="$v on $np ranks ${layout#*|}"
        out="$WORK/$v.layout$((k++))"
        timeout 300 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" "${extra[@]}" \
            "${flags[@]}" --metrics-file "$out.jsonl" > "$out.log" 2>&1 \
            || { cat "$out.log"; fail "$name run"; continue; }
        matches_one_rank "$name" "$ref.jsonl" "$out.jsonl"
    done
    echo "$v: $(grep -m1 '^model:' "$ref.log" || true) last $(tail -1 "$ref.jsonl" | strip_timings)"
done

# --- capacity --------------------------------------------------------------------
# Capacity factor 1 drops tokens (the count is in the metrics); a factor of
# E / K = 2 is room for every choice: top2's dropless numbers, padded or not.
dropped=$(sed -nE '1s/.*"moe_dropped_tokens": ([0-9]+).*/\1/p' "$WORK/capped.ref.jsonl")
[ -n "$dropped" ] && [ "$dropped" -gt 0 ] || fail "capacity factor 1 dropped '${dropped}' tokens, want some"
read -r -a top2 <<< "$TOP2"
for pad in "" "--moe-pad-expert-input-to-capacity"; do
    out="$WORK/roomy${pad:+pad}"
    "$PRETRAIN" "${ARGS[@]}" "${top2[@]}" --moe-expert-capacity-factor 2 $pad --metrics-file "$out.jsonl" \
        > "$out.log" 2>&1 || { cat "$out.log"; fail "capacity 2 $pad"; continue; }
    grep -q '"moe_dropped_tokens": 0[,}]' "$out.jsonl" || fail "capacity 2 $pad dropped tokens"
    compare "capacity 2 ${pad:-unpadded} vs dropless" "$WORK/top2.ref.jsonl" "$out.jsonl" --rtol 1e-6 \
        || fail "a capacity that drops nothing ($pad) changes the numbers"
done

# --- interleaved 1F1B (2 chunks per pipeline rank, each with its own expert
# region in the optimizer's buffers) with EP 2, against one rank ---
"$PRETRAIN" "${ARGS[@]}" $TOP2 --global-batch-size 16 --train-iters 6 --metrics-file "$WORK/vp_ref.jsonl" \
    > "$WORK/vp_ref.log" 2>&1 || { cat "$WORK/vp_ref.log"; fail "one rank, 16 samples"; }
timeout 300 "$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${ARGS[@]}" $TOP2 --global-batch-size 16 \
    --train-iters 6 --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 1 \
    --expert-model-parallel-size 2 --metrics-file "$WORK/vp.jsonl" > "$WORK/vp.log" 2>&1 \
    || { cat "$WORK/vp.log"; fail "interleaved PP 2 x V 2 with EP 2"; }
matches_one_rank "interleaved PP 2 x V 2, EP 2" "$WORK/vp_ref.jsonl" "$WORK/vp.jsonl"

# --- recomputation and dropout: full (units of 2 layers, each with an MoE and
# a dense MLP) and selective recomputation give bitwise the numbers without,
# and the MoE losses are counted once ---
read -r -a sig <<< "${VARIANT[sigmoid]}"
for mode in none full selective; do
    more=()
    [ "$mode" = full ] && more=(--recompute-granularity full --recompute-method uniform --recompute-num-layers 2)
    [ "$mode" = selective ] && more=(--recompute-activations)
    "$PRETRAIN" "${ARGS[@]}" "${sig[@]}" --hidden-dropout 0.1 --attention-dropout 0.1 "${more[@]}" \
        --train-iters 6 --metrics-file "$WORK/recompute_$mode.jsonl" > "$WORK/recompute_$mode.log" 2>&1 \
        || { cat "$WORK/recompute_$mode.log"; fail "recomputation $mode"; }
    [ "$mode" = none ] || compare "recomputation $mode with dropout" "$WORK/recompute_none.jsonl" \
        "$WORK/recompute_$mode.jsonl" --rtol 0 || fail "recomputation $mode changes the MoE numbers"
done

# --- per-layer logging: each MoE layer's tokens per expert, the same at one
# rank and at EP 2 x PP 2 (the counts are exact; the losses to print rounding) ---
read -r -a sig <<< "${VARIANT[sigmoid]}"
for np in 1 4; do
    flags=()
    [ "$np" = 4 ] && flags=(--expert-model-parallel-size 2 --pipeline-model-parallel-size 2)
    timeout 300 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" "${sig[@]}" "${flags[@]}" \
        --moe-per-layer-logging --train-iters 4 --log-interval 2 > "$WORK/perlayer$np.log" 2>&1 \
        || { cat "$WORK/perlayer$np.log"; fail "--moe-per-layer-logging on $np ranks"; }
    grep -o 'MoE layer [0-9]* .*tokens per expert:.*' "$WORK/perlayer$np.log" \
        | sed -E 's/load_balancing_loss: [^|]*\| z_loss: [^|]*\| //' > "$WORK/perlayer$np.txt"
done
# Layers 0 and 2 of 4 (--moe-layer-freq 2) at iterations 1, 2 and 4.
[ "$(wc -l < "$WORK/perlayer1.txt")" -eq 6 ] || { cat "$WORK/perlayer1.log"; fail "per-layer logging: $(wc -l < "$WORK/perlayer1.txt") lines, want 6"; }
cmp -s "$WORK/perlayer1.txt" "$WORK/perlayer4.txt" || { diff "$WORK/perlayer1.txt" "$WORK/perlayer4.txt"; fail "per-layer token counts differ at EP 2 x PP 2"; }

# --- saved at 2x2x2 (TP without sequence parallelism), resumed at one rank and TP 2;
# saved at EP 4, resumed at EP 1 and at EP 2 x TP 2; saved with whole experts
# (ETP 1) at TP 2 x EP 2, resumed at one rank and with TP-split experts ---
save_and_resume top2 "2 2 2" "1 1 1" "2 1 1"
tail -n 10 "$WORK/top2.ref.jsonl" > "$WORK/top2.tail.jsonl"
# expert_save_resume NAME "RANKS|FLAGS" "RANKS|FLAGS"...: top2 saved at the
# first layout after 10 iterations, resumed at each other on the one-rank
# trajectory.
expert_save_resume() {
    local name=$1 save=$2 layout np flags
    shift 2
    read -r -a flags <<< "${save#*|}"
    timeout 300 "$MPIEXEC" --oversubscribe -np "${save%%|*}" "$PRETRAIN" "${ARGS[@]}" $TOP2 "${flags[@]}" \
        --train-iters 10 --lr-decay-iters 20 --save "$WORK/$name.ckpt" --save-interval 10 \
        > "$WORK/$name.save.log" 2>&1 || { cat "$WORK/$name.save.log"; fail "top2 save at $name"; return; }
    for layout in "$@"; do
        np=${layout%%|*}
        read -r -a flags <<< "${layout#*|}"
        local ckpt="$WORK/$name.ckpt$np" out="$WORK/$name.resume$np"
        rm -rf "$ckpt" && cp -r "$WORK/$name.ckpt" "$ckpt"
        if timeout 300 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" $TOP2 "${flags[@]}" \
                --load "$ckpt" --metrics-file "$out.jsonl" > "$out.log" 2>&1; then
            [ "$(first_iteration "$out.jsonl")" = 11 ] || fail "$name resumed on $np ranks did not start at iteration 11"
            compare "top2 saved at $name, resumed on $np ranks ${layout#*|}" "$WORK/top2.tail.jsonl" "$out.jsonl" \
                --rtol 1e-4 || fail "top2 saved at $name leaves the one-rank trajectory when resumed ${layout#*|}"
        else
            cat "$out.log"; fail "resume of the $name checkpoint on $np ranks"
        fi
    done
}
expert_save_resume "EP 4" "4|--expert-model-parallel-size 4" "1|" \
    "4|--expert-model-parallel-size 2 --tensor-model-parallel-size 2 --sequence-parallel"
expert_save_resume "ETP 1" \
    "4|--expert-model-parallel-size 2 --tensor-model-parallel-size 2 --sequence-parallel --expert-tensor-parallel-size 1" \
    "1|" "2|--tensor-model-parallel-size 2 --sequence-parallel"

# --- bad flags: one error each, nothing run ------------------------------------------
bad() {
    local name=$1 regex=$2 np=$3
    shift 3
    timeout 60 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/bad.log" 2>&1
    [ $? -ne 0 ] || fail "$name: accepted"
    one_error "$name" "$WORK/bad.log" "$regex"
}
bad "top-k above the experts" "moe-router-topk 5 is larger than the 4 experts" 1 $TOP2 --moe-router-topk 5
with_bias=()
for a in "${ARGS[@]}"; do [ "$a" = --disable-bias-linear ] || with_bias+=("$a"); done
"$PRETRAIN" "${with_bias[@]}" $TOP2 > "$WORK/bad.log" 2>&1 && fail "experts with biases: accepted"
one_error "experts with biases" "$WORK/bad.log" "add --disable-bias-linear"
bad "experts not divisible by EP" "num-experts 4 is not divisible by --expert-model-parallel-size 8" 8 $TOP2 --expert-model-parallel-size 8 --global-batch-size 16
bad "EP not dividing DP x CP" "expert-model-parallel-size 4 must divide the 2 data-parallel" 4 $TOP2 --expert-model-parallel-size 4 --tensor-model-parallel-size 2
bad "EP without experts" "has none; give --num-experts" 2 --expert-model-parallel-size 2
bad "whole experts without SP" "expert-tensor-parallel-size 1 with --tensor-model-parallel-size 2 needs --sequence-parallel" 2 $TOP2 --expert-tensor-parallel-size 1 --tensor-model-parallel-size 2
bad "expert TP neither 1 nor TP" "expert-tensor-parallel-size 2: 1 .whole experts. or the tensor-parallel size 4" 4 $TOP2 --expert-tensor-parallel-size 2 --tensor-model-parallel-size 4 --sequence-parallel
bad "moe ffn not divisible by TP" "moe-ffn-hidden-size 33 is not divisible" 2 $TOP2 --moe-ffn-hidden-size 33 --tensor-model-parallel-size 2
bad "padding without capacity" "moe-pad-expert-input-to-capacity" 1 $TOP2 --moe-pad-expert-input-to-capacity
bad "unknown load balancing" "moe-router-load-balancing-type sinkhorn" 1 $TOP2 --moe-router-load-balancing-type sinkhorn
bad "unknown score function" "moe-router-score-function relu" 1 $TOP2 --moe-router-score-function relu

finish test_moe_e2e
