#!/usr/bin/env bash
# End-to-end tests of pretrain_gpt on one rank: learning on repetitive data,
# bitwise resume, the NaN guard, and every bad-input case (one clear message,
# non-zero exit, nothing written). Usage: test_pretrain_cli.sh PRETRAIN PREPROCESS [MPIEXEC]
# (with MPIEXEC, also the bad-input cases that need two ranks)
set -u
PRETRAIN=$1
PREPROCESS=$2
MPIEXEC=${3:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# A repetitive corpus: a few sentences in a loop, 40 documents.
for i in $(seq 1 40); do
    for j in $(seq 1 30); do
        echo "the quick brown fox jumps over the lazy dog number $((j % 7)). "
    done > "$WORK/doc_$i.txt"
done
"$PREPROCESS" --input "$WORK"/doc_*.txt --output-prefix "$WORK/rep" --tokenizer-type ByteTokenizer \
    --append-eod > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data"; exit 1; }
SHARD="$WORK/rep_text_document.h5"
[ -f "$SHARD" ] || { fail "no shard $SHARD"; exit 1; }

MODEL=(--num-layers 2 --hidden-size 32 --num-attention-heads 2 --seq-length 32
       --micro-batch-size 4 --global-batch-size 8 --tokenizer-type ByteTokenizer
       --data-path "$SHARD" --split 90,10,0 --device cpu --log-interval 10)

field() { # field NAME LINE -> value of "NAME": in a metrics JSON line
    sed -E "s/.*\"$1\": ([^,}]*).*/\1/" <<<"$2"
}

# --- learning: the loss falls well below its start -----------------------
"$PRETRAIN" "${MODEL[@]}" --train-iters 150 --lr 3e-3 --lr-warmup-iters 10 --eval-iters 2 \
    --eval-interval 50 --metrics-file "$WORK/learn.jsonl" > "$WORK/learn.log" 2>&1 \
    || { cat "$WORK/learn.log"; fail "training run failed"; }
if [ -f "$WORK/learn.jsonl" ]; then
    first=$(field lm_loss "$(head -n 1 "$WORK/learn.jsonl")")
    last=$(field lm_loss "$(tail -n 1 "$WORK/learn.jsonl")")
    lines=$(wc -l < "$WORK/learn.jsonl")
    [ "$lines" -eq 150 ] || fail "metrics file has $lines lines, want 150"
    awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < 0.35 * f) }' \
        || fail "loss did not fall enough: first $first last $last"
    grep -q '"valid_loss"' "$WORK/learn.jsonl" || fail "no valid_loss in metrics"
    grep -q "validation loss at iteration 150" "$WORK/learn.log" || fail "no final validation"
    grep -q "iteration       10/     150 | consumed samples:           80" "$WORK/learn.log" \
        || fail "Megatron-style log line missing"
    echo "learning: lm loss $first -> $last"
else
    fail "no metrics file"
fi

# --- bitwise resume ------------------------------------------------------
RUN=("${MODEL[@]}" --train-iters 20 --lr 1e-3 --lr-decay-style cosine --lr-warmup-iters 3 --eval-iters 0)
"$PRETRAIN" "${RUN[@]}" --metrics-file "$WORK/full.jsonl" > "$WORK/full.log" 2>&1 || fail "full run"
"$PRETRAIN" "${RUN[@]}" --save "$WORK/ckpt" --exit-interval 10 --metrics-file "$WORK/part.jsonl" \
    > "$WORK/part1.log" 2>&1 || fail "first half"
[ "$(cat "$WORK/ckpt/latest_checkpointed_iteration.txt" 2>/dev/null)" = "10" ] || fail "latest != 10"
"$PRETRAIN" "${RUN[@]}" --save "$WORK/ckpt" --load "$WORK/ckpt" --metrics-file "$WORK/part.jsonl" \
    > "$WORK/part2.log" 2>&1 || { cat "$WORK/part2.log"; fail "resumed half"; }
strip() { sed -E 's/, "iteration_ms".*//' "$1"; } # timings differ; losses, norms, lr must not
if ! diff <(strip "$WORK/full.jsonl") <(strip "$WORK/part.jsonl") > "$WORK/resume.diff"; then
    cat "$WORK/resume.diff" >&2
    fail "resumed run differs from the uninterrupted run"
fi
[ "$(wc -l < "$WORK/part.jsonl")" -eq 20 ] || fail "resumed metrics do not hold 20 iterations"
[ "$(cat "$WORK/ckpt/latest_checkpointed_iteration.txt")" = "20" ] || fail "final save missing"

# --finetune starts at iteration 0 from the weights; --no-load-optim keeps the iteration.
"$PRETRAIN" "${RUN[@]}" --train-iters 2 --lr-decay-iters 20 --load "$WORK/ckpt" --finetune \
    --metrics-file "$WORK/ft.jsonl" > "$WORK/ft.log" 2>&1 || fail "finetune run"
[ "$(field iteration "$(head -n 1 "$WORK/ft.jsonl")")" = "1" ] || fail "finetune did not restart at 0"
"$PRETRAIN" "${RUN[@]}" --train-iters 22 --load "$WORK/ckpt" --no-load-optim \
    --metrics-file "$WORK/nlo.jsonl" > "$WORK/nlo.log" 2>&1 || fail "no-load-optim run"
[ "$(field iteration "$(head -n 1 "$WORK/nlo.jsonl")")" = "21" ] || fail "no-load-optim lost the iteration"

# --- blends and the index cache --------------------------------------------
"$PREPROCESS" --input "$WORK"/doc_1*.txt --output-prefix "$WORK/rep2" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || fail "second shard"
BLEND=(--num-layers 2 --hidden-size 32 --num-attention-heads 2 --seq-length 32 --micro-batch-size 4
       --global-batch-size 8 --tokenizer-type ByteTokenizer --device cpu --train-iters 3 --lr 1e-3
       --eval-iters 1 --eval-interval 3 --split 90,10,0
       --data-path 0.7 "$SHARD" 0.3 "$WORK/rep2_text_document.h5" --data-cache-path "$WORK/cache")
"$PRETRAIN" "${BLEND[@]}" --metrics-file "$WORK/b1.jsonl" > "$WORK/b1.log" 2>&1 || { cat "$WORK/b1.log"; fail "blend run"; }
grep -q "0.7" "$WORK/b1.log" || fail "the start-up summary does not describe the blend"
[ -n "$(ls -A "$WORK/cache" 2>/dev/null)" ] || fail "--data-cache-path stayed empty"
"$PRETRAIN" "${BLEND[@]}" --metrics-file "$WORK/b2.jsonl" > /dev/null 2>&1 || fail "blend run from the cache"
cmp -s <(sed -E 's/, "iteration_ms".*//' "$WORK/b1.jsonl") <(sed -E 's/, "iteration_ms".*//' "$WORK/b2.jsonl") \
    || fail "the cached indices changed the run"
"$PRETRAIN" "${MODEL[@]}" --train-iters 2 --lr 1e-3 --eval-iters 0 --data-path 1 \
    > /dev/null 2> "$WORK/w.err" && fail "a weight without a path was accepted"
grep -q "data-path" "$WORK/w.err" || fail "weight error does not name --data-path"

# --- NaN guard -----------------------------------------------------------
"$PRETRAIN" "${MODEL[@]}" --train-iters 30 --lr 1e30 --clip-grad 0 --eval-iters 0 \
    > "$WORK/nan.log" 2>&1
rc=$?
[ $rc -ne 0 ] || fail "NaN run exited 0"
grep -Eq "error: iteration [0-9]+: .*(NaN|infinite)" "$WORK/nan.log" || { cat "$WORK/nan.log"; fail "NaN message"; }

# --- bad input: one clear message, non-zero exit, nothing written --------
LAUNCH=() # a launcher for the cases that need several ranks
expect_fail() { # expect_fail NAME REGEX ARGS...
    local name=$1 regex=$2
    shift 2
    rm -rf "$WORK/out"
    "${LAUNCH[@]}" "$PRETRAIN" "$@" --save "$WORK/out/ckpt" --metrics-file "$WORK/out.jsonl" \
        > "$WORK/bad.out" 2> "$WORK/bad.err"
    local rc=$?
    if [ $rc -eq 0 ]; then fail "$name: exit status 0"; return; fi
    if ! grep -Eq -- "$regex" "$WORK/bad.err"; then
        fail "$name: stderr lacks /$regex/:"; cat "$WORK/bad.err" >&2
    fi
    [ "$(grep -c '^error:' "$WORK/bad.err")" -eq 1 ] || fail "$name: not exactly one error line"
    [ ! -e "$WORK/out" ] || fail "$name: created the --save directory"
    [ ! -e "$WORK/out.jsonl" ] || fail "$name: created the metrics file"
    rm -f "$WORK/out.jsonl"
}
BASE=("${MODEL[@]}" --train-iters 2 --lr 1e-3 --eval-iters 0)
expect_fail unknown-flag "unknown flag --num-layer \(did you mean --num-layers\?\)" "${BASE[@]}" --num-layer 3
expect_fail missing-required "missing required flag --lr" "${MODEL[@]}" --train-iters 2
expect_fail bad-integer "--hidden-size expects an integer, got 'big'" "${BASE[@]}" --hidden-size big
expect_fail batch-sizes "--global-batch-size 10 is not a positive multiple of --micro-batch-size 4" \
    "${BASE[@]}" --global-batch-size 10
expect_fail heads "--hidden-size 32 is not divisible by --num-attention-heads 3" "${BASE[@]}" --num-attention-heads 3
expect_fail seq-over-max "--seq-length 32 exceeds --max-position-embeddings 16" "${BASE[@]}" --max-position-embeddings 16
expect_fail missing-shard "--data-path .*nope.h5: no such file" "${BASE[@]}" --data-path "$WORK/nope.h5"
echo "not hdf5" > "$WORK/bad.h5"
expect_fail malformed-shard "bad.h5" "${BASE[@]}" --data-path "$WORK/bad.h5"
expect_fail tokenizer-mismatch "GPT2BPETokenizer|ByteTokenizer" "${MODEL[@]}" --train-iters 2 --lr 1e-3 \
    --eval-iters 0 --tokenizer-type GPT2BPETokenizer
expect_fail bad-split "--split" "${BASE[@]}" --split 1,x,2
expect_fail bad-device "--device" "${BASE[@]}" --device tpu
expect_fail recompute-contradiction "--recompute-activations is Megatron's selective recomputation" \
    "${BASE[@]}" --recompute-activations --recompute-granularity full
expect_fail recompute-granularity "--recompute-granularity some: use full or selective" \
    "${BASE[@]}" --recompute-granularity some
expect_fail recompute-no-method "--recompute-granularity full needs --recompute-method uniform or block" \
    "${BASE[@]}" --recompute-granularity full --recompute-num-layers 1
expect_fail recompute-layers "--recompute-num-layers between 1 and the layers of a pipeline stage" \
    "${BASE[@]}" --recompute-granularity full --recompute-method block --recompute-num-layers 99
expect_fail recompute-selective-method "it takes no --recompute-method" \
    "${BASE[@]}" --recompute-granularity selective --recompute-method uniform
expect_fail recompute-method-alone "need --recompute-granularity full" "${BASE[@]}" --recompute-method uniform
expect_fail data-and-train-path "--data-path and --train-data-path/--valid-data-path/--test-data-path exclude each other" \
    "${BASE[@]}" --train-data-path "$SHARD"
expect_fail comm-nccl-on-cpu "--comm nccl needs --device cuda .*use --comm mpi" "${BASE[@]}" \
    --device cpu --comm nccl
expect_fail comm-bogus "--comm bogus: unknown communication; use auto, nccl or mpi" "${BASE[@]}" \
    --comm bogus
expect_fail fp16-on-cuda "--fp16 on --device cuda is not built yet" "${BASE[@]}" --device cuda --fp16
expect_fail trace-unwritable "--trace-schedule .*cannot create" "${BASE[@]}" --trace-schedule "$WORK/no/such/dir/t"
expect_fail exit-duration "--exit-duration-in-mins must be >= 0" "${BASE[@]}" --exit-duration-in-mins -1
expect_fail cache-unwritable "data-cache-path" "${BASE[@]}" --data-cache-path "$SHARD/sub"
expect_fail finetune-without-load "--finetune needs --load" "${BASE[@]}" --finetune
expect_fail lr-infinite "--lr expects a finite number, got 'inf'" "${MODEL[@]}" --train-iters 2 --lr inf
expect_fail min-lr-nan "--min-lr expects a finite number, got 'nan'" "${BASE[@]}" --min-lr nan
expect_fail init-std-infinite "--init-method-std expects a finite number" "${BASE[@]}" --init-method-std -inf
# Sizes that cannot fit are refused from the plan, before anything is allocated
# (and within the test's time: building them would stall for minutes).
expect_fail absurd-layers "parameters \(--num-layers 100000000,.* GiB of host memory is free" \
    "${BASE[@]}" --num-layers 100000000
expect_fail memory-plan "memory plan needs .* activations .* --micro-batch-size 100000 .* is free; lower" \
    "${MODEL[@]}" --train-iters 2 --lr 1e-3 --eval-iters 0 --micro-batch-size 100000 \
    --global-batch-size 100000
# A checkpoint of another model shape is refused and left untouched.
before=$(cd "$WORK/ckpt" && find . -type f -exec sha1sum {} + | sort)
expect_fail other-shape "saved with --num-layers 2 but this run has 4" \
    "${BASE[@]}" --num-layers 4 --load "$WORK/ckpt"
after=$(cd "$WORK/ckpt" && find . -type f -exec sha1sum {} + | sort)
[ "$before" = "$after" ] || fail "the refused checkpoint was modified"

# Two ranks on a node with fewer than two GPUs: NCCL needs one GPU per rank,
# so --device cuda without --comm mpi is refused by name.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ -n "$MPIEXEC" ] && [ "${gpus:-0}" -lt 2 ]; then
    LAUNCH=(timeout 120 "$MPIEXEC" --oversubscribe -np 2)
    expect_fail ranks-over-gpus "--comm auto \(nccl for --device cuda\): this node runs 2 ranks but has (no GPU|1 GPU),.*--comm mpi" \
        "${BASE[@]}" --device cuda
    expect_fail ranks-over-gpus-nccl "--comm nccl: this node runs 2 ranks .*--comm mpi" \
        "${BASE[@]}" --device cuda --comm nccl
    LAUNCH=()
fi

# --- --help comes from the flag table -------------------------------------
"$PRETRAIN" --help > "$WORK/help.txt" 2>&1 || fail "--help exited non-zero"
for flag in --tensor-model-parallel-size --pipeline-model-parallel-size --data-path --save-interval \
            --metrics-file --no-load-optim --finetune --lr-decay-style --comm; do
    grep -q -- "$flag" "$WORK/help.txt" || fail "--help lacks $flag"
done

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_pretrain_cli: ok"
