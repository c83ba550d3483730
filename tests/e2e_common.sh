# Shared by the end-to-end test scripts (sourced after PRETRAIN is set, not
# run): a scratch directory, MPI environment, failure counting, a small corpus, and the
# comparison of a run's metrics with a reference run's.

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's session directories of this test's runs under its own scratch:
# in the shared /tmp/ompi.<host>.<uid>, an mpirun of a test running beside
# this one may remove the parent directory just as ours creates its own
# ("A call to mkdir was unable to create the desired directory").
export OMPI_MCA_orte_tmpdir_base="$WORK"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# make_corpus PREPROCESS WORDS: 24 documents of 30 lines into $WORK/c_text_document.h5
make_corpus() {
    local i j
    for i in $(seq 1 24); do
        for j in $(seq 1 30); do echo "$2 $i line $j: $(( (i * j) % 17 ))"; done > "$WORK/d$i.txt"
    done
    "$1" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
        --append-eod > /dev/null 2>&1 || { fail "preprocess_data"; exit 1; }
}

# The comparison tool is built next to pretrain_gpt (tests/metrics_compare.cmake).
METRICS_COMPARE=${GPT3D_METRICS_COMPARE:-$(dirname "$PRETRAIN")/metrics_compare}
[ -x "$METRICS_COMPARE" ] || { echo "FAIL: $METRICS_COMPARE not built (set GPT3D_METRICS_COMPARE)" >&2; exit 1; }

# compare NAME REFERENCE FILE [--rtol R] [--atol A]: every iteration's lm loss
# and grad norm and every validation loss within 1e-6 relative (or as given),
# the same iterations, and no NaN, inf or missing field (tests/metrics_compare.c).
compare() {
    local name=$1 reference=$2 file=$3
    shift 3
    "$METRICS_COMPARE" --name "$name" "$@" "$reference" "$file"
}

# matches_one_rank NAME REFERENCE FILE: a layout's run against the one-rank
# run: the first iteration within 1e-5 relative, every iteration within 1e-4
# (the tolerance of the architecture and MoE layouts).
matches_one_rank() {
    local name=$1 reference=$2 file=$3
    head -1 "$reference" > "$reference.first"
    head -1 "$file" > "$file.first"
    compare "$name (iteration 1)" "$reference.first" "$file.first" --rtol 1e-5 \
        || fail "$name: first iteration differs from one rank"
    compare "$name" "$reference" "$file" --rtol 1e-4 || fail "$name differs from one rank"
}

# save_and_resume VARIANT "TP PP DP" "TP PP DP"...: 10 iterations of the
# caller's ARGS and ${VARIANT[VARIANT]} flags saved at the first layout into
# $WORK/VARIANT.ckpt, resumed at each other layout from a copy; iterations
# 11-20 must follow the one-rank run's $WORK/VARIANT.ref.jsonl.
save_and_resume() {
    local v=$1 save=$2
    shift 2
    local flags
    read -r -a flags <<< "${VARIANT[$v]}"
    set -- $save "$@"
    run_layout "$1" "$2" "$3" "$WORK/$v.save" "${ARGS[@]}" "${flags[@]}" --train-iters 10 \
        --lr-decay-iters 20 --save "$WORK/$v.ckpt" --save-interval 10 \
        --metrics-file "$WORK/$v.save.jsonl" \
        || { cat "$WORK/$v.save.log"; fail "$v save at $1x$2x$3"; return; }
    shift 3
    tail -n 10 "$WORK/$v.ref.jsonl" > "$WORK/$v.tail.jsonl"
    for layout in "$@"; do
        set -- $layout
        local ckpt="$WORK/$v.ckpt_$1$2$3" out="$WORK/$v.resume$1$2$3"
        rm -rf "$ckpt" && cp -r "$WORK/$v.ckpt" "$ckpt"
        if run_layout "$1" "$2" "$3" "$out" "${ARGS[@]}" "${flags[@]}" --load "$ckpt" \
                --metrics-file "$out.jsonl"; then
            [ "$(first_iteration "$out.jsonl")" = 11 ] || fail "$v resume at $1x$2x$3 did not start at iteration 11"
            compare "$v resumed at $1x$2x$3" "$WORK/$v.tail.jsonl" "$out.jsonl" --rtol 1e-4 \
                || fail "$v resumed at $1x$2x$3 leaves the one-rank trajectory"
        else
            cat "$out.log"; fail "$v resume at $1x$2x$3"
        fi
    done
}
# mpi_ranks NP ARGS...: $PRETRAIN "${ARGS[@]}" ARGS on NP ranks through
# $MPIEXEC for at most 120 s (the caller sets all three); its exit status.
mpi_ranks() {
    local np=$1
    shift
    timeout 120 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${ARGS[@]}" "$@"
}

# one_error NAME LOG REGEX: exactly one "error:" line in LOG, matching REGEX.
one_error() {
    [ "$(grep -c '^error:' "$2")" -eq 1 ] || { cat "$2" >&2; fail "$1: not exactly one error line"; return; }
    grep -Eq -- "^error: .*$3" "$2" || { cat "$2" >&2; fail "$1: the error lacks /$3/"; }
}

# ranks_recorded MPIEXEC NP PROGRAM ARGS...: PROGRAM on NP ranks for at most
# 120 s, each rank's own exit status written to $WORK/rank_rc.<rank>
# (mpirun's status says only that some rank failed). The wrapper itself
# exits 0, so mpirun does not kill the other ranks when the first one fails
# and every rank records its status. Returns 124 when timed out, else the
# largest rank status (1 when a rank recorded none).
ranks_recorded() {
    local mpiexec=$1 np=$2 r rc worst=0
    shift 2
    rm -f "$WORK"/rank_rc.*
    timeout 120 "$mpiexec" --oversubscribe -np "$np" sh -c \
        '"$0" "$@"; echo $? > "'"$WORK"'/rank_rc.$OMPI_COMM_WORLD_RANK"' "$@"
    rc=$?
    [ $rc -eq 124 ] && return 124
    for r in $(seq 0 $((np - 1))); do
        rc=$(cat "$WORK/rank_rc.$r" 2> /dev/null || echo 1)
        [ "$rc" -gt "$worst" ] && worst=$rc
    done
    return "$worst"
}

# expect_agreed_failure NAME NP LOG: the failure ranks agree on, as DESIGN.md
# (Errors) asks: every one of NP ranks exited non-zero (ranks_recorded's
# files) and LOG holds exactly one "error: " line.
expect_agreed_failure() {
    local name=$1 np=$2 log=$3 r rc errors
    for r in $(seq 0 $((np - 1))); do
        rc=$(cat "$WORK/rank_rc.$r" 2> /dev/null)
        [ -n "$rc" ] && [ "$rc" -ne 0 ] || { cat "$log"; fail "$name: rank $r exit status '${rc:-none}', want non-zero"; }
    done
    errors=$(grep -c "^error:" "$log")
    [ "$errors" -eq 1 ] || { cat "$log"; fail "$name: $errors 'error:' lines, want exactly one"; }
}

# ok NAME CMD...: the command must succeed; output kept in $WORK/NAME.log.
ok() {
    local name=$1
    shift
    if ! "$@" > "$WORK/$name.log" 2>&1; then
        fail "$name: $*"
        cat "$WORK/$name.log" >&2
        return 1
    fi
}

# expect_error NAME REGEX MUST_NOT_EXIST CMD...: a tool's refusal: exit 2,
# one "error:" line matching REGEX, MUST_NOT_EXIST not created.
expect_error() {
    local name=$1 regex=$2 absent=$3
    shift 3
    "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    local rc=$?
    if [ $rc -ne 2 ]; then fail "$name: exit status $rc, want 2"; cat "$WORK/$name.err" >&2; fi
    [ "$(grep -c '^error:' "$WORK/$name.err")" -eq 1 ] || { fail "$name: not one error line"; cat "$WORK/$name.err" >&2; }
    grep -Eq -- "$regex" "$WORK/$name.err" || { fail "$name: stderr lacks /$regex/"; cat "$WORK/$name.err" >&2; }
    [ ! -e "$absent" ] || fail "$name: $absent was written"
    echo "  $name: $(cat "$WORK/$name.err")"
}

# finish: the exit status of the script.
finish() {
    if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
    echo "$1: ok"
    exit 0
}

# strip_timings FILE...: metrics lines without their timing fields (which
# differ between runs; losses, norms and the learning rate must not).
strip_timings() { sed -E 's/, "iteration_ms"[^,}]*//; s/, "tokens_per_s"[^,}]*//; s/, "tflops_per_gpu"[^,}]*//' "$@"; }

# lm_loss FILE: the lm loss of a metrics file's first line.
lm_loss() { sed -nE '1s/.*"lm_loss": ([^,}]*).*/\1/p' "$1"; }

# first_iteration FILE: the iteration of a metrics file's first line.
first_iteration() { sed -E 's/^\{"iteration": ([0-9]+).*/\1/;q' "$1"; }

# run_layout TP PP DP OUT ARGS...: pretrain_gpt (PRETRAIN) under MPIEXEC at
# that layout, its output in OUT.log; the status is pretrain_gpt's.
run_layout() {
    local tp=$1 pp=$2 dp=$3 out=$4
    shift 4
    timeout 300 "$MPIEXEC" --oversubscribe -np $((tp * pp * dp)) "$PRETRAIN" "$@" \
        --tensor-model-parallel-size "$tp" --pipeline-model-parallel-size "$pp" > "$out.log" 2>&1
}
