#!/usr/bin/env bash
# Data-parallel communication and its overlap (issue 15):
# - DP 4 on CPU ranks (one thread each): mean iteration time without overlap
#   and with --overlap-grad-reduce --overlap-param-gather, and from the
#   schedule trace the communication time left exposed (waited for after
#   the last backward, and by forwards waiting for parameters);
# - bytes per rank per iteration for DP, PP and TP at TP 2 x PP 2 x DP 2,
#   the formulas next to pretrain_gpt's own counters ("communication per
#   iteration", rank 0: first stage, TP rank 0).
# Usage: bash bench/dp_overlap.sh [build-dir]
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
SCRATCH=$(mktemp -d /tmp/gpt3d_overlap_bench.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; load average $(cut -d' ' -f1-3 /proc/loadavg)"

"$BUILD/bench_make_tokens" "$SCRATCH/tokens.h5" 50257 200 2048 > /dev/null
L=8 C=256 T=128 B=1 V=50304
MODEL=(--num-layers $L --hidden-size $C --num-attention-heads 8 --seq-length $T
       --max-position-embeddings $T --micro-batch-size $B --lr 1e-4 --tokenizer-type GPT2BPETokenizer
       --data-path "$SCRATCH/tokens.h5" --split 100,0,0 --eval-iters 0 --device cpu --log-interval 1)

mean_ms() { # mean iteration_ms of iterations 3.. of a metrics file
    awk 'NR > 2 { if (match($0, /"iteration_ms": [0-9.]+/)) { s += substr($0, RSTART + 16, RLENGTH - 16); n++ } }
         END { printf "%.1f", n ? s / n : -1 }' "$1"
}
mean_of() { # mean of the values of trace lines KEY, iterations 3..
    awk -v key="$2" '/^iteration / { it = $2 } it > 2 && $1 == key { s += $2; n++ } END { printf "%.1f", n ? 1000 * s / n : 0 }' "$1"
}

echo "## DP 4, $L layers, hidden $C, seq $T, global batch 16 (4 micro-batches per rank), 12 iterations"
for mode in off on; do
    extra=()
    [ $mode = on ] && extra=(--overlap-grad-reduce --overlap-param-gather --ddp-bucket-size 1000000)
    mpirun --oversubscribe -np 4 "$BUILD/pretrain_gpt" "${MODEL[@]}" --global-batch-size 16 --train-iters 12 \
        "${extra[@]}" --metrics-file "$SCRATCH/m_$mode.jsonl" --trace-schedule "$SCRATCH/t_$mode" \
        > "$SCRATCH/log_$mode" 2>&1 || { cat "$SCRATCH/log_$mode"; exit 1; }
    echo "overlap $mode: $(grep -m1 '^gradient buckets' "$SCRATCH/log_$mode" | sed 's/; overlap.*//'):" \
         "step $(mean_ms "$SCRATCH/m_$mode.jsonl") ms; exposed reduce-scatter" \
         "$(mean_of "$SCRATCH/t_$mode.rank0" grad_reduce_exposed) ms, exposed all-gather" \
         "$(mean_of "$SCRATCH/t_$mode.rank0" param_gather_exposed) ms (rank 0)"
done

echo "## bytes per rank per iteration at TP 2 x PP 2 x DP 2, fp32 (global batch 8: M = 4 micro-batches)"
mpirun --oversubscribe -np 8 "$BUILD/pretrain_gpt" "${MODEL[@]}" --global-batch-size 8 --train-iters 1 \
    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 > "$SCRATCH/log3d" 2>&1 \
    || { cat "$SCRATCH/log3d"; exit 1; }
grep '^communication per iteration' "$SCRATCH/log3d"
numel=$(grep -m1 '^gradient buckets' "$SCRATCH/log3d" | sed -E 's/.*elements: ([0-9]+)\).*/\1/')
awk -v L=$L -v C=$C -v T=$T -v B=$B -v V=$V -v M=4 -v n="$numel" 'BEGIN {
    MiB = 1048576; N = B * T; act = N * C * 4
    printf "formula DP: reduce-scatter = flat buffer x 4 B = %d x 4 = %.3f MiB; all-gather = shard x 4 B = %.3f MiB\n", n, n * 4 / MiB, n * 2 / MiB
    printf "formula PP (first stage): M sends of activations + M receives of their gradients, N x C x 4 B each = %.3f MiB each way\n", M * act / MiB
    # Without sequence parallelism: per micro-batch and local layer two
    # all-reduces of [N, C] in forward (row-parallel outputs) and two in
    # backward (column-parallel input gradients); the first stage adds the
    # vocab-parallel embedding lookup.
    printf "formula embedding (first and last stage): the tied word embedding gradient, V_pad x C / TP x 4 B = %.3f MiB\n", V * C / 2 * 4 / MiB
    printf "formula TP (first stage, %d local layers): M x (4 x %d + 1) all-reduces of N x C x 4 B = %.3f MiB\n", L / 2, L / 2, M * (4 * L / 2 + 1) * act / MiB
}'
