# bench/preprocess_common.sh — sourced by the preprocessing bench scripts
# (". bench/preprocess_common.sh [build-dir] [repeats]" after setting ROOT):
# sets BUILD, REPEATS, SOURCES, PREPROCESS and VOCAB_DIR (GPT-2's files,
# fetched), checks the tools, and defines best_of.
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
REPEATS=${2:-3}
SOURCES=${GPT3D_BENCH_SOURCES:-/usr/share/doc/python3.11/html/_sources}
PREPROCESS="$BUILD/preprocess_data"
[ -x "$PREPROCESS" ] || { echo "error: $PREPROCESS not built (cmake --build $BUILD --target preprocess_data)" >&2; exit 2; }
[ -d "$SOURCES" ] || { echo "error: no corpus sources in $SOURCES (apt-get install python3.11-doc, or set GPT3D_BENCH_SOURCES)" >&2; exit 2; }
command -v node >/dev/null || { echo "error: node is not installed" >&2; exit 2; }
VOCAB_DIR="$BUILD/gpt2-vocab"
sh "$ROOT/tools/fetch_gpt2_vocab.sh" "$VOCAB_DIR" >/dev/null

# best_of NAME CMD...: runs CMD REPEATS times; leaves "wall user sys" of the
# fastest run in $work/NAME.time (a scratch directory the caller made) and
# that run's stdout+stderr in $work/NAME.log.
best_of() {
    local name=$1; shift
    local best=""
    for _ in $(seq "$REPEATS"); do
        /usr/bin/time -f '%e %U %S' -o "$work/t" "$@" > "$work/out" 2>&1
        local wall
        wall=$(cut -d' ' -f1 "$work/t")
        if [ -z "$best" ] || awk -v a="$wall" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$wall
            cp "$work/t" "$work/$name.time"
            cp "$work/out" "$work/$name.log"
        fi
    done
}
