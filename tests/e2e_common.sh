# Shared by the end-to-end test scripts (sourced, not run): a scratch
# directory, MPI environment, failure counting, a small corpus, and the
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

# compare NAME REFERENCE FILE: first iteration's lm loss and grad norm within
# 1e-5 relative, every lm loss within 1e-4, the same number of iterations.
compare() {
    awk -v name="$1" '
        function field(line, key) {
            if (match(line, "\"" key "\": [^,}]*")) return substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 4) + 0
            return "nan"
        }
        function rel(a, b) { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; return d / m }
        NR == FNR { loss[FNR] = field($0, "lm_loss"); norm[FNR] = field($0, "grad_norm"); n = FNR; next }
        {
            l = field($0, "lm_loss"); g = field($0, "grad_norm")
            if (FNR == 1 && (rel(l, loss[1]) > 1e-5 || rel(g, norm[1]) > 1e-5)) {
                printf "%s: first iteration loss %.9g vs %.9g, grad norm %.9g vs %.9g\n", name, l, loss[1], g, norm[1]; bad = 1
            }
            if (rel(l, loss[FNR]) > 1e-4) { printf "%s: iteration %d loss %.9g vs %.9g\n", name, FNR, l, loss[FNR]; bad = 1 }
            count = FNR
        }
        END { if (count != n) { printf "%s: %d iterations, want %d\n", name, count, n; bad = 1 } exit bad }
    ' "$2" "$3"
}

# finish: the exit status of the script.
finish() {
    if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
    echo "$1: ok"
    exit 0
}
