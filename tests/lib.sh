# shellcheck shell=bash
# tests/lib.sh - sourced by tests/run.sh and tests/extended.sh (from the
# repository's root): the pass/fail/skip counters and their final line, the
# parser of a sub-run's final line, and the build of the C test binary.

passed=0 failed=0 skipped=0
T0=$(date +%s)
# the names of what failed, repeated by finish: CI's log may keep only its end
failed_names=
pass() { passed=$((passed + 1)); echo "[ PASS ] $1"; }
fail() {
    failed=$((failed + 1))
    failed_names="$failed_names  $1"$'\n'
    echo "[ FAIL ] $1"
    shift
    for l in "$@"; do echo "    $l"; done
}
skip() { skipped=$((skipped + 1)); echo "[ SKIP ] $1: $2"; }
# check NAME CONDITION-COMMAND... : pass when the command succeeds (DETAIL: why it failed)
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "${DETAIL:-}"; fi; DETAIL=; }
DETAIL=

# add_counts LOGFILE NAME: adds the counts of a sub-run (build/test_slm, or
# run.sh itself) whose last line is "N passed, N failed[, N skipped]"; any
# other last line (a crash, a build that never ran) is one failure
add_counts() {
    local line
    line=$(tail -n 1 "$1" 2>/dev/null)
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
        # its own list of what failed when it has one, else its FAIL lines
        if [ "${BASH_REMATCH[2]}" != 0 ] && grep -q '^== what failed:$' "$1"; then
            failed_names="$failed_names$(sed -n "/^== what failed:\$/,\$ s/^  \(.*\)/  $2: \1/p" "$1")"$'\n'
        elif [ "${BASH_REMATCH[2]}" != 0 ]; then
            failed_names="$failed_names$(sed -n "s/^ *\[ FAIL \] \(.*\)/  $2: \1/p" "$1")"$'\n'
        fi
    else
        fail "$2 finished" "its last line was: $line"
    fi
}

# finish NAME: the time taken and the final "N passed, N failed[, N skipped]"
# line; returns 1 when anything failed
finish() {
    echo "== $1: $(($(date +%s) - T0)) s"
    [ -z "$failed_names" ] || printf '== what failed:\n%s' "$failed_names"
    if [ $skipped -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [ $failed = 0 ]
}

# The sources of the test binary (tests/harness.h describes them): a new test
# file goes here, and every build of it below follows. The converter's writer
# and JSON reader are linked in: the format tests write through the writer,
# and the tests read JSON with the converter's reader.
TEST_SOURCES=(tests/harness.c tests/test_internals.c tests/test_api.c tests/test_checkpoints.c
    tools/convert.c tools/write_slm.c tools/json.c)

# build_test_slm OUT LOG COMPILER [FLAGS...]: builds the test binary with the
# flags (compiling and linking: -fopenmp, -pthread, sanitizers) and -Wall
# -Wextra; the compiler's messages go to LOG. COMPILER may hold words
# ("ccache gcc").
build_test_slm() {
    local out=$1 log=$2 cc=$3
    shift 3
    # shellcheck disable=SC2086
    $cc "$@" -Wall -Wextra -I. -o "$out" "${TEST_SOURCES[@]}" -lm >"$log" 2>&1
}
