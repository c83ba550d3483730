#!/usr/bin/env bash
# The standing mutation check: every patch in tests/mutation/ plants one
# small, plausible bug; the tests its "# tests:" line names must catch it.
#
#   run_mutations.sh SOURCE_DIR [--expect-survivor PATCH] [PATCH ...]
#
# The source tree is copied once to a scratch directory and built once
# (CUDA off: the mutations are in host code); then, for each mutation, the
# patch is applied, only what it touches is rebuilt, the named tests run,
# and the patch is reverted. A mutation fails the check when it survives
# (its tests pass), when it no longer applies (the code moved: update the
# patch to plant the same bug), when it does not compile, or when a test it
# names does not exist. --expect-survivor runs a patch that must survive
# (e.g. one that changes a comment), which proves a passing test run is
# reported as a survivor. Exit 0 when every mutation was caught.
set -euo pipefail
SOURCE=$(cd "$1" && pwd)
shift
MUTATIONS=()
SURVIVOR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --expect-survivor) SURVIVOR=$2; shift 2 ;;
        *) MUTATIONS+=("$1"); shift ;;
    esac
done
if [ ${#MUTATIONS[@]} -eq 0 ]; then MUTATIONS=("$SOURCE"/tests/mutation/*.patch); fi

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
JOBS=${MUTATION_JOBS:-$(nproc)}
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

start=$(date +%s)
mkdir "$SCRATCH/src"
tar -C "$SOURCE" --exclude='./build*' --exclude=./demo --exclude=./.gpu --exclude=./.git \
    -cf - . | tar -C "$SCRATCH/src" -xf -
echo "== building a scratch copy of $SOURCE"
if ! { cmake -S "$SCRATCH/src" -B "$SCRATCH/build" -DGPT3D_CUDA=OFF -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$SCRATCH/build" -j"$JOBS"; } > "$SCRATCH/build.log" 2>&1; then
    tail -n 40 "$SCRATCH/build.log"
    echo "FAIL: the unmutated scratch copy does not build"
    exit 1
fi
echo "   built in $(( $(date +%s) - start )) s"

# tests_of PATCH: the test names on its "# tests:" line.
tests_of() { sed -n 's/^# tests: *//p' "$1" | head -n 1; }

# run_one PATCH -> prints a verdict; returns 0 caught, 1 survived, 2 broken mutation
run_one() {
    local patch=$1 name tests regex listed found rc t0
    name=$(basename "$patch" .patch)
    tests=$(tests_of "$patch")
    t0=$(date +%s)
    if [ -z "$tests" ]; then echo "BROKEN $name: no '# tests:' line"; return 2; fi
    if ! patch -d "$SCRATCH/src" -p1 --dry-run -s < "$patch" > /dev/null 2>&1; then
        echo "BROKEN $name: the patch no longer applies; plant the same bug in the moved code"
        return 2
    fi
    patch -d "$SCRATCH/src" -p1 -s < "$patch"
    regex="^($(echo "$tests" | tr ' ' '|'))\$"
    listed=$(echo "$tests" | wc -w)
    found=$(cd "$SCRATCH/build" && ctest -N -R "$regex" | sed -n 's/^Total Tests: //p')
    rc=0
    if [ "$found" != "$listed" ]; then
        echo "BROKEN $name: names $listed tests, ctest has $found of them ($tests)"
        rc=2
    elif ! cmake --build "$SCRATCH/build" -j"$JOBS" > "$SCRATCH/$name.build.log" 2>&1; then
        tail -n 20 "$SCRATCH/$name.build.log"
        echo "BROKEN $name: does not compile"
        rc=2
    elif (cd "$SCRATCH/build" && ctest -R "$regex" -j"$JOBS" --timeout 600) > "$SCRATCH/$name.log" 2>&1; then
        echo "SURVIVED $name: $tests all pass with the bug planted ($(sed -n 's/^# //p;q' "$patch"))"
        [ -n "${MUTATION_VERBOSE:-}" ] && (cd "$SCRATCH/build" && ctest -R "$regex" -V | tail -n 40)
        rc=1
    else
        echo "caught $name by $(sed -nE 's/^[[:space:]]*[0-9]+ - ([^ ]+) \((Failed|Timeout|SEGFAULT|Child aborted|Exception)\)$/\1/p' "$SCRATCH/$name.log" |
            tr '\n' ' ')($(( $(date +%s) - t0 )) s)"
    fi
    patch -d "$SCRATCH/src" -p1 -R -s < "$patch"
    return $rc
}

failures=0
for patch in "${MUTATIONS[@]}"; do
    run_one "$patch" || failures=$((failures + 1))
done
if [ -n "$SURVIVOR" ]; then
    set +e
    run_one "$SURVIVOR"
    rc=$?
    set -e
    if [ $rc -ne 1 ]; then
        echo "FAIL: $SURVIVOR should survive (its tests pass), but the check reported otherwise"
        failures=$((failures + 1))
    else
        echo "   (expected: $(basename "$SURVIVOR") changes no behaviour, so surviving is right)"
    fi
fi
echo "== ${#MUTATIONS[@]} mutations in $(( $(date +%s) - start )) s"
if [ $failures -ne 0 ]; then echo "$failures mutation(s) not caught or broken"; exit 1; fi
echo "mutation check: every mutation caught"
