#!/usr/bin/env bash
# The test-set evaluation after training, as Megatron's pretrain() with a
# test split: one block "validation loss at iteration N on test set" after
# the last validation block, its loss in the metrics file (test_loss, last
# record only) and differing from the validation loss; the same test loss
# (1e-6) at TP2, PP2 and DP2; --skip-train on the saved checkpoint prints
# the same validation and test blocks without training or saving, at 1 rank
# and at TP2; --test-data-path with per-split paths (the data it names is
# the data tested); no test block for --split 90,10,0 (a note) or per-split
# paths without --test-data-path; wrong uses of --test-data-path and
# --skip-train.
# Usage: test_test_split_e2e.sh PRETRAIN PREPROCESS MPIEXEC
set -u
PRETRAIN=$1
PREPROCESS=$2
MPIEXEC=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "split"
DATA="$WORK/c_text_document.h5"

ARGS=(--num-layers 2 --hidden-size 16 --num-attention-heads 2 --seq-length 16
      --micro-batch-size 2 --global-batch-size 4 --train-iters 4 --lr 1e-3
      --tokenizer-type ByteTokenizer --eval-iters 2 --eval-interval 2 --device cpu --log-interval 1)
SPLIT=(--data-path "$DATA" --split 80,10,10)
TEST_RE='^ validation loss at iteration 4 on test set \| lm loss value: ([0-9]\.[0-9]{6}E[+-][0-9]{2}) \| lm loss PPL: ([0-9]\.[0-9]{6}E[+-][0-9]{2}) \| $'

# block LOG WHERE: the value of the one block "iteration 4 WHERE" in LOG.
block() {
    local n
    n=$(grep -c -- " validation loss at iteration 4 $2 |" "$1")
    [ "$n" -eq 1 ] || { fail "$1: $n blocks 'iteration 4 $2', want 1"; return; }
    grep -- " validation loss at iteration 4 $2 |" "$1" | sed -E 's/.*lm loss value: ([^ ]+) .*/\1/'
}

timeout 120 "$PRETRAIN" "${ARGS[@]}" "${SPLIT[@]}" --save "$WORK/ckpt" --metrics-file "$WORK/ref.jsonl" \
    > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "1-rank run"; }
line=$(grep -- ' on test set |' "$WORK/ref.log")
if [[ $line =~ $TEST_RE ]]; then
    value=${BASH_REMATCH[1]} ppl=${BASH_REMATCH[2]}
else
    fail "the test block is not Megatron's: '$line'"
fi
rule=$(grep -B1 -- ' on test set |' "$WORK/ref.log" | head -1)
[ "${#rule}" -eq $(( ${#line} + 1 )) ] && [ -z "${rule//-/}" ] || fail "the test block's rule is not ${#line} + 1 dashes"
valid_at=$(grep -n -- ' on validation set |' "$WORK/ref.log" | cut -d: -f1)
test_at=$(grep -n -- ' on test set |' "$WORK/ref.log" | cut -d: -f1)
[ -n "$valid_at" ] && [ -n "$test_at" ] && [ "$test_at" -gt "$valid_at" ] || fail "the test block does not follow the last validation block"
grep -q '^      test (--data-path): ' "$WORK/ref.log" || fail "the start-up summary does not describe the test split"
python3 - "$WORK/ref.jsonl" "${value:-nan}" "${ppl:-nan}" <<'PY' || fail "the metrics file's test_loss (above)"
import json, math, sys
records = [json.loads(l) for l in open(sys.argv[1])]
with_test = [r["iteration"] for r in records if "test_loss" in r]
assert with_test == [4], f"test_loss in iterations {with_test}, want [4]"
last = records[-1]
assert "%.6E" % last["test_loss"] == sys.argv[2], f"metrics test_loss {last['test_loss']} vs the log's {sys.argv[2]}"
ppl = "%.6E" % math.exp(min(20.0, last["test_loss"]))
assert ppl == sys.argv[3], f"the log's test PPL {sys.argv[3]}, want exp(test_loss) = {ppl}"
assert math.isfinite(last["test_loss"]) and abs(last["test_loss"] - last["valid_loss"]) > 1e-4, \
    f"test loss {last['test_loss']} is the validation loss {last['valid_loss']}"
PY

# The same test loss at every layout.
for layout in "2 1" "1 2" "1 1"; do
    read -r tp pp <<< "$layout"
    name="tp${tp}_pp${pp}_dp$((2 / tp / pp))"
    timeout 120 "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" "${SPLIT[@]}" \
        --tensor-model-parallel-size "$tp" --pipeline-model-parallel-size "$pp" \
        --metrics-file "$WORK/$name.jsonl" > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name run"; continue; }
    compare "$name" "$WORK/ref.jsonl" "$WORK/$name.jsonl" || fail "$name differs from 1 rank"
    [ "$(grep -c -- ' on test set |' "$WORK/$name.log")" -eq 1 ] || fail "$name: not one test block"
done

# --skip-train evaluates the checkpoint: the training run's final blocks, nothing trained or saved.
ls "$WORK/ckpt" > "$WORK/ckpt.before"
want_valid=$(block "$WORK/ref.log" "on validation set")
for np in 1 2; do
    extra=()
    [ "$np" -eq 2 ] && extra=(--tensor-model-parallel-size 2)
    timeout 120 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" "${SPLIT[@]}" "${extra[@]}" \
        --load "$WORK/ckpt" --skip-train > "$WORK/skip$np.log" 2>&1 || { cat "$WORK/skip$np.log"; fail "--skip-train at $np rank(s)"; continue; }
    grep -q "skipping training (--skip-train is on) ..." "$WORK/skip$np.log" || fail "--skip-train: no 'skipping training' line"
    grep -q "iteration *[0-9]*/" "$WORK/skip$np.log" && fail "--skip-train at $np rank(s) trained"
    [ "$(block "$WORK/skip$np.log" "on validation set")" = "$want_valid" ] || fail "--skip-train at $np rank(s): another validation loss"
    [ "$(block "$WORK/skip$np.log" "on test set")" = "${value:-none}" ] || fail "--skip-train at $np rank(s): another test loss"
done
ls "$WORK/ckpt" | diff - "$WORK/ckpt.before" > /dev/null || fail "--skip-train wrote into the checkpoint directory"

# No test split: --split without a test share, per-split paths without --test-data-path.
timeout 120 "$PRETRAIN" "${ARGS[@]}" --data-path "$DATA" --split 90,10,0 > "$WORK/no_test.log" 2>&1 || fail "--split 90,10,0 run"
grep -q ' on test set' "$WORK/no_test.log" && fail "--split 90,10,0 evaluated a test set"
grep -q '^note: no test split to evaluate after training (the test split (--split 90,10,0)' "$WORK/no_test.log" ||
    fail "--split 90,10,0: no note about the missing test split"
timeout 120 "$PRETRAIN" "${ARGS[@]}" --train-data-path "$DATA" --valid-data-path "$DATA" > "$WORK/per_split.log" 2>&1 ||
    fail "per-split run without --test-data-path"
grep -q 'test split\| on test set' "$WORK/per_split.log" && fail "per-split paths without --test-data-path: a test split appeared"

# --test-data-path is the data tested: another corpus there changes the test
# loss and nothing else.
mkdir -p "$WORK/other"
for i in $(seq 1 6); do seq 1 200 | sed "s/^/number $i is /" > "$WORK/other/o$i.txt"; done
"$PREPROCESS" --input "$WORK"/other/o*.txt --output-prefix "$WORK/other/o" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || fail "preprocess_data other"
for test in same other; do
    path=$DATA
    [ $test = other ] && path="$WORK/other/o_text_document.h5"
    timeout 120 "$PRETRAIN" "${ARGS[@]}" --train-data-path "$DATA" --valid-data-path "$DATA" --test-data-path "$path" \
        > "$WORK/test_$test.log" 2>&1 || { cat "$WORK/test_$test.log"; fail "--test-data-path $test run"; }
done
[ "$(block "$WORK/test_same.log" "on validation set")" = "$(block "$WORK/test_other.log" "on validation set")" ] ||
    fail "--test-data-path changed the validation loss"
[ "$(block "$WORK/test_same.log" "on test set")" != "$(block "$WORK/test_other.log" "on test set")" ] ||
    fail "another --test-data-path corpus gives the same test loss"
grep -q '^      test (--test-data-path): .*o_text_document.h5' "$WORK/test_other.log" ||
    fail "the start-up summary does not name the --test-data-path shard"

bad() {
    local name=$1 regex=$2
    shift 2
    timeout 120 "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1
    [ $? -ne 0 ] || fail "$name: exit status 0"
    one_error "$name" "$WORK/$name.log" "$regex"
    grep -q "iteration *[0-9]*/" "$WORK/$name.log" && fail "$name: it trained"
    echo "  $name: $(grep '^error:' "$WORK/$name.log" | cut -c1-150)"
}
printf 'tiny\n' > "$WORK/tiny.txt"
"$PREPROCESS" --input "$WORK/tiny.txt" --output-prefix "$WORK/tiny" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || fail "preprocess_data tiny"
bad with_data_path "--data-path and --train-data-path/--valid-data-path/--test-data-path exclude each other" \
    "${SPLIT[@]}" --test-data-path "$DATA"
bad with_mock "--mock-data replaces the data.*--test-data-path" --mock-data --test-data-path "$DATA"
bad missing "--test-data-path.*nothing_here" --train-data-path "$DATA" --valid-data-path "$DATA" \
    --test-data-path "$WORK/nothing_here"
bad short "--test-data-path has 1 documents and 6 tokens, fewer than one sample.*test split" \
    --train-data-path "$DATA" --valid-data-path "$DATA" --test-data-path "$WORK/tiny_text_document.h5"
bad no_eval_iters "--test-data-path is evaluated on --eval-iters batches, and --eval-iters is 0" \
    --train-data-path "$DATA" --test-data-path "$DATA" --eval-iters 0
bad skip_no_eval "--skip-train only evaluates, and --eval-iters 0" "${SPLIT[@]}" --skip-train --eval-iters 0
finish test_test_split_e2e
