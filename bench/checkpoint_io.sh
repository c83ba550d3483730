#!/usr/bin/env bash
# Checkpoint I/O and start-up, next to the disk's own speed (issue 14):
# - dd: sequential write (conv=fsync) and read of a file the size of the
#   GPT-2 124M checkpoint, on the disk of the scratch directory; the read
#   after dropping the page cache when this user may, else warm (said so);
# - save and load throughput of the GPT-2 124M checkpoint (12 layers, 768
#   hidden, 12 heads, seq 1024, vocab 50257: 1.49 GB of fp32 weights and
#   Adam moments), from pretrain_gpt's own lines (the rank file's write with
#   its fsync; the load's reads);
# - time to the first iteration of GPT-2 124M on the CPU: pretrain_gpt's
#   line (from trainer set-up) and the wall time from launch;
# - training iterations per minute with and without --async-save, saving
#   every other iteration, on a smaller model (6 layers, 384 hidden, seq 128, GPT-2
#   vocabulary: 30 M parameters, a 360 MB checkpoint per save).
# Usage: bash bench/checkpoint_io.sh [build-dir] [scratch-parent-dir]
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
SCRATCH=$(mktemp -d "${2:-/tmp}/gpt3d_ckpt_bench.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
     "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}," \
     "OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# scratch: $SCRATCH on $(df -P "$SCRATCH" | awk 'NR == 2 {print $1}')"

"$BUILD/bench_make_tokens" "$SCRATCH/tokens.h5" 50257 200 2048
GPT2=(--num-layers 12 --hidden-size 768 --num-attention-heads 12 --seq-length 1024
      --max-position-embeddings 1024 --micro-batch-size 1 --lr 1e-4 --tokenizer-type GPT2BPETokenizer
      --data-path "$SCRATCH/tokens.h5" --split 100,0,0 --eval-iters 0 --device cpu --log-interval 1)
SMALL=(--num-layers 6 --hidden-size 384 --num-attention-heads 6 --seq-length 128
       --max-position-embeddings 128 --micro-batch-size 1 --lr 1e-4 --tokenizer-type GPT2BPETokenizer
       --data-path "$SCRATCH/tokens.h5" --split 100,0,0 --eval-iters 0 --device cpu --log-interval 1)

# stamped LOG ARGS...: runs pretrain_gpt, each output line prefixed by the
# seconds since launch.
stamped() {
    local log=$1 start
    shift
    start=$(date +%s.%N)
    "$BUILD/pretrain_gpt" "$@" 2>&1 | while IFS= read -r line; do
        printf '%.2f %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line"
    done > "$log"
}
at_line() { grep -m1 "$2" "$1" | cut -d' ' -f1; }
drop_caches() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; }

# dd_write LABEL BYTES: one sequential write of BYTES with fsync, as dd reports it.
dd_write() {
    echo "dd write ($1): $(dd if=/dev/zero of="$SCRATCH/dd.bin" bs=8M count=$(( ($2 + 8388607) / 8388608 )) conv=fsync 2>&1 | tail -1)"
    rm -f "$SCRATCH/dd.bin"
}
# On a VM the page cache's fresh pages can cost more than the disk: dd right
# before the save sees the memory state the save sees, dd after it the pages
# the exiting run just freed. Both are printed.
dd_write "before the save" 1494196856

# --- GPT-2 124M: start-up and save --------------------------------------------
stamped "$SCRATCH/save.log" "${GPT2[@]}" --train-iters 1 --save "$SCRATCH/ckpt"
FILE="$SCRATCH/ckpt/iter_0000001/rank_00000.h5"
BYTES=$(stat -c %s "$FILE")
echo "time to first iteration (GPT-2 124M, CPU): $(grep -m1 'time to first iteration' "$SCRATCH/save.log" | cut -d' ' -f6) s from trainer set-up, $(at_line "$SCRATCH/save.log" 'time to first iteration') s from launch"
echo "save (GPT-2 124M, $BYTES bytes): $(grep -m1 '^[0-9.]*   \[[^]]*\] successfully saved checkpoint' "$SCRATCH/save.log" | sed 's/.*(//; s/)$//')"

# --- dd on the same disk, the same size ---------------------------------------
dd_write "after the save" "$BYTES"
dd if=/dev/zero of="$SCRATCH/dd.bin" bs=8M count=$(( (BYTES + 8388607) / 8388608 )) conv=fsync 2> /dev/null
if drop_caches; then how="after dropping the page cache"; else how="warm (drop_caches not permitted)"; fi
echo "dd read ($how): $(dd if="$SCRATCH/dd.bin" of=/dev/null bs=8M 2>&1 | tail -1)"
rm -f "$SCRATCH/dd.bin"

# --- GPT-2 124M: load ------------------------------------------------------------
# --train-iters equal to the checkpoint's iteration: load, then nothing to train.
drop_caches || true
stamped "$SCRATCH/load.log" "${GPT2[@]}" --train-iters 1 --load "$SCRATCH/ckpt"
echo "load ($how): $(grep -m1 'checkpoint read' "$SCRATCH/load.log" | cut -d' ' -f2-)"
rm -rf "$SCRATCH/ckpt"

# --- iterations per minute, saving every other iteration ---------------------------
# With OpenBLAS on every core the background writer competes with training
# for CPU; with one core left free it can overlap. Both are measured.
ITERS=12
rate() { # rate LABEL LOG: iterations per minute from the first iteration to the exit
    local t0 t1
    t0=$(at_line "$2" 'time to first iteration')
    t1=$(tail -1 "$2" | cut -d' ' -f1)
    echo "$1: $ITERS iterations in $(echo "$t1 - $t0" | bc) s = $(echo "scale=1; 60 * $ITERS / ($t1 - $t0)" | bc) iterations/min"
}
for blas in "$OPENBLAS_NUM_THREADS" 1; do
    for mode in none sync async; do
        extra=()
        [ "$mode" != none ] && extra=(--save "$SCRATCH/$mode" --save-interval 2)
        [ "$mode" = async ] && extra+=(--async-save)
        OPENBLAS_NUM_THREADS=$blas stamped "$SCRATCH/$mode.log" "${SMALL[@]}" --train-iters "$ITERS" "${extra[@]}"
        rate "OPENBLAS_NUM_THREADS=$blas, $mode (saves every 2nd iteration unless none)" "$SCRATCH/$mode.log"
        rm -rf "${SCRATCH:?}/$mode"
    done
done
