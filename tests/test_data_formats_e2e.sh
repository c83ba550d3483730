#!/usr/bin/env bash
# pretrain_gpt on every data form a Megatron user brings (issue 17 item 1):
# - a Megatron .bin/.idx pair read in place, named by its prefix (with the
#   --split quoted the way bash arrays deliver it) and by its .bin, in uint16
#   and int32, trains to exactly the losses of the shard that
#   tools/convert_megatron_dataset makes of it (and of the shard the pair was
#   written from);
# - numbered shards (preprocess_data --shard-size-tokens) named by their
#   prefix train exactly as the same files named by a glob;
# - a blend mixing a pair and a shard trains to exactly the losses of the
#   same blend over shards only;
# - --mock-data trains without a corpus, the same losses at 1x1x1, DP 2 and
#   TP 2 (fp32 rounding), and the losses depend on --seed;
# - the document switches train on --mock-data;
# - a prefix that resolves to nothing and --mock-data with --data-path stop
#   with one error line.
# Usage: test_data_formats_e2e.sh MPIEXEC PRETRAIN PREPROCESS CONVERT WRITE_FIXTURE
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
CONVERT=$4
WRITE_FIXTURE=$5
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "data formats"
SHARD="$WORK/c_text_document.h5"

# The pair is written from the shard by the test's own MMIDIDX writer (each
# document as two sequences), then converted back by the tool.
"$WRITE_FIXTURE" "$SHARD" "$WORK/mg_text_document" 8 2 || fail "writing the uint16 pair"
"$WRITE_FIXTURE" "$SHARD" "$WORK/mg32_text_document" 4 4 || fail "writing the int32 pair"
"$CONVERT" --input "$WORK/mg_text_document" --output "$WORK/converted.h5" \
    --tokenizer-type ByteTokenizer > "$WORK/convert.log" 2>&1 \
    || { cat "$WORK/convert.log"; fail "convert_megatron_dataset"; }

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 16
      --micro-batch-size 2 --global-batch-size 4 --lr 2e-3 --tokenizer-type ByteTokenizer
      --device cpu --seed 7 --log-interval 1 --train-iters 6 --eval-interval 3 --eval-iters 1)

# train NAME ARGS...: one rank; metrics in $WORK/NAME.jsonl, log in $WORK/NAME.log.
train() {
    local name=$1
    shift
    "$PRETRAIN" "${ARGS[@]}" "$@" --metrics-file "$WORK/$name.jsonl" > "$WORK/$name.log" 2>&1 \
        || { cat "$WORK/$name.log"; fail "$name: training failed"; }
}

# --- a pair read in place = its conversion ----------------------------------
train converted --data-path "$WORK/converted.h5" --split 95,5,0
train original --data-path "$SHARD" --split 95,5,0
train prefix --data-path "$WORK/mg_text_document" --split '"95,5,0"'
train bin32 --data-path "$WORK/mg32_text_document.bin" --split "'95,5,0'"
compare "converted shard = original shard" "$WORK/original.jsonl" "$WORK/converted.jsonl" \
    --rtol 0 --atol 0 || fail "the converted shard trains differently from its source"
compare "pair by prefix = converted shard" "$WORK/converted.jsonl" "$WORK/prefix.jsonl" \
    --rtol 0 --atol 0 || fail "the .bin/.idx read in place trains differently from its conversion"
compare "int32 pair by .bin = converted shard" "$WORK/converted.jsonl" "$WORK/bin32.jsonl" \
    --rtol 0 --atol 0 || fail "the int32 pair trains differently from the conversion"
grep -q "valid_loss" "$WORK/prefix.jsonl" || fail "prefix: no validation loss to compare"
grep -q "mg_text_document -> .*mg_text_document.{bin,idx} (Megatron, read in place" \
    "$WORK/prefix.log" || { cat "$WORK/prefix.log"; fail "prefix: the log does not say how it resolved"; }

# --- numbered shards named by their prefix -----------------------------------
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/s" --tokenizer-type ByteTokenizer \
    --append-eod --shard-size-tokens 3000 > "$WORK/shards.log" 2>&1 || { cat "$WORK/shards.log"; fail "sharded preprocess_data"; }
[ -f "$WORK/s_text_document_00002.h5" ] || fail "preprocess_data made fewer than 3 shards"
train shards_glob --data-path "$WORK/s_text_document_*.h5" --split 95,5,0
train shards_prefix --data-path "$WORK/s_text_document" --split 95,5,0
compare "shards by prefix = shards by glob" "$WORK/shards_glob.jsonl" "$WORK/shards_prefix.jsonl" \
    --rtol 0 --atol 0 || fail "the numbered shards named by their prefix train differently"
grep -q "s_text_document -> [0-9]* numbered shards" "$WORK/shards_prefix.log" \
    || { cat "$WORK/shards_prefix.log"; fail "shards: the log does not say how the prefix resolved"; }

# --- a mixed-format blend ----------------------------------------------------
cp "$WORK/converted.h5" "$WORK/converted_copy.h5"
train blend_shards --data-path 0.3 "$WORK/converted_copy.h5" 0.7 "$SHARD" --split 95,5,0
train blend_mixed --data-path 0.3 "$WORK/mg_text_document" 0.7 "$SHARD" --split 95,5,0
compare "mixed blend = shard blend" "$WORK/blend_shards.jsonl" "$WORK/blend_mixed.jsonl" \
    --rtol 0 --atol 0 || fail "the mixed-format blend trains differently"
grep -q "0.3000 x .*mg_text_document.{bin,idx}.*0.7000 x .*c_text_document.h5" \
    "$WORK/blend_mixed.log" || { cat "$WORK/blend_mixed.log"; fail "blend: the log lacks its components"; }

# --- --mock-data: no corpus, layout independent ------------------------------
MOCK=(--mock-data --split 99,1,0)
train mock "${MOCK[@]}"
train mock_seed "${MOCK[@]}" --seed 8
[ "$(wc -l < "$WORK/mock.jsonl")" -eq 6 ] || fail "mock: $(wc -l < "$WORK/mock.jsonl") metrics lines, want 6"
compare "mock seed 8 vs 7" "$WORK/mock.jsonl" "$WORK/mock_seed.jsonl" > /dev/null 2>&1 \
    && fail "mock: --seed does not change the data"
for layout in "dp2" "tp2"; do
    extra=()
    [ "$layout" = tp2 ] && extra=(--tensor-model-parallel-size 2)
    mpi_ranks 2 "${MOCK[@]}" "${extra[@]}" --metrics-file "$WORK/mock_$layout.jsonl" \
        > "$WORK/mock_$layout.log" 2>&1 || { cat "$WORK/mock_$layout.log"; fail "mock $layout: training failed"; }
    compare "mock $layout" "$WORK/mock.jsonl" "$WORK/mock_$layout.jsonl" \
        || fail "mock data at $layout differs from one rank"
done

# --- bad input ---------------------------------------------------------------
"$PRETRAIN" --help | grep -q -- "--mock-data  *Skip data loading" || fail "--help lacks --mock-data"

"$PRETRAIN" "${ARGS[@]}" --data-path "$WORK/nothing_text_document" > "$WORK/nothing.log" 2>&1
[ $? -eq 2 ] || fail "a prefix resolving to nothing: exit status not 2"
one_error nothing "$WORK/nothing.log" "nothing_text_document: no such file or dataset prefix; tried .*nothing_text_document.bin \+ .*tools/preprocess_data.*tools/convert_megatron_dataset"
"$PRETRAIN" "${ARGS[@]}" --mock-data --data-path "$SHARD" > "$WORK/both.log" 2>&1
[ $? -eq 2 ] || fail "--mock-data with --data-path: exit status not 2"
one_error both "$WORK/both.log" "--mock-data replaces the data"

# Mock documents end in EOD, so the document switches apply to them too:
# together they train to other losses than plain mock data.
train mock_docs "${MOCK[@]}" --eod-mask-loss --reset-position-ids --reset-attention-mask
[ -s "$WORK/mock_docs.jsonl" ] && ! cmp -s <(strip_timings "$WORK/mock_docs.jsonl") \
    <(strip_timings "$WORK/mock.jsonl") || fail "the document switches changed nothing on --mock-data"

finish test_data_formats_e2e
