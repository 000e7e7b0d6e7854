# sandbox_userns.sh: `openshell run` started by an unprivileged user: a user
# namespace maps that user (and only that user), who runs the command. The
# test drops to uid/gid 65534 with setpriv (util-linux).
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
    U=""
elif ! command -v setpriv >/dev/null 2>&1; then
    skip "unprivileged sandbox" "setpriv (util-linux) not installed"
    done_testing
    exit
else
    U="setpriv --reuid=65534 --regid=65534 --clear-groups"
fi
if ! $U unshare -U true 2>/dev/null; then
    skip "unprivileged sandbox" "unprivileged user namespaces are disabled on this machine"
    done_testing
    exit
fi
ME=$($U id -u)
MYG=$($U id -g)
chmod 755 "$T"
W="$T/w"
mkdir -p "$W"
chmod 777 "$W"
cp "$OPENSHELL_BUILD/test/helpers/probe" "$W/probe"
chmod 755 "$W/probe"
cd "$W" || exit 1
# r ARGS: the command line (no quoting inside ARGS) as the unprivileged user.
r() { echo "$U openshell run $*"; }

testing "runs as the invoking user" "$(r -- /sandbox/probe ids)" \
    "ids: uid=$ME euid=$ME gid=$MYG egid=$MYG groups=0"
testing "no capabilities left" "$(r -- /sandbox/probe caps)" \
    "caps: CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=0000000000000000 CapAmb=0000000000000000 NoNewPrivs=1 Seccomp=2"
testing "blocked calls stay blocked" \
    "$(r -- /sandbox/probe unshare-user setns ptrace-attach mount-bind socket-packet bpf)" \
    "unshare-user: EPERM
setns: EPERM
ptrace-attach: EPERM
mount-bind: EPERM
socket-packet: EPERM
bpf: EPERM"
testing "PID 1 (same uid) is out of reach" \
    "$(r -- /sandbox/probe read:/proc/1/environ read:/proc/1/mem kill-1)" \
    "read:/proc/1/environ: EACCES
read:/proc/1/mem: EACCES
kill-1: EPERM"
testing "loopback only" "$(r -- /sandbox/probe tcp:198.51.100.1:80 tcp:127.0.0.1:1)" \
    "tcp:198.51.100.1:80: ENETUNREACH
tcp:127.0.0.1:1: ECONNREFUSED"
testing "filesystem rules hold" "$(r -- /sandbox/probe write:/usr/x read:/root write:/sandbox/x write:/tmp/x)" \
    "write:/usr/x: EROFS
read:/root: EACCES
write:/sandbox/x: ok
write:/tmp/x: ok"
# RLIMIT_NPROC is also charged to the uid on the host: the fork bomb runs as
# a uid of its own so concurrent tests running as 65534 are not starved.
if [ -n "$U" ]; then
    FB=$((20000 + $$ % 30000))
    FBU="setpriv --reuid=$FB --regid=$FB --clear-groups"
else
    FBU=""
fi
testing "a fork bomb is bounded" "$FBU openshell run -- /sandbox/probe forkbomb | sed 's/after [0-9]*/after N/'" \
    "forkbomb: EAGAIN after N"
testing_rc "exit status passes through" "$U openshell run -- sh -c 'exit 5'" 5
testing_rc "--timeout gives 124" "$(r --timeout 0.3 -- sleep 30)" 124
printf 'version: 1\nprocess:\n  run_as_user: "4242"\n' >"$T/other.yaml"
chmod 644 "$T/other.yaml"
testing_rc "another run_as_user needs root: exit 2" "$(r --policy $T/other.yaml -- true)" 2
if command -v node >/dev/null 2>&1; then
    testing "node runs" "$U openshell run -- node -e 'console.log(6*7)'" "42"
else skip "node runs" "node not installed"; fi
testing "python3 runs" "$U openshell run -- /usr/bin/python3 -c 'print(6*7)'" "42"
testing "no mounts or processes left behind" "grep -c -e newroot -e oldroot /proc/self/mountinfo" "0"

done_testing
