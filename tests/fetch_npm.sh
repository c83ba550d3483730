#!/bin/sh
# tests/fetch_npm.sh DIR PACKAGE@VERSION... — the npm packages a test
# compares gpt3d against, installed into DIR/npm (pinned versions; running it
# again with the same list reuses what is there). The lists live in the
# wrappers: fetch_tokenizer_references.sh, fetch_tensorboard_reader.sh.
# Prints DIR/npm/node_modules. Exit status: 0 done, 1 the download failed,
# 2 bad usage, 3 npm is not installed.
set -eu

if [ $# -lt 2 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR PACKAGE@VERSION..." >&2
    exit 2
fi
dir=$1
shift
PACKAGES="$*"
modules="$dir/npm/node_modules"
stamp="$dir/npm/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PACKAGES" ]; then
    echo "$modules"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is not installed; install Node.js and npm (apt-get install npm)" >&2
    exit 3
fi
mkdir -p "$dir/npm"
# shellcheck disable=SC2086 # one word per package
if ! npm install --silent --no-audit --no-fund --prefix "$dir/npm" $PACKAGES >&2; then
    echo "error: 'npm install $PACKAGES' failed (no network or registry access?)" >&2
    exit 1
fi
echo "$PACKAGES" > "$stamp"
echo "$modules"
