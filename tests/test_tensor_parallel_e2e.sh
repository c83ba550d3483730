#!/usr/bin/env bash
# Tensor parallelism end to end: TP = 2 and 4, with and without
# --sequence-parallel, against one rank on the same seed and data.
# First-iteration lm loss and grad norm within 1e-5 relative; every loss of a
# 20-iteration run within 1e-4 relative; the per-iteration collectives match
# Megatron's pattern. Usage: test_tensor_parallel_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

for i in $(seq 1 24); do
    for j in $(seq 1 30); do echo "document $i line $j: tensors split $(( (i * j) % 17 )) ways"; done > "$WORK/d$i.txt"
done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || { fail "preprocess_data"; exit 1; }

# 3 layers, 4 heads, ffn 96, vocab 257 padded to 384 (divisible by 4): every
# split dimension divides by TP = 4; seq 32 divides by 4 for sequence parallelism.
ARGS=(--num-layers 3 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 96 --seq-length 32
      --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 95,5,0
      --eval-iters 0 --device cpu --log-interval 5)

"$PRETRAIN" "${ARGS[@]}" --metrics-file "$WORK/tp1.jsonl" > "$WORK/tp1.log" 2>&1 \
    || { cat "$WORK/tp1.log"; fail "TP=1 run"; exit 1; }

compare() { # compare NAME FILE: every line against tp1.jsonl
    awk -v name="$1" '
        function field(line, key,   m) {
            if (match(line, "\"" key "\": [^,}]*")) return substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 4) + 0
            return "nan"
        }
        function rel(a, b) { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; return d / m }
        NR == FNR { loss[FNR] = field($0, "lm_loss"); norm[FNR] = field($0, "grad_norm"); n = FNR; next }
        {
            l = field($0, "lm_loss"); g = field($0, "grad_norm")
            if (FNR == 1 && (rel(l, loss[1]) > 1e-5 || rel(g, norm[1]) > 1e-5)) {
                printf "%s: first iteration loss %.9g vs %.9g, grad norm %.9g vs %.9g\n", name, l, loss[1], g, norm[1]; bad = 1
            }
            if (rel(l, loss[FNR]) > 1e-4) { printf "%s: iteration %d loss %.9g vs %.9g\n", name, FNR, l, loss[FNR]; bad = 1 }
            count = FNR
        }
        END { if (count != n) { printf "%s: %d iterations, want %d\n", name, count, n; bad = 1 } exit bad }
    ' "$WORK/tp1.jsonl" "$2"
}

for tp in 2 4; do
    for sp in "" "--sequence-parallel"; do
        name="TP=$tp${sp:+ SP}"
        out="$WORK/tp$tp${sp:+sp}"
        if ! "$MPIEXEC" --oversubscribe -np "$tp" "$PRETRAIN" "${ARGS[@]}" \
                --tensor-model-parallel-size "$tp" $sp --metrics-file "$out.jsonl" > "$out.log" 2>&1; then
            cat "$out.log"; fail "$name run"; continue
        fi
        compare "$name" "$out.jsonl" || fail "$name differs from TP=1"
        summary=$(grep "communication per iteration" "$out.log")
        # Per micro-batch: 2 all-reduces per layer forward + 2 backward, plus
        # embedding, LM-head input gradient and cross entropy (max, sums): 4L + 4.
        # Four micro-batches, three layers.
        if [ -z "$sp" ]; then
            grep -q "tensor all-reduce 64 calls" <<<"$summary" || fail "$name: $summary"
            grep -q "all-gather\|reduce-scatter" <<<"$summary" && fail "$name: unexpected gathers: $summary"
        else
            grep -q "tensor all-gather 56 calls" <<<"$summary" || fail "$name: $summary"
            grep -q "tensor reduce-scatter 56 calls" <<<"$summary" || fail "$name: $summary"
        fi
        echo "$name: $summary"
    done
done

# A checkpoint saved at TP=4 (with SP) resumes at TP=1 and one saved at TP=1
# resumes at TP=2: the run continues as if uninterrupted (fp32 rounding).
"$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 4 --sequence-parallel \
    --exit-interval 10 --save "$WORK/ck4" --metrics-file "$WORK/re4.jsonl" > "$WORK/re4.log" 2>&1 || fail "save at TP=4"
"$PRETRAIN" "${ARGS[@]}" --load "$WORK/ck4" --metrics-file "$WORK/re4.jsonl" > "$WORK/re4b.log" 2>&1 \
    || { cat "$WORK/re4b.log"; fail "resume at TP=1"; }
grep -q "saved at TP 4 PP 1 DP 1" "$WORK/re4b.log" || fail "resume did not report the saved layout"
compare "TP=4 -> TP=1 resume" "$WORK/re4.jsonl" || fail "TP=4 -> TP=1 resume differs"
"$PRETRAIN" "${ARGS[@]}" --exit-interval 10 --save "$WORK/ck1" --metrics-file "$WORK/re1.jsonl" > /dev/null 2>&1 \
    || fail "save at TP=1"
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 2 --load "$WORK/ck1" \
    --metrics-file "$WORK/re1.jsonl" > "$WORK/re1b.log" 2>&1 || { cat "$WORK/re1b.log"; fail "resume at TP=2"; }
compare "TP=1 -> TP=2 resume" "$WORK/re1.jsonl" || fail "TP=1 -> TP=2 resume differs"

# Bad layouts stop every rank with one message naming the flag.
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 3 \
    > "$WORK/bad.log" 2>&1 && fail "TP=3 on 2 ranks was accepted"
grep -q "error: .*--tensor-model-parallel-size 3.* 2" "$WORK/bad.log" \
    || { cat "$WORK/bad.log"; fail "TP=3 message"; }
[ "$(grep -c '^error:' "$WORK/bad.log")" -eq 1 ] || fail "TP=3: not exactly one error line"
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 2 \
    --num-attention-heads 3 --hidden-size 30 > "$WORK/bad.log" 2>&1 && fail "3 heads on TP 2 accepted"
grep -q "error: --num-attention-heads 3 is not divisible by --tensor-model-parallel-size 2" "$WORK/bad.log" \
    || { cat "$WORK/bad.log"; fail "heads/TP message"; }
"$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 4 --sequence-parallel \
    --seq-length 30 > "$WORK/bad.log" 2>&1 && fail "seq 30 with SP at TP 4 accepted"
grep -q "sequence-parallel needs --seq-length 30 divisible by --tensor-model-parallel-size 4" "$WORK/bad.log" \
    || { cat "$WORK/bad.log"; fail "SP seq message"; }

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_tensor_parallel_e2e: ok"
