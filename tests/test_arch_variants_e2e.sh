#!/usr/bin/env bash
# Architecture variants end to end (issue 16). For each variant, one rank
# against TP 2, TP 2 with sequence parallelism, PP 2, DP 2 and 2x2x2: the
# first iteration's loss and grad norm within 1e-5 relative, 20 iterations
# within 1e-4. Variants:
#   llama    rope + RMSNorm + SwiGLU + GQA (4 heads, 2 groups) + untied output
#            layer + no linear biases, no dropout
#   partial  llama with --rotary-percent 0.5 --rotary-interleaved --apply-layernorm-1p
#            --add-qkv-bias
#   gpt2drop the GPT-2 block with the default dropout (0.1 and 0.1)
#   llamadrop llama with dropout 0.1 and full recomputation in units of 2 layers
#   qknorm   llama with --qk-layernorm --rotary-percent 0.5; one rank against
#            TP 2, TP 2 + SP, PP 2 and 2x2x2 (its TP-partial norm gradients
#            are what TP and SP can get wrong; DP adds nothing new)
#   relu2    squared ReLU, no position embedding, LayerNorm, GQA 4 -> 1 group
#            (multi-query), one rank against TP 1 layouts only (one group
#            cannot be split over TP)
# Then: llama saved at 2x2x2 resumes at 1x1x1 and 1x4x2 on the one-rank run's
# trajectory, qknorm saved at 2x1x1 resumes at 1x2x1; llamadrop resumes
# bitwise at its layout; the combinations that cannot be built get one error
# each.
# tools/generate samples from the llama and qknorm checkpoints; export_hf
# and export_llmc refuse a GPT-2 block with --qk-layernorm, writing nothing.
# Usage: test_arch_variants_e2e.sh MPIEXEC PRETRAIN PREPROCESS GENERATE EXPORT_HF EXPORT_LLMC
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
GENERATE=$4
EXPORT_HF=$5
EXPORT_LLMC=$6
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "variant"

ARGS=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --seq-length 32
      --micro-batch-size 1 --global-batch-size 8 --train-iters 20 --lr 2e-3 --lr-warmup-iters 2
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 90,10,0
      --eval-iters 1 --eval-interval 10 --device cpu --log-interval 10)
NODROP=(--hidden-dropout 0 --attention-dropout 0)
LLAMA=(--position-embedding-type rope --normalization RMSNorm --swiglu --group-query-attention
       --num-query-groups 2 --untie-embeddings-and-output-weights --disable-bias-linear)
declare -A VARIANT=(
    [llama]="${LLAMA[*]} ${NODROP[*]}"
    [partial]="${LLAMA[*]} ${NODROP[*]} --rotary-percent 0.5 --rotary-interleaved --apply-layernorm-1p --add-qkv-bias"
    [gpt2drop]=""
    [llamadrop]="${LLAMA[*]} --hidden-dropout 0.1 --attention-dropout 0.1 --recompute-granularity full --recompute-method uniform --recompute-num-layers 2"
    [qknorm]="${LLAMA[*]} ${NODROP[*]} --qk-layernorm --rotary-percent 0.5"
    [relu2]="--squared-relu --position-embedding-type none --group-query-attention --num-query-groups 1 ${NODROP[*]}"
)

for v in llama partial gpt2drop llamadrop qknorm relu2; do
    read -r -a extra <<< "${VARIANT[$v]}"
    ref="$WORK/$v.ref"
    if ! "$PRETRAIN" "${ARGS[@]}" "${extra[@]}" --metrics-file "$ref.jsonl" > "$ref.log" 2>&1; then
        cat "$ref.log"; fail "$v: one-rank run"; continue
    fi
    layouts=("2 1 1" "2 1 1 sp" "1 2 1" "1 1 2" "2 2 2")
    [ "$v" = relu2 ] && layouts=("1 2 1" "1 1 2" "1 2 2")
    [ "$v" = qknorm ] && layouts=("2 1 1" "2 1 1 sp" "1 2 1" "2 2 2")
    for layout in "${layouts[@]}"; do
        set -- $layout
        name="$v at TPxPPxDP=$1x$2x$3${4:+ $4}"
        out="$WORK/$v.l$1$2$3${4:-}"
        sp=()
        [ "${4:-}" = sp ] && sp=(--sequence-parallel)
        if ! run_layout "$1" "$2" "$3" "$out" "${ARGS[@]}" "${extra[@]}" "${sp[@]}" --metrics-file "$out.jsonl"; then
            cat "$out.log"; fail "$name run"; continue
        fi
        matches_one_rank "$name" "$ref.jsonl" "$out.jsonl"
    done
    echo "$v: $(grep -m1 '^model:' "$ref.log" || true) last $(tail -1 "$ref.jsonl" | strip_timings)"
done

# The variants compute different models: their losses after 20 iterations differ.
for v in partial gpt2drop llamadrop qknorm; do
    if cmp -s <(tail -1 "$WORK/llama.ref.jsonl" | strip_timings) <(tail -1 "$WORK/$v.ref.jsonl" | strip_timings); then
        fail "$v trains exactly as llama: its flags changed nothing"
    fi
done

# --- saved at one layout, resumed at others (e2e_common.sh) ---
save_and_resume llama "2 2 2" "1 1 1" "1 4 2"
save_and_resume qknorm "2 1 1" "1 2 1"

# --- tools/generate on the llama (saved at 2x2x2) and qknorm (saved at TP 2)
# checkpoints, read at one rank ---
generate_from() {
    local v=$1 text again
    gen() { "$GENERATE" --load "$WORK/$v.ckpt" --prompt "The " --max-new-tokens 24 --top-k 5 --seed 9 2> "$WORK/gen.err"; }
    if text=$(gen) && again=$(gen); then
        [ "${text:0:4}" = "The " ] && [ ${#text} -gt 4 ] || fail "generate ($v): '$text' does not continue the prompt"
        [ "$text" = "$again" ] || fail "generate ($v): the same seed gave '$text' and '$again'"
    else
        cat "$WORK/gen.err"; fail "generate on the $v checkpoint"
    fi
}
generate_from llama
generate_from qknorm

# --- the GPT-2 export formats have no query/key norm: a clear refusal -------------
"$PRETRAIN" "${ARGS[@]}" "${NODROP[@]}" --qk-layernorm --train-iters 2 --lr-decay-iters 20 --save "$WORK/gpt2qk.ckpt" \
    --save-interval 2 > "$WORK/gpt2qk.log" 2>&1 || { cat "$WORK/gpt2qk.log"; fail "GPT-2 with --qk-layernorm"; }
for export in "$EXPORT_HF --out $WORK/gpt2qk.hf" "$EXPORT_LLMC --out $WORK/gpt2qk.bin"; do
    read -r -a cmd <<< "$export"
    "${cmd[@]}" --load "$WORK/gpt2qk.ckpt" > "$WORK/export.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] || fail "$(basename "${cmd[0]}") exported a --qk-layernorm model"
    one_error "$(basename "${cmd[0]}") of --qk-layernorm" "$WORK/export.log" \
        "(GPT2LMHeadModel \(it has --qk-layernorm true, GPT-2 has false\)|not the GPT-2 block llm.c holds: it has --qk-layernorm true)"
    [ ! -e "${cmd[2]}" ] || fail "$(basename "${cmd[0]}") refused but wrote ${cmd[2]}"
done

# --- dropout and recomputation resume bitwise at the same layout --------------
read -r -a drop <<< "${VARIANT[llamadrop]}"
run_layout 2 1 2 "$WORK/dfull" "${ARGS[@]}" "${drop[@]}" --metrics-file "$WORK/dfull.jsonl" \
    || { cat "$WORK/dfull.log"; fail "llamadrop uninterrupted"; }
run_layout 2 1 2 "$WORK/dhalf" "${ARGS[@]}" "${drop[@]}" --train-iters 10 --lr-decay-iters 20 \
    --save "$WORK/dckpt" --save-interval 10 --metrics-file "$WORK/dhalf.jsonl" \
    || { cat "$WORK/dhalf.log"; fail "llamadrop first half"; }
run_layout 2 1 2 "$WORK/drest" "${ARGS[@]}" "${drop[@]}" --load "$WORK/dckpt" \
    --metrics-file "$WORK/drest.jsonl" || { cat "$WORK/drest.log"; fail "llamadrop resume"; }
if ! cmp -s <(tail -n 10 "$WORK/dfull.jsonl" | strip_timings) <(strip_timings "$WORK/drest.jsonl"); then
    diff <(tail -n 10 "$WORK/dfull.jsonl" | strip_timings) <(strip_timings "$WORK/drest.jsonl") | head -6 >&2
    fail "llamadrop resumed is not bitwise the uninterrupted run"
fi

# --- combinations that cannot be built: one error each -------------------------
bad() {
    local name=$1 np=$2 tp=$3 regex=$4
    shift 4
    mpi_ranks "$np" "$@" --tensor-model-parallel-size "$tp" > "$WORK/bad.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "$name: status $rc"
    one_error "$name" "$WORK/bad.log" "$regex"
}
bad "fewer query groups than TP ranks" 2 2 "--num-query-groups 1 is not divisible by --tensor-model-parallel-size 2" \
    --group-query-attention --num-query-groups 1
bad "heads not divisible by groups" 1 1 "--num-query-groups 3 must divide --num-attention-heads 4" \
    --group-query-attention --num-query-groups 3
bad "SwiGLU FFN that does not split" 2 2 "--ffn-hidden-size 65 is not divisible by --tensor-model-parallel-size 2" \
    --swiglu --ffn-hidden-size 65
bad "groups without GQA" 1 1 "--num-query-groups 2 needs --group-query-attention" --num-query-groups 2
bad "two activations" 1 1 "--swiglu and --squared-relu exclude each other" --swiglu --squared-relu
bad "unknown norm" 1 1 "--normalization BatchNorm: use LayerNorm or RMSNorm" --normalization BatchNorm
bad "unknown positions" 1 1 "--position-embedding-type alibi: use learned_absolute, rope or none" \
    --position-embedding-type alibi
bad "odd rotary dimension" 1 1 "--rotary-percent 0.375 of the head dimension 8 rotates 3 features" \
    --position-embedding-type rope --rotary-percent 0.375
bad "dropout of one" 1 1 "--hidden-dropout must be in \[0, 1\)" --hidden-dropout 1

finish "architecture variants"
