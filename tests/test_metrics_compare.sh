#!/usr/bin/env bash
# metrics_compare must pass equal logs and a difference under 1e-6 relative,
# and fail each of: a NaN or inf in the first, a middle and the last record
# (in either file), a missing or renamed field, a 1e-5 difference, a
# validation loss in one file only, a different iteration number or count,
# an empty reference, and a number with trailing garbage.
# Usage: test_metrics_compare.sh METRICS_COMPARE
set -u
TOOL=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# record ITERATION LOSS NORM [VALID]
record() {
    printf '{"iteration": %s, "consumed_samples": %s, "lm_loss": %s, "grad_norm": %s, "lr": 0.001' \
        "$1" "$(( $1 * 8 ))" "$2" "$3"
    [ $# -ge 4 ] && printf ', "valid_loss": %s' "$4"
    printf ', "iteration_ms": 12.5}\n'
}
reference() {
    record 1 5.5451774444795623 1.25
    record 2 5.4012345678901234 1.125
    record 3 5.3000000000000007 0.9375 5.45
    record 4 5.2000000000000002 0.875
    record 5 5.1000000000000005 0.8125 5.25
}
reference > "$WORK/ref.jsonl"

expect() { # expect STATUS NAME: run the tool on $WORK/got.jsonl
    local want=$1 name=$2 rc
    "$TOOL" --name "$name" "$WORK/ref.jsonl" "$WORK/got.jsonl" > "$WORK/out.txt" 2>&1
    rc=$?
    [ -n "${VERBOSE:-}" ] && sed "s/^/    /" "$WORK/out.txt"
    [ "$rc" -eq "$want" ] || { cat "$WORK/out.txt"; fail "$name: exit $rc, want $want"; }
}
# edit LINE 'FROM/TO/': the reference with one line changed (an edit that
# changes nothing would make an "expect 1" case pass for the wrong reason)
edit() {
    reference | sed "$1s/$2" > "$WORK/got.jsonl" || fail "sed $2"
    reference | cmp -s - "$WORK/got.jsonl" && fail "edit $1 $2 changed nothing"
}

reference > "$WORK/got.jsonl";                               expect 0 "identical logs"
edit 2 '5.4012345678901234/5.4012349/';                      expect 0 "difference of 7e-8"
edit 3 '0.9375/0.93750085/';                                 expect 0 "grad norm difference of 9e-7"
edit 2 '5.4012345678901234/5.4013/';                         expect 1 "loss difference of 1.2e-5"
edit 4 '0.875/0.87501/';                                     expect 1 "grad norm difference of 1.1e-5"
edit 3 '"valid_loss": 5.45/"valid_loss": 5.4501/';           expect 1 "validation loss difference of 1.8e-5"
for line in 1 3 5; do
    edit $line '"lm_loss": [^,]*/"lm_loss": nan/';           expect 1 "NaN loss in record $line"
    edit $line '"grad_norm": [^,]*/"grad_norm": -nan/';      expect 1 "NaN grad norm in record $line"
    edit $line '"lm_loss": [^,]*/"lm_loss": inf/';           expect 1 "inf loss in record $line"
    edit $line '"grad_norm": [^,]*/"grad_norm": 1e999/';     expect 1 "overflowing grad norm in record $line"
done
# A NaN where the reference has one too is still a failure: a NaN run checks nothing.
reference | sed '3s/"lm_loss": [^,]*/"lm_loss": nan/' | tee "$WORK/got.jsonl" > "$WORK/ref.jsonl"
expect 1 "NaN in both"
reference > "$WORK/ref.jsonl"
edit 1 '"lm_loss"/"loss"/';                                  expect 1 "renamed loss field"
edit 5 ', "grad_norm": [^,]*//';                             expect 1 "missing grad norm"
edit 3 ', "valid_loss": [^,]*//';                            expect 1 "validation loss missing"
edit 4 '"lr"/"valid_loss": 5.3, "lr"/';                      expect 1 "validation loss only in the candidate"
edit 2 '"iteration": 2/"iteration": 7/';                     expect 1 "different iteration number"
edit 2 '"lm_loss": 5.4012345678901234/"lm_loss": 5.4012345678901234x/'; expect 1 "trailing garbage"
reference | head -n 4 > "$WORK/got.jsonl";                   expect 1 "one record fewer"
{ reference; record 6 5.0 0.75; } > "$WORK/got.jsonl";       expect 1 "one record more"
: > "$WORK/got.jsonl";                                       expect 1 "empty candidate"
: > "$WORK/ref.jsonl"; : > "$WORK/got.jsonl";                expect 1 "both empty"
reference > "$WORK/ref.jsonl"
edit 2 '5.4012345678901234/5.4013/'
"$TOOL" --rtol 1e-4 "$WORK/ref.jsonl" "$WORK/got.jsonl" > /dev/null 2>&1 || fail "--rtol 1e-4 rejects a 1.2e-5 difference"
"$TOOL" --rtol nan "$WORK/ref.jsonl" "$WORK/got.jsonl" > /dev/null 2>&1; [ $? -eq 2 ] || fail "--rtol nan accepted"
"$TOOL" "$WORK/ref.jsonl" "$WORK/absent.jsonl" > /dev/null 2>&1; [ $? -eq 2 ] || fail "a missing file is not a usage error"

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_metrics_compare: ok"
