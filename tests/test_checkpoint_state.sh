#!/usr/bin/env bash
# Checks of saved state, not only of loss curves. A tiny model trained for 3
# iterations at 1x1x1, DP 2, TP 4 and TP 2 x PP 2 x DP 2 (TPxPPxDP), then:
# - layouts: the DP 2 and 2x2x2 checkpoints equal the one-rank checkpoint of
#   the same iteration per element (weights, exp_avg, exp_avg_sq, and the
#   training state exactly);
# - resharding: a load at another layout followed at once by a save
#   (GPT3D_TEST_SAVE_AFTER_LOAD) gives canonical tensors and training state
#   bitwise equal to the source's, saved at the new layout;
# - --no-load-optim: the saved state has the source's weights bitwise, its
#   iteration and consumed samples, zero Adam moments and optimizer step 0;
# - --finetune: the source's weights bitwise, iteration 0, no consumed
#   samples, zero moments, step 0; one iteration later, step 1.
# Every number is compared in C (checkpoint_info --compare-to and
# test_checkpoint_state_expect), which fail on NaN, inf and missing values.
# Usage: test_checkpoint_state.sh MPIEXEC PRETRAIN PREPROCESS CHECKPOINT_INFO EXPECT
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
INFO=$4
EXPECT=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset GPT3D_TEST_KILL_IN_SAVE GPT3D_TEST_SAVE_AFTER_LOAD
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

for i in $(seq 1 16); do
    for j in $(seq 1 25); do echo "document $i line $j: state $(( (i * j) % 13 )) saved"; done > "$WORK/d$i.txt"
done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data"; exit 1; }

# 4 heads and 2 layers allow TP 4 and PP 2; global batch 4 gives every DP
# rank micro-batches. Iteration 1 runs at lr 0 (warmup), so iteration 3 is
# the first with two real Adam updates in the weights. --lr-decay-iters is
# fixed so the --finetune run of 1 iteration shares the schedule. Dropout is
# off: its masks do not depend on the layout (test_arch_variants_e2e), but
# zeroed and rescaled terms let the summation order of a gradient sum
# through cancellation show above the 1e-6 this test holds each element to.
ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64
      --seq-length 16 --max-position-embeddings 16 --micro-batch-size 1 --global-batch-size 4
      --train-iters 3 --lr 2e-3 --lr-warmup-iters 1 --lr-decay-iters 100 --tokenizer-type ByteTokenizer
      --data-path "$WORK/c_text_document.h5" --split 95,5,0 --eval-iters 0 --device cpu
      --seed 4321 --log-interval 1000 --hidden-dropout 0 --attention-dropout 0)
# train NAME NP TP PP ARGS...: a run at NP ranks; its log in $WORK/NAME.log.
train() {
    local name=$1 np=$2 tp=$3 pp=$4
    shift 4
    timeout 120 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" \
        --tensor-model-parallel-size "$tp" --pipeline-model-parallel-size "$pp" "$@" \
        > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; fail "$name: the run failed"; return 1; }
}
# compare NAME ARGS...: checkpoint_info --compare-to, which must say "same".
compare() {
    local name=$1
    shift
    "$INFO" "$@" > "$WORK/$name.cmp" 2>&1 || { cat "$WORK/$name.cmp" >&2; fail "$name"; return 1; }
}
# layout_line NAME FILE TP PP DP: the checkpoint compared was saved at that layout.
layout_line() {
    grep -q "^checkpoint: .* (TP $3, PP $4, DP $5)\$" "$WORK/$2.cmp" \
        || { cat "$WORK/$2.cmp" >&2; fail "$1: not saved at TP $3, PP $4, DP $5"; }
}

train one 1 1 1 --save "$WORK/one" || exit 1
train dp2 2 1 1 --save "$WORK/dp2" || exit 1
train tp4 4 4 1 --save "$WORK/tp4" || exit 1
train t2p2d2 8 2 2 --save "$WORK/t2p2d2" || exit 1

# --- layouts agree per element -------------------------------------------
# |a - b| <= atol + 1e-6 |b| per element, b from the one-rank checkpoint.
# The atol of each tensor is set by its typical size in this model: exp_avg
# ~1e-3 (a gradient), exp_avg_sq ~1e-6 (its square); elements far smaller
# than that are sums with cancellation whose rounding is larger than 1e-6 of
# themselves (measured: up to 7.5e-9 and 2.5e-11 absolute, with the plain
# and with the blocked attention alike), so exp_avg's atol is 1e-8 (1e-5 of
# its size: a wrong moment, off by a gradient, is still 1e5 x over) and
# exp_avg_sq's 1e-12. Weights: 2e-6,
# for the key third of linear_qkv.bias, whose true gradient is zero (softmax
# is shift-invariant): Adam's m/(sqrt(v)+eps) turns its rounding noise into
# layout-dependent values of up to 6.6e-7 after two steps (measured at
# 2x2x2); every other weight agrees to 3e-8, and one step of lr 2e-3 moves a
# weight by ~2e-3, so a wrong update of any element is still 1000x over.
layouts_agree() { # layouts_agree NAME: NAME's checkpoint of iteration 3 against one's
    compare "$1 weights" --load "$WORK/$1" --compare-to "$WORK/one" --rtol 1e-6 --atol 2e-6 \
        --compare-tensors weight
    compare "$1 exp_avg" --load "$WORK/$1" --compare-to "$WORK/one" --rtol 1e-6 --atol 1e-8 \
        --compare-tensors exp_avg
    compare "$1 exp_avg_sq" --load "$WORK/$1" --compare-to "$WORK/one" --rtol 1e-6 --atol 1e-12 \
        --compare-tensors exp_avg_sq
}
layouts_agree dp2
layouts_agree t2p2d2

# --- a resharded load saved at once equals its source bitwise -------------
# reshard NAME SRC NP TP PP [ARGS...]: load SRC's iteration 3 at TPxPPx(NP/TP/PP) and save it.
reshard() {
    local name=$1 src=$2 np=$3 tp=$4 pp=$5
    shift 5
    GPT3D_TEST_SAVE_AFTER_LOAD=1 train "$name" "$np" "$tp" "$pp" --load "$WORK/$src" \
        --save "$WORK/$name" "$@" || return 1
    grep -q "^test hook: saving the loaded state" "$WORK/$name.log" \
        || { cat "$WORK/$name.log" >&2; fail "$name: the save-after-load hook did not run"; return 1; }
}
reshard_case() { # reshard_case NAME SRC NP TP PP
    reshard "$@" || return
    compare "$1: immediate save after loading $2" --load "$WORK/$1" --compare-to "$WORK/$2" \
        && layout_line "$1" "$1: immediate save after loading $2" "$4" "$5" $(($3 / $4 / $5))
}
reshard_case to_one_from_t2p2d2 t2p2d2 1 1 1
reshard_case to_one_from_tp4 tp4 1 1 1
reshard_case to_t2p2d2_from_one one 8 2 2
reshard_case to_p2d2_from_tp4 tp4 4 1 2
reshard_case to_tp2_from_dp2 dp2 2 2 1

# --- --no-load-optim and --finetune, on the state they save -------------
# The source's weights bitwise; its training state deliberately not.
if reshard noopt one 2 1 1 --no-load-optim; then
    compare "--no-load-optim: weights" --load "$WORK/noopt" --compare-to "$WORK/one" \
        --compare-tensors weight --ignore-training-state
    "$EXPECT" "$WORK/noopt" 3 3 12 0 zero > "$WORK/noopt.expect" 2>&1 \
        || { cat "$WORK/noopt.expect" >&2; fail "--no-load-optim: the saved state (want iteration 3, 12 samples, step 0, zero moments)"; }
fi
if reshard finetune t2p2d2 1 1 1 --finetune --train-iters 1; then
    compare "--finetune: weights" --load "$WORK/finetune" --iteration 0 --compare-to "$WORK/t2p2d2" \
        --compare-tensors weight --ignore-training-state
    "$EXPECT" "$WORK/finetune" 0 0 0 0 zero > "$WORK/finetune.expect" 2>&1 \
        || { cat "$WORK/finetune.expect" >&2; fail "--finetune: the saved state (want iteration 0, 0 samples, step 0, zero moments)"; }
    "$EXPECT" "$WORK/finetune" 1 1 4 1 nonzero > "$WORK/finetune1.expect" 2>&1 \
        || { cat "$WORK/finetune1.expect" >&2; fail "--finetune: iteration 1 (want 4 samples, step 1, moments)"; }
fi

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_checkpoint_state: ok"
