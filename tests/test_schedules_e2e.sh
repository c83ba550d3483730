#!/usr/bin/env bash
# Sample-based training with Megatron's schedules end to end: a batch ramp
# (--rampup-batch-size), a WSD learning rate with warmup and a linear
# weight-decay increase give, iteration by iteration, the batch sizes,
# learning rates and weight decays Megatron-LM's own scheduler and batch
# calculator compute (values below from its code, as in test_schedules.c);
# the run is the same at DP 1 and DP 2, resumes exactly in the middle of the
# ramp, and bad schedule flags get one error each.
# Usage: test_schedules_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "schedule"

COMMON=(--num-layers 2 --hidden-size 16 --num-attention-heads 2 --seq-length 16
        --micro-batch-size 2 --hidden-dropout 0 --attention-dropout 0
        --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
        --eval-iters 0 --device cpu --log-interval 1 --lr 1e-3)
ARGS=("${COMMON[@]}" --global-batch-size 16 --train-samples 96 --rampup-batch-size 4 4 32 --min-lr 1e-4 --lr-warmup-samples 8 --lr-decay-style WSD
      --lr-wsd-decay-style cosine --lr-wsd-decay-samples 32
      --weight-decay-incr-style linear --start-weight-decay 0 --end-weight-decay 0.1)

mpi_ranks 2 --metrics-file "$WORK/dp2.jsonl" > "$WORK/dp2.log" 2>&1 || { cat "$WORK/dp2.log"; fail "DP 2 run"; exit 1; }
grep -q "batch ramp: from 4 samples by 4 up to 16 over 32 samples (9 iterations in all)" "$WORK/dp2.log" \
    || fail "the start-up lines do not describe the ramp"

# Megatron's values for this run, per iteration: global batch, lr, weight decay.
cat > "$WORK/megatron.txt" <<'VALUES'
4 0.0 0.0
4 0.0005 0.004166666666666667
4 0.001 0.008333333333333333
8 0.001 0.0125
8 0.001 0.020833333333333336
12 0.001 0.02916666666666667
16 0.001 0.04166666666666667
16 0.001 0.05833333333333334
16 0.0008681980515339464 0.07500000000000001
VALUES
field() { sed -nE "s/.*\"$1\": ([^,}]*).*/\1/p" "$2"; }
paste -d' ' <(field global_batch_size "$WORK/dp2.jsonl") <(field lr "$WORK/dp2.jsonl") \
    <(field weight_decay "$WORK/dp2.jsonl") > "$WORK/ours.txt"
if ! awk 'NR == FNR { g[FNR] = $1; l[FNR] = $2; w[FNR] = $3; n = FNR; next }
          { m++; if ($1 != g[FNR]) bad = 1
            for (k = 2; k <= 3; k++) { want = (k == 2 ? l[FNR] : w[FNR]); d = $k - want; if (d < 0) d = -d
                                       if (d > 1e-12 * (want < 0 ? -want : want) + 1e-300) bad = 1 } }
          END { exit bad || m != n }' "$WORK/megatron.txt" "$WORK/ours.txt"; then
    fail "batch sizes, learning rates or weight decays differ from Megatron's"
    paste "$WORK/megatron.txt" "$WORK/ours.txt" >&2
fi
[ "$(tail -1 "$WORK/dp2.jsonl" | sed -nE 's/.*"consumed_samples": ([0-9]+).*/\1/p')" = 88 ] \
    || fail "the run did not consume 88 samples (9 iterations of the ramp, then whole batches of 16)"

# The same run at DP 1.
mpi_ranks 1 --metrics-file "$WORK/dp1.jsonl" > "$WORK/dp1.log" 2>&1 || { cat "$WORK/dp1.log"; fail "DP 1 run"; }
compare "ramp DP 1 vs DP 2" "$WORK/dp2.jsonl" "$WORK/dp1.jsonl" || fail "DP 1 and DP 2 differ"

# Stopped after iteration 5 (mid-ramp) and resumed: the rest as the full run.
mpi_ranks 2 --save "$WORK/ckpt" --exit-interval 5 --metrics-file "$WORK/first.jsonl" > "$WORK/first.log" 2>&1 \
    || { cat "$WORK/first.log"; fail "run to iteration 5"; }
mpi_ranks 2 --load "$WORK/ckpt" --save "$WORK/ckpt" --metrics-file "$WORK/rest.jsonl" > "$WORK/rest.log" 2>&1 \
    || { cat "$WORK/rest.log"; fail "resume at iteration 5"; }
tail -n 4 "$WORK/dp2.jsonl" > "$WORK/dp2.tail.jsonl"
compare "resumed mid-ramp" "$WORK/dp2.tail.jsonl" "$WORK/rest.jsonl" --rtol 0 || fail "the resumed run left the full run's trajectory"

# The ramp reads the samples in order: its first three iterations (batch 4)
# are those of a constant batch of 4 with the same constant learning rate.
# plain NP ARGS...: pretrain_gpt on NP ranks with ARGS only.
plain() { local np=$1; shift; timeout 120 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "$@"; }
plain 2 "${COMMON[@]}" --global-batch-size 16 --train-samples 96 --rampup-batch-size 4 4 32 --lr-decay-style constant \
    --exit-interval 3 --metrics-file "$WORK/ramp3.jsonl" > "$WORK/ramp3.log" 2>&1 || { cat "$WORK/ramp3.log"; fail "ramp, 3 iterations"; }
plain 2 "${COMMON[@]}" --global-batch-size 4 --train-iters 3 --lr-decay-style constant \
    --metrics-file "$WORK/const4.jsonl" > "$WORK/const4.log" 2>&1 || { cat "$WORK/const4.log"; fail "batch 4, 3 iterations"; }
compare "ramp's first batches" "$WORK/const4.jsonl" "$WORK/ramp3.jsonl" --rtol 0 || fail "the ramp's first iterations read other samples"

# Bad schedules: one error naming the flag, nothing trained.
bad() {
    local name=$1 regex=$2
    shift 2
    "$PRETRAIN" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] || fail "$name: exit status 0"
    one_error "$name" "$WORK/$name.log" "$regex"
    grep -q "iteration " "$WORK/$name.log" && fail "$name: it trained"
    echo "  $name: $(grep '^error:' "$WORK/$name.log")"
}
BASE=("${ARGS[@]}")
bad both "exactly one of --train-iters N and --train-samples N" "${BASE[@]}" --train-iters 5
bad ramp_iters "--rampup-batch-size belongs to a sample-based run" "${COMMON[@]}" --train-iters 5 \
    --global-batch-size 16 --rampup-batch-size 4 4 32
bad ramp_shape "--rampup-batch-size takes three positive integers" "${BASE[@]}" --rampup-batch-size 4 4
bad ramp_reach "the ramp from 6 in steps of 4 must reach --global-batch-size 16" "${BASE[@]}" --rampup-batch-size 6 4 32
bad ramp_multiple "START and INCREMENT must be multiples of --micro-batch-size 4" "${BASE[@]}" --micro-batch-size 4 --rampup-batch-size 2 2 32
bad iters_flag "--lr-decay-iters belongs to an iteration-based run" "${BASE[@]}" --lr-decay-iters 10
bad wsd "--lr-decay-style WSD needs --lr-wsd-decay-samples N" "${BASE[@]}" --lr-wsd-decay-samples 0
bad wd_constant "--start-weight-decay/--end-weight-decay need --weight-decay-incr-style linear" "${BASE[@]}" --weight-decay-incr-style constant
bad wd_order "--start-weight-decay 0.2 and --end-weight-decay 0.1 must satisfy" "${BASE[@]}" --start-weight-decay 0.2
bad style "--lr-wsd-decay-style 'square' is not one of exponential, linear, cosine, minus_sqrt" "${BASE[@]}" --lr-wsd-decay-style square
bad warmup "the warmup \(96 samples\) must end before the decay does" "${BASE[@]}" --lr-warmup-samples 96
bad fraction "--lr-warmup-fraction and --lr-warmup-samples exclude each other" "${BASE[@]}" --lr-warmup-fraction 0.1

if [ $failures -ne 0 ]; then
    echo "test_schedules_e2e: $failures failure(s)"
    exit 1
fi
echo "test_schedules_e2e: ok"
