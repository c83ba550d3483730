#!/usr/bin/env bash
# Interleaved 1F1B end to end, each against one rank on the same seed and
# data (every iteration's lm loss and grad norm and the validation losses,
# compare in e2e_common.sh): PP 2 x V 2, PP 4 x V 2, TP 2 x PP 2 x V 2,
# DP 2 x PP 2 x V 2, PP 2 x V 2 with document masking, PP 3 x V 2 with
# uneven first and last stages (2 | 2 | 2 layers, one per
# chunk); the tied word-embedding copies (first rank's chunk 0, last rank's
# chunk V-1) stay bitwise identical; the traced order of PP 2 x V 2 is
# Megatron's; a checkpoint saved at PP 2 x V 2 resumes at one rank and one
# saved at one rank resumes at PP 2 x V 2 (the canonical layout); the
# overlapped gradient reduce and parameter gather start buckets during the
# last micro-batch's backward and match one rank too.
# Usage: test_pipeline_interleaved_e2e.sh MPIEXEC PRETRAIN PREPROCESS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "virtual stages interleave"

ARGS=(--hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 32
      --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10)

reference() { # reference NAME FLAGS...: the one-rank run into $WORK/NAME.jsonl
    local name=$1
    shift
    "$PRETRAIN" "${ARGS[@]}" "$@" --metrics-file "$WORK/$name.jsonl" > "$WORK/ref.log" 2>&1 \
        || { cat "$WORK/ref.log"; fail "one-rank run $name"; exit 1; }
}
reference ref4 --num-layers 4
reference ref8 --num-layers 8
reference ref6 --num-layers 6 --global-batch-size 12
# Short documents (several in a 32-token sample) for document masking.
for i in $(seq 1 300); do
    printf '{"text": "%s"}\n' "$(head -c $(( (i * 37) % 30 + 3 )) <<< "doc $i holds $(( i * i )) words")"
done > "$WORK/short.jsonl"
"$PREPROCESS" --input "$WORK/short.jsonl" --output-prefix "$WORK/s" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || { fail "preprocess_data (short documents)"; exit 1; }
DOCS=(--eod-mask-loss --reset-position-ids --reset-attention-mask --data-path "$WORK/s_text_document.h5")
reference ref4docs --num-layers 4 "${DOCS[@]}"
reference ref4short --num-layers 4 --data-path "$WORK/s_text_document.h5"
[ "$(head -1 "$WORK/ref4docs.jsonl" | cut -d, -f4)" != "$(head -1 "$WORK/ref4short.jsonl" | cut -d, -f4)" ] \
    || fail "document masking does not change the first loss: the masked case would test nothing"

# interleaved NAME REFERENCE NP FLAGS...
interleaved() {
    local name=$1 reference=$2 np=$3 out="$WORK/run"
    shift 3
    rm -f "$out.jsonl" "$out".trace.*
    if ! mpi_ranks "$np" "$@" --trace-schedule "$out.trace" --metrics-file "$out.jsonl" \
            > "$out.log" 2>&1; then
        cat "$out.log"; fail "$name run"; return
    fi
    compare "$name" "$WORK/$reference.jsonl" "$out.jsonl" || fail "$name differs from one rank"
    grep -q "tied word-embedding copies on the first and last stage: bitwise identical" "$out.log" \
        || fail "$name: tied embeddings not confirmed identical"
}

interleaved "PP 2 x V 2" ref4 2 --num-layers 4 --pipeline-model-parallel-size 2 \
    --num-virtual-stages-per-pipeline-rank 2
grep -qF "pipeline layers: stage 0 [0, 1) [2, 3), stage 1 [1, 2) [3, 4) (interleaved" "$WORK/run.log" \
    || { grep "pipeline layers" "$WORK/run.log"; fail "PP 2 x V 2: chunks not as Megatron places them"; }
# Megatron's order for P 2, V 2, 4 micro-batches: rank 0 warms up 2 + 2
# forwards (micro-batches 0 1 of chunk 0, then of chunk 1), rank 1 two.
order() { awk '/^iteration 2/{exit} /^(FORWARD|BACKWARD)/{printf "%s%s/c%s ", substr($1,1,1), $2, $4}' "$1"; }
got=$(order "$WORK/run.trace.rank0")
[ "$got" = "F0/c0 F1/c0 F0/c1 F1/c1 F2/c0 B0/c1 F3/c0 B1/c1 F2/c1 B0/c0 F3/c1 B1/c0 B2/c1 B3/c1 B2/c0 B3/c0 " ] \
    || fail "PP 2 x V 2 rank 0 order: $got"
got=$(order "$WORK/run.trace.rank1")
[ "$got" = "F0/c0 F1/c0 F0/c1 B0/c1 F1/c1 B1/c1 F2/c0 B0/c0 F3/c0 B1/c0 F2/c1 B2/c1 F3/c1 B3/c1 B2/c0 B3/c0 " ] \
    || fail "PP 2 x V 2 rank 1 order: $got"

interleaved "PP 4 x V 2" ref8 4 --num-layers 8 --pipeline-model-parallel-size 4 \
    --num-layers-per-virtual-pipeline-stage 1
interleaved "TP 2 x PP 2 x V 2" ref8 4 --num-layers 8 --pipeline-model-parallel-size 2 \
    --tensor-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2
interleaved "DP 2 x PP 2 x V 2" ref4 4 --num-layers 4 --pipeline-model-parallel-size 2 \
    --num-virtual-stages-per-pipeline-rank 2
# Every chunk reads the documents for its attention and positions.
interleaved "PP 2 x V 2 with document masking" ref4docs 2 --num-layers 4 "${DOCS[@]}" \
    --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2
interleaved "PP 3 x V 2, first 2 and last 2" ref6 3 --num-layers 6 --global-batch-size 12 \
    --pipeline-model-parallel-size 3 --num-virtual-stages-per-pipeline-rank 2 \
    --decoder-first-pipeline-num-layers 2 --decoder-last-pipeline-num-layers 2

# Checkpoints in the canonical layout: PP 2 x V 2 -> one rank, one rank -> PP 2 x V 2.
mpi_ranks 2 --num-layers 4 --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2 \
    --exit-interval 10 --save "$WORK/ckv" --metrics-file "$WORK/v.jsonl" > "$WORK/save.log" 2>&1 \
    || { cat "$WORK/save.log"; fail "PP 2 x V 2 save"; }
"$PRETRAIN" "${ARGS[@]}" --num-layers 4 --load "$WORK/ckv" --metrics-file "$WORK/v.jsonl" \
    > "$WORK/resume.log" 2>&1 || { cat "$WORK/resume.log"; fail "resume at one rank"; }
compare "PP 2 x V 2 -> one rank resume" "$WORK/ref4.jsonl" "$WORK/v.jsonl" || fail "V 2 -> one rank resume differs"
"$PRETRAIN" "${ARGS[@]}" --num-layers 4 --exit-interval 10 --save "$WORK/ck1" \
    --metrics-file "$WORK/one.jsonl" > "$WORK/save1.log" 2>&1 || { cat "$WORK/save1.log"; fail "one-rank save"; }
mpi_ranks 2 --num-layers 4 --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2 \
    --load "$WORK/ck1" --metrics-file "$WORK/one.jsonl" > "$WORK/resume2.log" 2>&1 \
    || { cat "$WORK/resume2.log"; fail "resume at PP 2 x V 2"; }
compare "one rank -> PP 2 x V 2 resume" "$WORK/ref4.jsonl" "$WORK/one.jsonl" || fail "one rank -> V 2 resume differs"

# Overlapped gradient reduce and parameter gather with small buckets: the
# chunks' ranges lie last chunk first, so the last micro-batch's backward
# (last chunk to first) finalises buckets as it goes. In the last iteration
# of rank 0 a reduce-scatter starts before its last backward ends.
interleaved "DP 2 x PP 2 x V 2, overlapped" ref4 4 --num-layers 4 --pipeline-model-parallel-size 2 \
    --num-virtual-stages-per-pipeline-rank 2 --overlap-grad-reduce --overlap-param-gather \
    --ddp-bucket-size 2000
awk '/^iteration 20$/ { on = 1 } on && /^grad_reduce_start/ && !first { first = NR }
     on && /^BACKWARD / { last = NR }
     END { exit !(first && first < last) }' "$WORK/run.trace.rank0" \
    || fail "interleaved with overlap: no reduce-scatter started before the last backward ended"
grep -q "overlap: grad reduce on, param gather on" "$WORK/run.log" || fail "overlap flags not on"

finish test_pipeline_interleaved_e2e
