#!/usr/bin/env bash
# Crash and preemption safety of checkpoints, on 4 ranks (TP 2 x DP 2):
# - one rank SIGKILLs itself (GPT3D_TEST_KILL_IN_SAVE hook) at each point of
#   the save of iteration 10 of a run resumed from iteration 5 (also between
#   publish's directory rename and its tracker write): the job dies,
#   every checkpoint under its final name is complete, `latest` names 5 (10
#   once published), and a --load from it resumes from the newest complete
#   checkpoint and reproduces the uninterrupted run's metrics bitwise;
# - SIGTERM to the ranks (as Slurm sends) with --exit-signal-handler: exit 0
#   after saving the iteration they finished; a resume continues from it;
# - --exit-duration-in-mins stops a long run with exit 0 and a checkpoint.
# Usage: test_checkpoint_crash.sh MPIEXEC PRETRAIN PREPROCESS VERIFY
# (VERIFY: test_dp_verify_checkpoint, which checks a --save directory.)
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
VERIFY=$4
source "$(dirname "$0")/e2e_common.sh"
unset GPT3D_TEST_KILL_IN_SAVE

for i in $(seq 1 24); do
    for j in $(seq 1 30); do echo "checkpoint $i survives crash $j of $(( (i + 3 * j) % 19 ))"; done > "$WORK/d$i.txt"
done
"$PREPROCESS" --input "$WORK"/d*.txt --output-prefix "$WORK/c" --tokenizer-type ByteTokenizer \
    --append-eod > /dev/null 2>&1 || { fail "preprocess_data"; exit 1; }

# --lr-decay-iters is fixed so runs of different lengths share one schedule.
ARGS=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 32
      --micro-batch-size 1 --global-batch-size 8 --lr 2e-3 --lr-warmup-iters 2 --lr-decay-iters 2000
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 95,5,0
      --eval-iters 0 --device cpu --log-interval 1000 --tensor-model-parallel-size 2)
NP=4
mpi() { timeout 120 "$MPIEXEC" --oversubscribe -np "$NP" "$PRETRAIN" "${ARGS[@]}" "$@"; }
latest_of() { cat "$1/latest_checkpointed_iteration.txt" 2>/dev/null; }
same_as_full() { # same_as_full NAME FILE: FILE's lines equal those of full.jsonl for their iterations, timings aside
    local first
    # An empty or missing file would make both sides of the diff empty.
    [ -s "$2" ] || { fail "$1: no metrics written ($2 is empty or missing)"; return; }
    first=$(first_iteration "$2")
    [[ "$first" =~ ^[1-9][0-9]*$ ]] || { fail "$1: the first line of $2 has no iteration"; return; }
    diff <(strip_timings "$WORK/full.jsonl" | sed -n "$first,\$p" | head -n "$(wc -l < "$2")") <(strip_timings "$2") \
        > "$WORK/same.diff" || { cat "$WORK/same.diff" >&2; fail "$1: metrics differ from the uninterrupted run"; }
}

# The uninterrupted run, and the checkpoint of iteration 5 every crash starts from.
mpi --train-iters 15 --metrics-file "$WORK/full.jsonl" > "$WORK/full.log" 2>&1 \
    || { cat "$WORK/full.log"; fail "uninterrupted run"; exit 1; }
mpi --train-iters 15 --save "$WORK/base" --save-interval 5 --exit-interval 5 --metrics-file "$WORK/base.jsonl" \
    > "$WORK/base.log" 2>&1 || { cat "$WORK/base.log"; fail "run to iteration 5"; exit 1; }
[ "$(latest_of "$WORK/base")" = "5" ] || { fail "no checkpoint of iteration 5"; exit 1; }
same_as_full "run to iteration 5" "$WORK/base.jsonl"

# --- SIGKILL of one rank at each point of a save ---------------------------
# POINT VICTIM LATEST: LATEST lists the acceptable published iterations. Before
# every rank has written its file, iteration 10 cannot be published; at
# before_publish and after_publish a non-zero victim races rank 0's publish
# (the files are complete either way), rank 0 as victim does not.
# after_rename is inside rank 0's publish, between the rename of
# iter_0000010.tmp and the tracker write: `latest` must still name 5.
crash_case() {
    local point=$1 victim=$2 want=$3 dir="$WORK/k_$1_$2" name="kill rank $2 at $1"
    cp -r "$WORK/base" "$dir"
    GPT3D_TEST_KILL_IN_SAVE="$victim:$point" mpi --train-iters 15 --load "$dir" --save "$dir" --save-interval 5 \
        --metrics-file "$dir.killed.jsonl" > "$dir.killed.log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        cat "$dir.killed.log"; fail "$name: job exit status $rc, want a crash"; return
    fi
    grep -q "test hook: rank $victim kills itself at $point of the save" "$dir.killed.log" \
        || { cat "$dir.killed.log"; fail "$name: the hook did not fire"; return; }
    local verified latest
    verified=$("$VERIFY" "$dir" 2>&1) || { echo "$verified" >&2; fail "$name: a checkpoint under its final name is incomplete"; return; }
    latest=$(latest_of "$dir")
    case " $want " in *" $latest "*) ;; *) fail "$name: latest names iteration $latest, want one of: $want"; return ;; esac
    # A kill between publish's rename and its tracker write leaves iteration
    # 10 complete under its final name while `latest` still names 5 (the
    # verify above checked both); a crash that rank 0's publish cannot have
    # begun before leaves the unfinished save under its temporary name only.
    if [ "$point" = after_rename ]; then
        [ -d "$dir/iter_0000010" ] || fail "$name: iteration 10 is not under its final name"
        [ ! -e "$dir/iter_0000010.tmp" ] || fail "$name: iter_0000010.tmp is still there after the rename"
    elif [ "$want" = "5" ]; then
        [ -d "$dir/iter_0000010.tmp" ] || fail "$name: no iter_0000010.tmp left by the crash"
        [ ! -e "$dir/iter_0000010" ] || fail "$name: iteration 10 appeared under its final name"
    fi
    # The next job resumes from the newest complete checkpoint (over the
    # debris of the crash) and continues bitwise. Every final name is
    # complete (verified above), so that is the newest final name: `latest`,
    # or iteration 10 after a kill at after_rename, which the resume must
    # then announce instead of re-saving over it.
    local resume
    resume=$(cd "$dir" && ls -d iter_??????? | sort | tail -n 1 | sed 's/^iter_0*//')
    mpi --train-iters 15 --load "$dir" --save "$dir" --save-interval 5 --metrics-file "$dir.resumed.jsonl" \
        > "$dir.resumed.log" 2>&1 || { cat "$dir.resumed.log"; fail "$name: resume failed"; return; }
    [ "$(first_iteration "$dir.resumed.jsonl")" = $((resume + 1)) ] \
        || fail "$name: resumed at iteration $(first_iteration "$dir.resumed.jsonl"), want $((resume + 1))"
    if [ "$resume" != "$latest" ]; then
        grep -q "^note: no usable latest_checkpointed_iteration.txt in $dir (it names iteration $latest, older than the complete iter_0000010 (a save stopped before updating it)): resuming from the newest complete checkpoint iter_0000010$" \
            "$dir.resumed.log" || { cat "$dir.resumed.log"; fail "$name: the resume did not say it recovered iteration 10"; }
    fi
    same_as_full "$name, resumed" "$dir.resumed.jsonl"
    verified=$("$VERIFY" "$dir" 2>&1) || { echo "$verified" >&2; fail "$name: incomplete checkpoint after the resume"; return; }
    [ "$(latest_of "$dir")" = "15" ] || fail "$name: the resumed run did not publish iteration 15"
    local debris
    debris=$(cd "$dir" && ls -d -- *.tmp *.old 2>/dev/null)
    [ -z "$debris" ] || fail "$name: the resumed run left behind: $debris"
    echo "$name: latest $latest, resumed from $resume ok"
    rm -rf "$dir"
}
crash_case after_begin 0 "5"
crash_case after_begin 3 "5"
crash_case partial_rank_file 0 "5"
crash_case partial_rank_file 2 "5"
crash_case after_rank_file 1 "5"
crash_case after_rank_file 0 "5"
crash_case before_publish 0 "5"
crash_case before_publish 3 "5 10"
crash_case after_rename 0 "5"
crash_case after_publish 0 "10"
crash_case after_publish 2 "5 10"

# --- SIGTERM mid-run with --exit-signal-handler -----------------------------
# The signal goes to the ranks themselves (found as mpirun's children), as
# Slurm signals every task; mpirun is not told. sigterm_run DIR WHICH (all: every
# rank; one: only the last rank found, which the others must learn of) starts a
# 2000-iteration run, signals it after 3 iterations and sets exited_at to the
# iteration the run says it exited at; the job must exit 0 with it saved.
sigterm_run() {
    local dir=$1 which=$2 job launcher ranks rc n
    # Launched directly (not through mpi()) so $! is timeout, its child mpirun.
    timeout 120 "$MPIEXEC" --oversubscribe -np "$NP" "$PRETRAIN" "${ARGS[@]}" --train-iters 2000 \
        --exit-signal-handler --save "$dir" --metrics-file "$dir.jsonl" > "$dir.log" 2>&1 &
    job=$!
    for _ in $(seq 1 600); do # up to 120 s for start-up on a loaded machine
        [ -f "$dir.jsonl" ] && [ "$(wc -l < "$dir.jsonl")" -ge 3 ] && break
        kill -0 $job 2>/dev/null || break
        sleep 0.2
    done
    launcher=$(pgrep -P $job)
    ranks=$( [ -n "$launcher" ] && pgrep -P "$launcher")
    if [ "$(echo $ranks | wc -w)" -ne $NP ]; then
        fail "SIGTERM ($which): found ranks '$ranks' under mpirun '$launcher', want $NP"
        kill $job 2>/dev/null
    fi
    [ "$which" = all ] || ranks=$(echo $ranks | awk '{print $NF}')
    kill -TERM $ranks 2>/dev/null
    wait $job
    rc=$?
    n=$(sed -nE 's/^exiting at iteration ([0-9]+) \(SIGTERM with --exit-signal-handler\)$/\1/p' "$dir.log")
    if [ $rc -ne 0 ] || [ -z "$n" ]; then
        cat "$dir.log" >&2; fail "SIGTERM ($which): exit status $rc, exiting line '${n}'"; return 1
    fi
    [ "$(latest_of "$dir")" = "$n" ] || fail "SIGTERM ($which): latest $(latest_of "$dir"), want $n"
    [ "$(sed -nE '$s/^\{"iteration": ([0-9]+).*/\1/p' "$dir.jsonl")" = "$n" ] \
        || fail "SIGTERM ($which): the metrics do not end at iteration $n"
    [ "$n" -lt 2000 ] || fail "SIGTERM ($which): the run was not stopped early"
    "$VERIFY" "$dir" > /dev/null || fail "SIGTERM ($which): incomplete checkpoint"
    exited_at=$n
}
SIG="$WORK/sig"
if sigterm_run "$SIG" all; then
    n=$exited_at
    # The resume continues from n + 1 exactly as a run that was never stopped.
    mpi --train-iters $((n + 3)) --metrics-file "$WORK/sigfull.jsonl" > "$WORK/sigfull.log" 2>&1 \
        || { cat "$WORK/sigfull.log"; fail "SIGTERM: reference run"; }
    mpi --train-iters $((n + 3)) --load "$SIG" --metrics-file "$SIG.resumed.jsonl" > "$SIG.resumed.log" 2>&1 \
        || { cat "$SIG.resumed.log"; fail "SIGTERM: resume"; }
    [ "$(first_iteration "$SIG.resumed.jsonl")" = $((n + 1)) ] || fail "SIGTERM: the resume does not start at $((n + 1))"
    diff <(strip_timings "$WORK/sigfull.jsonl") <(strip_timings "$SIG.jsonl" "$SIG.resumed.jsonl") > "$WORK/sig.diff" \
        || { cat "$WORK/sig.diff" >&2; fail "SIGTERM: stopped and resumed run differs from the uninterrupted one"; }
    echo "SIGTERM to every rank: exited at iteration $n with its checkpoint; resume ok"
fi
sigterm_run "$WORK/sig1" one && echo "SIGTERM to one rank: every rank exited at iteration $exited_at with its checkpoint"

# --- --exit-duration-in-mins: 0.02 min is 1.2 s of a 2000-iteration run ------
DUR="$WORK/dur"
start=$(date +%s)
mpi --train-iters 2000 --exit-duration-in-mins 0.02 --save "$DUR" --metrics-file "$DUR.jsonl" > "$DUR.log" 2>&1
rc=$?
n=$(sed -nE 's/^exiting at iteration ([0-9]+) \(--exit-duration-in-mins\)$/\1/p' "$DUR.log")
if [ $rc -ne 0 ] || [ -z "$n" ]; then
    cat "$DUR.log"; fail "--exit-duration-in-mins: exit status $rc, exiting line '${n}'"
else
    [ "$(latest_of "$DUR")" = "$n" ] || fail "--exit-duration-in-mins: latest $(latest_of "$DUR"), want $n"
    [ "$n" -lt 2000 ] || fail "--exit-duration-in-mins: ran all 2000 iterations"
    [ "$(wc -l < "$DUR.jsonl")" -eq "$n" ] || fail "--exit-duration-in-mins: metrics lines != $n"
    "$VERIFY" "$DUR" > /dev/null || fail "--exit-duration-in-mins: incomplete checkpoint"
    echo "--exit-duration-in-mins 0.02: exited at iteration $n after $(( $(date +%s) - start )) s"
fi

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "test_checkpoint_crash: ok"
