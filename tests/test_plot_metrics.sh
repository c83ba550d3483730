#!/usr/bin/env bash
# tools/plot_metrics end to end, on metrics files written here by hand: the
# PNG exists, is a PNG, and has one panel height per panel; the data handed
# to gnuplot (kept with --script-dir) holds the right points, with a resumed
# run's repeated iterations replaced; bad input gets one clear error, exit
# status 2, no image and no temporary files left (checked first: they need
# no gnuplot, so they run even where the image checks cannot).
# Usage: test_plot_metrics.sh PLOT_METRICS
set -u
PLOT=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TMPDIR="$WORK/tmp"
mkdir -p "$TMPDIR"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

record() { # record ITER LOSS [VALID]: one line as pretrain_gpt writes it
    printf '{"iteration": %d, "consumed_samples": %d, "lm_loss": %s, "grad_norm": 1.5, ' \
        "$1" $((8 * $1)) "$2"
    printf '"lr": %s, "loss_scale": 1.0, "iteration_ms": 12.5, "tokens_per_s": 655360.0, ' "0.000$1"
    printf '"tflops_per_gpu": 1.0'
    [ $# -ge 3 ] && printf ', "valid_loss": %s' "$3"
    printf '}\n'
}
A="$WORK/run_a.jsonl"
B="$WORK/run_b.jsonl"
for i in $(seq 1 20); do
    if [ $((i % 10)) -eq 0 ]; then record "$i" "$((100 / i)).25" "$((100 / i)).5"; else record "$i" "$((100 / i)).25"; fi
done > "$A"
# The run was resumed from its iteration-14 checkpoint and appended to the same file.
for i in $(seq 15 25); do record "$i" 0.5; done >> "$A"
for i in $(seq 1 10); do record "$i" "$((50 / i)).75"; done > "$B"

# --- bad input: none of it reaches gnuplot, so it runs with or without one --
PLOT_ENV=() # extra environment of the next expect_fail
expect_fail() { # expect_fail NAME REGEX ARGS...
    local name=$1 regex=$2
    shift 2
    rm -f "$WORK/bad.png"
    env "${PLOT_ENV[@]}" "$PLOT" "$@" > "$WORK/bad.out" 2> "$WORK/bad.err"
    local rc=$?
    [ $rc -eq 2 ] || fail "$name: exit status $rc, want 2"
    grep -Eq -- "$regex" "$WORK/bad.err" || { fail "$name: stderr lacks /$regex/:"; cat "$WORK/bad.err" >&2; }
    [ "$(grep -c '^error:' "$WORK/bad.err")" -eq 1 ] || fail "$name: not exactly one error line"
    [ ! -e "$WORK/bad.png" ] || fail "$name: wrote an image"
    [ -z "$(ls -A "$TMPDIR")" ] || fail "$name: left $(ls "$TMPDIR") in TMPDIR"
    [ -z "$(ls "$WORK" | grep 'bad.png.tmp')" ] || fail "$name: left a partial image"
}
expect_fail missing "cannot read metrics file '.*nope.jsonl'" "$WORK/nope.jsonl" -o "$WORK/bad.png"
{ record 1 2.0; record 2 1.9; echo '{"iteration": 3, "lm_loss": '; } > "$WORK/bad.jsonl"
expect_fail malformed "bad.jsonl:3: not valid JSON" "$A" "$WORK/bad.jsonl" -o "$WORK/bad.png"
{ record 1 2.0; echo '[1, 2]'; } > "$WORK/array.jsonl"
expect_fail not-object "array.jsonl:2: not a JSON object" "$WORK/array.jsonl" -o "$WORK/bad.png"
echo '{"lm_loss": 2.0}' > "$WORK/noiter.jsonl"
expect_fail no-iteration "noiter.jsonl:1: .*\"iteration\"" "$WORK/noiter.jsonl" -o "$WORK/bad.png"
echo '{"iteration": 1, "speed": 2.0}' > "$WORK/nometric.jsonl"
expect_fail no-metric "no metrics file has any of the metrics lm_loss, valid_loss" \
    "$WORK/nometric.jsonl" -o "$WORK/bad.png"
expect_fail no-gnuplot "gnuplot-nox" "$A" -o "$WORK/bad.png" --gnuplot "$WORK/no/gnuplot"
PLOT_ENV=(PATH=/nonexistent)
expect_fail no-gnuplot-on-path "gnuplot is not installed.*gnuplot-nox" "$A" -o "$WORK/bad.png"
PLOT_ENV=()
expect_fail tokens-needs-seq "--x tokens needs the run's --seq-length" "$A" -o "$WORK/bad.png" --x tokens
expect_fail bad-axis "--x must be iteration, samples or tokens" "$A" -o "$WORK/bad.png" --x time
expect_fail no-input "no metrics file given" -o "$WORK/bad.png"
expect_fail no-output "--output" "$A"
expect_fail bad-dir "-o '.*/none/x.png'" "$A" -o "$WORK/none/x.png"

# --- the image and the data handed to gnuplot -----------------------------
# A missing gnuplot fails: CI's scripts/quickstart.sh installs gnuplot-nox, so
# there its absence is a broken setup. GPT3D_ALLOW_MISSING_PREREQS=1 (a
# machine that cannot have it) makes it a skip, after the checks above.
if ! command -v gnuplot > /dev/null; then
    if [ "${GPT3D_ALLOW_MISSING_PREREQS:-0}" = 1 ]; then
        [ $failures -eq 0 ] || { echo "$failures check(s) failed" >&2; exit 1; }
        echo "SKIP: gnuplot is not installed (apt-get install gnuplot-nox): the images were not" \
             "checked (bad-input cases passed); skipped because GPT3D_ALLOW_MISSING_PREREQS=1"
        exit 77
    fi
    fail "gnuplot is not installed (apt-get install gnuplot-nox, as scripts/quickstart.sh does;" \
         "GPT3D_ALLOW_MISSING_PREREQS=1 skips instead): the images were not checked"
    echo "$failures check(s) failed" >&2
    exit 1
fi

png_size() { # png_size FILE -> "WIDTH HEIGHT", or nothing when FILE is no PNG
    [ "$(od -An -tx1 -N8 "$1" 2>/dev/null | tr -d ' \n')" = "89504e470d0a1a0a" ] || return
    od -An -tu1 -j16 -N8 "$1" | awk '{ print $1*16777216 + $2*65536 + $3*256 + $4, $5*16777216 + $6*65536 + $7*256 + $8 }'
}
check_png() { # check_PNG NAME FILE WIDTH HEIGHT
    local size
    size=$(png_size "$2")
    [ -n "$size" ] || { fail "$1: $2 is not a PNG"; return; }
    [ "$size" = "$3 $4" ] || fail "$1: image is $size, want $3 $4"
    [ "$(stat -c %s "$2")" -gt 2000 ] || fail "$1: image is suspiciously small"
}

# --- one file: the loss panel -------------------------------------------
"$PLOT" "$A" -o "$WORK/one.png" > "$WORK/one.log" 2>&1 || { cat "$WORK/one.log"; fail "one file"; }
check_png one "$WORK/one.png" 900 450
grep -q "wrote $WORK/one.png (1 run, 1 panel" "$WORK/one.log" || fail "one file: summary line"

# --- several files and metrics: three panels, data kept --------------------
"$PLOT" "$A" "$B" -o "$WORK/many.png" --metrics lm_loss,valid_loss,lr grad_norm \
    --script-dir "$WORK/script" --title "two runs" > "$WORK/many.log" 2>&1 \
    || { cat "$WORK/many.log"; fail "several files"; }
check_png many "$WORK/many.png" 900 $((3 * 450 + 40))
S="$WORK/script"
for f in plot.gp run0_lm_loss.dat run0_valid_loss.dat run0_lr.dat run0_grad_norm.dat \
         run1_lm_loss.dat run1_lr.dat; do
    [ -f "$S/$f" ] || fail "several files: $f not kept"
done
[ ! -e "$S/run1_valid_loss.dat" ] || fail "run b has no valid_loss but got a data file"
# The resumed run: iterations 1-14 of the first attempt, 15-25 of the second.
[ "$(wc -l < "$S/run0_lm_loss.dat")" -eq 25 ] || fail "resumed run: want 25 points"
awk 'NR > 1 && $1 <= prev { exit 1 } { prev = $1 }' "$S/run0_lm_loss.dat" || fail "x not increasing"
[ "$(awk '$1 == 15 { print $2 }' "$S/run0_lm_loss.dat")" = "0.5" ] || fail "restart did not replace iteration 15"
[ "$(awk '$1 == 14 { print $2 }' "$S/run0_lm_loss.dat")" = "7.25" ] || fail "iteration 14 lost"
[ "$(cat "$S/run0_valid_loss.dat")" = "$(printf '10 10.5\n20 5.5')" ] || fail "valid_loss points"
grep -q "run_a.jsonl lm_loss" "$S/plot.gp" && grep -q "run_b.jsonl lr" "$S/plot.gp" \
    || fail "legend titles are not the file names"
# The kept script reruns by hand and writes -o itself.
rm -f "$WORK/many.png"
(cd / && gnuplot "$S/plot.gp") > /dev/null 2>&1 || fail "the kept script does not rerun"
check_png rerun "$WORK/many.png" 900 $((3 * 450 + 40))

# --- x = tokens, flags before the files ---------------------------------
"$PLOT" -o "$WORK/tokens.png" --x tokens --seq-length 1024 --script-dir "$WORK/tok" "$B" \
    > "$WORK/tok.log" 2>&1 || { cat "$WORK/tok.log"; fail "--x tokens"; }
check_png tokens "$WORK/tokens.png" 900 450
[ "$(head -n 1 "$WORK/tok/run0_lm_loss.dat")" = "8192 50.75" ] || fail "--x tokens: x is not samples x 1024"
grep -q "set xlabel 'tokens'" "$WORK/tok/plot.gp" || fail "--x tokens: axis label"

# --- --input and plain words add up ------------------------------------------
"$PLOT" --input "$A" -o "$WORK/both.png" "$B" > "$WORK/both.log" 2>&1 || fail "--input with plain words"
grep -q "(2 runs, 1 panel" "$WORK/both.log" || fail "--input and a plain word did not give 2 runs"

if [ $failures -ne 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all plot_metrics checks passed"
