# Shared by the Hugging Face Llama-family tests (test_interop_llama.sh,
# test_interop_mixtral.sh), sourced after e2e_common.sh with PRETRAIN,
# MPIEXEC, EXPORT_HF, IMPORT_HF, LLAMA (test_interop_llama: random models,
# the reference forward, config edits), HELPER (test_interop_helper) and
# the caller's MODEL flags set (after make_corpus): the round trip of a trained checkpoint, the
# import's loss at other layouts, the reference forward of random models
# and config.json edits to refuse.

# A small Llama-style model: grouped queries, RoPE base and RMSNorm epsilon
# other than LlamaConfig's defaults, untied, no biases, no dropout.
HF_LLAMA_MODEL=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --seq-length 16
       --max-position-embeddings 32 --micro-batch-size 2 --global-batch-size 4
       --position-embedding-type rope --rotary-base 500000 --normalization RMSNorm --norm-epsilon 1e-5
       --swiglu --ffn-hidden-size 48 --group-query-attention --num-query-groups 2
       --untie-embeddings-and-output-weights --disable-bias-linear
       --hidden-dropout 0 --attention-dropout 0
       --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
       --eval-iters 0 --device cpu --log-interval 1)

# has_field FILE KEY VALUE: config.json's KEY is VALUE (cJSON indents with tabs).
has_field() { grep -Eq "^[[:space:]]*\"$2\":[[:space:]]*$3,?\$" "$1"; }

# hf_round_trip ARCHITECTURE IMPORT_REPORT: $WORK/trained exported to
# $WORK/hf1 as ARCHITECTURE, imported into $WORK/from_hf (import_hf's line
# matching IMPORT_REPORT), exported again bitwise the same files, and the
# import's parameters bitwise the trained ones.
hf_round_trip() {
    ok export1 "$EXPORT_HF" --load "$WORK/trained" --out "$WORK/hf1" || return 1
    grep -q "as $1" "$WORK/export1.log" || fail "export did not report $1"
    ok import1 "$IMPORT_HF" --hf "$WORK/hf1" --save "$WORK/from_hf" || return 1
    grep -q "$2" "$WORK/import1.log" || fail "import did not report /$2/"
    ok export2 "$EXPORT_HF" --load "$WORK/from_hf" --out "$WORK/hf2"
    cmp -s "$WORK/hf1/model.safetensors" "$WORK/hf2/model.safetensors" \
        || fail "export -> import -> export changed model.safetensors"
    cmp -s "$WORK/hf1/config.json" "$WORK/hf2/config.json" \
        || fail "export -> import -> export changed config.json"
    ok compare "$HELPER" compare-ckpt "$WORK/trained" "$WORK/from_hf" padded-zero \
        && echo "round trip: $(cat "$WORK/compare.log")"
}

# hf_import_trains FLAGS...: the first iteration of $WORK/from_hf at 1x1x1
# (within 1e-6) and at TP=2 x PP=2 with FLAGS (within 1e-5) is that of
# $WORK/trained at 1x1x1 (metrics_compare: lm loss and grad norm).
hf_import_trains() {
    local loss=("${MODEL[@]}" --train-iters 1 --lr 0 --lr-warmup-iters 0 --finetune)
    ok loss_trained "$PRETRAIN" "${loss[@]}" --load "$WORK/trained" --metrics-file "$WORK/t1.jsonl"
    ok loss_tp1 "$PRETRAIN" "${loss[@]}" --load "$WORK/from_hf" --metrics-file "$WORK/i1.jsonl"
    ok loss_tp2pp2 "$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${loss[@]}" --load "$WORK/from_hf" \
        --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 "$@" \
        --metrics-file "$WORK/i4.jsonl"
    echo "first lm loss: the trained checkpoint $(lm_loss "$WORK/t1.jsonl"), its import at" \
         "1x1x1 $(lm_loss "$WORK/i1.jsonl"), at TP=2 PP=2 $* $(lm_loss "$WORK/i4.jsonl")"
    compare "import at 1x1x1" "$WORK/t1.jsonl" "$WORK/i1.jsonl" \
        || fail "the import's first iteration differs from the trained checkpoint's"
    compare "import at TP=2 PP=2 $*" "$WORK/t1.jsonl" "$WORK/i4.jsonl" --rtol 1e-5 \
        || fail "the import at TP=2 PP=2 differs from the trained checkpoint at 1x1x1"
}

# hf_random_models SPEC...: for each "NAME ARGS" (ARGS: $LLAMA random's
# after DIR), a random checkpoint $WORK/r_NAME exported to $WORK/rhf_NAME,
# its loss equal to the reference forward's, and imported back into
# $WORK/rback_NAME bitwise.
hf_random_models() {
    local spec name args
    for spec in "$@"; do
        read -r name args <<< "$spec"
        # shellcheck disable=SC2086 # ARGS are words
        ok "random_$name" "$LLAMA" random "$WORK/r_$name" $args || continue
        ok "export_$name" "$EXPORT_HF" --load "$WORK/r_$name" --out "$WORK/rhf_$name" || continue
        ok "forward_$name" "$LLAMA" forward "$WORK/r_$name" "$WORK/rhf_$name" \
            && echo "$name: $(cat "$WORK/forward_$name.log")"
        ok "import_$name" "$IMPORT_HF" --hf "$WORK/rhf_$name" --save "$WORK/rback_$name" \
            --make-vocab-size-divisible-by 16
        ok "compare_$name" "$HELPER" compare-ckpt "$WORK/r_$name" "$WORK/rback_$name" padded-zero
    done
}

# edit KIND KEY JSON: $WORK/bad_KIND, a copy of $WORK/hf1 with config.json's
# KEY set to JSON; refuse KIND REGEX: import_hf refuses it, one error line
# matching REGEX, nothing written.
edit() { ok "edit_$1" "$LLAMA" edit-config "$WORK/hf1" "$WORK/bad_$1" "$2" "$3"; }
refuse() {
    expect_error "$1" "$2" "$WORK/$1.out_dir" "$IMPORT_HF" --hf "$WORK/bad_$1" --save "$WORK/$1.out_dir"
}
