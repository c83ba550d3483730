#!/usr/bin/env bash
# Pipeline bubble at P = 4 for M = 4, 8, 16 micro-batches, 1F1B and
# interleaved 1F1B with V = 2 chunks per rank: the idle fraction of each
# stage measured from --trace-schedule timestamps (1 - time in
# forward/backward over the schedule's span, averaged over iterations 2..N),
# against the analytic figure in the same normalisation, bubble over
# bubble + ideal: (P - 1) / (V M + P - 1) (V = 1 for 1F1B), which is
# Megatron's t_bubble / t_ideal = (P - 1) / (V M) turned into a share of
# the span. A stage's own span sees only part of that bubble: the last
# stage idles while the first input crosses the P - 1 stages before it and
# ends with its last backward, before the gradient has crossed them back;
# with a backward twice a forward and free messages (the unit model of
# tests/test_pipeline_interleaved.c) its figure is (P - 1) / (3 V M + P - 1),
# the last column.
# Usage: bash bench/pipeline_bubble.sh [build-dir]
set -euo pipefail
BUILD=${1:-build}
P=4
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
for i in $(seq 1 40); do
    for j in $(seq 1 40); do echo "bubble $i $j $(( i * j % 23 ))"; done > "$WORK/d$i.txt"
done
"$BUILD/preprocess_data" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1

# One stage's trace -> its idle fraction over iterations 2..N. Both trace
# formats end every timed line with start and end; an interleaved compute
# line also names its chunk, an exchange line has nothing but its times.
idle_fraction() {
    awk '
        /^iteration/ { if (it > 1) { tot += (end - begin); busy += work } it++; begin = -1; work = 0; next }
        /^(FORWARD|BACKWARD) / { work += $NF - $(NF-1) }
        NF >= 3 && $1 != "peak_live_microbatches" { t0 = $(NF-1); t1 = $NF; if (begin < 0) begin = t0; end = t1 }
        END { if (it > 1) { tot += (end - begin); busy += work } printf "%.3f", 1 - busy / tot }
    ' "$1"
}

# One table: V chunks per rank (1: plain 1F1B), extra flags after V.
table() {
    local V=$1
    shift
    echo "V = $V"
    printf "%-4s %-10s %-10s %-10s %-10s %-10s %-10s\n" M stage0 stage1 stage2 stage3 analytic last-model
    for M in 4 8 16; do
        local trace="$WORK/v${V}m$M"
        mpirun --oversubscribe -np $P "$BUILD/pretrain_gpt" --num-layers 8 --hidden-size 128 \
            --num-attention-heads 4 --seq-length 64 --micro-batch-size 2 --global-batch-size $((2 * M)) \
            --train-iters 4 --lr 1e-3 --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" \
            --split 95,5,0 --eval-iters 0 --device cpu --log-interval 100 \
            --pipeline-model-parallel-size $P --trace-schedule "$trace" "$@" > "$trace.log" 2>&1 ||
            { cat "$trace.log" >&2; exit 1; }
        local row="$M"
        for s in $(seq 0 $((P - 1))); do row="$row $(idle_fraction "$trace.rank$s")"; done
        local analytic last
        analytic=$(awk -v p=$P -v v=$V -v m=$M 'BEGIN { printf "%.3f", (p - 1) / (v * m + p - 1) }')
        last=$(awk -v p=$P -v v=$V -v m=$M 'BEGIN { printf "%.3f", (p - 1) / (3 * v * m + p - 1) }')
        printf "%-4s %-10s %-10s %-10s %-10s %-10s %-10s\n" $row "$analytic" "$last"
    done
}

table 1
table 2 --num-virtual-stages-per-pipeline-rank 2
