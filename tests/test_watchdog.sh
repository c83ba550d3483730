#!/usr/bin/env bash
# The watchdog trips: in each case rank 1 enters the operation only 8 s late,
# far past the 0.5 s limit. The job must stop non-zero well before rank 1
# would have arrived, with rank 0's one-line report naming the operation,
# the group with its ranks, the peer it waits for, the element count and the
# flag to raise. Usage: test_watchdog.sh MPIEXEC TEST_WATCHDOG
set -u
MPIEXEC=$1
PROGRAM=$2
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# expect_trip MODE PATTERN...: the run stops with status 4 within 6 s and
# its stderr holds every pattern (fixed strings).
expect_trip() {
    local mode=$1 start rc elapsed p
    shift
    start=$(date +%s.%N)
    timeout 60 "$MPIEXEC" --oversubscribe -np 2 "$PROGRAM" "$mode" > "$WORK/$mode.out" 2> "$WORK/$mode.err"
    rc=$?
    elapsed=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.3f", a - b }')
    echo "$mode: status $rc after ${elapsed} s"
    grep '^error:' "$WORK/$mode.err"
    [ "$rc" -eq 4 ] || { cat "$WORK/$mode.out" "$WORK/$mode.err"; fail "$mode: status $rc, want 4 (the watchdog's)"; }
    awk -v t="$elapsed" 'BEGIN { exit !(t < 6) }' || fail "$mode: took ${elapsed} s; the late rank arrives after 8 s"
    for p in "$@"; do
        grep -qF -- "$p" "$WORK/$mode.err" || fail "$mode: stderr lacks '$p'"
    done
    [ "$(grep -c '^error:' "$WORK/$mode.err")" -eq 1 ] || fail "$mode: want exactly one report"
}

expect_trip stuck-collective "error: rank 0 (pid " \
    "all-reduce of 3 fp32 elements on the data group (world ranks 0,1) did not complete within 0." \
    "waiting for world rank 1," "raise --distributed-timeout-minutes (now 0.00833333;"
expect_trip stuck-p2p "error: rank 0 (pid " \
    "recv from rank 1 of 5 fp32 elements on the pipeline group (world ranks 0,1) did not complete" \
    "waiting for world rank 1," "--distributed-timeout-minutes"

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_watchdog_stuck: ok"
