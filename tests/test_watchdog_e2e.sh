#!/usr/bin/env bash
# The watchdog end to end, pretrain_gpt at PP = 2 on two ranks:
# - rank 1 stopped for good (SIGSTOP) after a few iterations under
#   --distributed-timeout-minutes 0.2: the job exits non-zero within 60 s of
#   the stop, and stderr names the operation that timed out and the flag;
# - rank 1 stopped for 20 s, then continued, under a 1-minute limit: status 0
#   and every iteration's loss and grad norm bitwise equal (rtol 0) to an
#   undisturbed run's.
# - a zero, negative or non-finite limit is refused naming the flag.
# Usage: test_watchdog_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "a stopped stage stalls its peer"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 32
      --micro-batch-size 2 --global-batch-size 8 --lr 1e-3 --tokenizer-type ByteTokenizer
      --data-path "$WORK/c_text_document.h5" --eval-iters 0 --device cpu --log-interval 1000
      --pipeline-model-parallel-size 2)
STOPPED=()
cleanup() { local p; for p in "${STOPPED[@]}"; do kill -CONT "$p" 2> /dev/null; kill -KILL "$p" 2> /dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT

# rank_pid MARK RANK: the pid of world rank RANK of the job whose command line
# holds MARK (mpirun's own process has no OMPI_COMM_WORLD_RANK).
rank_pid() {
    local p
    for p in $(pgrep -f -- "$1"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_lines FILE N: until FILE has N lines (at most 60 s).
wait_lines() {
    local i
    for i in $(seq 1 1200); do
        [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

now() { date +%s.%N; }
# awk, not bc: bc is not part of a fresh Debian 12.
seconds_since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.3f", a - b }'; }

# 0. A limit that is not a positive number is refused with one line.
for bad in 0 -1 inf nan; do
    "$PRETRAIN" "${ARGS[@]}" --pipeline-model-parallel-size 1 --train-iters 1 \
        --distributed-timeout-minutes "$bad" > "$WORK/bad.out" 2> "$WORK/bad.err"
    rc=$?
    [ "$rc" -eq 2 ] || fail "--distributed-timeout-minutes $bad: status $rc, want 2"
    [ "$(wc -l < "$WORK/bad.err")" -eq 1 ] && grep -Eq '^error: --distributed-timeout-minutes (must be a positive number of minutes|expects a finite number)' "$WORK/bad.err" \
        || { cat "$WORK/bad.err"; fail "--distributed-timeout-minutes $bad: not one line naming the flag"; }
done

# 1. Stopped for good: the watchdog ends the job.
timeout 120 "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --train-iters 1000000 \
    --distributed-timeout-minutes 0.2 --metrics-file "$WORK/stuck.jsonl" \
    > "$WORK/stuck.log" 2> "$WORK/stuck.err" &
job=$!
if wait_lines "$WORK/stuck.jsonl" 3 && pid=$(rank_pid "$WORK/stuck.jsonl" 1); then
    kill -STOP "$pid"
    STOPPED+=("$pid")
    stopped_at=$(now)
    wait "$job"
    rc=$?
    took=$(seconds_since "$stopped_at")
    echo "stopped rank 1: status $rc ${took} s after the stop"
    grep '^error:' "$WORK/stuck.err"
    [ "$rc" -ne 0 ] || fail "a stopped rank: status 0"
    [ "$rc" -ne 124 ] || fail "a stopped rank: the job hung until timeout(1) ended it"
    awk -v t="$took" 'BEGIN { exit !(t < 60) }' || fail "a stopped rank: the job ended only after ${took} s"
    awk -v t="$took" 'BEGIN { exit !(t >= 11) }' || fail "a stopped rank: the job ended ${took} s after the stop, before the 12 s limit"
    grep -qE '^error: rank 0 \(pid [0-9]+ on .*\): (host )?(all-reduce|all-gather|reduce-scatter|broadcast|send|recv|barrier)[^;]* on the [a-z-]+ group \(world ranks 0,1\) did not complete within 1[2-9]\.[0-9] s; waiting for world rank 1,' "$WORK/stuck.err" \
        || fail "a stopped rank: no report naming the operation, group and peer"
    grep -qF -- "raise --distributed-timeout-minutes (now 0.2;" "$WORK/stuck.err" \
        || fail "a stopped rank: the report does not name the flag"
else
    cat "$WORK/stuck.log" "$WORK/stuck.err"
    fail "a stopped rank: the run did not reach 3 iterations or rank 1 was not found"
    kill "$job" 2> /dev/null
fi

# 2. Stopped for 20 s under a 1-minute limit: no trip, the same numbers.
ITERS=400
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --train-iters $ITERS \
    --distributed-timeout-minutes 1 --metrics-file "$WORK/ref.jsonl" > "$WORK/ref.log" 2>&1 \
    || { cat "$WORK/ref.log"; fail "undisturbed run"; }
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --train-iters $ITERS \
    --distributed-timeout-minutes 1 --metrics-file "$WORK/paused.jsonl" > "$WORK/paused.log" 2>&1 &
job=$!
if wait_lines "$WORK/paused.jsonl" 3 && pid=$(rank_pid "$WORK/paused.jsonl" 1); then
    kill -STOP "$pid"
    STOPPED+=("$pid")
    sleep 20
    # The pause must have fallen inside the run, or it proved nothing.
    done_lines=$(wc -l < "$WORK/paused.jsonl")
    [ "$done_lines" -lt $ITERS ] || fail "a 20 s pause: the run had finished before rank 1 was stopped"
    kill -CONT "$pid"
    wait "$job"
    rc=$?
    echo "paused rank 1 for 20 s after iteration $done_lines: status $rc"
    [ "$rc" -eq 0 ] || { cat "$WORK/paused.log"; fail "a 20 s pause under a 1-minute limit: status $rc"; }
    compare "a 20 s pause" "$WORK/ref.jsonl" "$WORK/paused.jsonl" --rtol 0 \
        || fail "a 20 s pause changed the losses"
else
    cat "$WORK/paused.log"
    fail "a 20 s pause: the run did not reach 3 iterations or rank 1 was not found"
    kill "$job" 2> /dev/null
fi
finish test_watchdog_e2e
