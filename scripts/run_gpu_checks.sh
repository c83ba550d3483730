#!/usr/bin/env bash
# The GPU bring-up checks, run from a bundle made by scripts/gpu_bundle.sh
# (this file is copied there as DIR/run_gpu_checks.sh).
#
# Usage: DIR/run_gpu_checks.sh [--budget-s N] [--cpu-standin] [--only LIST]
#   --budget-s N     no new step starts after N seconds (default 360); every
#                    step runs under a timeout that ends within the budget
#   --cpu-standin    the rehearsal for a machine without a GPU: the CUDA tests
#                    run in their CPU stand-in mode, training and benchmark
#                    on --device cpu, so this script itself is exercised
#   --only LIST      comma-separated check groups: env,tests,train,memcheck,bench
#
# In order: environment (GPU, driver, CPU features, ldd of every bundled
# program: a library "not found" comes first), the Open MPI singleton start
# from the bundle's own libraries, every CUDA test (a skip, exit 77, is a
# failure on a GPU machine; a failure is rerun once with
# CUDA_LAUNCH_BLOCKING=1), pretrain_gpt --device cuda against --device cpu
# on the same data and seed (first-iteration loss within 1e-2 relative, a
# 50-iteration curve), TP2 x PP2 x DP2 and TP2 x CP2 on the one GPU with --comm mpi
# against one rank (when the machine has mpirun), the benchmark at GPT-2 124M
# and PyTorch (eager, torch.compile) on the same model, compute-sanitizer
# memcheck of the op and model tests, then larger benchmark shapes and an
# ncu table of kernel time by kernel while the budget lasts. Training and the first benchmark
# come before the sanitizer because they are worth more when time is short.
#
# Writes $OUT/gpu_report.txt (./gpu_report.txt without $OUT) and
# gpu_summary.jsonl beside it, one JSON object per check; exits 1 when any
# check failed. To add a check: write a function that ends in `record`, and
# call it from the list at the bottom.
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
BUDGET=360
STANDIN=0
ONLY="env,tests,train,memcheck,bench"
while [ $# -gt 0 ]; do
    case "$1" in
        --budget-s) BUDGET=$2; shift 2 ;;
        --cpu-standin) STANDIN=1; shift ;;
        --only) ONLY=$2; shift 2 ;;
        -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "run_gpu_checks.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$BUDGET" in '' | *[!0-9]*) echo "run_gpu_checks.sh: --budget-s needs whole seconds" >&2; exit 2 ;; esac

RESULTS=${OUT:-$PWD}
mkdir -p "$RESULTS"
REPORT="$RESULTS/gpu_report.txt"
SUMMARY="$RESULTS/gpu_summary.jsonl"
: > "$REPORT"
: > "$SUMMARY"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SECONDS=0
FAILED=0
CHECKS=()
BENCH_BASE_FAILED=0

# ---- reporting -------------------------------------------------------------
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }
note() { printf '%s\n' "$*" >> "$REPORT"; }
section() { say ""; say "=== $* (t=${SECONDS}s)"; }
json_str() { # a JSON string literal of $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=$(printf '%s' "$s" | tr '\000-\037' ' ')
    printf '"%s"' "$s"
}
# record NAME STATUS SECONDS DETAIL [RAW_JSON]: STATUS pass, fail, skip or info;
# only fail counts against the exit status.
record() {
    local name=$1 status=$2 secs=$3 detail=$4 extra=${5:-}
    [ "$status" = fail ] && FAILED=$((FAILED + 1))
    CHECKS+=("$(printf '%-5s %-34s %4ss  %s' "$status" "$name" "$secs" "$detail")")
    printf '{"check": %s, "status": %s, "seconds": %s, "detail": %s%s}\n' "$(json_str "$name")" \
        "$(json_str "$status")" "$secs" "$(json_str "$detail")" "${extra:+, \"result\": $extra}" \
        >> "$SUMMARY"
    say "--> $status $name: $detail"
}
left() { echo $((BUDGET - SECONDS)); }
# step_timeout WANT: WANT seconds, or what is left of the budget if less.
step_timeout() {
    local l
    l=$(left)
    [ "$l" -lt 1 ] && l=1
    [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
# budget_allows NAME NEED REQUIRED: false (and recorded) when fewer than NEED
# seconds are left; a required check that cannot run is a failure.
budget_allows() {
    [ "$(left)" -ge "$2" ] && return 0
    record "$1" "$([ "$3" = required ] && echo fail || echo skip)" 0 \
        "not started: $(left) s of the ${BUDGET} s budget left, it needs about $2 s"
    return 1
}
# run_logged LOG TIMEOUT CMD...: runs CMD with output in LOG, returns its status.
run_logged() {
    local log=$1 t=$2 rc=0
    shift 2
    note "\$ $*"
    timeout -k 10 "$t" "$@" > "$log" 2>&1 || rc=$?
    tail -n 120 "$log" >> "$REPORT"
    [ "$rc" -eq 124 ] && note "(timed out after ${t}s)"
    return "$rc"
}
run_quiet() { # run_logged, the output left out of the report
    local log=$1 t=$2 rc=0
    shift 2
    note "\$ $*"
    timeout -k 10 "$t" "$@" > "$log" 2>&1 || rc=$?
    return "$rc"
}
wants() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
# The first line of LOG that names a failure, for a summary.
why() { grep -m1 -iE 'fail|error|mismatch|differ|not found|cannot|skipped' "$1" | cut -c1-200 || true; }

# ---- environment the programs run in ----------------------------------------
# The libraries travel packed (gpu_bundle.sh) and are unpacked into scratch,
# never into the bundle, which must stay small enough to be sent again.
LIBROOT="$WORK/kit"
mkdir -p "$LIBROOT"
tar -C "$LIBROOT" -xzf "$KIT/libs.tar.gz"
# The bundle's libraries first; its C++ runtime only where the system has
# none (gpu_bundle.sh says why); hwloc's plugins (X11, OpenCL) never, so a
# run here and there loads the same files.
LD_PATH="$LIBROOT/lib"
if ! ldconfig -p 2>/dev/null | grep -q 'libstdc++\.so\.6 '; then LD_PATH="$LD_PATH:$LIBROOT/lib-base"; fi
export LD_LIBRARY_PATH="$LD_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$LIBROOT/openmpi"
export OPAL_SYSCONFDIR="$LIBROOT/openmpi/etc" # not the host's /etc/openmpi
OMPI_MCA_mca_base_component_path="$LIBROOT/$(cat "$LIBROOT/openmpi/component_dir")"
export OMPI_MCA_mca_base_component_path
export OMPI_MCA_ess_singleton_isolated=1 # one rank, no mpirun: no orted to start
export OMPI_MCA_btl=self,vader
export HWLOC_PLUGINS_PATH="$LIBROOT/lib/no-hwloc-plugins"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "$STANDIN" = 1 ]; then export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}; fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-4}
DEVICE=cuda
[ "$STANDIN" = 1 ] && DEVICE=cpu

# Bundled ELF files: the programs and the CUDA backend.
PROGRAMS=()
for f in "$KIT"/*; do
    if [ -f "$f" ] && [ "$(head -c 4 "$f" | tail -c 3)" = ELF ]; then PROGRAMS+=("$f"); fi
done

# The CUDA toolkit's libraries are not bundled: where the loader does not
# find one, look in the usual places (the toolkit, Python's nvidia-* wheels).
add_cuda_library_dirs() {
    [ -f "$KIT/libgpt3d_cuda.so" ] || return 0
    local missing lib dir
    missing=$(ldd "$KIT/libgpt3d_cuda.so" | awk '/not found/ {print $1}')
    for lib in $missing; do
        dir=$(timeout 30 find /usr/local/cuda /usr/local/cuda-* /usr/lib /opt /usr/local/lib \
            -maxdepth 9 -name "$lib" -print -quit 2>/dev/null | head -n 1 || true)
        if [ -n "$dir" ]; then
            LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$dir")"
            say "note: $lib not on the loader's path; found in $(dirname "$dir"), added"
        fi
    done
}

add_cuda_library_dirs

check_environment() {
    section "environment"
    local t0=$SECONDS
    # Missing libraries first: they explain every later failure.
    local notfound=0 p all="$WORK/ldd.txt"
    : > "$all"
    for p in "${PROGRAMS[@]}"; do
        { echo "ldd $(basename "$p"):"; ldd "$p" 2>&1 | sed 's/^/    /'; } >> "$all"
    done
    if grep -q 'not found' "$all"; then
        notfound=$(grep -c 'not found' "$all")
        say "libraries NOT FOUND (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):"
        awk '/^ldd/ {p=$2} /not found/ {print "    " p " needs " $1}' "$all" | sort -u | tee -a "$REPORT"
    fi
    cat "$all" >> "$REPORT"
    if [ "$notfound" -eq 0 ]; then record libraries pass 0 "every bundled program finds every library"
    else record libraries fail 0 "$notfound library lookups not found (listed first in the report)"; fi

    say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); host $(uname -n); $(uname -srm)"
    say "mode: $([ "$STANDIN" = 1 ] && echo 'CPU stand-in rehearsal' || echo 'GPU'); budget ${BUDGET}s"
    sed 's/^/bundle: /' "$KIT/BUNDLE_INFO" | tee -a "$REPORT"
    say "glibc: $(ldd --version 2>&1 | head -n 1)"
    # Programs built against a newer glibc than the host's do not start at all.
    local need have
    need=$(sed -n 's/^glibc needed: GLIBC_//p' "$KIT/BUNDLE_INFO")
    have=$(ldd --version 2>&1 | head -n 1 | grep -oE '[0-9]+\.[0-9]+$' || true)
    if [ -n "$need" ] && [ -n "$have" ]; then
        if awk -v h="$have" -v n="$need" 'BEGIN { split(h, a, "."); split(n, b, "."); exit !(a[1] > b[1] || (a[1] == b[1] && a[2] >= b[2])) }'; then
            record glibc pass 0 "host glibc $have, the bundle needs $need"
        else
            record glibc fail 0 "host glibc $have is older than the $need the bundle needs: build the kit on an older system"
        fi
    fi
    say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    if command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L 2>&1 | sed 's/^/nvidia-smi: /' | tee -a "$REPORT" || true
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
            2>&1 | sed 's/^/gpu: /' | tee -a "$REPORT" || true
    else
        say "nvidia-smi: not installed"
    fi
    say "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo 'not on PATH')"
    say "compute-sanitizer: $(compute-sanitizer --version 2>/dev/null | grep -m1 -i version || echo 'not on PATH')"
    record env_info info $((SECONDS - t0)) "$(nvidia-smi -L 2>/dev/null | head -n 1 || echo 'no nvidia-smi')"

    # The bundle is built for x86-64-v3: without these a program dies of SIGILL.
    local flags missing=""
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    for f in avx2 fma bmi1 bmi2 movbe f16c; do
        grep -qw "$f" <<<"$flags" || missing="$missing $f"
    done
    # LZCNT is in x86-64-v3 too, but some hypervisors do not list it (abm).
    grep -qwE 'abm|lzcnt' <<<"$flags" || note "note: /proc/cpuinfo lists no abm/lzcnt flag"
    if [ -z "$missing" ]; then record cpu_features pass 0 "x86-64-v3 (AVX2, FMA, BMI2) present"
    else record cpu_features fail 0 "missing$missing: the x86-64-v3 bundle cannot run here"; fi

    # Where the CUDA backend comes from, and what the driver says.
    local log="$WORK/probe.log" rc=0
    GPT3D_CUDA_LIBRARY="" run_logged "$log" 60 "$KIT/pretrain_gpt" --device cuda --num-layers 1 \
        --hidden-size 8 --num-attention-heads 1 --seq-length 8 --micro-batch-size 1 \
        --global-batch-size 1 --train-iters 1 --lr 1e-3 --tokenizer-type ByteTokenizer --eval-iters 0 \
        --data-path "$KIT/data/kit_text_document.h5" --split 98,2,0 \
        --data-cache-path "$WORK/cache_probe" || rc=$?
    note "(exit $rc)"
    if [ "$STANDIN" = 0 ] && [ "$rc" -ne 0 ]; then
        record cuda_backend_loads fail $((SECONDS - t0)) "exit $rc: $(grep -m1 -- 'error' "$log" | cut -c1-300 || why "$log")"
    elif grep -q 'cannot load the CUDA backend library' "$log"; then
        # Here (no GPU) the load must still work: what fails must be the device.
        record cuda_backend_loads fail 0 "$(grep -m1 'cannot load' "$log" | cut -c1-300)"
    else
        record cuda_backend_loads "$([ "$STANDIN" = 1 ] && echo info || echo pass)" 0 \
            "$(grep -m1 -E 'CUDA backend|no CUDA device|device cuda' "$log" | cut -c1-300)"
    fi
}

# Open MPI from the bundle alone: singleton start, every loaded file listed by
# the loader; none may come from another Open MPI installation.
check_mpi_singleton() {
    section "Open MPI singleton start from the bundle"
    local t0=$SECONDS log="$WORK/singleton.log" rc=0
    run_quiet "$log" 120 env LD_DEBUG=libs "$KIT/pretrain_gpt" --device cpu --num-layers 1 \
        --hidden-size 16 --num-attention-heads 2 --seq-length 16 --micro-batch-size 1 \
        --global-batch-size 1 --train-iters 2 --lr 1e-3 --tokenizer-type ByteTokenizer --eval-iters 0 \
        --data-path "$KIT/data/kit_text_document.h5" --split 98,2,0 \
        --data-cache-path "$WORK/cache_singleton" || rc=$?
    local loaded foreign
    # The loader names each object it initialises, dlopen'ed components included.
    loaded=$(sed -n 's/.*calling init: \(\/.*\)$/\1/p' "$log" | sort -u)
    grep -v 'calling init\|calling fini\|find library\|search path\|trying file\|^ *[0-9]*:\s*$' "$log" \
        > "$log.program" || true
    tail -n 40 "$log.program" >> "$REPORT"
    foreign=$(grep -v -e "^$KIT/" -e "^$LIBROOT/" <<<"$loaded" | grep -iE 'mpi|mca_|pmix|open-pal|open-rte|hwloc' || true)
    note "files loaded from outside the bundle:"
    grep -v -e "^$KIT/" -e "^$LIBROOT/" <<<"$loaded" | sed 's/^/    /' >> "$REPORT" || true
    if [ "$rc" -ne 0 ]; then
        record mpi_singleton fail $((SECONDS - t0)) "pretrain_gpt exited $rc: $(why "$log.program")"
    elif [ -n "$foreign" ]; then
        record mpi_singleton fail $((SECONDS - t0)) "loaded from outside the bundle: $(tr '\n' ' ' <<<"$foreign")"
    else
        record mpi_singleton pass $((SECONDS - t0)) \
            "$(grep -c "^$LIBROOT/openmpi/" <<<"$loaded" || true) components and $(grep -c "^$LIBROOT/lib/" <<<"$loaded" || true) libraries from the bundle, no Open MPI file from elsewhere"
    fi
}

# ---- CUDA tests ----------------------------------------------------------------
check_tests() {
    section "CUDA tests ($(wc -l < "$KIT/tests.tsv") from the build's list)"
    local name prog timeout labels args
    while IFS=$'\t' read -r name prog timeout labels args; do
        [ -n "$name" ] || continue
        budget_allows "$name" 20 required || continue
        local t0=$SECONDS log="$WORK/$name.log" rc=0 argv=()
        # shellcheck disable=SC2206 # the arguments are words, as ctest has them
        argv=($args)
        [ "$STANDIN" = 1 ] && argv=(--cpu-standin "${argv[@]}")
        run_logged "$log" "$(step_timeout "$timeout")" "$KIT/$prog" "${argv[@]}" < /dev/null || rc=$?
        if [ "$rc" -eq 0 ]; then
            record "$name" pass $((SECONDS - t0)) "$([ "$STANDIN" = 1 ] && echo 'CPU stand-in: ')passed"
        else
            local detail
            detail="exit $rc: $(why "$log")"
            [ "$rc" -eq 77 ] && detail="skipped (77) where a GPU must be: $(grep -m1 skipped "$log" | cut -c1-200)"
            [ "$rc" -eq 124 ] && detail="timed out after $(step_timeout "$timeout")s"
            if [ "$STANDIN" = 0 ] && [ "$(left)" -ge 20 ]; then
                # Synchronous launches put the failing kernel at the failing line.
                local rc2=0
                note "rerun with CUDA_LAUNCH_BLOCKING=1:"
                CUDA_LAUNCH_BLOCKING=1 run_logged "$log.blocking" "$(step_timeout "$timeout")" \
                    "$KIT/$prog" "${argv[@]}" < /dev/null || rc2=$?
                detail="$detail; with CUDA_LAUNCH_BLOCKING=1: exit $rc2$([ "$rc2" -eq 0 ] && echo ' (passed: an ordering or race problem)' || echo ": $(why "$log.blocking")")"
            fi
            record "$name" fail $((SECONDS - t0)) "$detail"
        fi
        if [ "$STANDIN" = 1 ]; then
            # Without a GPU the real test must skip and say why (driver, library).
            local rc3=0 slog="$WORK/$name.skip.log"
            run_logged "$slog" "$(step_timeout 60)" "$KIT/$prog" $args < /dev/null || rc3=$?
            if [ "$rc3" -eq 77 ] && grep -q '^skipped: .*: \|^skipped: this build has no CUDA' "$slog"; then
                record "${name}_skip_reason" pass 0 "$(grep -m1 '^skipped' "$slog" | cut -c1-200)"
            elif [ "$rc3" -eq 0 ]; then
                record "${name}_skip_reason" info 0 "ran on a GPU (exit 0)"
            else
                record "${name}_skip_reason" fail 0 "exit $rc3 without a reason: $(why "$slog")"
            fi
        fi
    done < "$KIT/tests.tsv"
}

# ---- training: cuda against cpu ------------------------------------------------
# rel_check A B TOL: |A - B| <= TOL * |B|, both finite numbers (mawk lets a
# NaN compare true, so numbers are validated first).
is_number() { [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; }
field() { sed -nE "s/.*\"$1\": *([^,}]*).*/\1/p" <<<"$2"; }

# TRAIN_ITERS and TRAIN_MODEL (more model flags) set a variant of the run.
TRAIN_ITERS=50
TRAIN_MODEL=()
train_run() { # train_run NAME DEVICE -> WORK/NAME.jsonl, WORK/NAME.log
    local extra=()
    [ "$2" = cuda ] && extra=(--bf16)
    run_logged "$WORK/$1.log" "$(step_timeout 150)" "$KIT/pretrain_gpt" --device "$2" "${extra[@]}" \
        --num-layers 2 --hidden-size 128 --num-attention-heads 4 --seq-length 128 "${TRAIN_MODEL[@]}" \
        --micro-batch-size 4 --global-batch-size 8 --train-iters "$TRAIN_ITERS" --lr 1e-3 --min-lr 1e-4 \
        --lr-decay-style cosine --lr-warmup-iters 5 --weight-decay 0.1 --clip-grad 1.0 --seed 1234 \
        --tokenizer-type ByteTokenizer --data-path "$KIT/data/kit_text_document.h5" --split 98,2,0 \
        --eval-iters 0 --log-interval 10 --data-cache-path "$WORK/cache_$1" \
        --metrics-file "$WORK/$1.jsonl"
}

check_train() {
    section "pretrain_gpt --device $DEVICE against --device cpu (one rank, singleton start)"
    budget_allows train_cuda_vs_cpu 60 required || return 0
    local t0=$SECONDS rc=0
    rm -f "$WORK/dev.jsonl" "$WORK/ref.jsonl"
    train_run dev "$DEVICE" || rc=$?
    if [ "$rc" -ne 0 ]; then
        record train_first_loss fail $((SECONDS - t0)) "--device $DEVICE exited $rc: $(why "$WORK/dev.log")"
        return 0
    fi
    train_run ref cpu || rc=$?
    if [ "$rc" -ne 0 ]; then
        record train_first_loss fail $((SECONDS - t0)) "--device cpu exited $rc: $(why "$WORK/ref.log")"
        return 0
    fi
    local n_dev n_ref
    n_dev=$(wc -l < "$WORK/dev.jsonl")
    n_ref=$(wc -l < "$WORK/ref.jsonl")
    local first_dev first_ref
    first_dev=$(field lm_loss "$(head -n 1 "$WORK/dev.jsonl")")
    first_ref=$(field lm_loss "$(head -n 1 "$WORK/ref.jsonl")")
    if is_number "$first_dev" && is_number "$first_ref" &&
        awk -v a="$first_dev" -v b="$first_ref" 'BEGIN { d = a - b; if (d < 0) d = -d; r = b < 0 ? -b : b; exit !(d <= 1e-2 * r) }'; then
        record train_first_loss pass $((SECONDS - t0)) "iteration 1 lm loss $first_dev ($DEVICE) vs $first_ref (cpu), within 1e-2 relative"
    else
        record train_first_loss fail $((SECONDS - t0)) "iteration 1 lm loss $first_dev ($DEVICE) vs $first_ref (cpu): not within 1e-2 relative"
    fi
    # The curve: every iteration there and finite, within 5e-2 relative
    # (bf16 rounding compounds over 50 steps; a wrong gradient does not stay
    # that close), and learning (the last loss below the first).
    local curve="$WORK/curve.txt" bad=0 worst=0 i line_dev line_ref a b
    : > "$curve"
    for i in $(seq 1 50); do
        line_dev=$(sed -n "${i}p" "$WORK/dev.jsonl")
        line_ref=$(sed -n "${i}p" "$WORK/ref.jsonl")
        a=$(field lm_loss "$line_dev")
        b=$(field lm_loss "$line_ref")
        if ! is_number "$a" || ! is_number "$b"; then
            bad=$((bad + 1))
            echo "$i $a $b not-a-number" >> "$curve"
            continue
        fi
        awk -v i="$i" -v a="$a" -v b="$b" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; printf "%d %s %s %.5f\n", i, a, b, d }' >> "$curve"
    done
    worst=$(awk '$4 ~ /^[0-9.]+$/ && $4 > m { m = $4 } END { printf "%.4f", m + 0 }' "$curve")
    local over last_dev
    over=$(awk '$4 ~ /^[0-9.]+$/ && $4 > 0.05' "$curve" | wc -l)
    last_dev=$(field lm_loss "$(tail -n 1 "$WORK/dev.jsonl")")
    note "iteration, lm loss $DEVICE, lm loss cpu, relative difference:"
    awk 'NR == 1 || NR % 5 == 0' "$curve" >> "$REPORT"
    grep -h 'peak .* memory' "$WORK/dev.log" "$WORK/ref.log" | tee -a "$REPORT" || true
    local learned=1
    is_number "$last_dev" && is_number "$first_dev" &&
        awk -v l="$last_dev" -v f="$first_dev" 'BEGIN { exit !(l < f) }' || learned=0
    if [ "$n_dev" -ne 50 ] || [ "$n_ref" -ne 50 ] || [ "$bad" -gt 0 ] || [ "$over" -gt 0 ] || [ "$learned" = 0 ]; then
        record train_curve fail $((SECONDS - t0)) "records $n_dev/$n_ref of 50, $bad not numbers, $over beyond 5e-2, worst $worst, loss $first_dev -> $last_dev"
    else
        record train_curve pass $((SECONDS - t0)) "50 iterations within 5e-2 (worst $worst), loss $first_dev -> $last_dev; $(grep -m1 -o 'peak .*' "$WORK/dev.log" | cut -c1-150)"
    fi
}

# ---- a mixture of experts: cuda against cpu -------------------------------------
# Top-2 of 4 SwiGLU experts with the aux and z-losses and a capacity that
# drops tokens: the router, dispatch and combine kernels inside training.
# The routing is a discrete choice that bf16 logits may flip for a
# near-tie, so the thresholds are check_train's on the first loss and a
# loose 1e-1 on the load-balancing loss; 20 iterations, finite and learning.
check_train_moe() {
    section "mixture of experts: pretrain_gpt --device $DEVICE against --device cpu"
    budget_allows train_moe 40 optional || return 0
    local t0=$SECONDS rc=0
    TRAIN_ITERS=20
    TRAIN_MODEL=(--swiglu --disable-bias-linear --num-experts 4 --moe-router-topk 2
                 --moe-ffn-hidden-size 256 --moe-aux-loss-coeff 1e-2 --moe-z-loss-coeff 1e-3
                 --moe-expert-capacity-factor 1.5)
    train_run moe_dev "$DEVICE" || rc=$?
    [ "$rc" -eq 0 ] && { train_run moe_ref cpu || rc=$?; }
    TRAIN_ITERS=50
    TRAIN_MODEL=()
    if [ "$rc" -ne 0 ]; then
        record train_moe fail $((SECONDS - t0)) "exited $rc: $(why "$WORK/moe_dev.log") $(why "$WORK/moe_ref.log")"
        return 0
    fi
    local first_dev first_ref aux_dev aux_ref last_dev
    first_dev=$(field lm_loss "$(head -n 1 "$WORK/moe_dev.jsonl")")
    first_ref=$(field lm_loss "$(head -n 1 "$WORK/moe_ref.jsonl")")
    aux_dev=$(field moe_aux_loss "$(head -n 1 "$WORK/moe_dev.jsonl")")
    aux_ref=$(field moe_aux_loss "$(head -n 1 "$WORK/moe_ref.jsonl")")
    last_dev=$(field lm_loss "$(tail -n 1 "$WORK/moe_dev.jsonl")")
    if is_number "$first_dev" && is_number "$first_ref" && is_number "$aux_dev" &&
        is_number "$aux_ref" && is_number "$last_dev" &&
        [ "$(wc -l < "$WORK/moe_dev.jsonl")" -eq 20 ] &&
        awk -v a="$first_dev" -v b="$first_ref" -v x="$aux_dev" -v y="$aux_ref" -v l="$last_dev" \
            'BEGIN { d = a - b; if (d < 0) d = -d; e = x - y; if (e < 0) e = -e;
                     exit !(d <= 1e-2 * b && e <= 1e-1 * y && l < a) }'; then
        record train_moe pass $((SECONDS - t0)) "iteration 1 lm loss $first_dev vs $first_ref (cpu), load balancing $aux_dev vs $aux_ref; loss $first_dev -> $last_dev"
    else
        record train_moe fail $((SECONDS - t0)) "iteration 1 lm loss $first_dev vs $first_ref (cpu), load balancing $aux_dev vs $aux_ref, last $last_dev (records $(wc -l < "$WORK/moe_dev.jsonl")/20)"
    fi
}

# ---- several ranks on one GPU: the staged communication ---------------------------
# TP2 x PP2 x DP2, then TP2 x CP2, on one GPU with --comm mpi (device
# buffers through host memory and MPI; NCCL refuses two ranks on one
# device) against one rank on
# the same data and seed: first-iteration loss within 1e-2 relative and
# every one of 20 losses within 5e-2, the bf16 thresholds of check_train.
# Needs an mpirun on the machine (the bundle itself starts singletons only).
LAUNCH=()
multirank_run() { # multirank_run NAME ARGS... under "${LAUNCH[@]}" -> WORK/NAME.jsonl
    local name=$1 extra=()
    shift
    [ "$DEVICE" = cuda ] && extra=(--bf16)
    run_logged "$WORK/$name.log" "$(step_timeout 180)" "${LAUNCH[@]}" "$KIT/pretrain_gpt" \
        --device "$DEVICE" "${extra[@]}" "$@" --num-layers 4 --hidden-size 64 --num-attention-heads 4 --seq-length 64 \
        --micro-batch-size 2 --global-batch-size 8 --train-iters 20 --lr 1e-3 --seed 1234 \
        --tokenizer-type ByteTokenizer --data-path "$KIT/data/kit_text_document.h5" --split 98,2,0 \
        --eval-iters 0 --log-interval 10 --data-cache-path "$WORK/cache_$name" \
        --metrics-file "$WORK/$name.jsonl"
}

check_multirank() {
    section "TP2 x PP2 x DP2 on one device with --comm mpi against one rank"
    local launcher
    launcher=$(command -v mpirun || command -v mpiexec || true)
    if [ -z "$launcher" ]; then
        record multirank_staged skip 0 "no mpirun or mpiexec on this machine (the bundle starts singletons only)"
        return 0
    fi
    budget_allows multirank_staged 90 optional || return 0
    local t0=$SECONDS rc=0
    rm -f "$WORK/mr1.jsonl" "$WORK/mr8.jsonl"
    multirank_run mr1 || rc=$?
    [ "$rc" -eq 0 ] || { record multirank_staged fail $((SECONDS - t0)) "one rank exited $rc: $(why "$WORK/mr1.log")"; return 0; }
    # The machine's own Open MPI starts the ranks: the bundle's MPI settings
    # (made for singletons) are left out of its environment.
    LAUNCH=(env -u OPAL_PREFIX -u OPAL_SYSCONFDIR -u OMPI_MCA_mca_base_component_path
            -u OMPI_MCA_ess_singleton_isolated -u HWLOC_PLUGINS_PATH
            "$launcher" --oversubscribe --allow-run-as-root -np 8 -x LD_LIBRARY_PATH)
    multirank_run mr8 --comm mpi --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 \
        || rc=$?
    LAUNCH=()
    if [ "$rc" -ne 0 ] && ! grep -q '^error:\|iteration' "$WORK/mr8.log"; then
        # pretrain_gpt never spoke: the launcher could not start it here.
        record multirank_staged skip $((SECONDS - t0)) "$launcher could not start the bundle's pretrain_gpt: $(head -n 1 "$WORK/mr8.log" | cut -c1-200)"
        return 0
    fi
    [ "$rc" -eq 0 ] || { record multirank_staged fail $((SECONDS - t0)) "8 ranks exited $rc: $(why "$WORK/mr8.log")"; return 0; }
    record_against_one_rank multirank_staged mr8 "$t0"
    # Context parallelism: the ring of key/value blocks through the staged
    # communication, TP 2 x CP 2 on 4 ranks of the one device.
    budget_allows multirank_context 60 optional || return 0
    t0=$SECONDS rc=0
    rm -f "$WORK/mrcp.jsonl"
    LAUNCH=(env -u OPAL_PREFIX -u OPAL_SYSCONFDIR -u OMPI_MCA_mca_base_component_path
            -u OMPI_MCA_ess_singleton_isolated -u HWLOC_PLUGINS_PATH
            "$launcher" --oversubscribe --allow-run-as-root -np 4 -x LD_LIBRARY_PATH)
    multirank_run mrcp --comm mpi --tensor-model-parallel-size 2 --context-parallel-size 2 || rc=$?
    LAUNCH=()
    [ "$rc" -eq 0 ] || { record multirank_context fail $((SECONDS - t0)) "4 ranks exited $rc: $(why "$WORK/mrcp.log")"; return 0; }
    record_against_one_rank multirank_context mrcp "$t0"
}

# record_against_one_rank RECORD NAME T0: WORK/NAME.jsonl's 20 losses
# against the one-rank run's (mr1), the bf16 thresholds of check_train.
record_against_one_rank() {
    local record_name=$1 name=$2 t0=$3 i a b worst=0 bad=0
    for i in $(seq 1 20); do
        a=$(field lm_loss "$(sed -n "${i}p" "$WORK/$name.jsonl")")
        b=$(field lm_loss "$(sed -n "${i}p" "$WORK/mr1.jsonl")")
        if ! is_number "$a" || ! is_number "$b"; then bad=$((bad + 1)); continue; fi
        local tol=5e-2
        [ "$i" -eq 1 ] && tol=1e-2
        awk -v a="$a" -v b="$b" -v t="$tol" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d <= t) }' || bad=$((bad + 1))
        worst=$(awk -v a="$a" -v b="$b" -v w="$worst" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; printf "%.5f", (d > w ? d : w) }')
    done
    if [ "$bad" -eq 0 ]; then
        record "$record_name" pass $((SECONDS - t0)) "20 losses within 5e-2 of one rank (first within 1e-2), worst $worst"
    else
        record "$record_name" fail $((SECONDS - t0)) "$bad of 20 losses missing or beyond tolerance (worst $worst)"
    fi
}

# ---- compute-sanitizer ---------------------------------------------------------
check_memcheck() {
    section "compute-sanitizer --tool memcheck (op and model tests)"
    if [ "$STANDIN" = 1 ]; then
        record memcheck skip 0 "CPU stand-in: no kernel runs, nothing to check"
        return 0
    fi
    local sanitizer
    sanitizer=$(command -v compute-sanitizer || true)
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        [ -n "$sanitizer" ] || { [ -x "$c" ] && sanitizer=$c; } || true
    done
    if [ -z "$sanitizer" ]; then
        record memcheck skip 0 "compute-sanitizer is not installed (not on PATH, not in /usr/local/cuda)"
        return 0
    fi
    local name prog timeout labels args spent=0
    while IFS=$'\t' read -r name prog timeout labels args; do
        case ",$labels," in *,memcheck,*) ;; *) continue ;; esac
        # The sanitizer slows kernels tens of times: bounded per test and in all.
        budget_allows "memcheck_$name" 30 optional || continue
        if [ "$spent" -gt 150 ]; then
            record "memcheck_$name" skip 0 "memcheck already used ${spent}s; left for the benchmark"
            continue
        fi
        local t0=$SECONDS log="$WORK/memcheck_$name.log" rc=0
        # shellcheck disable=SC2086
        run_logged "$log" "$(step_timeout 90)" "$sanitizer" --tool memcheck --error-exitcode 99 \
            --leak-check no "$KIT/$prog" $args < /dev/null || rc=$?
        spent=$((spent + SECONDS - t0))
        if grep -qiE 'device not supported|not supported on this|unable to (find|initialize)|failed to initialize' "$log"; then
            record memcheck skip $((SECONDS - t0)) "this runtime does not support compute-sanitizer: $(grep -m1 -iE 'not supported|unable|failed' "$log" | cut -c1-160)"
            return 0
        fi
        if [ "$rc" -eq 0 ] && grep -q 'ERROR SUMMARY: 0 errors' "$log"; then
            record "memcheck_$name" pass $((SECONDS - t0)) "0 errors"
        elif [ "$rc" -eq 124 ]; then
            record "memcheck_$name" skip $((SECONDS - t0)) "did not finish in its time slot"
        else
            record "memcheck_$name" fail $((SECONDS - t0)) "exit $rc: $(grep -m1 'ERROR SUMMARY' "$log" || why "$log")"
        fi
    done < "$KIT/tests.tsv"
}

# ---- benchmark -----------------------------------------------------------------
check_bench() { # check_bench required|optional: the shapes of that kind
    section "single-GPU benchmark, $1 shapes (bench_train_step; MFU against 989 TFLOP/s dense bf16)"
    # name layers hidden heads seq micro-batch vocab required
    local shapes
    # gpt-2.7B at micro-batch 1: at 4 the attention probabilities this
    # backend keeps (T x T per head, fp32 and bf16) ran out of the H200's
    # 139 GiB in the first GPU run.
    if [ "$STANDIN" = 1 ]; then
        shapes="tiny-2x128 2 128 4 128 2 257 required
small-4x256 4 256 4 128 2 257 optional"
    else
        shapes="gpt2-124M 12 768 12 1024 8 50257 required
gpt2-350M 24 1024 16 1024 8 50257 optional
gpt2-774M 36 1280 20 1024 8 50257 optional
gpt2-1.5B 48 1600 25 1024 4 50257 optional
gpt-2.7B 32 2560 32 2048 1 50257 optional"
    fi
    local name l h a s b v need
    local kind=$1
    while read -r name l h a s b v need; do
        [ "$need" = "$kind" ] || continue
        if [ "$kind" = optional ] && [ "$BENCH_BASE_FAILED" = 1 ]; then
            record "bench_$name" skip 0 "not started: the required shape failed"
            continue
        fi
        budget_allows "bench_$name" 30 "$need" || { [ "$need" = required ] && BENCH_BASE_FAILED=1; continue; }
        local t0=$SECONDS log="$WORK/bench_$name.log" rc=0
        run_logged "$log" "$(step_timeout 150)" "$KIT/bench_train_step" --device "$DEVICE" \
            --num-layers "$l" --hidden-size "$h" --num-attention-heads "$a" --seq-length "$s" \
            --micro-batch-size "$b" --vocab-size "$v" --iters 10 --warmup 2 --peak-tflops 989 \
            < /dev/null || rc=$?
        local result
        result=$(sed -n 's/^result: //p' "$log" | tail -n 1)
        if [ "$rc" -eq 0 ] && [ -n "$result" ]; then
            record "bench_$name" pass $((SECONDS - t0)) "$(grep -m1 '^step' "$log" | cut -d'(' -f1); $(grep -m1 '^model' "$log")" "$result"
        elif [ "$rc" -eq 124 ] && [ "$need" = optional ]; then
            record "bench_$name" skip $((SECONDS - t0)) "did not finish before the budget"
        else
            record "bench_$name" fail $((SECONDS - t0)) "exit $rc: $(why "$log")"
            # An if, not `[ ] && x`: as the loop's last command a false test
            # ended the script under set -e before its summary (first GPU run).
            if [ "$need" = required ]; then BENCH_BASE_FAILED=1; fi
        fi
    done <<<"$shapes"
}

# ---- PyTorch on the same GPU ----------------------------------------------------
# The same model and batch as bench_gpt2-124M through PyTorch (eager, then
# torch.compile): the speed gpt3d is measured against. Information, not a
# pass or fail: the ratio goes into the report and the summary.
check_bench_pytorch() {
    section "PyTorch reference on the same device (bench/pytorch_gpt2.py)"
    if [ "$STANDIN" = 1 ]; then
        record bench_pytorch skip 0 "CPU stand-in: the reference is timed on the GPU only"
        return 0
    fi
    if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        record bench_pytorch skip 0 "python3 has no PyTorch with CUDA here"
        return 0
    fi
    budget_allows bench_pytorch 120 optional || return 0
    local t0=$SECONDS log="$WORK/bench_pytorch.log" rc=0
    run_logged "$log" "$(step_timeout 240)" python3 "$KIT/pytorch_gpt2.py" --num-layers 12 \
        --hidden-size 768 --num-attention-heads 12 --seq-length 1024 --micro-batch-size 8 \
        --vocab-size 50257 --iters 10 --warmup 3 --peak-tflops 989 < /dev/null || rc=$?
    local ours eager compiled
    ours=$(grep -h '"check": "bench_gpt2-124M"' "$SUMMARY" | grep -o '"tokens_per_s": [0-9.]*' | awk '{print $2}')
    eager=$(grep '^result: ' "$log" | grep '"mode": "eager"' | grep -o '"tokens_per_s": [0-9.]*' | awk '{print $2}')
    compiled=$(grep '^result: ' "$log" | grep '"mode": "compile"' | grep -o '"tokens_per_s": [0-9.]*' | awk '{print $2}')
    local detail="GPT-2 124M tokens/s: gpt3d ${ours:-?}, PyTorch eager ${eager:-?}, torch.compile ${compiled:-?}"
    if [ -n "$ours" ] && [ -n "$compiled" ]; then
        detail="$detail (gpt3d at $(awk -v a="$ours" -v b="$compiled" 'BEGIN { printf "%.2f", a / b }') x torch.compile)"
    fi
    if [ "$rc" -eq 0 ] && [ -n "$eager" ]; then
        record bench_pytorch info $((SECONDS - t0)) "$detail"
    else
        record bench_pytorch skip $((SECONDS - t0)) "exit $rc: $(why "$log") ($detail)"
    fi
}

# ---- where a step's GPU time goes ---------------------------------------------------
# Nsight Compute times every kernel of two GPT-2 124M steps (one metric, the
# kernel's duration; --clock-control none leaves the clocks as the benchmark
# saw them); the report gets the kernels by their share of the total, which
# says what issue 20's work should take first. Information only.
check_profile() {
    section "kernel time by kernel (ncu, GPT-2 124M, 2 steps)"
    if [ "$STANDIN" = 1 ]; then
        record profile skip 0 "CPU stand-in: no kernels"
        return 0
    fi
    local ncu
    ncu=$(command -v ncu || true)
    for c in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
        [ -n "$ncu" ] || { [ -x "$c" ] && ncu=$c; } || true
    done
    if [ -z "$ncu" ]; then
        record profile skip 0 "ncu is not installed"
        return 0
    fi
    budget_allows profile 60 optional || return 0
    local t0=$SECONDS log="$WORK/profile.csv" rc=0
    run_quiet "$log" "$(step_timeout 180)" "$ncu" --clock-control none --print-units base --metrics gpu__time_duration.sum \
        --csv --page raw "$KIT/bench_train_step" --device cuda --num-layers 12 --hidden-size 768 \
        --num-attention-heads 12 --seq-length 1024 --micro-batch-size 8 --vocab-size 50257 \
        --iters 1 --warmup 1 < /dev/null || rc=$?
    local table="$WORK/profile_table.txt"
    python3 - "$log" > "$table" 2>&1 <<'PY' || true
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1], errors="replace") if l.startswith('"'))]
head = rows[0]
name_col, time_col = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
total, by_name, count = 0.0, {}, {}
for r in rows[1:]:
    try:
        t = float(r[time_col].replace(",", ""))
    except (ValueError, IndexError):
        continue
    name = r[name_col].split("(")[0][:90]
    by_name[name] = by_name.get(name, 0.0) + t
    count[name] = count.get(name, 0) + 1
    total += t
print(f"{sum(count.values())} kernel launches, {total / 1e6:.2f} ms of kernel time in 2 steps")
for name, t in sorted(by_name.items(), key=lambda kv: -kv[1])[:25]:
    print(f"{100 * t / total:6.2f} %  {t / 1e6:9.3f} ms  {count[name]:6d} x  {name}")
PY
    cat "$table" >> "$REPORT"
    if [ "$rc" -eq 0 ] && grep -q 'kernel launches' "$table"; then
        record profile info $((SECONDS - t0)) "$(head -n 2 "$table" | tr '\n' ';' | cut -c1-220)"
    else
        record profile skip $((SECONDS - t0)) "exit $rc: $(head -c 200 "$table") $(why "$log")"
    fi
}

# ---- the list -------------------------------------------------------------------
if wants env; then check_environment; check_mpi_singleton; fi
if wants tests; then check_tests; fi
if wants train; then check_train; check_train_moe; check_multirank; fi
# GPT-2 124M before the sanitizer, the larger shapes with what is left.
if wants bench; then check_bench required; check_bench_pytorch; fi
if wants memcheck; then check_memcheck; fi
if wants bench; then check_bench optional; check_profile; fi

section "summary: $FAILED failed, ${#CHECKS[@]} checks, ${SECONDS}s of ${BUDGET}s"
printf '%s\n' "${CHECKS[@]}" | tee -a "$REPORT"
say "report: $REPORT; summary: $SUMMARY"
[ "$FAILED" -eq 0 ]
