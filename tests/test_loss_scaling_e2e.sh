#!/usr/bin/env bash
# Megatron's fp16 loss scaling, run on CPU ranks (--fp16 on the CPU backend
# computes in fp32 and scales the loss as a GPU run would):
# - exact: at power-of-two scales, the default 2^32 growing every 2 steps,
#   every loss and grad norm is bitwise the unscaled run's;
# - overflows planted at iterations 3, 4 and 6 (GPT3D_TEST_INF_GRAD_AT, rank
#   0's gradient shard) follow Megatron's rules: hysteresis 2 tolerates the
#   first, halves at the second and, spent, at the third; two clean steps
#   double it; each skipped iteration is counted in the log line, leaves the
#   weights and Adam moments bitwise unchanged and does not advance the
#   learning-rate schedule;
# - a save after the overflows resumes with the scaler's state and the
#   schedule's position: the rest of the run is bitwise the uninterrupted
#   one's;
# - TP 2 x DP 2 with an overflow on one rank only: every rank skips, and the
#   run matches one rank's;
# - a scale beyond fp32's range overflows the backward and halves until it
#   fits, without stopping the run;
# - bad flags are refused naming the flag.
# Usage: test_loss_scaling_e2e.sh MPIEXEC PRETRAIN PREPROCESS CHECKPOINT_INFO
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
INFO=$4
source "$(dirname "$0")/e2e_common.sh"
unset GPT3D_TEST_INF_GRAD_AT
make_corpus "$PREPROCESS" "scaled"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64
      --seq-length 16 --max-position-embeddings 16 --micro-batch-size 1 --global-batch-size 4
      --train-iters 8 --lr 2e-3 --lr-warmup-iters 2 --lr-decay-iters 20
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 100,0,0
      --eval-iters 0 --device cpu --seed 11 --log-interval 1 --hidden-dropout 0 --attention-dropout 0)
# run NAME NP TP ARGS...: a run; its log in $WORK/NAME.log, its metrics in $WORK/NAME.jsonl.
run() {
    local name=$1 np=$2 tp=$3
    shift 3
    timeout 120 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" \
        --tensor-model-parallel-size "$tp" --metrics-file "$WORK/$name.jsonl" "$@" \
        > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; fail "$name: the run failed"; return 1; }
}
# field FILE ITERATION KEY: a number of one metrics record.
field() { grep "\"iteration\": $2," "$1" | sed -E "s/.*\"$3\": ([^,}]*).*/\1/"; }

# --- exact at power-of-two scales ----------------------------------------
run plain 1 1 || exit 1
run fp16 1 1 --fp16 --loss-scale-window 2 || exit 1
grep -q "loss scaling runs here too" "$WORK/fp16.log" || fail "fp16: no note that the CPU runs the loss scaling"
# The scales differ by design; everything else must be bitwise equal.
for f in plain fp16; do sed -E 's/"loss_scale": [^,]*, //' "$WORK/$f.jsonl" > "$WORK/$f.unscaled"; done
compare "fp16 at 2^32 and up" "$WORK/plain.unscaled" "$WORK/fp16.unscaled" --rtol 0 \
    || fail "fp16 at 2^32: losses or grad norms differ from the unscaled run"
[ "$(field "$WORK/fp16.jsonl" 8 loss_scale)" = 68719476736 ] \
    || fail "fp16: after 8 clean steps with window 2 the scale is $(field "$WORK/fp16.jsonl" 8 loss_scale), want 2^36"

# --- planted overflows ---------------------------------------------------
export GPT3D_TEST_INF_GRAD_AT=3,4,6
run over 1 1 --fp16 --initial-loss-scale 1024 --loss-scale-window 2 --save "$WORK/over" --save-interval 1 || exit 1
want_scales="1024 2048 2048 1024 1024 512 512 1024"
want_skips="0 0 1 1 0 1 0 0"
scales="" skips=""
for i in $(seq 1 8); do
    scales="$scales $(grep -E "iteration +$i/" "$WORK/over.log" | sed -E 's/.*loss scale: ([0-9]+)\.0 .*/\1/')"
    skips="$skips $(grep -E "iteration +$i/" "$WORK/over.log" | sed -E 's/.*number of skipped iterations: +([0-9]+) .*/\1/')"
done
[ "${scales# }" = "$want_scales" ] || fail "overflows: logged scales '${scales# }', want '$want_scales'"
[ "${skips# }" = "$want_skips" ] || fail "overflows: logged skips '${skips# }', want '$want_skips'"
for i in 3 4 6; do
    grep "\"iteration\": $i," "$WORK/over.jsonl" | grep -q '"skipped": true' || fail "overflows: iteration $i not skipped in the metrics"
    grep -E "iteration +$i/" "$WORK/over.log" | grep -q "grad norm" && fail "overflows: iteration $i logged a grad norm"
done
# Iterations 3 and 4 skipped: iteration 5 runs at iteration 3's learning rate.
[ "$(field "$WORK/over.jsonl" 5 lr)" = "$(field "$WORK/over.jsonl" 3 lr)" ] \
    || fail "overflows: the schedule advanced over skipped steps (lr $(field "$WORK/over.jsonl" 5 lr) at 5, $(field "$WORK/over.jsonl" 3 lr) at 3)"
# The skipped steps changed no weight and no moment.
"$INFO" --load "$WORK/over" --iteration 4 --compare-to "$WORK/over" --compare-iteration 2 \
    --ignore-training-state > "$WORK/skip.cmp" 2>&1 || { cat "$WORK/skip.cmp" >&2; fail "overflows: iteration 4's state differs from iteration 2's"; }
"$INFO" --load "$WORK/over" --iteration 5 --compare-to "$WORK/over" --compare-iteration 4 \
    --ignore-training-state > "$WORK/step.cmp" 2>&1 && fail "overflows: iteration 5 did not step (the comparison cannot fail)"
"$INFO" --load "$WORK/over" --iteration 4 > "$WORK/info4.txt" 2>&1
grep -q "loss scale: 1024 (dynamic; growth tracker 0, hysteresis tracker 0)" "$WORK/info4.txt" \
    || { cat "$WORK/info4.txt" >&2; fail "overflows: checkpoint 4 lacks the scaler's state"; }
grep -q "scheduler steps: 8$" "$WORK/info4.txt" || fail "overflows: checkpoint 4's scheduler steps are not the 8 samples of its 2 steps"

# --- resume after the overflows -------------------------------------------
cp -r "$WORK/over" "$WORK/resume"
echo 4 > "$WORK/resume/latest_checkpointed_iteration.txt"
rm -rf "$WORK/resume"/iter_000000{5,6,7,8}
run resumed 1 1 --fp16 --initial-loss-scale 1024 --loss-scale-window 2 --load "$WORK/resume" || exit 1
tail -n 4 "$WORK/over.jsonl" > "$WORK/over.tail"
compare "resumed after overflows" "$WORK/over.tail" "$WORK/resumed.jsonl" --rtol 0 || fail "resume: iterations 5-8 differ from the uninterrupted run"
[ "$(field "$WORK/resumed.jsonl" 7 loss_scale)" = 512 ] || fail "resume: the scaler did not go on from its saved state"

# --- several ranks, one rank overflows ------------------------------------
export GPT3D_TEST_INF_GRAD_AT=3
run one 1 1 --fp16 --initial-loss-scale 1024 --hysteresis 1 || exit 1
run t2d2 4 2 --fp16 --initial-loss-scale 1024 --hysteresis 1 || exit 1
matches_one_rank "TP 2 x DP 2, an overflow on rank 0 only" "$WORK/one.jsonl" "$WORK/t2d2.jsonl"
unset GPT3D_TEST_INF_GRAD_AT

# --- real overflow: 2^130 is beyond fp32 -----------------------------------
# The backward's seed (the loss scale times 1 / tokens) overflows fp32 until
# the scale is halved to 2^127: three skipped iterations with hysteresis 1,
# then training from a finite scale.
run huge 1 1 --fp16 --initial-loss-scale 1.3611294676837539e39 --hysteresis 1 || exit 1
[ "$(grep -c '"skipped": true' "$WORK/huge.jsonl")" = 3 ] \
    || fail "huge scale: $(grep -c '"skipped": true' "$WORK/huge.jsonl") skipped iterations, want 3 (2^130, 2^129, 2^128)"
[ "$(field "$WORK/huge.jsonl" 4 loss_scale)" = 1.7014118346046923e+38 ] \
    || fail "huge scale: the scale after three overflows is $(field "$WORK/huge.jsonl" 4 loss_scale), want 2^127"
grep "\"iteration\": 8," "$WORK/huge.jsonl" | grep -q '"grad_norm": [0-9]' || fail "huge scale: no finite step at iteration 8"

# --- bad flags ---------------------------------------------------------------
bad() { # bad NAME EXPECTED-TEXT ARGS...
    local name=$1 want=$2
    shift 2
    "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1 && { fail "$name: accepted"; return; }
    grep -q -- "$want" "$WORK/$name.log" || { cat "$WORK/$name.log" >&2; fail "$name: the error does not name $want"; }
}
bad negative-scale "--loss-scale" --fp16 --loss-scale -4
bad zero-window "--loss-scale-window" --fp16 --loss-scale-window 0
bad zero-hysteresis "--hysteresis" --fp16 --hysteresis 0
bad min-above-initial "--min-loss-scale" --fp16 --initial-loss-scale 4 --min-loss-scale 8

[ "$failures" -eq 0 ] && echo "loss scaling: exact, skips, resume, several ranks, real overflow, bad flags: all passed"
exit $((failures > 0))
