#!/usr/bin/env bash
# Pipeline bubble at P = 4 for M = 4, 8, 16 micro-batches: the idle fraction
# of each stage measured from --trace-schedule timestamps (1 - time in
# forward/backward over the schedule's span, averaged over iterations 2..N),
# against the analytic (P - 1) / (M + P - 1).
# Usage: bash bench/pipeline_bubble.sh [build-dir]
set -euo pipefail
BUILD=${1:-build}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
for i in $(seq 1 40); do
    for j in $(seq 1 40); do echo "bubble $i $j $(( i * j % 23 ))"; done > "$WORK/d$i.txt"
done
"$BUILD/preprocess_data" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1
printf "%-4s %-10s %-10s %-10s %-10s %-10s\n" M stage0 stage1 stage2 stage3 analytic
for M in 4 8 16; do
    mpirun --oversubscribe -np 4 "$BUILD/pretrain_gpt" --num-layers 8 --hidden-size 128 \
        --num-attention-heads 4 --seq-length 64 --micro-batch-size 2 --global-batch-size $((2 * M)) \
        --train-iters 4 --lr 1e-3 --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" \
        --split 95,5,0 --eval-iters 0 --device cpu --log-interval 100 \
        --pipeline-model-parallel-size 4 --trace-schedule "$WORK/t$M" > "$WORK/log$M" 2>&1
    row="$M"
    for s in 0 1 2 3; do
        idle=$(awk '
            /^iteration/ { if (it > 1) { tot += (end - begin); busy += work } it++; begin = -1; work = 0; next }
            /^(FORWARD|BACKWARD) / { work += $4 - $3 }
            NF >= 4 && $1 != "peak_live_microbatches" { t0 = $(NF-1); t1 = $NF; if (begin < 0) begin = t0; end = t1 }
            END { if (it > 1) { tot += (end - begin); busy += work } printf "%.3f", 1 - busy / tot }
        ' "$WORK/t$M.rank$s")
        row="$row $idle"
    done
    analytic=$(awk -v m=$M 'BEGIN { printf "%.3f", 3 / (m + 3) }')
    printf "%-4s %-10s %-10s %-10s %-10s %-10s\n" $row "$analytic"
done
