# run.sh: `openshell run` as a command: exit statuses, timeouts, signals,
# PID 1 duties, bad input (exit 2, nothing started) and ordinary tools
# working inside the sandbox.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    skip "openshell run" "needs root (the unprivileged path is sandbox_userns.sh)"
    done_testing
    exit
fi
W="$T/w"
mkdir -p "$W"
chmod 777 "$W"
cp "$OPENSHELL_BUILD/test/helpers/probe" "$W/probe"
cd "$W" || exit 1

# Exit statuses.
testing_rc "exit status passes through" "openshell run -- sh -c 'exit 3'" 3
testing_rc "true is 0" "openshell run -- /bin/true" 0
testing_rc "killed by signal N is 128+N" "openshell run -- /sandbox/probe signal:9" 137
testing_rc "SIGSEGV is 139" "openshell run -- /sandbox/probe signal:11" 139
testing_rc "command not found is 127" "openshell run -- no-such-command-xyz" 127
testing_rc "not executable is 126" "openshell run -- /etc/hostname" 126
testing "stdout and stdin pass through" "echo hello | openshell run -- cat" "hello"
testing "hostname is the sandbox name" "openshell run --name box-1 -- hostname" "box-1"
testing "--workdir is /sandbox" "mkdir -p $T/wd2 && echo x >$T/wd2/f && openshell run --workdir $T/wd2 -- cat /sandbox/f" "x"
testing "--rootfs: a busybox-free minimal root" \
    "mkdir -p $T/rootfs/bin && cp $W/probe $T/rootfs/bin/probe && openshell run --rootfs $T/rootfs -- /bin/probe read:/etc/passwd ids" \
    "read:/etc/passwd: ENOENT
ids: uid=65534 euid=65534 gid=65534 egid=65534 groups=0"

# Timeout: SIGTERM to the group, SIGKILL after the grace period, status 124.
start=$(date +%s)
testing_rc "--timeout gives 124" "openshell run --timeout 0.3 -- sleep 30" 124
testing_rc "--timeout kills a command ignoring SIGTERM" \
    "openshell run --timeout 0.3 -- /sandbox/probe ignore-term sleep:30000" 124
el=$(($(date +%s) - start))
if [ "$el" -le 6 ]; then tap_ok "timeouts are prompt (${el}s)"; else tap_not_ok "timeouts took ${el}s"; fi

# Signals to openshell run reach the agent's process group.
for sig in TERM INT HUP USR1; do
    rm -f "$T/sig.out"
    openshell run -- /sandbox/probe trap-term >"$T/sig.out" 2>&1 &
    pid=$!
    i=0
    while ! grep -q ready "$T/sig.out" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    kill -s "$sig" $pid
    wait $pid
    rc=$?
    got=$(grep -c "^got " "$T/sig.out")
    if [ "$rc" -eq 0 ] && [ "$got" -eq 1 ]; then
        tap_ok "SIG$sig is forwarded once to the agent"
    else
        tap_not_ok "SIG$sig forwarded" "status $rc, output: $(cat "$T/sig.out")"
    fi
done
# ...and to its children (the process group), ending the run with 128+15.
openshell run -- sh -c 'sleep 30; exit 0' &
pid=$!
sleep 0.3
kill -TERM $pid
wait $pid
rc=$?
if [ $rc -eq 143 ]; then tap_ok "SIGTERM reaches the agent's children"; else tap_not_ok "SIGTERM to children" "status $rc"; fi

# PID 1 duties: orphans are reaped, nothing outlives the agent.
testing "orphans are reaped" \
    "openshell run -- sh -c '(sleep 0.1 &); sleep 0.6; cat /proc/[0-9]*/stat 2>/dev/null | grep -c \") Z \"'" "0"
marker="$$$(date +%N)"
openshell run -- sh -c "setsid sleep 7$marker </dev/null >/dev/null 2>&1 & sleep 0.2; exit 0"
sleep 0.3
testing "nothing keeps running after the agent exits" "pgrep -f 'slee[p] 7$marker' || true" ""
testing "no sandbox mounts leak to the host" "grep -c -e newroot -e oldroot /proc/self/mountinfo" "0"

# Bad input: one clear error, exit 2, nothing started.
printf 'version: 1\nfilesystem_policy:\n  read_only: [/usr]\n  bogus: 1\n' >"$T/bad.yaml"
printf 'version: 1\nprocess:\n  run_as_user: "sandbox"\n' >"$T/nouser.yaml"
printf 'version: 1\nprocess:\n  run_as_user: root\n' >"$T/root.yaml"
started="sh -c 'echo ran >/sandbox/started'"
# bad_input NAME CMD PATTERN: CMD exits 2 and its stderr contains PATTERN.
bad_input() {
    sh -c "$2" >"$OUT" 2>"$ERR"
    rc=$?
    if [ $rc -eq 2 ] && grep -q -e "$3" "$ERR"; then
        tap_ok "$1"
    else
        tap_not_ok "$1" "command: $2" "status $rc (want 2), stderr must match: $3"
        tap_show_output
    fi
}
bad_input "missing command" "openshell run" "missing command"
bad_input "missing command after --" "openshell run --" "missing command"
bad_input "nonexistent workdir" "openshell run --workdir /no/such/dir -- $started" \
    "workdir /no/such/dir: No such file or directory"
bad_input "nonexistent rootfs" "openshell run --rootfs /no/such/root -- $started" \
    "rootfs /no/such/root: No such file or directory"
bad_input "workdir / is refused" "openshell run --workdir / -- $started" "workdir is /"
bad_input "invalid policy: the loader's FILE:LINE:COL error" \
    "openshell run --policy $T/bad.yaml -- $started" "^$T/bad.yaml:4:3: filesystem_policy.bogus"
bad_input "missing policy file" "openshell run --policy $T/none.yaml -- $started" "none.yaml"
bad_input "a user that does not exist" "openshell run --policy $T/nouser.yaml -- $started" \
    "user 'sandbox' does not exist"
bad_input "root is refused" "openshell run --policy $T/root.yaml -- $started" "run_as_user"
bad_input "bad --timeout" "openshell run --timeout soon -- $started" "timeout"
bad_input "bad --env" "openshell run --env NOEQUALS -- $started" "NOEQUALS"
bad_input "bad --name" "openshell run --name 'a b' -- $started" "name"
bad_input "unknown option" "openshell run --frobnicate -- $started" "frobnicate"
testing "nothing was started by any of them" "ls $W/started 2>/dev/null; true" ""

# --explain: the honest report.
testing "--explain names the Landlock ABI" \
    "openshell run --explain | grep -c \"^landlock:   ABI $(cat /sys/kernel/security/landlock/abi_version 2>/dev/null || echo '[0-9]')\"" "1"
testing "the debug log names the enforced Landlock ABI" \
    "openshell --log-level debug run -- true 2>&1 | grep -c 'landlock ABI [0-9]* enforced, handled: execute,'" "1"
testing "--explain lists rules and seccomp entries" \
    "openshell run --explain | grep -c -e '^    rw /sandbox' -e '^    ptrace -> EPERM'" "2"

# Ordinary tools work.
have() { command -v "$1" >/dev/null 2>&1; }
if have node; then
    testing "node runs (JIT and all)" "openshell run -- node -e 'console.log([1,2,3].map(x => x * 2).join(\",\"))'" "2,4,6"
else skip "node runs" "node not installed"; fi
if [ -x /usr/bin/python3 ]; then
    testing "python3 runs" "openshell run -- /usr/bin/python3 -c 'import json, subprocess, tempfile; print(json.dumps(subprocess.run([\"echo\", \"ok\"], capture_output=True, text=True).stdout.strip()))'" '"ok"'
else skip "python3 runs" "/usr/bin/python3 not installed"; fi
if have git; then
    testing "git works in /sandbox" "openshell run -- sh -c 'git init -q r && cd r && echo a >a && git add a && git -c user.email=a@b -c user.name=a commit -qm m && git log --format=%s'" "m"
else skip "git works" "git not installed"; fi
if have gcc; then
    testing "gcc compiles and the result runs" "openshell run -- sh -c 'printf \"int main(void){return 42;}\" >/tmp/a.c && gcc -o /tmp/a /tmp/a.c && /tmp/a; echo \$?'" "42"
else skip "gcc" "gcc not installed"; fi
if have make; then
    testing "make runs" "openshell run -- sh -c 'printf \"all:\\n\\t@echo made\\n\" >/tmp/Makefile && make -s -f /tmp/Makefile'" "made"
else skip "make" "make not installed"; fi
testing "bash runs" "openshell run -- bash -c 'echo \${BASH_VERSION%%.*}' | grep -c '^[0-9]'" "1"
if have curl; then
    testing_rc "curl runs (and cannot leave: exit 7 or 6)" "openshell run -- curl -s -m 5 http://198.51.100.1/ ; r=\$?; [ \$r = 7 ] || [ \$r = 6 ]" 0
else skip "curl" "curl not installed"; fi

done_testing
