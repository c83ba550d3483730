#!/usr/bin/env bash
# Megatron's implementation switches (fusions, attention backend, data
# loader workers, garbage collection, per-token loss, profiler steps, ...):
# a run that gives all of them trains exactly as one that gives none; their
# values are still checked against Megatron's choices (--no-position-embedding
# only beside RoPE, as Megatron); expert parallelism without the ranks for it
# is refused naming them, context parallelism
# without the ranks for it names them (test_context_parallel_e2e runs it); the new
# flags' bad values (FP8, decoupled learning rate, batch steps, profiler
# steps) stop with one error. The log line and the validation block are
# Megatron's training_log / evaluate_and_print_results, field for field
# (each line re-printed here from its values with Megatron's format
# specifiers must come out identical), and --log-params-norm equals the norm
# of the saved weights. A process that torchrun or Slurm announce as one of
# several but that MPI sees alone stops with the mpirun and srun command
# lines.
# Usage: test_megatron_flags.sh PRETRAIN PREPROCESS MPIEXEC
set -u
PRETRAIN=$1
PREPROCESS=$2
MPIEXEC=$3
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "flags"

ARGS=(--num-layers 2 --hidden-size 16 --num-attention-heads 2 --seq-length 16
      --micro-batch-size 2 --global-batch-size 4 --train-iters 3 --lr 1e-3
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 3 --device cpu --log-interval 1)
SWITCHES=(--use-mcore-models --transformer-impl local --use-flash-attn --attention-backend flash
          --no-masked-softmax-fusion --no-bias-gelu-fusion --no-bias-swiglu-fusion
          --no-bias-dropout-fusion --no-rope-fusion --no-gradient-accumulation-fusion
          --no-gradient-reduce-div-fusion --cross-entropy-loss-fusion --no-persist-layer-norm
          --num-workers 8 --no-mmap-bin-files --no-create-attention-mask-in-dataloader
          --manual-gc --manual-gc-interval 100 --empty-unused-memory-level 1
          --distributed-backend nccl --context-parallel-size 1 --expert-model-parallel-size 1
          --calculate-per-token-loss --profile --profile-step-start 1 --profile-step-end 2)

"$PRETRAIN" "${ARGS[@]}" --metrics-file "$WORK/plain.jsonl" > "$WORK/plain.log" 2>&1 || { cat "$WORK/plain.log"; fail "plain run"; }
"$PRETRAIN" "${ARGS[@]}" "${SWITCHES[@]}" --metrics-file "$WORK/switches.jsonl" > "$WORK/switches.log" 2>&1 \
    || { cat "$WORK/switches.log"; fail "run with Megatron's switches"; }
compare "Megatron's switches" "$WORK/plain.jsonl" "$WORK/switches.jsonl" --rtol 0 || fail "the switches changed the run"
"$PRETRAIN" --help | grep -A1 -- "--no-masked-softmax-fusion" | grep -q "PyTorch kernel fusion" \
    || fail "--help does not say why --no-masked-softmax-fusion has no effect"

bad() {
    local name=$1 regex=$2
    shift 2
    "$PRETRAIN" "${ARGS[@]}" "$@" > "$WORK/$name.log" 2>&1
    [ $? -ne 0 ] || fail "$name: exit status 0"
    one_error "$name" "$WORK/$name.log" "$regex"
    echo "  $name: $(grep '^error:' "$WORK/$name.log")"
}
bad attention_backend "--attention-backend cudnn: Megatron's choices are flash, fused, unfused, local, auto" --attention-backend cudnn
bad transformer_impl "--transformer-impl te: Megatron's choices are local, transformer_engine" --transformer-impl te
bad distributed_backend "--distributed-backend mpi: Megatron's choices are nccl, gloo" --distributed-backend mpi
bad workers "--num-workers must be >= 0" --num-workers -1
bad memory_level "--empty-unused-memory-level must be 0, 1 or 2" --empty-unused-memory-level 3
bad context "--tensor-model-parallel-size 1 x --context-parallel-size 2 x --pipeline-model-parallel-size 1 needs 2 ranks, but the job has only 1" --context-parallel-size 2
bad experts "--expert-model-parallel-size 4 must divide the 1 data-parallel x context-parallel ranks" --expert-model-parallel-size 4
bad no_position_embedding "--no-position-embedding is deprecated .* --position-embedding-type none" --no-position-embedding
bad profile "--profile-step-start 5 and --profile-step-end 4 must satisfy 0 <= start <= end" --profile --profile-step-start 5 --profile-step-end 4
bad fp8_format "--fp8-format e5m2: Megatron's choices are e4m3, hybrid" --fp8-format e5m2
bad fp8_algo "--fp8-amax-compute-algo mean: Megatron's choices are most_recent, max" --fp8-format hybrid --fp8-amax-compute-algo mean
bad fp8_history "--fp8-amax-history-len must be >= 1" --fp8-format hybrid --fp8-amax-history-len 0
bad decoupled_floor_alone "--decoupled-min-lr 0.0001 needs --decoupled-lr" --decoupled-min-lr 1e-4
bad decoupled_negative "--decoupled-lr must be a finite number >= 0" --decoupled-lr -1
bad decoupled_floor "floor 0.01 \(--decoupled-min-lr, else --min-lr\) must be between 0 and --decoupled-lr 0.001" --decoupled-lr 1e-3 --decoupled-min-lr 1e-2
bad steps_and_gbs "--step-batch-size-schedule and --global-batch-size exclude each other" --step-batch-size-schedule 0:4
# The step schedule's own checks, without --global-batch-size (micro 2 x DP 1, seq 16).
ARGS_WITH_GBS=("${ARGS[@]}")
ARGS=()
for ((i = 0; i < ${#ARGS_WITH_GBS[@]}; i++)); do
    if [ "${ARGS_WITH_GBS[i]}" = --global-batch-size ]; then i=$((i + 1)); else ARGS+=("${ARGS_WITH_GBS[i]}"); fi
done
bad steps_word "--step-batch-size-schedule: '1K' is not THRESHOLD:BATCH" --step-batch-size-schedule 0:4 1K
bad steps_zero_batch "--step-batch-size-schedule: '16:0' is not THRESHOLD:BATCH" --step-batch-size-schedule 0:4 16:0
bad steps_start "the first step must start at 0 \(its earliest starts at 2 samples\)" --step-batch-size-schedule 32:4
bad steps_same "two steps start at sample 0 \(thresholds are tokens, divided by --seq-length 16\)" --step-batch-size-schedule 0:4 8:8
bad steps_multiple "batch 3 is not a multiple of --micro-batch-size 2 x data-parallel size 1 = 2" --step-batch-size-schedule 0:4 32:3
ARGS=("${ARGS_WITH_GBS[@]}")
"$PRETRAIN" --help | grep -A5 -- "--calculate-per-token-loss" | tr -s " \n" " " | grep -q "the two are the same" \
    || fail "--help does not say when --calculate-per-token-loss changes nothing"

# Megatron's log, re-printed from its own values with Megatron's format
# specifiers ({:8d}, {:12d}, {:.1f}, {:.6E}, {:5d}, {:.3f}, {:3d}).
"$PRETRAIN" "${ARGS[@]}" --log-throughput --log-params-norm --log-num-zeros-in-grad --save "$WORK/log_ckpt" \
    --log-interval 1 > "$WORK/log.log" 2>&1 || { cat "$WORK/log.log"; fail "run with the log flags"; }
lines=0
while IFS= read -r line; do
    re='^ \[([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6})\] iteration +([0-9]+)/ +([0-9]+) \| consumed samples: +([0-9]+) \| elapsed time per iteration \(ms\): ([0-9.]+) \| throughput per GPU \(TFLOP/s/GPU\): ([0-9.]+) \| learning rate: ([0-9.E+-]+) \| global batch size: +([0-9]+) \| lm loss: ([0-9.E+-]+) \| loss scale: ([0-9.]+) \| grad norm: ([0-9.]+) \| num zeros: ([0-9]+) \| params norm: ([0-9.]+) \| number of skipped iterations: +([0-9]+) \| number of nan iterations: +([0-9]+) \|$'
    if ! [[ $line =~ $re ]]; then fail "log line not in Megatron's form: $line"; continue; fi
    m=("${BASH_REMATCH[@]}")
    want=$(printf ' [%s] iteration %8d/%8d | consumed samples: %12d | elapsed time per iteration (ms): %.1f | throughput per GPU (TFLOP/s/GPU): %.1f | learning rate: %.6E | global batch size: %5d | lm loss: %.6E | loss scale: %.1f | grad norm: %.3f | num zeros: %d | params norm: %.3f | number of skipped iterations: %3d | number of nan iterations: %3d |' \
        "${m[1]}" "${m[2]}" "${m[3]}" "${m[4]}" "${m[5]}" "${m[6]}" "${m[7]}" "${m[8]}" "${m[9]}" "${m[10]}" "${m[11]}" "${m[12]}" "${m[13]}" "${m[14]}" "${m[15]}")
    [ "$line" = "$want" ] || fail "log line widths differ from Megatron's:
  ours:     $line
  Megatron: $want"
    lines=$((lines + 1))
    last_norm=${m[13]}
done < <(grep '^ \[' "$WORK/log.log")
[ "$lines" -eq 3 ] || fail "$lines log lines, want 3"
val=$(grep -A1 -- '^-*$' "$WORK/log.log" | grep ' validation loss at iteration 3 on validation set' | head -1)
[[ $val =~ ^\ validation\ loss\ at\ iteration\ 3\ on\ validation\ set\ \|\ lm\ loss\ value:\ [0-9]\.[0-9]{6}E[+-][0-9]{2}\ \|\ lm\ loss\ PPL:\ [0-9]\.[0-9]{6}E[+-][0-9]{2}\ \|\ $ ]] \
    || fail "final validation line not in Megatron's form: '$val'"
rule=$(grep -B1 -- ' validation loss at iteration 3 on' "$WORK/log.log" | head -1)
[ "${#rule}" -eq $(( ${#val} + 1 )) ] && [ -z "${rule//-/}" ] || fail "the validation rule is not a line of ${#val} + 1 dashes"
"$(dirname "$PRETRAIN")/checkpoint_info" --load "$WORK/log_ckpt" --norms > "$WORK/norms.txt" 2>&1 || fail "checkpoint_info --norms"
saved=$(awk '/^  (embedding|decoder|output)/ { s += $(NF - 2) * $(NF - 2) } END { printf "%.3f", sqrt(s) }' "$WORK/norms.txt")
[ "$saved" = "$last_norm" ] || fail "--log-params-norm says $last_norm, the saved weights' norm is $saved"

# Launchers: torchrun's and Slurm's process counts without MPI ranks.
launcher() {
    local name=$1
    shift
    env -u OMPI_COMM_WORLD_SIZE "$@" "$PRETRAIN" "${ARGS[@]}" > "$WORK/$name.log" 2>&1
    [ $? -eq 2 ] || fail "$name: exit status not 2"
    one_error "$name" "$WORK/$name.log" "srun --mpi=pmix -n ([0-9]+) pretrain_gpt"
    grep -q "iteration " "$WORK/$name.log" && fail "$name: it trained"
    echo "  $name: $(grep '^error:' "$WORK/$name.log" | cut -c1-110)..."
}
launcher torchrun WORLD_SIZE=4 RANK=0 LOCAL_RANK=0
launcher slurm SLURM_NTASKS=8 SLURM_PROCID=0
grep -q "WORLD_SIZE=4 (set by torchrun).*mpirun -np 4" "$WORK/torchrun.log" || fail "torchrun: the message lacks the mpirun line"
SLURM_NTASKS=8 "$MPIEXEC" -np 1 "$PRETRAIN" "${ARGS[@]}" > "$WORK/np1.log" 2>&1 \
    || { cat "$WORK/np1.log"; fail "mpirun -np 1 inside a Slurm allocation was refused"; }

if [ $failures -ne 0 ]; then
    echo "test_megatron_flags: $failures failure(s)"
    exit 1
fi
echo "test_megatron_flags: ok"
