#!/usr/bin/env bash
# A training-data read that fails in the middle of a step (issue 14 item 4),
# on 2 ranks, through the GPT3D_TEST_FAIL_DATA_READ_AT hook (data/data.h):
# - DP 2, the sample read by rank 1 only: the step completes on both ranks
#   (no deadlock, no MPI_Abort), rank 0 prints exactly one error line, rank
#   1's own message ("rank 1: reading training data: ..."), every rank exits
#   non-zero, and nothing is saved;
# - PP 2, where both stages read the sample: the same, one line, no save.
# Usage: test_data_read_failure.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "data read failure"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 16
      --micro-batch-size 1 --global-batch-size 4 --lr 2e-3 --tokenizer-type ByteTokenizer
      --data-path "$WORK/c_text_document.h5" --split 95,5,0 --eval-iters 0 --device cpu --seed 7
      --log-interval 1 --train-iters 8 --save-interval 100)
# Iteration 6 (0-based 5) reads samples 20..23; at DP 2 micro-batch 0 of DP
# rank 1 is sample 21, at PP 2 (DP 1) sample 21 is micro-batch 1 of both stages.
FAIL_AT=21

# expect_stopped NAME WANT_MESSAGE: the checks both layouts share.
expect_stopped() {
    local name=$1 want=$2 log="$WORK/$1.log"
    [ "$rc" -ne 124 ] || { cat "$log"; fail "$name: timed out (a rank waits for another)"; return; }
    expect_agreed_failure "$name" 2 "$log"
    grep -q "^error: $want" "$log" || { cat "$log"; fail "$name: no 'error: $want' line"; }
    grep -qi "mpi_abort" "$log" && fail "$name: the job was aborted instead of stopping cleanly"
    grep -q " iteration  *5/" "$log" || { cat "$log"; fail "$name: iteration 5 was not logged"; }
    grep -q " iteration  *6/" "$log" && fail "$name: iteration 6 was logged although its data failed"
    [ ! -e "$WORK/$name/latest_checkpointed_iteration.txt" ] && [ -z "$(ls -A "$WORK/$name" 2>/dev/null | grep iter_)" ] \
        || fail "$name: something was saved ($(ls "$WORK/$name"))"
}

HOOK="test hook: the read of training sample $FAIL_AT fails (GPT3D_TEST_FAIL_DATA_READ_AT)"
GPT3D_TEST_FAIL_DATA_READ_AT=$FAIL_AT ranks_recorded "$MPIEXEC" 2 "$PRETRAIN" "${ARGS[@]}" \
    --save "$WORK/dp2" > "$WORK/dp2.log" 2>&1
rc=$?
expect_stopped dp2 "rank 1: reading training data: $HOOK"

GPT3D_TEST_FAIL_DATA_READ_AT=$FAIL_AT ranks_recorded "$MPIEXEC" 2 "$PRETRAIN" "${ARGS[@]}" \
    --pipeline-model-parallel-size 2 --save "$WORK/pp2" > "$WORK/pp2.log" 2>&1
rc=$?
expect_stopped pp2 "reading training data: $HOOK"

# Without the hook the same run trains to the end and saves (so the checks
# above see the hook's effect, not a run that fails anyway).
ranks_recorded "$MPIEXEC" 2 "$PRETRAIN" "${ARGS[@]}" --save "$WORK/clean" > "$WORK/clean.log" 2>&1 \
    || { cat "$WORK/clean.log"; fail "run without the hook"; }
[ "$(cat "$WORK/clean/latest_checkpointed_iteration.txt" 2>/dev/null)" = 8 ] || fail "run without the hook: no checkpoint of iteration 8"

finish test_data_read_failure
