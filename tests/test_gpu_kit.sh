#!/usr/bin/env bash
# The GPU kit's rehearsal: bundle this build's programs, run
# run_gpu_checks.sh --cpu-standin, and check that it passes and writes its
# report and its summary; then that a spent budget fails the run instead of
# passing it silently. Usage: test_gpu_kit.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=$1
ROOT=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

bash "$ROOT/scripts/gpu_bundle.sh" --from-build "$BUILD" "$WORK/kit" > "$WORK/bundle.log" 2>&1 \
    || { cat "$WORK/bundle.log"; echo "FAIL: gpu_bundle.sh" >&2; exit 1; }
grep '^== bundle' "$WORK/bundle.log"
for f in run_gpu_checks.sh pretrain_gpt bench_train_step tests.tsv libs.tar.gz BUNDLE_INFO \
    data/kit_text_document.h5; do
    [ -e "$WORK/kit/$f" ] || fail "the bundle lacks $f"
done
grep -q 'test_backend_cuda_model' "$WORK/kit/tests.tsv" || fail "tests.tsv lacks the CUDA tests"
grep -q 'test_comm_cuda' "$WORK/kit/tests.tsv" || fail "tests.tsv lacks the communication test"

rc=0
OUT="$WORK/out" "$WORK/kit/run_gpu_checks.sh" --cpu-standin --budget-s 200 > "$WORK/checks.log" 2>&1 \
    || rc=$?
REPORT="$WORK/out/gpu_report.txt"
SUMMARY="$WORK/out/gpu_summary.jsonl"
# Several ranks on one device: run where this machine has mpirun, else a skip.
grep '"check": "multirank_staged"' "$SUMMARY" || true
grep -Eq '"check": "multirank_staged", "status": "(pass|skip)"' "$SUMMARY" \
    || fail "the multi-rank check neither passed nor was skipped"
grep '"check": "multirank_context"' "$SUMMARY" || true
grep -Eq '"check": "multirank_context", "status": "(pass|skip)"' "$SUMMARY" \
    || ! grep -q '"check": "multirank_staged", "status": "pass"' "$SUMMARY" \
    || fail "the context-parallel multi-rank check neither passed nor was skipped"
[ "$rc" -eq 0 ] || { tail -n 40 "$WORK/checks.log"; fail "run_gpu_checks.sh --cpu-standin exited $rc"; }
[ -s "$REPORT" ] || fail "no report $REPORT"
[ -s "$SUMMARY" ] || fail "no summary $SUMMARY"
if [ -s "$SUMMARY" ]; then
    grep -v '^{"check": "[^"]*", "status": "\(pass\|fail\|skip\|info\)", "seconds": [0-9]*, "detail": ".*"\(, "result": {.*}\)\?}$' \
        "$SUMMARY" && fail "summary lines that are not one check object each (above)"
    grep '"status": "fail"' "$SUMMARY" && fail "failed checks in the rehearsal (above)"
    while IFS=$'\t' read -r name _; do
        grep -q "\"check\": \"$name\", \"status\": \"pass\"" "$SUMMARY" || fail "test $name did not pass"
        grep -q "\"check\": \"${name}_skip_reason\", \"status\": \"pass\"" "$SUMMARY" \
            || fail "test $name without a GPU did not skip with its reason"
    done < "$WORK/kit/tests.tsv"
    for c in libraries mpi_singleton train_first_loss train_curve train_moe bench_tiny-2x128; do
        grep -q "\"check\": \"$c\", \"status\": \"pass\"" "$SUMMARY" || fail "check $c did not pass"
    done
    grep -q '"check": "bench_tiny-2x128".*"result": {"device": "cpu".*"tokens_per_s"' "$SUMMARY" \
        || fail "the benchmark's figures are not in the summary"
fi
grep -q 'summary: 0 failed' "$REPORT" || fail "the report has no passing summary"

# A budget spent before the tests: they are failures (not run), not passes.
rc=0
OUT="$WORK/out0" "$WORK/kit/run_gpu_checks.sh" --cpu-standin --budget-s 0 --only tests \
    > "$WORK/budget.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a spent budget passed"
grep -q '"status": "fail", "seconds": 0, "detail": "not started' "$WORK/out0/gpu_summary.jsonl" \
    || fail "a spent budget did not record the tests as not started"

[ "$failures" -eq 0 ] || { echo "$failures failure(s); report:" >&2; tail -n 30 "$REPORT" >&2; exit 1; }
echo "GPU kit rehearsal: passed ($(grep -c . "$SUMMARY") checks)"
