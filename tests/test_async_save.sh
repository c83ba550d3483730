#!/usr/bin/env bash
# --async-save on 2 ranks (DP 2), a tiny model:
# - checkpoints bitwise equal to a synchronous save's at every saved
#   iteration (checkpoint_info --compare-to, rtol 0, atol 0) and the same
#   loss curve bitwise;
# - training goes on while the write runs: with the write delayed
#   (GPT3D_TEST_ASYNC_SAVE_DELAY_MS) the save of iteration 2 is published
#   after iteration 3 was logged;
# - --exit-interval with a save in flight publishes it before exiting;
# - kill -9 of rank 1 inside its background write (GPT3D_TEST_KILL_IN_SAVE
#   "1:in_async_write") leaves the previous checkpoint published, verified
#   and loadable, and the resumed losses bitwise equal to the uninterrupted
#   run's;
# - a background write that fails (its iter_N.tmp removed under it), or its
#   publish (GPT3D_TEST_FAIL_IN_SAVE=tracker_write, a full disk), ends every
#   rank non-zero with exactly one error line, the write's own message, and
#   nothing is published.
# Usage: test_async_save.sh MPIEXEC PRETRAIN PREPROCESS CHECKPOINT_INFO
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
INFO=$4
source "$(dirname "$0")/e2e_common.sh"
unset GPT3D_TEST_KILL_IN_SAVE GPT3D_TEST_ASYNC_SAVE_DELAY_MS GPT3D_TEST_SAVE_AFTER_LOAD
make_corpus "$PREPROCESS" "async save"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 16
      --micro-batch-size 1 --global-batch-size 4 --lr 2e-3 --lr-warmup-iters 1 --lr-decay-iters 100
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 95,5,0
      --eval-iters 0 --device cpu --seed 99 --log-interval 1 --train-iters 8)
# run NAME ARGS...: 2 ranks; log in $WORK/NAME.log; the exit status is returned.
run() {
    local name=$1
    shift
    mpi_ranks 2 "$@" > "$WORK/$name.log" 2>&1
}
latest_of() { cat "$1/latest_checkpointed_iteration.txt" 2>/dev/null; }

run sync --save "$WORK/sync" --save-interval 2 --metrics-file "$WORK/sync.jsonl" \
    || { cat "$WORK/sync.log"; fail "synchronous run"; exit 1; }

# --- bitwise equal to a synchronous save, and asynchronous ----------------
GPT3D_TEST_ASYNC_SAVE_DELAY_MS=1000 run async --save "$WORK/async" --save-interval 2 --async-save \
    --metrics-file "$WORK/async.jsonl" || { cat "$WORK/async.log"; fail "asynchronous run"; exit 1; }
[ "$(latest_of "$WORK/async")" = 8 ] || fail "async: latest is '$(latest_of "$WORK/async")', want 8"
for it in 2 4 6 8; do
    "$INFO" --load "$WORK/async" --iteration "$it" --compare-to "$WORK/sync" --compare-iteration "$it" \
        --rtol 0 --atol 0 > "$WORK/cmp$it.txt" 2>&1 \
        || { cat "$WORK/cmp$it.txt" >&2; fail "async: iteration $it differs from the synchronous save"; }
done
compare "async loss curve" "$WORK/sync.jsonl" "$WORK/async.jsonl" --rtol 0 --atol 0 || fail "async: losses differ"
saved2=$(grep -nE "^  \[[^]]*\] successfully saved checkpoint from iteration +2 to " "$WORK/async.log" | cut -d: -f1)
logged3=$(grep -n " iteration  *3/" "$WORK/async.log" | cut -d: -f1)
[ -n "$saved2" ] && [ -n "$logged3" ] && [ "$saved2" -gt "$logged3" ] \
    || { cat "$WORK/async.log"; fail "async: iteration 2 was published before iteration 3 ran (lines '$saved2', '$logged3')"; }

# --- a save in flight at --exit-interval is published before the exit -------
GPT3D_TEST_ASYNC_SAVE_DELAY_MS=500 run exit4 --save "$WORK/kill" --save-interval 4 --exit-interval 4 \
    --async-save || { cat "$WORK/exit4.log"; fail "run to iteration 4"; exit 1; }
[ "$(latest_of "$WORK/kill")" = 4 ] || { cat "$WORK/exit4.log"; fail "exit-interval: latest is '$(latest_of "$WORK/kill")', want 4"; exit 1; }

# --- kill -9 inside the background write ------------------------------------
GPT3D_TEST_KILL_IN_SAVE=1:in_async_write run killed --load "$WORK/kill" --save "$WORK/kill" \
    --save-interval 2 --async-save
rc=$?
{ [ $rc -ne 0 ] && [ $rc -ne 124 ]; } || { cat "$WORK/killed.log"; fail "killed: exit status $rc, want a crash"; }
grep -q "test hook: rank 1 kills itself in the background write of the save" "$WORK/killed.log" \
    || { cat "$WORK/killed.log"; fail "killed: the hook did not fire"; }
[ "$(latest_of "$WORK/kill")" = 4 ] || fail "killed: latest is '$(latest_of "$WORK/kill")', want 4"
[ ! -e "$WORK/kill/iter_0000006" ] || fail "killed: iteration 6 was published although rank 1 died writing it"
"$INFO" --load "$WORK/kill" --verify > "$WORK/verify.txt" 2>&1 || { cat "$WORK/verify.txt" >&2; fail "killed: iteration 4 does not verify"; }
run resumed --load "$WORK/kill" --metrics-file "$WORK/resumed.jsonl" || { cat "$WORK/resumed.log"; fail "resume after the kill"; }
sed -n '5,$p' "$WORK/sync.jsonl" > "$WORK/sync_5_8.jsonl"
compare "resumed after the kill" "$WORK/sync_5_8.jsonl" "$WORK/resumed.jsonl" --rtol 0 --atol 0 \
    || fail "resumed losses differ from the uninterrupted run's"

# --- a failing background write is reported once and ends every rank --------
# ranked NAME ARGS...: like run, each rank's exit status recorded.
ranked() {
    local name=$1
    shift
    ranks_recorded "$MPIEXEC" 2 "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1
}
GPT3D_TEST_ASYNC_SAVE_DELAY_MS=3000 ranked failing --save "$WORK/fail" --save-interval 2 --async-save &
pid=$!
for _ in $(seq 1 100); do
    grep -q "^  shard of iteration 2 copied" "$WORK/failing.log" 2>/dev/null && break
    sleep 0.1
done
rm -rf "$WORK/fail/iter_0000002.tmp"
wait $pid
rc=$?
[ $rc -ne 124 ] || { cat "$WORK/failing.log"; fail "failing write: timed out"; }
expect_agreed_failure "failing write" 2 "$WORK/failing.log"
grep -q "^error: .*iter_0000002.tmp.* does not exist" "$WORK/failing.log" \
    || { cat "$WORK/failing.log"; fail "failing write: the writer's own message is not reported"; }
[ -z "$(latest_of "$WORK/fail")" ] || fail "failing write: something was published"

# The publish of a background save failing (a full disk at the tracker write).
GPT3D_TEST_FAIL_IN_SAVE=tracker_write ranked fulldisk --save "$WORK/full" --save-interval 2 --async-save
[ $? -ne 124 ] || { cat "$WORK/fulldisk.log"; fail "full disk: timed out"; }
expect_agreed_failure "full disk at the tracker write" 2 "$WORK/fulldisk.log"
grep -q "^error: .*latest_checkpointed_iteration" "$WORK/fulldisk.log" \
    || { cat "$WORK/fulldisk.log"; fail "full disk: the message does not name the tracker"; }

finish test_async_save
