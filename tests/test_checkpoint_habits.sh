#!/usr/bin/env bash
# Megatron's checkpoint habits: --ckpt-step loads an older checkpoint and
# continues its trajectory; --no-save-optim writes weights only (resumed with
# --no-load-optim); a tracker saying "release" loads DIR/release as weights
# to start from (iteration 0, as Megatron does for converted checkpoints),
# in pretrain_gpt and in export_hf; --no-load-rng is accepted;
# --ckpt-format other than gpt3d's own is refused pointing at import_hf.
# Usage: test_checkpoint_habits.sh PRETRAIN PREPROCESS EXPORT_HF
set -u
PRETRAIN=$1
PREPROCESS=$2
EXPORT_HF=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "habits"

ARGS=(--num-layers 2 --hidden-size 16 --num-attention-heads 2 --seq-length 16
      --micro-batch-size 2 --global-batch-size 4 --lr 1e-3 --hidden-dropout 0 --attention-dropout 0
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 0 --device cpu --log-interval 1)
run() { local name=$1; shift; "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name"; }; }
bad() {
    local name=$1 regex=$2
    shift 2
    "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1
    [ $? -ne 0 ] || fail "$name: exit status 0"
    one_error "$name" "$WORK/$name.log" "$regex"
    echo "  $name: $(grep '^error:' "$WORK/$name.log")"
}

run full --train-iters 4 --save "$WORK/a" --save-interval 2 --metrics-file "$WORK/full.jsonl"

# --ckpt-step 2: iterations 3 and 4 again, exactly.
run step2 --train-iters 4 --load "$WORK/a" --ckpt-step 2 --save "$WORK/b" --metrics-file "$WORK/step2.jsonl"
grep -q "^  successfully loaded checkpoint from .* at iteration 2 (.*iter_0000002," "$WORK/step2.log" || fail "--ckpt-step 2 did not load iteration 2"
tail -n 2 "$WORK/full.jsonl" > "$WORK/full.tail.jsonl"
compare "--ckpt-step 2" "$WORK/full.tail.jsonl" "$WORK/step2.jsonl" --rtol 0 || fail "--ckpt-step 2 left the trajectory"
bad step_missing "--ckpt-step 3: the checkpoint of that iteration in --load .* does not load" --train-iters 4 --load "$WORK/a" --ckpt-step 3
bad step_no_load "--ckpt-step 2 needs --load DIR" --train-iters 4 --ckpt-step 2

# --no-save-optim: weights only.
run weights_only --train-iters 2 --save "$WORK/w" --no-save-optim
grep -Eq '"has_optimizer_state":[[:space:]]*false' "$WORK/w/iter_0000002/metadata.json" || fail "--no-save-optim saved optimizer state"
full_bytes=$(du -sb "$WORK/a/iter_0000002" | cut -f1); weights_bytes=$(du -sb "$WORK/w/iter_0000002" | cut -f1)
[ "$weights_bytes" -lt $((full_bytes / 2)) ] || fail "--no-save-optim: $weights_bytes bytes against $full_bytes with optimizer state"
bad needs_no_load_optim "holds no optimizer state; add --no-load-optim or --finetune" --train-iters 3 --load "$WORK/w"
run resume_weights --train-iters 3 --load "$WORK/w" --no-load-optim --no-load-rng --metrics-file "$WORK/rw.jsonl"
[ "$(first_iteration "$WORK/rw.jsonl")" = 3 ] || fail "--no-load-optim resume did not continue at iteration 3"

# A release checkpoint: weights to start from.
mkdir -p "$WORK/r" && cp -r "$WORK/a/iter_0000004" "$WORK/r/release" && echo release > "$WORK/r/latest_checkpointed_iteration.txt"
run release --train-iters 2 --load "$WORK/r" --metrics-file "$WORK/release.jsonl"
grep -q "a release checkpoint: weights only, training from iteration 0" "$WORK/release.log" || fail "the release checkpoint was not reported"
grep -qx " loading release checkpoint from $WORK/r" "$WORK/release.log" || fail "no Megatron 'loading release checkpoint from' line"
grep -q "^  successfully loaded checkpoint from $WORK/r \[ t 1/1, p 1/1 \] at iteration 0 ($WORK/r/release," "$WORK/release.log" \
    || fail "no Megatron 'successfully loaded checkpoint' line for the release checkpoint"
[ "$(first_iteration "$WORK/release.jsonl")" = 1 ] || fail "a release checkpoint did not start at iteration 1"
run finetune4 --train-iters 2 --load "$WORK/a" --finetune --metrics-file "$WORK/finetune4.jsonl"
compare "release = --finetune of the same weights" "$WORK/finetune4.jsonl" "$WORK/release.jsonl" --rtol 0 \
    || fail "the release checkpoint trains differently from --finetune on the same weights"
"$EXPORT_HF" --load "$WORK/r" --out "$WORK/r_hf" > "$WORK/export.log" 2>&1 || { cat "$WORK/export.log"; fail "export_hf of a release checkpoint"; }
"$EXPORT_HF" --load "$WORK/a" --out "$WORK/a_hf" > "$WORK/export_a.log" 2>&1 || fail "export_hf of iteration 4"
cmp -s "$WORK/r_hf/model.safetensors" "$WORK/a_hf/model.safetensors" || fail "export_hf of the release copy differs"
rm -rf "$WORK/r/release"
bad release_missing "says release, but '.*/r/release' is not a directory" --train-iters 2 --load "$WORK/r"

bad format "--ckpt-format torch_dist: gpt3d reads and writes only its own format.*tools/import_hf" --train-iters 2 --ckpt-format torch_dist
run format_own --train-iters 1 --ckpt-format gpt3d

if [ $failures -ne 0 ]; then
    echo "test_checkpoint_habits: $failures failure(s)"
    exit 1
fi
echo "test_checkpoint_habits: ok"
