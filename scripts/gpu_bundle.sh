#!/usr/bin/env bash
# Builds the GPU bring-up kit: one relocatable folder that runs on a bare
# CUDA machine (toolkit and driver there; no Open MPI, HDF5, OpenBLAS, PCRE2
# or cJSON) and turns a short GPU window into one command,
# DIR/run_gpu_checks.sh (see scripts/run_gpu_checks.sh).
#
# Usage: scripts/gpu_bundle.sh [--from-build BUILD] [--max-mib N] [DIR]
#   DIR            the bundle folder (default .gpu/, git-ignored); replaced
#   --from-build   take the programs of an existing build instead of building
#                  build-gpu-bundle/ with CUDA and GPT3D_PORTABLE on (the
#                  rehearsal ctest uses it with a CUDA-off build: fast)
#   --max-mib      fail above this size (default 60: the GPU machine takes
#                  64 MiB of upload, the rest of the tree included)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=.gpu
FROM_BUILD=""
MAX_MIB=60
while [ $# -gt 0 ]; do
    case "$1" in
        --from-build) FROM_BUILD=$2; shift 2 ;;
        --max-mib) MAX_MIB=$2; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "gpu_bundle.sh: unknown option $1" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac

die() { echo "gpu_bundle.sh: $*" >&2; exit 1; }

# Programs every check needs besides the CUDA tests.
PROGRAMS=(pretrain_gpt bench_train_step metrics_compare)

if [ -n "$FROM_BUILD" ]; then
    BUILD=$(cd "$FROM_BUILD" && pwd)
    [ -f "$BUILD/gpu_kit_tests.tsv" ] || die "$BUILD has no gpu_kit_tests.tsv: re-run cmake there"
else
    BUILD="$ROOT/build-gpu-bundle"
    echo "== configuring $BUILD (CUDA on, portable x86-64-v3)"
    mkdir -p "$BUILD"
    LOG="$BUILD/gpu_bundle.log"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGPT3D_CUDA=ON -DGPT3D_PORTABLE=ON \
        > "$LOG" 2>&1 || { tail -n 30 "$LOG"; die "cmake failed (log: $LOG)"; }
    targets=("${PROGRAMS[@]}" preprocess_data gpt3d_cuda)
    while IFS=$'\t' read -r name _; do [ -n "$name" ] && targets+=("$name"); done \
        < "$BUILD/gpu_kit_tests.tsv"
    echo "== building ${targets[*]}"
    cmake --build "$BUILD" -j"${GPT3D_BUILD_JOBS:-2}" --target "${targets[@]}" >> "$LOG" 2>&1 \
        || { tail -n 40 "$LOG"; die "build failed (log: $LOG)"; }
fi
grep -q '^CMAKE_BUILD_TYPE:STRING=Release' "$BUILD/CMakeCache.txt" \
    || echo "warning: $BUILD is not a Release build" >&2
if ! grep -q '^GPT3D_PORTABLE:BOOL=ON' "$BUILD/CMakeCache.txt"; then
    [ -n "$FROM_BUILD" ] || die "$BUILD is not portable"
    echo "note: $BUILD is built with -march=native: fine for a rehearsal here, not for another host"
fi

rm -rf "$DIR"
mkdir -p "$DIR/lib" "$DIR/lib-base" "$DIR/data"

# ---- programs --------------------------------------------------------------
for p in "${PROGRAMS[@]}"; do
    [ -x "$BUILD/$p" ] || die "$BUILD/$p is missing (build it first)"
    cp "$BUILD/$p" "$DIR/"
done
# The test list comes from the build (tests labelled cuda), so CUDA tests
# added later travel without editing this script.
: > "$DIR/tests.tsv"
while IFS=$'\t' read -r name program timeout labels args; do
    [ -n "$name" ] || continue
    [ -x "$program" ] || die "$program (test $name) is missing (build it first)"
    cp "$program" "$DIR/"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(basename "$program")" "$timeout" "$labels" "$args" \
        >> "$DIR/tests.tsv"
done < "$BUILD/gpu_kit_tests.tsv"
[ -s "$DIR/tests.tsv" ] || die "the build lists no CUDA tests ($BUILD/gpu_kit_tests.tsv)"
CUDA_LIB=$(find "$BUILD" -name libgpt3d_cuda.so -type f 2>/dev/null | head -n 1)
if [ -n "$CUDA_LIB" ]; then
    # Beside the programs: the backend looks there first (backend/backend.c).
    cp "$CUDA_LIB" "$DIR/"
    HAVE_CUDA=1
elif [ -z "$FROM_BUILD" ]; then
    die "the CUDA build produced no libgpt3d_cuda.so"
else
    HAVE_CUDA=0
fi
cp "$ROOT/scripts/run_gpu_checks.sh" "$DIR/"
chmod +x "$DIR/run_gpu_checks.sh"
# The PyTorch reference that the benchmark is timed against (PyTorch is on the GPU image).
cp "$ROOT/bench/pytorch_gpt2.py" "$DIR/"

# ---- a tiny token shard ----------------------------------------------------
# Text from this repository (its documents, then its sources, about 200 KB),
# tokenized with the byte tokenizer (no vocabulary files to carry); the same
# shard feeds the CUDA and CPU runs.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
CORPUS="$STAGE/corpus"
mkdir -p "$CORPUS"
n=0
total=0
while IFS= read -r f; do
    [ -f "$ROOT/$f" ] || continue
    cp "$ROOT/$f" "$CORPUS/doc_$n.txt"
    n=$((n + 1))
    total=$((total + $(wc -c < "$ROOT/$f")))
    [ "$total" -lt 200000 ] || break
done < <(cd "$ROOT" && { git ls-files '*.md'; git ls-files '*.c' '*.h' | sort; } 2>/dev/null)
[ "$n" -gt 0 ] || cp "$ROOT/README.md" "$CORPUS/doc_0.txt"
"$BUILD/preprocess_data" --input "$CORPUS"/doc_*.txt --output-prefix "$DIR/data/kit" \
    --tokenizer-type ByteTokenizer --append-eod --workers 1 > "$CORPUS/preprocess.log" 2>&1 \
    || { cat "$CORPUS/preprocess.log"; die "preprocess_data failed"; }
[ -f "$DIR/data/kit_text_document.h5" ] || die "preprocess_data wrote no shard"

# ---- shared libraries ------------------------------------------------------
# Left out: glibc's own libraries and the loader (every image has them, and
# a foreign copy of libc breaks the loader), and the driver and CUDA toolkit
# (the GPU image has the versions that match its driver).
is_base() {
    case "${1##*/}" in
        linux-vdso* | ld-linux* | libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | \
            libresolv.so* | libutil.so* | libanl.so* | libnsl.so* | libmvec.so*) return 0 ;;
        libcuda.so* | libnvidia-* | libcudart* | libcublas* | libnccl* | libnvrtc* | \
            libnvJitLink* | libcufft* | libcurand* | libcusparse* | libcusolver* | libnvToolsExt*) return 0 ;;
    esac
    case "$1" in /usr/local/cuda*) return 0 ;; esac
    return 1
}
# The C++ runtime is on every image that runs PyTorch; a copy is carried in
# lib-base/ and used only where the system has none (run_gpu_checks.sh), as
# an older foreign libstdc++ first in the path could break newer system code.
is_runtime() { case "${1##*/}" in libstdc++.so* | libgcc_s.so*) return 0 ;; esac; return 1; }

declare -A BUNDLED=()
# copy_libs FILE: every library in ldd's listing FILE, copied unless is_base.
copy_libs() {
    local name path
    while read -r name path; do
        is_base "$path" && continue
        [ -n "${BUNDLED[$name]:-}" ] && continue
        BUNDLED[$name]=$path
        if is_runtime "$path"; then cp -L "$path" "$DIR/lib-base/$name"; else cp -L "$path" "$DIR/lib/$name"; fi
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' "$1")
}
bundle_deps_of() { # the libraries that $1 loads
    ldd "$1" > "$STAGE/ldd.txt" 2>&1 || die "ldd $1 failed: $(head -n 3 "$STAGE/ldd.txt")"
    if grep -q 'not found' "$STAGE/ldd.txt"; then
        die "$1 needs $(awk '/not found/ {print $1}' "$STAGE/ldd.txt" | tr '\n' ' ')which this machine does not have"
    fi
    copy_libs "$STAGE/ldd.txt"
}
is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | tail -c 3)" = ELF ]; }
for f in "$DIR"/*; do
    if is_elf "$f"; then bundle_deps_of "$f"; fi
done

# ---- Open MPI's components --------------------------------------------------
# libmpi dlopens its components (mca_*.so) from its install prefix, which a
# bare image lacks. The components are carried under DIR/openmpi in the same
# layout below the prefix, so OPAL_PREFIX=DIR/openmpi relocates the search
# (run_gpu_checks.sh also names the folder in OMPI_MCA_mca_base_component_path).
# A singleton start (no mpirun, ess_singleton_isolated) needs no orted and
# no PMIx server, so the components that need network stacks
# (psm, ofi, ucx, verbs) or an external PMIx are left out.
MPI_LIB=${BUNDLED[libmpi.so.40]:-}
for k in "${!BUNDLED[@]}"; do case "$k" in libmpi.so*) MPI_LIB=${BUNDLED[$k]} ;; esac; done
[ -n "$MPI_LIB" ] || die "no libmpi among the programs' libraries"
MPI_INFO=$(command -v ompi_info || true)
PKGLIBDIR=""
PREFIX=""
if [ -n "$MPI_INFO" ]; then
    PKGLIBDIR=$("$MPI_INFO" --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
    PREFIX=$("$MPI_INFO" --path prefix --parsable 2>/dev/null | sed -n 's/^path:prefix://p')
    PKGDATADIR=$("$MPI_INFO" --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
fi
[ -d "$PKGLIBDIR" ] && [ -f "$PKGLIBDIR/mca_ess_singleton.so" ] \
    || die "cannot find Open MPI's components (ompi_info --path pkglibdir: '$PKGLIBDIR')"
case "$PKGLIBDIR" in "$PREFIX"/*) ;; *) die "Open MPI's pkglibdir $PKGLIBDIR is outside its prefix $PREFIX" ;; esac
MCA_DIR="$DIR/openmpi/${PKGLIBDIR#"$PREFIX"/}"
mkdir -p "$MCA_DIR"
kept=0
dropped=()
# One ldd over every component (one loader run each, no shell per line).
ldd "$PKGLIBDIR"/mca_*.so > "$STAGE/mca_ldd.txt" 2>&1 || true
declare -A DROP=()
while read -r comp; do DROP[$comp]=1; done < <(awk '
    /^\// { comp = $1; sub(/:$/, "", comp); next }
    /not found|libpsm|libfabric|libuc[pst]|libibverbs|librdmacm|libpmix|libmunge|libhcoll|libknem|libxpmem|libcuda|libOpenCL|libX11|libnl-/ { print comp }
' "$STAGE/mca_ldd.txt" | sort -u)
for comp in "$PKGLIBDIR"/mca_*.so; do
    if [ -n "${DROP[$comp]:-}" ]; then
        dropped+=("$(basename "$comp" .so)")
        continue
    fi
    cp "$comp" "$MCA_DIR/"
    kept=$((kept + 1))
done
# The kept components' libraries (the listing of the dropped ones is never read).
awk '/^\// { comp = $1; sub(/:$/, "", comp); next } { print comp "\t" $0 }' "$STAGE/mca_ldd.txt" \
    | while IFS=$'\t' read -r comp line; do [ -z "${DROP[$comp]:-}" ] && echo "$line"; done \
    > "$STAGE/mca_kept_ldd.txt" || true
copy_libs "$STAGE/mca_kept_ldd.txt"
if [ -n "${PKGDATADIR:-}" ] && [ -d "$PKGDATADIR" ]; then
    # The help texts: without them an Open MPI error says only that its text is missing.
    mkdir -p "$DIR/openmpi/${PKGDATADIR#"$PREFIX"/}"
    cp "$PKGDATADIR"/help-*.txt "$DIR/openmpi/${PKGDATADIR#"$PREFIX"/}/" 2>/dev/null || true
fi
echo "${MCA_DIR#"$DIR"/}" > "$DIR/openmpi/component_dir"

# ---- what the bundle is ----------------------------------------------------
newest_glibc=$(find "$DIR" -type f \( -name '*.so*' -o -perm -u+x \) -exec cat {} + 2>/dev/null \
    | grep -aoE 'GLIBC_2\.[0-9]+' | sort -t. -k2 -n -u | tail -n 1 || true)
{
    echo "gpt3d GPU kit built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $(ldd --version | head -n 1)"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "build: $BUILD ($(grep -E '^(GPT3D_CUDA|GPT3D_PORTABLE|CMAKE_BUILD_TYPE):' "$BUILD/CMakeCache.txt" | tr '\n' ' '))"
    echo "cuda backend: $([ "$HAVE_CUDA" = 1 ] && echo libgpt3d_cuda.so || echo 'none (CUDA-off build: rehearsal only)')"
    echo "open mpi components: $kept kept, ${#dropped[@]} left out (${dropped[*]:-none})"
    echo "glibc needed: $newest_glibc"
} > "$DIR/BUNDLE_INFO"
printf '%s\n' "${!BUNDLED[@]}" | sort > "$DIR/lib/LIBRARIES"

# The libraries travel packed: OpenBLAS alone is 36 MB, half that packed,
# and the GPU machine takes 64 MiB of upload. run_gpu_checks.sh unpacks them.
unpacked=$(du -sb "$DIR" | cut -f1)
tar -C "$DIR" -cf - lib lib-base openmpi | gzip -6 > "$DIR/libs.tar.gz"
rm -rf "${DIR:?}/lib" "${DIR:?}/lib-base" "${DIR:?}/openmpi"
bytes=$(du -sb "$DIR" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "== bundle $DIR: $mib MiB ($(awk -v b="$unpacked" 'BEGIN { printf "%.1f", b / 1048576 }') MiB unpacked; ${#BUNDLED[@]} libraries, $(wc -l < "$DIR/tests.tsv") CUDA tests, $kept Open MPI components)"
cat "$DIR/BUNDLE_INFO"
awk -v b="$bytes" -v m="$MAX_MIB" 'BEGIN { exit !(b > m * 1048576) }' \
    && die "the bundle is $mib MiB, above the $MAX_MIB MiB limit"
echo "== run it: $DIR/run_gpu_checks.sh [--budget-s N]   (here: --cpu-standin)"
