#!/usr/bin/env bash
# tools/checkpoint_info end to end. Synthetic checkpoints written through the
# checkpoint API (values with closed-form norms; a gap, an overlap, a missing
# parameter, no optimizer state), then real checkpoints of a 3-iteration run
# at one rank, at TP = 2 and at DP = 2: what they print, --verify, norms that agree
# across the two layouts, --compare-to (bitwise across layouts; NaN, inf, a
# 1e-5 difference and missing values fail), and every bad-input case (one
# "error:" line, exit 2).
# Usage: test_checkpoint_info.sh PRETRAIN PREPROCESS CHECKPOINT_INFO MPIEXEC WRITER
set -u
PRETRAIN=$1
PREPROCESS=$2
INFO=$3
MPIEXEC=$4
WRITER=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run NAME ARGS... : the tool's stdout in $WORK/NAME.out, stderr in .err, status in $rc
run() {
    local name=$1
    shift
    "$INFO" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    rc=$?
}
expect_rc() { # expect_rc NAME WANT
    if [ "$rc" -ne "$2" ]; then
        fail "$1: exit status $rc, want $2"
        cat "$WORK/$1.out" "$WORK/$1.err" >&2
    fi
}
expect_line() { # expect_line NAME FIXED-LINE
    grep -qxF -- "$2" "$WORK/$1.out" || { fail "$1: no line '$2'"; cat "$WORK/$1.out" >&2; }
}
json() { "$WRITER" json "$WORK/$1.out" "$2"; }
# Relative difference of a and b is at most tol; NaN, inf or a missing value fails.
close() { "$WRITER" close "$1" "$2" "$3" 2> /dev/null; }

# ---------------------------------------------------------------- synthetic
"$WRITER" write good "$WORK/syn" > "$WORK/expected.txt" || { fail "writing the good checkpoint"; exit 1; }
nparams=$(wc -l < "$WORK/expected.txt")
nelements=$(awk '{ s += $2 } END { print s }' "$WORK/expected.txt")

run syn --load "$WORK/syn" --verify --norms
expect_rc syn 0
expect_line syn "iteration: 5"
expect_line syn "consumed samples: 40"
expect_line syn "model: 2 layers, hidden 8, 2 heads, ffn 16, vocab 20 (padded 32), max positions 8, seq length 8"
expect_line syn "saved with: TP 2, PP 1, DP 1, CP 1, world size 2"
expect_line syn "seed: 77"
expect_line syn "tokenizer: ByteTokenizer"
expect_line syn "optimizer state: present (fp32 exp_avg, exp_avg_sq)"
expect_line syn "parameters: $nparams tensors, $nelements canonical elements (the model shape implies $nelements)"
expect_line syn "coverage: every canonical element of every parameter is stored exactly once"
# Norm rows: "  name  [shape]  |w|  |m|  |v|" -> name and the last three fields.
norm_rows() { sed -n '/^norms (/,$p' "$1" | tail -n +3 | awk '{ print $1, $(NF-2), $(NF-1), $NF }'; }
norm_rows "$WORK/syn.out" > "$WORK/syn.norms"
[ "$(wc -l < "$WORK/syn.norms")" -eq "$nparams" ] || fail "syn: $(wc -l < "$WORK/syn.norms") norm rows, want $nparams"
# State-dict order: embeddings, layer 0 before layer 1, final layernorm last.
order=$(awk '{ print $1 }' "$WORK/syn.norms")
[ "$(sed -n 1p <<<"$order")" = embedding.word_embeddings.weight ] || fail "syn: first row is not the word embedding"
[ "$(sed -n 2p <<<"$order")" = embedding.position_embeddings.weight ] || fail "syn: second row is not the position embedding"
[ "$(sed -n 3p <<<"$order")" = decoder.layers.0.input_layernorm.weight ] || fail "syn: third row is not layer 0's first"
[ "$(tail -n 1 <<<"$order")" = decoder.final_layernorm.bias ] || fail "syn: last row is not the final layernorm"
last0=$(grep -n '^decoder.layers.0\.' <<<"$order" | tail -n 1 | cut -d: -f1)
first1=$(grep -n '^decoder.layers.1\.' <<<"$order" | head -n 1 | cut -d: -f1)
[ "$last0" -lt "$first1" ] || fail "syn: layer 1 rows precede layer 0's"
# Text norms (10 significant digits) against the closed forms.
paste -d' ' "$WORK/syn.norms" "$WORK/expected.txt" | while read -r name w m v ename _ ew em ev; do
    [ "$name" = "$ename" ] || { echo "row $name, expected $ename"; continue; }
    close "$w" "$ew" 1e-8 && close "$m" "$em" 1e-8 && close "$v" "$ev" 1e-8 \
        || echo "$name: norms $w $m $v, want $ew $em $ev"
done > "$WORK/syn.diff"
[ -s "$WORK/syn.diff" ] && { fail "syn: norms differ from the closed forms"; cat "$WORK/syn.diff" >&2; }

# JSON with chunks of 3 elements: reads cross the two files' boundary.
run synjson --load "$WORK/syn" --verify --norms --json --chunk-elements 3
expect_rc synjson 0
[ "$(json synjson iteration)" = 5 ] || fail "synjson: iteration"
[ "$(json synjson layout.tensor_model_parallel_size)" = 2 ] || fail "synjson: TP"
[ "$(json synjson layout.world_size)" = 2 ] || fail "synjson: world size"
[ "$(json synjson model.padded_vocab_size)" = 32 ] || fail "synjson: padded vocab"
[ "$(json synjson num_parameters)" = "$nparams" ] || fail "synjson: num_parameters"
[ "$(json synjson canonical_parameter_count)" = "$nelements" ] || fail "synjson: canonical count"
[ "$(json synjson coverage.ok)" = true ] || fail "synjson: coverage.ok"
i=0
while read -r ename enumel ew em ev; do
    [ "$(json synjson parameters.$i.name)" = "$ename" ] || fail "synjson: parameter $i is not $ename"
    [ "$(json synjson parameters.$i.numel)" = "$enumel" ] || fail "synjson: $ename numel"
    keys=(weight_norm exp_avg_norm exp_avg_sq_norm)
    want=("$ew" "$em" "$ev")
    for t in 0 1 2; do
        got=$(json synjson "parameters.$i.${keys[t]}")
        close "$got" "${want[t]}" 1e-13 || fail "synjson: $ename ${keys[t]} = $got, want ${want[t]}"
    done
    i=$((i + 1))
done < "$WORK/expected.txt"

# No optimizer state: the moments have no norms.
"$WRITER" write noopt "$WORK/noopt" > /dev/null || fail "writing the noopt checkpoint"
run noopt --load "$WORK/noopt" --norms --json
expect_rc noopt 0
[ "$(json noopt has_optimizer_state)" = false ] || fail "noopt: has_optimizer_state"
[ "$(json noopt parameters.0.exp_avg_norm)" = null ] || fail "noopt: exp_avg norm is not null"
[ "$(json noopt parameters.0.weight_norm)" != null ] || fail "noopt: weight norm missing"

# Defects --verify must find: exit 1 and a message naming the parameter.
"$WRITER" write gap "$WORK/gap" > /dev/null || fail "writing the gap checkpoint"
"$WRITER" write overlap "$WORK/overlap" > /dev/null || fail "writing the overlap checkpoint"
"$WRITER" write missing "$WORK/missing" > /dev/null || fail "writing the missing checkpoint"
# decoder.layers.1.mlp.linear_fc1.weight is [16, 8]: element 64 is the one left out.
run gap --load "$WORK/gap" --verify
expect_rc gap 1
grep -q "coverage: FAILED: .*decoder.layers.1.mlp.linear_fc1.weight' has a gap: elements \[64, 65)" \
    "$WORK/gap.out" || { fail "gap: message"; cat "$WORK/gap.out" >&2; }
run gapnorms --load "$WORK/gap" --verify --norms
expect_rc gapnorms 1
expect_line gapnorms "norms: not computed, the checkpoint failed --verify"
run gapjson --load "$WORK/gap" --verify --json
expect_rc gapjson 1
[ "$(json gapjson coverage.ok)" = false ] || fail "gapjson: coverage.ok is not false"
json gapjson coverage.message | grep -q "has a gap" || fail "gapjson: coverage.message"
run gaponly --load "$WORK/gap" --norms # no --verify: reading the gap is an error
expect_rc gaponly 2
grep -q "^error: .*decoder.layers.1.mlp.linear_fc1.weight" "$WORK/gaponly.err" || fail "gaponly: error line"
run overlap --load "$WORK/overlap" --verify
expect_rc overlap 1
grep -q "coverage: FAILED: .*linear_fc1.weight' has overlapping intervals" "$WORK/overlap.out" \
    || { fail "overlap: message"; cat "$WORK/overlap.out" >&2; }
run missing --load "$WORK/missing" --verify
expect_rc missing 1
grep -q "coverage: FAILED: .*'decoder.layers.1.self_attention.linear_proj.bias' .* is in no rank file" \
    "$WORK/missing.out" || { fail "missing: message"; cat "$WORK/missing.out" >&2; }
"$WRITER" write extra "$WORK/extra" > /dev/null || fail "writing the extra checkpoint"
run extra --load "$WORK/extra" --verify
expect_rc extra 1
grep -q "coverage: FAILED: .*hold parameter 'decoder.layers.2.input_layernorm.weight' \[8\], which the model shape" \
    "$WORK/extra.out" || { fail "extra: message"; cat "$WORK/extra.out" >&2; }
"$WRITER" write reshaped "$WORK/reshaped" > /dev/null || fail "writing the reshaped checkpoint"
run reshaped --load "$WORK/reshaped" --verify
expect_rc reshaped 1
grep -q "coverage: FAILED: .*'decoder.layers.0.mlp.linear_fc1.weight' has canonical shape \[16, 8\] in the rank files but the model shape in metadata.json implies \[24, 8\]" \
    "$WORK/reshaped.out" || { fail "reshaped: message"; cat "$WORK/reshaped.out" >&2; }

# ---------------------------------------------------- --compare-to, synthetic
# cmp NAME WANT_RC ARGS...: checkpoint_info --compare-to, its exit status WANT_RC.
cmp() {
    local name=$1 want=$2
    shift 2
    run "$name" "$@"
    expect_rc "$name" "$want"
}
for kind in single nan_first nan_mid inf_last perturbed; do
    "$WRITER" write $kind "$WORK/$kind" > /dev/null || fail "writing the $kind checkpoint"
done
# The same values at another layout (one rank file) are bitwise equal.
cmp cmp-single 0 --load "$WORK/single" --compare-to "$WORK/syn"
expect_line cmp-single "same: bitwise equal"
expect_line cmp-single "checkpoint: $WORK/single/iter_0000005 (TP 1, PP 1, DP 1)"
expect_line cmp-single "weight: $nelements elements, 0 differ (0 not finite); max |a-b| 0.000e+00, max |a-b|/|b| 0.000e+00"
cmp cmp-single-rtol 0 --load "$WORK/single" --compare-to "$WORK/syn" --rtol 1e-6 --atol 1e-12
# NaN or inf at the first, a middle and the last element fails, bitwise or
# within tolerances, and also against itself (same bits on both sides).
for kind in nan_first nan_mid inf_last; do
    cmp cmp-$kind 1 --load "$WORK/$kind" --compare-to "$WORK/syn"
    grep -q "^differ: .*(not finite)$" "$WORK/cmp-$kind.out" || fail "cmp-$kind: no 'not finite' line"
    cmp cmp-$kind-ref 1 --load "$WORK/syn" --compare-to "$WORK/$kind" --rtol 0.5 --atol 1
    cmp cmp-$kind-self 1 --load "$WORK/$kind" --compare-to "$WORK/$kind"
done
expect_line cmp-nan_first "differ: embedding.word_embeddings.weight weight[0]: nan, reference 1 (not finite)"
expect_line cmp-nan_mid "differ: decoder.layers.1.mlp.linear_fc1.weight exp_avg[64]: nan, reference -0.0634765625 (not finite)"
expect_line cmp-inf_last "differ: decoder.final_layernorm.bias exp_avg_sq[7]: inf, reference 0.25 (not finite)"
# A 1e-5 relative difference fails bitwise and at rtol 1e-6, passes at 1e-4.
cmp cmp-perturbed 1 --load "$WORK/perturbed" --compare-to "$WORK/syn"
expect_line cmp-perturbed "differ: decoder.layers.1.mlp.linear_fc1.weight weight[63]: 64.0006409, reference 64"
cmp cmp-perturbed-rtol6 1 --load "$WORK/perturbed" --compare-to "$WORK/syn" --rtol 1e-6
expect_line cmp-perturbed-rtol6 "DIFFERENT (|a-b| <= 0 + 1e-06*|b| per element)"
cmp cmp-perturbed-rtol4 0 --load "$WORK/perturbed" --compare-to "$WORK/syn" --rtol 1e-4
cmp cmp-perturbed-moments 0 --load "$WORK/perturbed" --compare-to "$WORK/syn" --compare-tensors exp_avg,exp_avg_sq
# A parameter missing on either side, a gap, or no optimizer state fails.
cmp cmp-missing 1 --load "$WORK/missing" --compare-to "$WORK/syn"
grep -q "^differ: .*linear_proj.bias' .* is in no rank file" "$WORK/cmp-missing.out" || fail "cmp-missing: message"
cmp cmp-missing-ref 1 --load "$WORK/syn" --compare-to "$WORK/missing"
cmp cmp-gap 1 --load "$WORK/gap" --compare-to "$WORK/syn"
cmp cmp-noopt 1 --load "$WORK/noopt" --compare-to "$WORK/syn"
expect_line cmp-noopt "differ: the checkpoint has no optimizer state to compare exp_avg"
cmp cmp-noopt-weights 0 --load "$WORK/noopt" --compare-to "$WORK/syn" --compare-tensors weight
cmp cmp-reshaped 1 --load "$WORK/reshaped" --compare-to "$WORK/syn"
expect_line cmp-reshaped "differ: ffn_hidden_size 24, reference 16"

# ---------------------------------------------------------------- training
for i in $(seq 1 16); do
    for j in $(seq 1 25); do echo "document $i line $j: checkpoints hold $(( (i * j) % 11 )) pieces"; done > "$WORK/d$i.txt"
done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > "$WORK/pre.log" 2>&1 || { cat "$WORK/pre.log"; fail "preprocess_data"; exit 1; }
L=2 C=32 H=4 F=64 T=16 V=257 VPAD=384
ARGS=(--num-layers $L --hidden-size $C --num-attention-heads $H --ffn-hidden-size $F
      --seq-length $T --max-position-embeddings $T --micro-batch-size 2 --global-batch-size 4
      --train-iters 3 --lr 2e-3 --lr-warmup-iters 1 --tokenizer-type ByteTokenizer
      --data-path "$WORK/c_text_document.h5" --split 95,5,0 --eval-iters 0 --device cpu
      --seed 4321 --save-interval 2)
"$PRETRAIN" "${ARGS[@]}" --save "$WORK/ck1" > "$WORK/ck1.log" 2>&1 \
    || { cat "$WORK/ck1.log"; fail "1-rank run"; exit 1; }
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --tensor-model-parallel-size 2 \
    --save "$WORK/ck2" > "$WORK/ck2.log" 2>&1 || { cat "$WORK/ck2.log"; fail "TP=2 run"; exit 1; }
# DP = 2: ZeRO-1 shards cut parameters mid-tensor, so rank files hold pieces.
"$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" \
    --save "$WORK/dp2" > "$WORK/dp2.log" 2>&1 || { cat "$WORK/dp2.log"; fail "DP=2 run"; exit 1; }

# Canonical element count from the model shape, derived here independently.
per_layer=$(( 4*C + 3*C*C + 3*C + C*C + C + F*C + F + F*C + C ))
count=$(( L*per_layer + 2*C + VPAD*C + T*C ))
for ck in ck1 ck2 dp2; do
    run $ck --load "$WORK/$ck" --verify --norms
    expect_rc $ck 0
    expect_line $ck "iteration: 3"
    expect_line $ck "consumed samples: 12"
    expect_line $ck "optimizer step: 3"
    expect_line $ck "model: $L layers, hidden $C, $H heads, ffn $F, vocab $V (padded $VPAD), max positions $T, seq length $T"
    expect_line $ck "seed: 4321"
    expect_line $ck "tokenizer: ByteTokenizer"
    expect_line $ck "optimizer state: present (fp32 exp_avg, exp_avg_sq)"
    expect_line $ck "parameters: $((12 * L + 4)) tensors, $count canonical elements (the model shape implies $count)"
    expect_line $ck "coverage: every canonical element of every parameter is stored exactly once"
    grep -q "^data: .*c_text_document.h5" "$WORK/$ck.out" || fail "$ck: data description"
    norm_rows "$WORK/$ck.out" > "$WORK/$ck.norms"
done
expect_line ck1 "saved with: TP 1, PP 1, DP 1, CP 1, world size 1"
expect_line ck2 "saved with: TP 2, PP 1, DP 1, CP 1, world size 2"
expect_line dp2 "saved with: TP 1, PP 1, DP 2, CP 1, world size 2"
[ "$(wc -l < "$WORK/ck1.norms")" -eq $((12 * L + 4)) ] || fail "ck1: norm rows"
# The layouts train the same model: the same norms up to fp32 rounding.
for ck in ck2 dp2; do
    paste -d' ' "$WORK/ck1.norms" "$WORK/$ck.norms" | while read -r n1 w1 m1 v1 n2 w2 m2 v2; do
        [ "$n1" = "$n2" ] || { echo "row $n1 vs $n2"; continue; }
        close "$w1" "$w2" 1e-5 && close "$m1" "$m2" 1e-5 && close "$v1" "$v2" 1e-5 \
            || echo "$n1: one rank $w1 $m1 $v1, $ck $w2 $m2 $v2"
    done > "$WORK/$ck.diff"
    [ -s "$WORK/$ck.diff" ] && { fail "norms differ between one rank and $ck"; cat "$WORK/$ck.diff" >&2; }
done
# Chunking changes memory, not the result: elements are summed in the same order.
run ck2chunk --load "$WORK/ck2" --norms --chunk-elements 1000
expect_rc ck2chunk 0
norm_rows "$WORK/ck2chunk.out" | cmp -s - "$WORK/ck2.norms" || fail "norms depend on --chunk-elements"
# An older iteration by --iteration.
run ck2it --load "$WORK/ck2" --iteration 2
expect_rc ck2it 0
expect_line ck2it "iteration: 2"
expect_line ck2it "consumed samples: 8"

# ------------------------------------------------------------- bad input
expect_error() { # expect_error NAME REGEX ARGS...: one "error:" line matching REGEX, exit 2
    local name=$1 regex=$2
    shift 2
    run "$name" "$@"
    expect_rc "$name" 2
    grep -Eq -- "$regex" "$WORK/$name.err" || { fail "$name: stderr lacks /$regex/"; cat "$WORK/$name.err" >&2; }
    [ "$(grep -c '^error:' "$WORK/$name.err")" -eq 1 ] || fail "$name: not exactly one error line"
}
# A damaged iteration 3 named by --iteration is an error naming its file;
# without --iteration the tool resolves as a resuming run does (the newest
# complete checkpoint, iteration 2 here) and says in one note line why.
expect_recovered() { # expect_recovered NAME REGEX ARGS...: iteration 2 opened, a note matching REGEX
    local name=$1 regex=$2
    shift 2
    run "$name" "$@"
    expect_rc "$name" 0
    expect_line "$name" "iteration: 2"
    grep -Eq -- "^note: .*$regex.*resuming from the newest complete checkpoint iter_0000002" \
        "$WORK/$name.err" || { fail "$name: no recovery note matching /$regex/"; cat "$WORK/$name.err" >&2; }
}
cp -r "$WORK/ck2" "$WORK/norank"
rm "$WORK/norank/iter_0000003/rank_00001.h5"
expect_error missing-rank-file "rank_00001.h5.* missing" --load "$WORK/norank" --iteration 3 --verify
expect_recovered missing-rank-file-latest "names iteration 3, which is incomplete: .*rank_00001.h5" \
    --load "$WORK/norank" --verify
cp -r "$WORK/ck1" "$WORK/badmeta"
echo '{"format": "gpt3d-checkpoint",' > "$WORK/badmeta/iter_0000003/metadata.json"
expect_error bad-metadata "badmeta/iter_0000003/metadata.json" --load "$WORK/badmeta" --iteration 3
expect_recovered bad-metadata-latest "badmeta/iter_0000003/metadata.json" --load "$WORK/badmeta"
cp -r "$WORK/ck1" "$WORK/badlatest"
echo "three" > "$WORK/badlatest/latest_checkpointed_iteration.txt"
run bad-latest --load "$WORK/badlatest"
expect_rc bad-latest 0
expect_line bad-latest "iteration: 3"
grep -q "^note: no usable latest_checkpointed_iteration.txt in .*badlatest (it is malformed): resuming from the newest complete checkpoint iter_0000003$" \
    "$WORK/bad-latest.err" || { fail "bad-latest: no recovery note"; cat "$WORK/bad-latest.err" >&2; }
cp -r "$WORK/ck1" "$WORK/badrank"
echo "not hdf5" > "$WORK/badrank/iter_0000003/rank_00000.h5"
expect_error bad-rank-file "badrank/iter_0000003/rank_00000.h5" --load "$WORK/badrank" --iteration 3
expect_recovered bad-rank-file-latest "badrank/iter_0000003/rank_00000.h5" --load "$WORK/badrank"
# Nothing complete: the tool opens what the tracker names, to show its damage.
rm -r "$WORK/badrank/iter_0000002"
expect_error bad-rank-file-only "badrank/iter_0000003/rank_00000.h5" --load "$WORK/badrank"
mkdir "$WORK/empty"
expect_error no-checkpoint "'.*empty' holds no checkpoint" --load "$WORK/empty"
expect_error no-directory "--load '.*nope' is not a directory" --load "$WORK/nope"
expect_error no-iteration "iter_0000007' does not exist" --load "$WORK/ck1" --iteration 7
expect_error negative-iteration "--iteration must be >= 0" --load "$WORK/ck1" --iteration -1
expect_error missing-load "missing required flag --load" --verify
expect_error unknown-flag "unknown flag --norm" --load "$WORK/ck1" --norm
expect_error bad-integer "--iteration" --load "$WORK/ck1" --iteration three
expect_error bad-chunk "--chunk-elements must be between 1" --load "$WORK/ck1" --chunk-elements 0
expect_error bad-rtol "--rtol expects a finite number, got 'nan'" --load "$WORK/ck1" --compare-to "$WORK/ck2" --rtol nan
expect_error bad-atol "--rtol and --atol must be finite and >= 0" --load "$WORK/ck1" --compare-to "$WORK/ck2" --atol -1
expect_error bad-tensors "--compare-tensors: unknown tensor 'exp_avgs'" --load "$WORK/ck1" --compare-to "$WORK/ck2" --compare-tensors weight,exp_avgs
expect_error rtol-alone "need --compare-to DIR" --load "$WORK/ck1" --rtol 1e-6
expect_error compare-norms "--compare-to cannot be combined with --norms" --load "$WORK/ck1" --compare-to "$WORK/ck2" --norms
expect_error compare-missing "--load '.*nope' is not a directory" --load "$WORK/ck1" --compare-to "$WORK/nope"
expect_error compare-iteration "iter_0000007' does not exist" --load "$WORK/ck1" --compare-to "$WORK/ck2" --compare-iteration 7

run help --help
expect_rc help 0
for flag in --load --iteration --verify --norms --json --chunk-elements --compare-to \
    --compare-iteration --rtol --atol --compare-tensors --ignore-training-state; do
    grep -q -- "$flag" "$WORK/help.out" || fail "--help lacks $flag"
done

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_checkpoint_info: ok"
