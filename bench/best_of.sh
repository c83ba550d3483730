# bench/best_of.sh — sourced by the bench scripts; needs $work (a scratch
# directory) and $REPEATS.
# best_of NAME CMD...: runs CMD REPEATS times; leaves "wall user sys" of the
# fastest run in $work/NAME.time and that run's stdout+stderr in $work/NAME.log.
best_of() {
    local name=$1; shift
    local best=""
    for _ in $(seq "$REPEATS"); do
        /usr/bin/time -f '%e %U %S' -o "$work/t" "$@" > "$work/out" 2>&1
        local wall
        wall=$(cut -d' ' -f1 "$work/t")
        if [ -z "$best" ] || awk -v a="$wall" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$wall
            cp "$work/t" "$work/$name.time"
            cp "$work/out" "$work/$name.log"
        fi
    done
}
