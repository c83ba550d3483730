#!/usr/bin/env bash
# Damaged checkpoints on 4 ranks (TP 2 x DP 2), issue 14:
# - one flipped byte in the float data of a non-zero rank's file, and one in
#   another rank file's HDF5 superblock: the resumed run exits non-zero with
#   that file named on stderr (and no HDF5 error stack or "infinite loop
#   closing library"), and `checkpoint_info --verify` fails naming it;
# - the intact checkpoint passes --verify with every dataset counted;
# - the NaN guard names the checkpoint it loaded only after verifying it.
# Usage: test_checkpoint_integrity.sh MPIEXEC PRETRAIN PREPROCESS CHECKPOINT_INFO OFFSET_TOOL
# (OFFSET_TOOL: test_checkpoint_integrity, whose --data-offset FILE prints
# the position of a float inside the file's largest dataset.)
set -u
MPIEXEC=$1
PRETRAIN=$2
PREPROCESS=$3
INFO=$4
OFFSET_TOOL=$5
source "$(dirname "$0")/e2e_common.sh"
make_corpus "$PREPROCESS" "integrity"

ARGS=(--num-layers 2 --hidden-size 32 --num-attention-heads 4 --ffn-hidden-size 64 --seq-length 32
      --micro-batch-size 1 --global-batch-size 8 --lr 2e-3 --lr-warmup-iters 1 --lr-decay-iters 100
      --tokenizer-type ByteTokenizer --data-path "$WORK/c_text_document.h5" --split 95,5,0
      --eval-iters 0 --device cpu --log-interval 1000 --tensor-model-parallel-size 2)
mpi() { timeout 120 "$MPIEXEC" --oversubscribe -np 4 "$PRETRAIN" "${ARGS[@]}" "$@"; }

mpi --train-iters 2 --save "$WORK/good" --save-interval 2 > "$WORK/good.log" 2>&1 \
    || { cat "$WORK/good.log"; fail "the run that saves"; finish test_checkpoint_integrity; }
CKPT=$WORK/good/iter_0000002

"$INFO" --load "$WORK/good" --verify > "$WORK/verify_good.txt" 2>&1 \
    || { cat "$WORK/verify_good.txt"; fail "--verify of the intact checkpoint"; }
grep -Eq "^checksums: verified [1-9][0-9]* datasets, [1-9][0-9]* bytes" "$WORK/verify_good.txt" \
    || { cat "$WORK/verify_good.txt"; fail "--verify does not say what it verified"; }

flip() { # flip FILE OFFSET: xor one byte with 0x5a
    local old
    old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "$(printf '\\%03o' $(( old ^ 0x5a )))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# damaged NAME RANK OFFSET: copies the checkpoint, flips one byte of rank
# RANK's file at OFFSET, and checks the resume and --verify both name it.
damaged() {
    local name=$1 file dir=$WORK/$1
    cp -r "$WORK/good" "$dir"
    file=$dir/iter_0000002/$(printf 'rank_%05d.h5' "$2")
    flip "$file" "$3"
    mpi --train-iters 4 --load "$dir" --save "$WORK/$name.out" > "$WORK/$name.log" 2> "$WORK/$name.err"
    local rc=$?
    [ $rc -ne 0 ] || fail "$name: the resumed run exited 0"
    grep -qF "$file" "$WORK/$name.err" || { cat "$WORK/$name.err"; fail "$name: stderr does not name $file"; }
    if grep -Eq "HDF5-DIAG|infinite loop closing library|MPI_ABORT" "$WORK/$name.err"; then
        cat "$WORK/$name.err"; fail "$name: HDF5 or MPI noise on stderr"
    fi
    [ -e "$WORK/$name.out/iter_0000004" ] && fail "$name: the run trained on and saved"
    "$INFO" --load "$dir" --verify > "$WORK/$name.verify" 2>&1 && fail "$name: --verify passed"
    grep -qF "$file" "$WORK/$name.verify" || { cat "$WORK/$name.verify"; fail "$name: --verify does not name $file"; }
    echo "$name: $(head -c 400 "$WORK/$name.err")"
}

offset=$("$OFFSET_TOOL" --data-offset "$CKPT/rank_00002.h5") || fail "no data offset"
damaged float_data 2 "$offset"
damaged hdf5_header 3 20 # inside superblock version 2, which HDF5 checksums

# The NaN guard verifies the checkpoint it names (the one this run loaded).
mpi --train-iters 30 --load "$WORK/good" --lr 1e30 --clip-grad 0 > "$WORK/nan.log" 2> "$WORK/nan.err"
[ $? -ne 0 ] || fail "the NaN run exited 0"
grep -qF "The last good checkpoint (verified: every dataset and checksum) is $CKPT;" "$WORK/nan.err" \
    || { cat "$WORK/nan.err"; fail "the NaN guard does not name the verified checkpoint"; }

finish test_checkpoint_integrity
