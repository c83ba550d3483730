#!/usr/bin/env bash
# Gradient buckets and overlapped communication end to end (issue 15): with
# --overlap-grad-reduce --overlap-param-gather and buckets small enough that
# there are several, DP 2, DP 4, 2x2x2, 1x2x4, 2x1x4 and TP 2 with sequence
# parallelism x DP 2 match one rank without overlap (every iteration's loss
# and grad norm within 1e-6 relative); the bucket layout logged at start-up
# equals the analytic one; the schedule trace shows early buckets' reduce-
# scatters starting before the last backward ends; a checkpoint saved with
# overlap resumes bitwise at the same layout; a bad --ddp-bucket-size is
# refused with one message.
# Usage: test_overlap_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "bucket"

# The data-parallel test's model: 4 layers, hidden 32, ffn 64, 4 heads, seq 32,
# ByteTokenizer (vocabulary padded to 384); global batch 8.
L=4 C=32 F=64 T=32 V=384 BUCKET=6000
ARGS=(--num-layers $L --hidden-size $C --num-attention-heads 4 --ffn-hidden-size $F --seq-length $T
      --micro-batch-size 1 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10)
OVERLAP=(--overlap-grad-reduce --overlap-param-gather --ddp-bucket-size $BUCKET)

buckets_line() { grep -m1 '^gradient buckets:' "$1"; }

"$PRETRAIN" "${ARGS[@]}" --metrics-file "$WORK/ref.jsonl" > "$WORK/ref.log" 2>&1 \
    || { cat "$WORK/ref.log"; fail "one-rank run"; exit 1; }
grep -q "^gradient buckets: 1 over DP 1 .*overlap: grad reduce off, param gather off" "$WORK/ref.log" \
    || fail "one rank without overlap: $(buckets_line "$WORK/ref.log")"

# --- every layout with overlap against one rank without ----------------------
for layout in "1 1 2" "1 1 4" "2 2 2" "1 2 4" "2 1 4" "2 1 2 sp"; do
    set -- $layout
    name="TPxPPxDP=$1x$2x$3${4:+ $4} overlapped"
    out="$WORK/l$1$2$3${4:-}"
    extra=()
    [ "${4:-}" = sp ] && extra=(--sequence-parallel)
    if ! run_layout "$1" "$2" "$3" "$out" "${ARGS[@]}" "${OVERLAP[@]}" "${extra[@]}" --metrics-file "$out.jsonl"; then
        cat "$out.log"; fail "$name run"; continue
    fi
    k=$(buckets_line "$out.log" | sed -E 's/^gradient buckets: ([0-9]+) .*/\1/')
    [ "${k:-0}" -gt 1 ] || fail "$name: want several buckets, got: $(buckets_line "$out.log")"
    buckets_line "$out.log" | grep -q "overlap: grad reduce on, param gather on" \
        || fail "$name: overlap not reported on"
    compare "$name" "$WORK/ref.jsonl" "$out.jsonl" || fail "$name differs from one rank"
    echo "$name: $k buckets, $(sed -n 20p "$out.jsonl" | strip_timings) ok"
done

# --- the bucket layout at DP 4 (TP = PP = 1) equals the analytic one ----------
# Each parameter is padded to 64 elements; the buffer to a multiple of
# 64 x DP; buckets are --ddp-bucket-size rounded up to that unit, the last
# one holding the rest.
want=$(awk -v L=$L -v C=$C -v F=$F -v T=$T -v V=$V -v B=$BUCKET -v DP=4 'BEGIN {
    split(C " " F*C " " F " " F*C " " C " " C " " C " " C*C " " 3*C " " 3*C*C " " C " " C, layer, " ")
    pad = 0; for (i in layer) pad += int((layer[i] + 63) / 64) * 64
    total = L * pad + 2 * int((C + 63) / 64) * 64 + int((T * C + 63) / 64) * 64 + int((V * C + 63) / 64) * 64
    unit = 64 * DP; n = int((total + unit - 1) / unit) * unit; per = int((B + unit - 1) / unit) * unit
    k = int((n + per - 1) / per); s = ""
    for (i = 0; i < k; i++) s = s (i ? " " : "") (i < k - 1 ? per : n - per * (k - 1))
    printf "gradient buckets: %d over DP %d (elements: %s)", k, DP, s }')
got=$(buckets_line "$WORK/l114.log" | sed -E 's/; overlap.*//')
[ "$got" = "$want" ] || fail "bucket layout at DP 4: '$got', analytic '$want'"
echo "bucket layout at DP 4: $got"

# --- overlap is real: reduce-scatters start inside the last backward ----------
# The trace lists each operation when it ends; the optimizer's lines are
# written when a bucket's collective starts. In the last iteration, a
# grad_reduce_start line before the last backward line means that bucket's
# reduce-scatter was posted while that backward was still running.
run_layout 1 1 2 "$WORK/trace" "${ARGS[@]}" "${OVERLAP[@]}" --train-iters 2 --lr-warmup-iters 0 --eval-iters 0 \
    --trace-schedule "$WORK/trace.txt" || { cat "$WORK/trace.log"; fail "traced run"; }
# It must also come after the one before (the gradients were final only then).
awk '/^iteration 2$/ { on = 1 } on && /^grad_reduce_start/ && !first { first = NR }
     on && /^BACKWARD / { before = last; last = NR }
     END { exit !(first && before && before < first && first < last) }' "$WORK/trace.txt.rank0" \
    || { sed -n '/^iteration 2$/,$p' "$WORK/trace.txt.rank0" | head -40 >&2; fail "no reduce-scatter started before the last backward ended"; }
started=$(sed -n '/^iteration 2$/,$p' "$WORK/trace.txt.rank0" | grep -c '^grad_reduce_start')
k=$(buckets_line "$WORK/trace.log" | sed -E 's/^gradient buckets: ([0-9]+) .*/\1/')
[ "$started" = "$k" ] || fail "iteration 2 started $started bucket reduce-scatters, want $k"
grep -q '^grad_reduce_exposed ' "$WORK/trace.txt.rank0" || fail "the trace does not report the exposed reduce time"

# --- resume with overlap at the same layout is bitwise ------------------------
run_layout 2 2 2 "$WORK/save" "${ARGS[@]}" "${OVERLAP[@]}" --exit-interval 10 --save "$WORK/ck" \
    --metrics-file "$WORK/save.jsonl" || { cat "$WORK/save.log"; fail "2x2x2 save at iteration 10"; }
run_layout 2 2 2 "$WORK/resume" "${ARGS[@]}" "${OVERLAP[@]}" --load "$WORK/ck" --metrics-file "$WORK/resume.jsonl" \
    || { cat "$WORK/resume.log"; fail "2x2x2 resume"; }
cat "$WORK/save.jsonl" "$WORK/resume.jsonl" > "$WORK/all.jsonl"
diff <(strip_timings "$WORK/l222.jsonl") <(strip_timings "$WORK/all.jsonl") > "$WORK/resume.diff" \
    || { cat "$WORK/resume.diff" >&2; fail "the overlapped 2x2x2 resume differs from the uninterrupted run"; }

# --- bad bucket sizes ---------------------------------------------------------
for bad in 0 -5; do
    run_layout 1 1 2 "$WORK/bad" "${ARGS[@]}" --overlap-grad-reduce --ddp-bucket-size "$bad" \
        && fail "--ddp-bucket-size $bad was accepted"
    grep -q "^error: .*--ddp-bucket-size" "$WORK/bad.log" \
        || { cat "$WORK/bad.log"; fail "--ddp-bucket-size $bad: message does not name the flag"; }
    [ "$(grep -c '^error:' "$WORK/bad.log")" -eq 1 ] || fail "--ddp-bucket-size $bad: not exactly one error line"
done

finish test_overlap_e2e
