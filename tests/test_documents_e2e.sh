#!/usr/bin/env bash
# Document masking end to end (issue 17): --eod-mask-loss, --reset-position-ids
# and --reset-attention-mask on a corpus of short documents (several EODs in
# every 32-token sample).
# - GPT-2 block (learned positions) and Llama-style block (RoPE, GQA): one
#   rank against TP 2, TP 2 + SP, PP 2, DP 2 and 2x2x2 (Llama, with
#   --recompute-activations at PP 2, and PP 4 whose middle stages read the
#   documents too): first iteration's loss and grad norm
#   within 1e-5 relative, 20 iterations and the validation losses within 1e-4.
# - Each switch alone changes the first iteration (it is not ignored).
# - Megatron's normalisation: gradients are each micro-batch's mean over its
#   tokens in the loss, the reported loss the global mean. So with
#   --eod-mask-loss, one micro-batch of 2 samples and two micro-batches of 1
#   report the same loss but different grad norms; without it, the same both.
#   With --calculate-per-token-loss the gradients are the global mean's:
#   the same grad norm for both micro-batch sizes and at DP 2, the same
#   loss as without the flag.
# Usage: test_documents_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"

# 400 documents of 3 to 40 bytes: a 32-token sample holds several.
for i in $(seq 1 400); do
    printf '{"text": "%s"}\n' "$(head -c $(( (i * 37) % 38 + 3 )) <<< "doc $i says $(( i * i )) and more words here to cut")"
done > "$WORK/docs.jsonl"
"$PREPROCESS" --input "$WORK/docs.jsonl" --output-prefix "$WORK/d" --tokenizer-type ByteTokenizer \
    --append-eod > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data"; finish documents; }

ARGS=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --seq-length 32
      --micro-batch-size 1 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/d_text_document" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10
      --hidden-dropout 0 --attention-dropout 0)
DOCS=(--eod-mask-loss --reset-position-ids --reset-attention-mask)
LLAMA=(--position-embedding-type rope --normalization RMSNorm --swiglu --group-query-attention
       --num-query-groups 2 --untie-embeddings-and-output-weights --disable-bias-linear)


# against_one_rank NAME "EXTRA FLAGS" LAYOUT...
against_one_rank() {
    local v=$1 extra ref layout
    read -r -a extra <<< "$2"
    shift 2
    ref="$WORK/$v.ref"
    "$PRETRAIN" "${ARGS[@]}" "${DOCS[@]}" "${extra[@]}" --metrics-file "$ref.jsonl" > "$ref.log" 2>&1 \
        || { cat "$ref.log"; fail "$v: one-rank run"; return; }
    for layout in "$@"; do
        set -- $layout
        local name="$v at TPxPPxDP=$1x$2x$3${4:+ $4}" out="$WORK/$v.l$1$2$3${4:-}" more=()
        [ "${4:-}" = sp ] && more=(--sequence-parallel)
        [ "${4:-}" = recompute ] && more=(--recompute-activations)
        if ! run_layout "$1" "$2" "$3" "$out" "${ARGS[@]}" "${DOCS[@]}" "${extra[@]}" "${more[@]}" \
                --metrics-file "$out.jsonl"; then
            cat "$out.log"; fail "$name run"; continue
        fi
        matches_one_rank "$name" "$ref.jsonl" "$out.jsonl"
    done
}
against_one_rank gpt2 "" "2 1 1" "2 1 1 sp" "1 2 1" "1 1 2" "2 2 2"
against_one_rank llama "${LLAMA[*]}" "2 1 1" "2 1 1 sp" "1 2 1 recompute" "1 4 1" "1 1 2" "2 2 2"

# --- each switch changes what is trained ---
one_iteration() { # NAME FLAGS...: iteration 1's metrics line without timings
    local name=$1
    shift
    "$PRETRAIN" "${ARGS[@]}" --train-iters 1 --lr-decay-iters 20 --eval-iters 0 --metrics-file "$WORK/$name.jsonl" "$@" \
        > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name run"; }
    strip_timings "$WORK/$name.jsonl" | sed -E 's/"lr": [^,]*, //'
}
plain=$(one_iteration plain)
for flag in "${DOCS[@]}"; do
    for block in gpt2 llama; do
        extra=()
        [ $block = llama ] && extra=("${LLAMA[@]}")
        base=$(one_iteration "plain_$block" "${extra[@]}")
        with=$(one_iteration "${flag#--}_$block" "${extra[@]}" "$flag")
        [ -n "$with" ] && [ "$with" != "$base" ] || fail "$flag ($block) changed nothing: $with"
    done
done
[ -n "$plain" ] || fail "no metrics from the plain run"

# --- Megatron's normalisation: per-micro-batch means, global reported mean ---
field() { sed -E "s/.*\"$1\": ([^,}]*).*/\1/" "$2"; }
close() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; s = (a < 0 ? -a : a);
    exit !(a == a && b == b && d <= t * s) }'; }
for mask in on off; do
    flags=()
    [ $mask = on ] && flags=(--eod-mask-loss)
    for mb in 1 2; do
        "$PRETRAIN" "${ARGS[@]}" --train-iters 1 --lr-decay-iters 20 --eval-iters 0 --global-batch-size 2 \
            --micro-batch-size $mb "${flags[@]}" --metrics-file "$WORK/norm_${mask}_$mb.jsonl" \
            > "$WORK/norm.log" 2>&1 || { cat "$WORK/norm.log"; fail "normalisation run ($mask, $mb)"; }
    done
    l1=$(field lm_loss "$WORK/norm_${mask}_1.jsonl") l2=$(field lm_loss "$WORK/norm_${mask}_2.jsonl")
    g1=$(field grad_norm "$WORK/norm_${mask}_1.jsonl") g2=$(field grad_norm "$WORK/norm_${mask}_2.jsonl")
    close "$l1" "$l2" 1e-6 || fail "--eod-mask-loss $mask: reported loss $l1 (2 micro-batches) vs $l2 (1)"
    if [ $mask = on ]; then
        ! close "$g1" "$g2" 1e-4 || fail "--eod-mask-loss: grad norm $g1 equals $g2: not per-micro-batch means"
    else
        close "$g1" "$g2" 1e-5 || fail "no mask: grad norm $g1 (2 micro-batches) vs $g2 (1)"
    fi
done

# --- --calculate-per-token-loss: the global batch's mean ---
for mb in 1 2; do
    "$PRETRAIN" "${ARGS[@]}" --train-iters 1 --lr-decay-iters 20 --eval-iters 0 --global-batch-size 2 \
        --micro-batch-size $mb --eod-mask-loss --calculate-per-token-loss \
        --metrics-file "$WORK/tok_$mb.jsonl" > "$WORK/tok.log" 2>&1 || { cat "$WORK/tok.log"; fail "per-token run ($mb)"; }
done
run_layout 1 1 2 "$WORK/tok_dp2" "${ARGS[@]}" --train-iters 1 --lr-decay-iters 20 --eval-iters 0 \
    --global-batch-size 2 --micro-batch-size 1 --eod-mask-loss --calculate-per-token-loss \
    --metrics-file "$WORK/tok_dp2.jsonl" || { cat "$WORK/tok_dp2.log"; fail "per-token run at DP 2"; }
t1=$(field grad_norm "$WORK/tok_1.jsonl") t2=$(field grad_norm "$WORK/tok_2.jsonl") td=$(field grad_norm "$WORK/tok_dp2.jsonl")
close "$t1" "$t2" 1e-5 || fail "--calculate-per-token-loss: grad norm $t1 (2 micro-batches) vs $t2 (1)"
close "$t1" "$td" 1e-5 || fail "--calculate-per-token-loss: grad norm $t1 (1 rank) vs $td (DP 2)"
close "$(field lm_loss "$WORK/tok_1.jsonl")" "$(field lm_loss "$WORK/norm_on_1.jsonl")" 1e-6 \
    || fail "--calculate-per-token-loss changed the reported loss"
! close "$t1" "$(field grad_norm "$WORK/norm_on_1.jsonl")" 1e-4 \
    || fail "--calculate-per-token-loss: the grad norm of per-micro-batch means ($t1)"

finish "document masking"
