#!/usr/bin/env bash
# TensorBoard event files read back by a reader not written for gpt3d
# (tests/tensorboard_reader.js: the npm packages tfrecord, which checks both
# masked CRC32Cs of every record, and protobufjs with TensorBoard's field
# numbers). A short run on 2 ranks (DP 2) with evaluation and every
# TensorBoard flag writes one file (rank 0's), which starts with the
# version record "brain.Event:2", holds each of Megatron's tags at the
# steps Megatron writes them (the iteration, or the samples consumed for
# "vs samples"; iteration-time from the second log line on; the test-set
# loss as the last "lm loss validation" point) and nothing else, and every
# value is the run's metrics-file value rounded to float (the timers: the
# log line's). A second run with a sparser
# --tensorboard-log-interval and without the optional tags writes only what
# it should. A byte flipped in a record's data or length makes the reader
# fail. Without node, npm or the download the runs are still checked to
# write their event files, and the test fails (exit 77, skipped, only under
# GPT3D_ALLOW_MISSING_PREREQS=1; tests/test_gpt2_prereq.h has the rule).
# Usage: test_tensorboard_e2e.sh PRETRAIN PREPROCESS MPIEXEC REFS_DIR FETCH_SCRIPT READER_JS
set -u
PRETRAIN=$1
PREPROCESS=$2
MPIEXEC=$3
REFS=$4
FETCH=$5
READER=$6
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "tensorboard"

ARGS=(--num-layers 2 --hidden-size 16 --num-attention-heads 2 --seq-length 16
      --micro-batch-size 2 --global-batch-size 4 --train-iters 4 --lr 1e-3
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5"
      --eval-iters 1 --eval-interval 2 --device cpu --log-interval 2)
start=$(date +%s)
timeout 120 "$MPIEXEC" --oversubscribe -np 2 "$PRETRAIN" "${ARGS[@]}" --split 80,10,10 \
    --tensorboard-dir "$WORK/full" --tensorboard-log-interval 1 \
    --log-timers-to-tensorboard --log-validation-ppl-to-tensorboard --log-throughput --log-params-norm \
    --log-num-zeros-in-grad --log-world-size-to-tensorboard --metrics-file "$WORK/full.jsonl" \
    > "$WORK/full.log" 2>&1 || { cat "$WORK/full.log"; fail "run with every TensorBoard flag"; }
"$PRETRAIN" "${ARGS[@]}" --split 90,10,0 --tensorboard-dir "$WORK/sparse" --tensorboard-log-interval 2 \
    --no-log-loss-scale-to-tensorboard --metrics-file "$WORK/sparse.jsonl" \
    > "$WORK/sparse.log" 2>&1 || { cat "$WORK/sparse.log"; fail "run with --tensorboard-log-interval 2"; }
end=$(( $(date +%s) + 1 ))
for run in full sparse; do
    n=$(find "$WORK/$run" -name 'events.out.tfevents.*' | wc -l)
    [ "$n" -eq 1 ] || fail "$run: $n event files in --tensorboard-dir, want 1"
done
echo x > "$WORK/a_file"
"$PRETRAIN" "${ARGS[@]}" --split 80,10,10 --tensorboard-dir "$WORK/a_file/tb" > "$WORK/bad_dir.log" 2>&1 &&
    fail "--tensorboard-dir under a file: exit status 0"
one_error "--tensorboard-dir under a file" "$WORK/bad_dir.log" "a_file/tb"
"$PRETRAIN" "${ARGS[@]}" --tensorboard-dir "$WORK/x" --tensorboard-log-interval 0 > "$WORK/bad_interval.log" 2>&1 &&
    fail "--tensorboard-log-interval 0: exit status 0"
one_error "--tensorboard-log-interval 0" "$WORK/bad_interval.log" "--tensorboard-log-interval must be >= 1"

missing=""
modules=$(sh "$FETCH" "$REFS" 2> "$WORK/fetch.err") || missing="the npm packages ($(cat "$WORK/fetch.err"))"
command -v node > /dev/null || missing="node"
if [ -z "$missing" ]; then
    for run in full sparse; do
        node "$READER" "$modules" "$WORK/$run"/events.out.tfevents.* > "$WORK/$run.tsv" 2> "$WORK/$run.err" ||
            fail "the reader refused the $run run's file: $(cat "$WORK/$run.err")"
    done
    python3 - "$WORK" "$start" "$end" <<'PY' || fail "the event files do not hold the run's metrics (above)"
import json, math, re, struct, sys
work, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
bad = []
def f32(x): return struct.unpack("<f", struct.pack("<f", x))[0]

def check(run, full):
    rows = [l.rstrip("\n").split("\t") for l in open(f"{work}/{run}.tsv")]
    metrics = [json.loads(l) for l in open(f"{work}/{run}.jsonl")]
    log = open(f"{work}/{run}.log").read()
    if not rows or rows[0][0] != "version" or rows[0][3] != "brain.Event:2":
        bad.append(f"{run}: the first record is not the version brain.Event:2: {rows[:1]}")
    if any(r[0] == "version" for r in rows[1:]): bad.append(f"{run}: a second version record")
    walls = [float(r[1]) for r in rows]
    if not all(start <= w <= end for w in walls) or walls != sorted(walls):
        bad.append(f"{run}: wall times outside the run [{start}, {end}] or decreasing")
    got = [(r[3], int(r[2]), float(r[4])) for r in rows[1:]]
    want = []
    def both(tag, value, m):
        want.append((tag, m["iteration"], f32(value)))
        want.append((tag + " vs samples", m["consumed_samples"], f32(value)))
    # The log lines' timings, by iteration: (ms per iteration, TFLOP/s per GPU).
    lines = {int(i): (float(ms), float(tp or "nan")) for i, ms, tp in re.findall(
        r"iteration +(\d+)/ +\d+ \| consumed samples: +\d+ \| elapsed time per iteration \(ms\): ([0-9.]+) \|"
        r"(?: throughput per GPU \(TFLOP/s/GPU\): ([0-9.]+) \|)?", log)}
    interval = 1 if full else 2
    for m in metrics:
        it = m["iteration"]
        if it % interval == 0:
            both("learning-rate", m["lr"], m)
            both("batch-size", m["global_batch_size"], m)
            both("lm loss", m["lm_loss"], m)
            if full:
                both("loss-scale", m["loss_scale"], m)
                both("world-size", 2, m)
            both("grad-norm", m["grad_norm"], m)
            if full:
                both("num-zeros", m["num_zeros"], m)
                both("params-norm", m["params_norm"], m)
        if full and it in lines and it != 1:
            want.append(("iteration-time", it, None))
        if full and it in lines:
            want.append(("throughput", it, None))
        for key in ("valid_loss", "test_loss"):
            if key in m:
                both("lm loss validation", m[key], m)
                if full: both("lm loss validation ppl", math.exp(min(20.0, m[key])), m)
    if [(t, s) for t, s, _ in got] != [(t, s) for t, s, _ in want]:
        bad.append(f"{run}: tags and steps differ from Megatron's:\n  got  {[(t, s) for t, s, _ in got]}\n  want {[(t, s) for t, s, _ in want]}")
        return
    for (tag, step, value), (_, _, expected) in zip(got, want):
        if tag == "iteration-time": expected, value, tol = lines[step][0], value * 1000.0, 0.05 + 1e-4
        elif tag == "throughput": expected, tol = lines[step][1], 0.05 + 1e-4
        else: tol = 0.0
        if not (abs(value - expected) <= tol):
            bad.append(f"{run}: {tag} at step {step} is {value!r}, the run's is {expected!r}")
    if full and not any(k == "test_loss" for m in metrics for k in m):
        bad.append(f"{run}: no test loss in the metrics file")
    print(f"{run}: {len(got)} scalars as the run's metrics and log")

check("full", True)
check("sparse", False)
for b in bad: print("FAIL:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    # A flipped byte in a record's data, then in a record's length.
    python3 - "$WORK"/full/events.out.tfevents.* "$WORK/data_flip" "$WORK/length_flip" <<'PY'
import struct, sys
blob = open(sys.argv[1], "rb").read()
at, starts = 0, []
while at < len(blob):
    starts.append(at)
    at += 12 + struct.unpack("<Q", blob[at:at + 8])[0] + 4
for out, pos in ((sys.argv[2], starts[5] + 12 + 3), (sys.argv[3], starts[6] + 1)):
    b = bytearray(blob)
    b[pos] ^= 0x10
    open(out, "wb").write(b)
PY
    for kind in data length; do
        if node "$READER" "$modules" "$WORK/${kind}_flip" > /dev/null 2> "$WORK/flip.err"; then
            fail "a byte flipped in a record's $kind was read without complaint"
        fi
        want="Incorrect record CRC32C"
        [ $kind = length ] && want="Incorrect record length CRC32C"
        grep -qF "$want" "$WORK/flip.err" || fail "flipped $kind byte: '$(cat "$WORK/flip.err")' lacks '$want'"
    done
fi

source "$(dirname "$0")/prereq_common.sh"
prereq_verdict "$failures" "$missing" "the event files read back by the independent reader were"
echo "test_tensorboard_e2e: ok"
