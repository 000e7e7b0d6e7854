# test/e2e/lib.sh: TAP helpers for shell end-to-end tests (sourced).
#
# Each test file sources this, then calls:
#   testing NAME COMMAND EXPECTED   run COMMAND (sh -c), its stdout must equal EXPECTED
#   testing_rc NAME COMMAND RC      COMMAND's exit status must be RC
#   check NAME COMMAND              COMMAND must exit 0
#   skip NAME REASON                a TAP skip with its reason
#   done_testing                    print the plan; the file's exit status
# Tests run the real static binary through applet symlinks in a fresh
# temporary directory, $T/bin (openshell, openshell-gateway, ...); $T is
# removed on exit. $OUT/$ERR hold the last command's stdout/stderr files.
set -u
: "${OPENSHELL_BIN:?run through test/run.sh or make check}"
T=$(mktemp -d /tmp/openshell-e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin"
ln -s "$OPENSHELL_BIN" "$T/bin/openshell"
for a in gateway proxy supervisor; do ln -s openshell "$T/bin/openshell-$a"; done
PATH="$T/bin:$PATH"
export PATH T
OUT="$T/.out"
ERR="$T/.err"
TAP_N=0
TAP_FAILED=0

tap_ok() {
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $1"
}

tap_not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - $1"
    shift
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/# /'; done
}

# Show what a failed command printed, as TAP diagnostics.
tap_show_output() {
    [ -s "$OUT" ] && { echo "stdout:"; head -c 2000 "$OUT"; echo; } | sed 's/^/# /'
    [ -s "$ERR" ] && { echo "stderr:"; head -c 2000 "$ERR"; echo; } | sed 's/^/# /'
    return 0
}

# Helper variables are prefixed _t_ so that callers' own variables survive.
testing() {
    _t_name=$1 _t_cmd=$2 _t_want=$3
    sh -c "$_t_cmd" >"$OUT" 2>"$ERR"
    _t_got=$(cat "$OUT")
    if [ "$_t_got" = "$_t_want" ]; then
        tap_ok "$_t_name"
    else
        tap_not_ok "$_t_name" "command: $_t_cmd" "expected: $_t_want" "got:      $_t_got"
        tap_show_output
    fi
}

testing_rc() {
    _t_name=$1 _t_cmd=$2 _t_want=$3
    sh -c "$_t_cmd" >"$OUT" 2>"$ERR"
    _t_rc=$?
    if [ "$_t_rc" -eq "$_t_want" ]; then
        tap_ok "$_t_name"
    else
        tap_not_ok "$_t_name" "command: $_t_cmd" "exit status $_t_rc, expected $_t_want"
        tap_show_output
    fi
}

check() {
    _t_name=$1 _t_cmd=$2
    if sh -c "$_t_cmd" >"$OUT" 2>"$ERR"; then
        tap_ok "$_t_name"
    else
        tap_not_ok "$_t_name" "command failed (status $?): $_t_cmd"
        tap_show_output
    fi
}

skip() {
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $1 # SKIP $2"
}

done_testing() {
    echo "1..$TAP_N"
    [ "$TAP_FAILED" -eq 0 ]
}

# For the tests that build an applet with AddressSanitizer, UBSan and
# LeakSanitizer (host gcc against build/deps-host): asan_setup sets TOP,
# HOST_DEPS, B (the built tree) and SAN (the sanitizer flags); the test's
# asan_main.c includes asan_stubs.h (-I"$TOP/test/e2e") for applets/main.c's
# shared helpers and adds main(). asan_options exports the sanitizer
# options: stop at the first report, exit 86 on one, leaks included.
asan_setup() {
    TOP=${OPENSHELL_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
    HOST_DEPS=$TOP/build/deps-host
    B=${OPENSHELL_BUILD:-$TOP/build}
    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
}

asan_options() {
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=86"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
}
