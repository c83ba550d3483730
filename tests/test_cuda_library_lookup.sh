#!/usr/bin/env bash
# Where the CUDA backend library is found: $GPT3D_CUDA_LIBRARY (alone: a
# missing file there prints dlopen's reason), then beside the program or in
# ../lib from it (a copied build), then the build tree. Without a GPU a
# found library answers "no CUDA device is visible", never the load error;
# a skipped CUDA test prints both reasons.
# Usage: test_cuda_library_lookup.sh PRETRAIN CUDA_LIBRARY PREPROCESS CUDA_TEST
set -euo pipefail
PRETRAIN=$1
CUDA_LIB=$2
PREPROCESS=$3
CUDA_TEST=$4
WORK=$(cd "$(mktemp -d)" && pwd -P)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
unset GPT3D_CUDA_LIBRARY

for i in 1 2 3; do echo "a small document number $i for the library lookup test." > "$WORK/d$i.txt"; done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; exit 1; }
# shellcheck disable=SC2054 # --split takes a comma-separated list
ARGS=(--device cuda --num-layers 1 --hidden-size 8 --num-attention-heads 1 --seq-length 8
      --micro-batch-size 1 --global-batch-size 1 --train-iters 1 --lr 1e-3 --eval-iters 0
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --data-cache-path "$WORK/cache")
# found_at LOG PATH: the library at PATH loaded (a GPU trained, or the error is the device's).
found_at() {
    if grep -q 'cannot load the CUDA backend' "$1"; then return 1; fi
    grep -q "no CUDA device is visible.*(CUDA backend $2)" "$1" || grep -q 'iteration *1/' "$1"
}

# 1. GPT3D_CUDA_LIBRARY names a missing file: dlerror's reason, that path only.
rc=0
GPT3D_CUDA_LIBRARY="$WORK/nowhere/libgpt3d_cuda.so" "$PRETRAIN" "${ARGS[@]}" > "$WORK/1.log" 2>&1 || rc=$?
cat "$WORK/1.log"
[ "$rc" -ne 0 ] || fail "a missing library did not fail"
grep -q "cannot load the CUDA backend library; tried GPT3D_CUDA_LIBRARY=$WORK/nowhere/libgpt3d_cuda.so (.*No such file or directory)" \
    "$WORK/1.log" || fail "the dlopen reason for the missing library is not printed"
grep -q "$CUDA_LIB" "$WORK/1.log" && fail "GPT3D_CUDA_LIBRARY set, yet another library was tried"

# 2. A renamed copy, named by GPT3D_CUDA_LIBRARY, is found again.
mkdir -p "$WORK/renamed"
cp "$CUDA_LIB" "$WORK/renamed/libgpt3d_cuda_renamed.so"
GPT3D_CUDA_LIBRARY="$WORK/renamed/libgpt3d_cuda_renamed.so" "$PRETRAIN" "${ARGS[@]}" > "$WORK/2.log" 2>&1 || true
cat "$WORK/2.log"
found_at "$WORK/2.log" "$WORK/renamed/libgpt3d_cuda_renamed.so" || fail "the renamed library was not found"

# 3. A copied installation, bin/ and lib/: found in ../lib, not the build tree.
mkdir -p "$WORK/inst/bin" "$WORK/inst/lib"
cp "$PRETRAIN" "$WORK/inst/bin/"
cp "$CUDA_LIB" "$WORK/inst/lib/libgpt3d_cuda.so"
"$WORK/inst/bin/$(basename "$PRETRAIN")" "${ARGS[@]}" > "$WORK/3.log" 2>&1 || true
cat "$WORK/3.log"
found_at "$WORK/3.log" "$WORK/inst/lib/libgpt3d_cuda.so" || fail "the library in ../lib was not found"

# 4. Beside the program beats ../lib.
cp "$CUDA_LIB" "$WORK/inst/bin/libgpt3d_cuda.so"
"$WORK/inst/bin/$(basename "$PRETRAIN")" "${ARGS[@]}" > "$WORK/4.log" 2>&1 || true
found_at "$WORK/4.log" "$WORK/inst/bin/libgpt3d_cuda.so" || { cat "$WORK/4.log"; fail "the library beside the program was not preferred"; }

# 5. A skipped CUDA test says why: the driver's answer and the library's.
rc=0
GPT3D_CUDA_LIBRARY="$WORK/nowhere/libgpt3d_cuda.so" "$CUDA_TEST" > "$WORK/5.log" 2>&1 || rc=$?
cat "$WORK/5.log"
if [ "$rc" -eq 77 ]; then
    grep -q '^skipped: no CUDA device visible: ' "$WORK/5.log" || fail "the skip does not give the driver's reason"
    grep -q "does not load either: .*$WORK/nowhere/libgpt3d_cuda.so (.*No such file" "$WORK/5.log" \
        || fail "the skip does not print dlerror() for the library"
else
    echo "note: $CUDA_TEST exited $rc (a GPU is present?)"
fi

[ "$failures" -eq 0 ] || exit 1
echo "CUDA library lookup: passed"
