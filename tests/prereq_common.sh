# Shared by the test scripts that compare against references fetched from
# npm (sourced, not run): the rule of tests/test_gpt2_prereq.h for a script.
# prereq_verdict FAILURES MISSING NOT_CHECKED: exits 1 when FAILURES > 0;
# else, when MISSING (what could not be had) is not empty, exits 1, or 77
# (skipped) under GPT3D_ALLOW_MISSING_PREREQS=1, saying that NOT_CHECKED was
# not checked; else returns.
prereq_verdict() {
    if [ "$1" -gt 0 ]; then echo "$1 failure(s)" >&2; exit 1; fi
    [ -z "$2" ] && return 0
    if [ "${GPT3D_ALLOW_MISSING_PREREQS:-0}" = 1 ]; then
        echo "SKIP: missing $2; $3 not checked" >&2
        exit 77
    fi
    echo "FAIL: missing $2 (scripts/quickstart.sh installs npm; or set GPT3D_ALLOW_MISSING_PREREQS=1)" >&2
    exit 1
}
