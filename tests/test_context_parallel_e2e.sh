#!/usr/bin/env bash
# Context parallelism end to end, each layout against one rank on the same
# seed and data (every iteration's lm loss and grad norm and the validation
# losses of 20 iterations within 1e-5 relative, compare in e2e_common.sh),
# with dropout on: CP 2, CP 4, TP 2 x CP 2 (with and without sequence
# parallelism), CP 2 x PP 2 x DP 2 (8 ranks), CP 2 with selective and with
# full recomputation, CP 2 x PP 2 interleaved (V 2); a Llama-style model
# (RoPE, RMSNorm, SwiGLU, query groups) with document masking at CP 2,
# CP 4 and TP 2 x CP 2. A rank's sequence is 160 / CP tokens, so at CP 2 a
# rank's rows cross the CPU attention's 64-row blocks. The ring's traffic
# per iteration is its structure: per layer and micro-batch CP - 1 key/value
# sends forward, CP - 1 again and CP gradient sends backward. Activations
# at CP 2 are about half of one rank's. A checkpoint saved at CP 2 resumes
# at one rank, and one saved at one rank resumes at CP 2 x TP 2. Bad
# layouts stop with one error naming the flag.
# Usage: test_context_parallel_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "long sequences share ranks"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 160
      --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10)
LLAMA=(--position-embedding-type rope --normalization RMSNorm --swiglu --disable-bias-linear
       --group-query-attention --num-query-groups 2 --untie-embeddings-and-output-weights)
# Short documents (several in a 160-token sample) for document masking.
for i in $(seq 1 400); do
    printf '{"text": "%s"}\n' "$(head -c $(( (i * 37) % 50 + 3 )) <<< "doc $i holds $(( i * i )) words and more")"
done > "$WORK/short.jsonl"
"$PREPROCESS" --input "$WORK/short.jsonl" --output-prefix "$WORK/s" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || { fail "preprocess_data (short documents)"; exit 1; }
DOCS=(--eod-mask-loss --reset-position-ids --reset-attention-mask --data-path "$WORK/s_text_document.h5")

reference() { # reference NAME FLAGS...: the one-rank run into $WORK/NAME.jsonl
    local name=$1
    shift
    "$PRETRAIN" "${ARGS[@]}" "$@" --metrics-file "$WORK/$name.jsonl" > "$WORK/$name.log" 2>&1 \
        || { cat "$WORK/$name.log"; fail "one-rank run $name"; exit 1; }
}
reference gpt
reference gpt4 --num-layers 4
reference llama "${LLAMA[@]}" "${DOCS[@]}"

# layout NAME NP REFERENCE FLAGS...: NP ranks against the reference run.
layout() {
    local name=$1 np=$2 ref=$3 out="$WORK/run"
    shift 3
    rm -f "$out.jsonl"
    if ! mpi_ranks "$np" "$@" --metrics-file "$out.jsonl" > "$out.log" 2>&1; then
        cat "$out.log"; fail "$name run"; return
    fi
    compare "$name" "$WORK/$ref.jsonl" "$out.jsonl" --rtol 1e-5 || fail "$name differs from one rank"
    cp "$out.log" "$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
}

layout "CP 2" 2 gpt --context-parallel-size 2
layout "CP 4" 4 gpt --context-parallel-size 4
layout "TP 2 x CP 2" 4 gpt --context-parallel-size 2 --tensor-model-parallel-size 2
layout "TP 2 x CP 2, sequence parallel" 4 gpt --context-parallel-size 2 --tensor-model-parallel-size 2 \
    --sequence-parallel
layout "CP 2 x PP 2 x DP 2" 8 gpt --context-parallel-size 2 --pipeline-model-parallel-size 2
layout "CP 2, selective recompute" 2 gpt --context-parallel-size 2 --recompute-activations
layout "CP 2, full recompute" 2 gpt --context-parallel-size 2 --recompute-granularity full \
    --recompute-method uniform --recompute-num-layers 2
layout "CP 2 x PP 2 x V 2" 4 gpt4 --num-layers 4 --context-parallel-size 2 \
    --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2
layout "Llama, documents, CP 2" 2 llama "${LLAMA[@]}" "${DOCS[@]}" --context-parallel-size 2
layout "Llama, documents, CP 4" 4 llama "${LLAMA[@]}" "${DOCS[@]}" --context-parallel-size 4
layout "Llama, documents, TP 2 x CP 2" 4 llama "${LLAMA[@]}" "${DOCS[@]}" --context-parallel-size 2 \
    --tensor-model-parallel-size 2

# The layout line and the ring's traffic: 2 layers x 4 micro-batches.
grep -q "rank(s) = DP 1 x PP 1 x CP 2 x TP 1" "$WORK/CP_2.log" || fail "CP 2: layout line"
# The optimizer is sharded over DP x CP (the ranks holding the same parameters).
grep -q "ZeRO-1 keeps 1/2), activations" "$WORK/CP_2.log" || fail "CP 2: optimizer not sharded over CP"
grep -q "^gradient buckets: 1 over DP x CP 2 " "$WORK/CP_2.log" || fail "CP 2: bucket line"
ring_sends() { sed -nE 's/.*context send ([0-9]+) calls.*/\1/p' "$1"; }
for cp in 2 4; do
    want=$(( 2 * 4 * (3 * cp - 2) ))
    got=$(ring_sends "$WORK/CP_$cp.log")
    [ "$got" = "$want" ] || fail "CP $cp: $got ring sends per iteration, want $want"
done

# Activations per rank at CP 2 against one rank (start-up line, MiB), for
# 4 layers: the ring's four buffers are shared by every layer.
activations() { sed -nE 's/^memory per rank:.*activations ([0-9.]+) MiB.*/\1/p' "$1"; }
mpi_ranks 2 --num-layers 4 --context-parallel-size 2 --train-iters 2 --lr-warmup-iters 0 > "$WORK/cp2_4.log" 2>&1 \
    || { cat "$WORK/cp2_4.log"; fail "CP 2, 4 layers"; }
one=$(activations "$WORK/gpt4.log")
two=$(activations "$WORK/cp2_4.log")
awk -v a="$one" -v b="$two" 'BEGIN { exit !(a > 0 && b / a < 0.6) }' \
    || fail "activations at CP 2 ($two MiB) not about half of one rank's ($one MiB)"
echo "  activations per rank: one rank $one MiB, CP 2 $two MiB"

# Checkpoints hold canonical tensors: CP 2 -> one rank, one rank -> CP 2 x TP 2.
mpi_ranks 2 --context-parallel-size 2 --exit-interval 10 --save "$WORK/ck_cp" \
    --metrics-file "$WORK/first.jsonl" > "$WORK/save.log" 2>&1 || { cat "$WORK/save.log"; fail "CP 2 save"; }
cp "$WORK/first.jsonl" "$WORK/resumed.jsonl"
"$PRETRAIN" "${ARGS[@]}" --load "$WORK/ck_cp" --metrics-file "$WORK/resumed.jsonl" > "$WORK/r.log" 2>&1 \
    || { cat "$WORK/r.log"; fail "resume of CP 2 at one rank"; }
compare "CP 2 -> one rank" "$WORK/gpt.jsonl" "$WORK/resumed.jsonl" --rtol 1e-5 \
    || fail "CP 2 checkpoint resumed at one rank differs"
"$PRETRAIN" "${ARGS[@]}" --exit-interval 10 --save "$WORK/ck_one" --metrics-file "$WORK/first1.jsonl" \
    > "$WORK/save1.log" 2>&1 || { cat "$WORK/save1.log"; fail "one-rank save"; }
cp "$WORK/first1.jsonl" "$WORK/resumed1.jsonl"
mpi_ranks 4 --context-parallel-size 2 --tensor-model-parallel-size 2 --load "$WORK/ck_one" \
    --metrics-file "$WORK/resumed1.jsonl" > "$WORK/r1.log" 2>&1 || { cat "$WORK/r1.log"; fail "resume at CP 2 x TP 2"; }
compare "one rank -> CP 2 x TP 2" "$WORK/gpt.jsonl" "$WORK/resumed1.jsonl" --rtol 1e-5 \
    || fail "one-rank checkpoint resumed at CP 2 x TP 2 differs"

# Bad layouts: one error naming the flag, non-zero exit.
refuse() { # refuse NAME NP REGEX FLAGS...
    local name=$1 np=$2 regex=$3
    shift 3
    mpi_ranks "$np" "$@" > "$WORK/bad.log" 2>&1 && { fail "$name accepted"; return; }
    one_error "$name" "$WORK/bad.log" "$regex"
}
refuse "sequence not divisible by 2 x CP" 3 "--seq-length 160 is not divisible by 2 x --context-parallel-size 3 = 6" \
    --context-parallel-size 3
refuse "world not divisible by CP" 3 "the job has 3 ranks, which is not divisible by --tensor-model-parallel-size 1 x --context-parallel-size 2 x --pipeline-model-parallel-size 1 = 2" \
    --context-parallel-size 2
refuse "sequence parallel rows" 8 "--sequence-parallel needs the 42 tokens each context-parallel rank holds \(--seq-length 84 / --context-parallel-size 2\) divisible by --tensor-model-parallel-size 4" \
    --context-parallel-size 2 --tensor-model-parallel-size 4 --sequence-parallel --seq-length 84
refuse "a2a communication" 2 "--cp-comm-type a2a is not built; use p2p" \
    --context-parallel-size 2 --cp-comm-type a2a
refuse "unknown communication" 2 "--cp-comm-type ring: Megatron's choices are p2p, a2a, allgather, a2a\+p2p" \
    --context-parallel-size 2 --cp-comm-type ring

finish test_context_parallel_e2e
