#!/usr/bin/env bash
# Several ranks on one GPU through the staged communication (--comm mpi):
# DP 2, TP2 x PP2 and TP2 x PP2 x DP2 with --device cuda --bf16 against one
# rank, at the bf16 thresholds of the GPU kit's cuda-against-cpu check
# (first-iteration lm loss and grad norm within 1e-2 relative, every one of
# 20 iterations within 5e-2). Exit 77 without a GPU.
# Usage: test_comm_cuda_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "staged ranks share a device"

ARGS=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 96 --seq-length 32
      --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 95,5,0
      --eval-iters 0 --device cuda --bf16 --log-interval 5)

if ! "$PRETRAIN" "${ARGS[@]}" --metrics-file "$WORK/one.jsonl" > "$WORK/one.log" 2>&1; then
    if grep -q "no CUDA device is visible\|cannot load the CUDA backend\|has no CUDA backend" "$WORK/one.log"; then
        echo "skipped: no GPU: $(grep -m1 error "$WORK/one.log")"
        exit 77
    fi
    cat "$WORK/one.log"; fail "one-rank cuda run"; exit 1
fi

run_layout() { # run_layout NAME RANKS TP PP
    local out="$WORK/$1"
    if ! "$MPIEXEC" --oversubscribe -np "$2" "$PRETRAIN" "${ARGS[@]}" --comm mpi \
            --tensor-model-parallel-size "$3" --pipeline-model-parallel-size "$4" \
            --metrics-file "$out.jsonl" > "$out.log" 2>&1; then
        cat "$out.log"; fail "$1 run"; return
    fi
    grep -q "communication: staged" "$out.log" || fail "$1 did not use the staged communication"
    head -n 1 "$WORK/one.jsonl" > "$WORK/one_first.jsonl"
    head -n 1 "$out.jsonl" > "$out.first.jsonl"
    compare "$1 first iteration" "$WORK/one_first.jsonl" "$out.first.jsonl" --rtol 1e-2 \
        || fail "$1: first iteration beyond 1e-2"
    compare "$1 20 iterations" "$WORK/one.jsonl" "$out.jsonl" --rtol 5e-2 \
        || fail "$1: beyond 5e-2"
}
run_layout "DP=2" 2 1 1
run_layout "TP=2 PP=2" 4 2 2
run_layout "TP=2 PP=2 DP=2" 8 2 2
finish test_comm_cuda_e2e
