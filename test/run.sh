#!/bin/sh
# test/run.sh [unit|e2e] [PATTERN]: run the test suite and count its TAP points.
#
# Unit tests are build/test/unit/test_* (host build with ASan/UBSan); e2e tests
# are the executable files test/e2e/*.sh and test/e2e/*.py, run against the
# built static binary. Every program speaks TAP. A program that exits non-zero
# without a failing point, or reports fewer points than it planned, counts as
# one more failure (a crash or a sanitizer report must never pass quietly).
# Full output of each program goes to build/test/logs/; failures and skips are
# echoed. The last line is always "N passed, N failed, N skipped".
set -u

TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
B=${B:-build}
LOGS="$B/test/logs"
mkdir -p "$LOGS"
what=${1:-all}
pattern=${2:-}
TIMEOUT=${TEST_TIMEOUT:-900}

export OPENSHELL_BIN="$TOP/$B/openshell"
export OPENSHELL_BINDIR="$TOP/$B/bin"
export OPENSHELL_TOP="$TOP"
export OPENSHELL_BUILD="$TOP/$B"
# Sanitizers: stop at the first error, with a stack trace; leaks are errors.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="print_suppressions=0"

pass=0 fail=0 skip=0

# run_tap NAME COMMAND...: run one TAP program and add up its points.
run_tap() {
    name=$1
    shift
    log="$LOGS/$(echo "$name" | tr '/' '_').log"
    start=$(date +%s)
    timeout -k 10 "$TIMEOUT" "$@" >"$log" 2>&1 </dev/null
    rc=$?
    secs=$(($(date +%s) - start))
    set -- $(awk '
        /^1\.\.[0-9]+/ { plan = substr($1, 4) + 0 }
        /^ok / { if ($0 ~ /# [Ss][Kk][Ii][Pp]/) s++; else p++; next }
        /^not ok / { if ($0 ~ /# TODO/) p++; else f++; next }
        END { printf "%d %d %d %d\n", p, f, s, plan }' "$log")
    p=$1 f=$2 s=$3 plan=$4
    extra=
    if [ "$plan" -gt $((p + f + s)) ]; then
        extra="$((plan - p - f - s)) planned points missing"
        f=$((f + 1))
    elif [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        extra="exit status $rc without a failing point"
        [ $rc -eq 124 ] && extra="timed out after ${TIMEOUT}s"
        f=$((f + 1))
    fi
    pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    if [ "$f" -gt 0 ]; then
        printf 'FAIL %-34s %3d passed, %d failed, %d skipped (%ss)%s\n' "$name" "$p" "$f" "$s" \
            "$secs" "${extra:+: $extra}"
        grep -E '^(not ok|#)' "$log" | grep -v '^# SKIP' | head -n 40 | sed 's/^/    /'
        if [ -n "$extra" ]; then
            # A sanitizer report: show its headline and first frames, not the shadow map.
            if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$log"; then
                grep -E 'ERROR: |SUMMARY: |runtime error:|^ *#[0-9]+ ' "$log" | head -n 16
            else
                tail -n 25 "$log"
            fi | sed 's/^/    | /'
        fi
    else
        printf 'ok   %-34s %3d passed, %d failed, %d skipped (%ss)\n' "$name" "$p" "$f" "$s" "$secs"
    fi
    grep -E '^ok .*# [Ss][Kk][Ii][Pp]' "$log" | sed 's/^ok [0-9]* - /    skipped: /'
}

if [ "$what" = all ] || [ "$what" = unit ]; then
    for t in "$B"/test/unit/test_*; do
        [ -x "$t" ] || continue
        case "$t" in *"$pattern"*) ;; *) continue ;; esac
        run_tap "unit/${t##*/}" "$t"
    done
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
    for t in test/e2e/*.sh test/e2e/*.py; do
        [ -x "$t" ] || continue
        case "$t" in *"$pattern"*) ;; *) continue ;; esac
        case "$t" in
        *.py) run_tap "e2e/${t##*/}" /usr/bin/python3 "$t" ;;
        *) run_tap "e2e/${t##*/}" /bin/sh "$t" ;;
        esac
    done
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
