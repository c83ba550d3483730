# Shared by the end-to-end test scripts (sourced after PRETRAIN is set, not
# run): a scratch directory, MPI environment, failure counting, a small corpus, and the
# comparison of a run's metrics with a reference run's.

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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

# finish: the exit status of the script.
finish() {
    if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
    echo "$1: ok"
    exit 0
}

# strip_timings FILE...: metrics lines without their timing fields (which
# differ between runs; losses, norms and the learning rate must not).
strip_timings() { sed -E 's/, "iteration_ms"[^,}]*//; s/, "tokens_per_s"[^,}]*//; s/, "tflops_per_gpu"[^,}]*//' "$@"; }

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
