#!/usr/bin/env bash
# Uneven pipeline splits end to end, each against one rank on the same seed
# and data (every iteration's lm loss and grad norm and the validation
# losses, compare in e2e_common.sh): 6 layers on PP 3 as 1 | 4 | 1 and on
# PP 4 as 1 | 2 | 2 | 1, on PP 2 with only the last stage sized (2 | 4);
# 5 layers on PP 3 with the embedding (1 | 2 | 2) or the loss (2 | 2 | 1)
# counted as a layer; 1 layer on PP 3 with both counted (0 | 1 | 0: the end
# stages hold no transformer layer). The start-up line names each stage's
# layers. A checkpoint saved at 1 | 4 | 1 resumes at one rank and at an even
# PP 2 and continues the one-rank run. Bad splits and bad interleaving
# flags stop with one error naming the flags.
# Usage: test_pipeline_uneven_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "uneven stages balance"

ARGS=(--hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 32
      --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10)

for layers in 6 5 1; do
    "$PRETRAIN" "${ARGS[@]}" --num-layers "$layers" --metrics-file "$WORK/ref$layers.jsonl" \
        > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "one-rank run of $layers layers"; exit 1; }
done

# uneven NAME LAYERS PP EXPECTED_SPLIT FLAGS...: a run against the one-rank
# reference of LAYERS layers; its start-up line must show EXPECTED_SPLIT.
uneven() {
    local name=$1 layers=$2 pp=$3 split=$4 out="$WORK/run"
    shift 4
    rm -f "$out.jsonl"
    if ! mpi_ranks "$pp" --num-layers "$layers" --pipeline-model-parallel-size "$pp" "$@" \
            --metrics-file "$out.jsonl" > "$out.log" 2>&1; then
        cat "$out.log"; fail "$name run"; return
    fi
    grep -qF "pipeline layers: $split" "$out.log" \
        || { grep "pipeline layers" "$out.log"; fail "$name: split is not '$split'"; }
    compare "$name" "$WORK/ref$layers.jsonl" "$out.jsonl" || fail "$name differs from one rank"
    grep -q "tied word-embedding copies on the first and last stage: bitwise identical" "$out.log" \
        || fail "$name: tied embeddings not confirmed identical"
}

uneven "6 layers 1|4|1" 6 3 "stage 0 [0, 1), stage 1 [1, 5), stage 2 [5, 6)" \
    --decoder-first-pipeline-num-layers 1 --decoder-last-pipeline-num-layers 1
uneven "6 layers 1|2|2|1" 6 4 "stage 0 [0, 1), stage 1 [1, 3), stage 2 [3, 5), stage 3 [5, 6)" \
    --decoder-first-pipeline-num-layers 1 --decoder-last-pipeline-num-layers 1
uneven "6 layers 2|4 (last given)" 6 2 "stage 0 [0, 2), stage 1 [2, 6)" \
    --decoder-last-pipeline-num-layers 4
uneven "5 layers, embedding counted" 5 3 "stage 0 [0, 1), stage 1 [1, 3), stage 2 [3, 5)" \
    --account-for-embedding-in-pipeline-split
uneven "5 layers, loss counted" 5 3 "stage 0 [0, 2), stage 1 [2, 4), stage 2 [4, 5)" \
    --account-for-loss-in-pipeline-split
uneven "1 layer, embedding and loss counted" 1 3 "stage 0 [0, 0), stage 1 [0, 1), stage 2 [1, 1)" \
    --account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split

# A checkpoint of the 1 | 4 | 1 split, resumed at one rank and at PP 2 (3 | 3).
mpi_ranks 3 --num-layers 6 --pipeline-model-parallel-size 3 --decoder-first-pipeline-num-layers 1 \
    --decoder-last-pipeline-num-layers 1 --exit-interval 10 --save "$WORK/ck" \
    --metrics-file "$WORK/first.jsonl" > "$WORK/save.log" 2>&1 || { cat "$WORK/save.log"; fail "uneven save"; }
cp "$WORK/first.jsonl" "$WORK/one.jsonl"
"$PRETRAIN" "${ARGS[@]}" --num-layers 6 --load "$WORK/ck" --metrics-file "$WORK/one.jsonl" \
    > "$WORK/one.log" 2>&1 || { cat "$WORK/one.log"; fail "resume at one rank"; }
compare "1|4|1 -> one rank resume" "$WORK/ref6.jsonl" "$WORK/one.jsonl" || fail "uneven -> one rank resume differs"
cp "$WORK/first.jsonl" "$WORK/pp2.jsonl"
mpi_ranks 2 --num-layers 6 --pipeline-model-parallel-size 2 --load "$WORK/ck" \
    --metrics-file "$WORK/pp2.jsonl" > "$WORK/pp2.log" 2>&1 || { cat "$WORK/pp2.log"; fail "resume at PP 2"; }
compare "1|4|1 -> PP 2 resume" "$WORK/ref6.jsonl" "$WORK/pp2.jsonl" || fail "uneven -> PP 2 resume differs"

# Bad splits: one error naming the flags, non-zero exit.
refuse() { # refuse NAME NP REGEX FLAGS...
    local name=$1 np=$2 regex=$3
    shift 3
    mpi_ranks "$np" --num-layers 6 --pipeline-model-parallel-size "$np" "$@" > "$WORK/bad.log" 2>&1 \
        && { fail "$name accepted"; return; }
    one_error "$name" "$WORK/bad.log" "$regex"
}
refuse "first + last over the layers" 3 "--decoder-first-pipeline-num-layers 4 and --decoder-last-pipeline-num-layers 3 must add up to less than --num-layers 6" \
    --decoder-first-pipeline-num-layers 4 --decoder-last-pipeline-num-layers 3
refuse "middle not even" 4 "the 3 layers left by --decoder-first-pipeline-num-layers 2 and --decoder-last-pipeline-num-layers 1 do not split evenly over the other 2" \
    --decoder-first-pipeline-num-layers 2 --decoder-last-pipeline-num-layers 1
refuse "first of 0" 2 "--decoder-first-pipeline-num-layers must be larger than 0" \
    --decoder-first-pipeline-num-layers 0
refuse "uneven with the embedding counted" 3 "exclude --account-for-embedding-in-pipeline-split" \
    --decoder-first-pipeline-num-layers 2 --account-for-embedding-in-pipeline-split
refuse "embedding counted, not dividing" 2 "--num-layers 6 plus the embedding \(--account-for-embedding-in-pipeline-split\) = 7 is not divisible by --pipeline-model-parallel-size 2" \
    --account-for-embedding-in-pipeline-split

# The interleaving flags: Megatron's constraints (the runs themselves:
# test_pipeline_interleaved_e2e).
refuse "interleaving, micro-batches not a multiple of PP" 2 "needs the micro-batches per iteration to be a multiple of --pipeline-model-parallel-size 2, but --global-batch-size 6 / \(--micro-batch-size 2 x data-parallel 1\) = 3" \
    --num-virtual-stages-per-pipeline-rank 3 --global-batch-size 6
refuse "interleaving, chunks not dividing the layers" 2 "the 3 layers per pipeline rank \(--num-layers 6 over 2 stages\) are not divisible by the 2 virtual stages" \
    --num-virtual-stages-per-pipeline-rank 2
refuse "interleaving, layers per chunk not dividing" 2 "--num-layers-per-virtual-pipeline-stage 2: --num-layers 6 over --pipeline-model-parallel-size 2 does not give a whole number" \
    --num-layers-per-virtual-pipeline-stage 2
refuse "both interleaving flags" 2 "exclude each other" \
    --num-layers-per-virtual-pipeline-stage 1 --num-virtual-stages-per-pipeline-rank 3
refuse "interleaving, first stage not dividing" 3 "--decoder-first-pipeline-num-layers 1 is not divisible by the 2 virtual stages" \
    --num-virtual-stages-per-pipeline-rank 2 --decoder-first-pipeline-num-layers 1 --global-batch-size 12

finish test_pipeline_uneven_e2e
