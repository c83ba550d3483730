#!/usr/bin/env bash
# CPU training-step throughput for the reference config (6 layers,
# hidden 384, 6 heads, seq 256, micro-batch 4) with GPT-2's vocabulary and
# with the byte vocabulary, using all cores for OpenBLAS.
# Usage: bash bench/cpu_train_step.sh [build-dir]
set -euo pipefail
BUILD=${1:-build}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)}
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
for vocab in 50257 257; do
    "$BUILD/bench_train_step" --device cpu --num-layers 6 --hidden-size 384 --num-attention-heads 6 \
        --seq-length 256 --micro-batch-size 4 --vocab-size "$vocab" --iters 5 --warmup 1
done
