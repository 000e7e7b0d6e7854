# sandbox.sh: what the agent can and cannot do inside `openshell run`, each
# attempt made by the static probe (test/helpers/probe.c) and asserted to
# the exact errno. Runs as root (the CI case); the unprivileged path is in
# sandbox_userns.sh.
. "$(dirname "$0")/lib.sh"

PROBE_SRC="$OPENSHELL_BUILD/test/helpers/probe"
if [ "$(id -u)" != 0 ]; then
    skip "sandbox probes" "needs root (the unprivileged path is sandbox_userns.sh)"
    testing "--explain says so honestly when Landlock is missing" \
    "$W/probe no-landlock openshell run --explain | grep -c '^landlock:   NOT ENFORCED'" "1"

done_testing
    exit
fi
if [ ! -x "$PROBE_SRC" ]; then
    skip "sandbox probes" "probe helper not built ($PROBE_SRC)"
    testing "--explain says so honestly when Landlock is missing" \
    "$W/probe no-landlock openshell run --explain | grep -c '^landlock:   NOT ENFORCED'" "1"

done_testing
    exit
fi
W="$T/w"
mkdir -p "$W"
chmod 777 "$W" # the agent runs as 65534 by default
cp "$PROBE_SRC" "$W/probe"
cd "$W" || exit 1

# probe ACTION...: run the probe in a default sandbox
p() { echo "openshell run -- /sandbox/probe $*"; }

# Blocked syscall families (seccomp): every one fails with EPERM.
for a in socket-packet socket-raw socket-raw6 socket-vsock socket-bluetooth netlink-diag \
    netlink-netfilter setns unshare-user unshare-net unshare-mnt clone-newuser \
    execveat-empty ptrace-attach ptrace-traceme process-vm-readv pidfd-getfd pidfd-open io-uring bpf \
    userfaultfd perf-event-open init-module finit-module kexec-load keyctl add-key \
    seccomp-filter prctl-seccomp mount-bind umount pivot-root fsopen open-tree move-mount \
    mount-setattr tiocsti setuid0; do
    testing "blocked: $a" "$(p $a)" "$a: EPERM"
done
testing "clone3 is ENOSYS (libc falls back to clone)" "$(p clone3)" "clone3: ENOSYS"
testing "route netlink opens, changing routes does not" "$(p netlink-route route-add)" \
    "netlink-route: ok
route-add: EPERM"
testing "ordinary calls still work" "$(p fork socket-unix socket-tcp memfd-create)" \
    "fork: ok
socket-unix: ok
socket-tcp: ok
memfd-create: ok"
testing "fileless exec of a memfd is refused" "$(p memfd-exec)" "memfd-exec: EACCES"

# Network: a namespace with loopback only. Direct connects fail at once.
testing "direct connects fail at once" \
    "$(p tcp:198.51.100.1:80 'tcp:[2001:db8::1]:443' udp:8.8.8.8:53 'tcp:[::ffff:1.2.3.4]:443')" \
    "tcp:198.51.100.1:80: ENETUNREACH
tcp:[2001:db8::1]:443: ENETUNREACH
udp:8.8.8.8:53: ENETUNREACH
tcp:[::ffff:1.2.3.4]:443: ENETUNREACH"
testing "loopback is up and empty" "$(p tcp:127.0.0.1:1 'tcp:[::1]:1')" \
    "tcp:127.0.0.1:1: ECONNREFUSED
tcp:[::1]:1: ECONNREFUSED"
testing "no DNS" "$(p dns:example.com)" "dns:example.com: fail"
testing "only lo in the namespace" "openshell run -- sh -c 'ls /sys/class/net 2>/dev/null || cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d \" \"'" "lo"

# Filesystem: read-only root, Landlock for unlisted paths.
testing "writes outside allowed paths" "$(p write:/usr/x write:/etc/x write:/x write:/var/log/x)" \
    "write:/usr/x: EROFS
write:/etc/x: EROFS
write:/x: EROFS
write:/var/log/x: EROFS"
testing "unlisted paths are unreadable" "$(p read:/root read:/home read:/opt read:/srv)" \
    "read:/root: EACCES
read:/home: EACCES
read:/opt: EACCES
read:/srv: EACCES"
testing "listed paths readable, /tmp and /sandbox writable" \
    "$(p read:/etc/hostname read:/usr/bin/env write:/tmp/x write:/sandbox/x write:/dev/null)" \
    "read:/etc/hostname: ok
read:/usr/bin/env: ok
write:/tmp/x: ok
write:/sandbox/x: ok
write:/dev/null: ok"
rm -f "$W/x"
# PID 1 and the shell (the glob is expanded before ls runs).
testing "a fresh /proc: only the sandbox's processes" \
    "openshell run -- sh -c 'cat /proc/1/comm; ls -d /proc/[0-9]* >/tmp/l; wc -l </tmp/l'" "openshell-super
2"
testing "/tmp is private" "openshell run -- sh -c 'ls -A /tmp | wc -l'" "0"
testing "minimal /dev" "openshell run -- sh -c 'for f in null zero full random urandom tty ptmx pts shm fd stdin; do test -e /dev/\$f || echo missing \$f; done; for f in mem kmem kmsg port sda vda console kvm fuse loop0 net; do test -e /dev/\$f && echo extra \$f; done; true'" ""
testing "workdir is /sandbox and cwd" "openshell run -- sh -c 'pwd; ls /sandbox/probe'" \
    "/sandbox
/sandbox/probe"

# Identity and privileges.
testing "not root, no groups" "$(p ids)" "ids: uid=65534 euid=65534 gid=65534 egid=65534 groups=0"
testing "no capabilities, no_new_privs, seccomp" "$(p caps)" \
    "caps: CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=0000000000000000 CapAmb=0000000000000000 NoNewPrivs=1 Seccomp=2"
testing "two filters: the supervisor's prelude and the agent's" \
    "openshell run -- grep Seccomp_filters /proc/self/status" "Seccomp_filters:	2"
cp "$W/probe" "$W/suid-probe"
chmod 4755 "$W/suid-probe"
testing "a setuid-root binary gains nothing" "openshell run -- /sandbox/suid-probe ids caps" \
    "ids: uid=65534 euid=65534 gid=65534 egid=65534 groups=0
caps: CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=0000000000000000 CapAmb=0000000000000000 NoNewPrivs=1 Seccomp=2"
testing "host setuid binaries too (su)" "openshell run -- su -c id root </dev/null >/dev/null 2>&1; echo \$?" "1"
testing "id -u is never 0" "openshell run -- id -u" "65534"
testing "core dumps off" "openshell run -- sh -c 'ulimit -c'" "0"
testing "the supervisor's environment and memory are unreadable" \
    "$(p read:/proc/1/environ read:/proc/1/mem read:/proc/1/cmdline kill-1 ptrace-attach)" \
    "read:/proc/1/environ: EACCES
read:/proc/1/mem: EACCES
read:/proc/1/cmdline: ok
kill-1: EPERM
ptrace-attach: EPERM"
testing "environment scrubbed to the allow-list" \
    "env -i PATH=\"\$PATH\" SECRET_TOKEN=hunter2 OPENSHELL_TOKEN=x openshell run -- sh -c 'env | cut -d= -f1 | sort | tr \"\\n\" \" \"'" \
    "HOME LOGNAME OPENSHELL_SANDBOX PATH PWD USER "
testing "allow-listed variables pass, --env adds" \
    "env -i PATH=\"\$PATH\" TERM=xterm LC_ALL=C.UTF-8 openshell run --env A=1 --env HOME=/tmp -- sh -c 'echo \$TERM \$LC_ALL \$A \$HOME \$OPENSHELL_SANDBOX'" \
    "xterm C.UTF-8 1 /tmp 1"
# RLIMIT_NPROC counts per uid: the fork bomb runs as a uid of its own so a
# concurrent run of these tests (or anything else as 65534) is not starved.
FB_UID=$((20000 + $$ % 30000))
printf 'version: 1\nprocess:\n  run_as_user: "%s"\n  run_as_group: "%s"\n' $FB_UID $FB_UID >"$T/fb.yaml"
testing "a fork bomb is bounded" "openshell run --policy $T/fb.yaml -- /sandbox/probe forkbomb" \
    "forkbomb: EAGAIN after 1023"

# Landlock compatibility.
printf 'version: 1\nfilesystem_policy:\n  read_only: [/usr, /etc, /no/such/dir]\nlandlock:\n  compatibility: hard_requirement\n' >"$T/hard-missing.yaml"
printf 'version: 1\nfilesystem_policy:\n  read_only: [/usr, /etc, /no/such/dir]\n' >"$T/soft-missing.yaml"
printf 'version: 1\nlandlock:\n  compatibility: hard_requirement\n' >"$T/hard.yaml"
testing_rc "hard_requirement: a missing path refuses to start" \
    "openshell run --policy $T/hard-missing.yaml -- sh -c 'echo ran >/sandbox/ran'" 125
testing "... and nothing ran" "ls $W/ran 2>/dev/null; true" ""
check "best_effort: a missing path is skipped" \
    "openshell run --policy $T/soft-missing.yaml -- /usr/bin/true"
testing_rc "hard_requirement without Landlock refuses to start" \
    "$W/probe no-landlock openshell run --policy $T/hard.yaml -- sh -c 'echo ran >/sandbox/ran'" 125
testing "... and nothing ran" "ls $W/ran 2>/dev/null; true" ""
testing "best_effort without Landlock runs, with one loud warning" \
    "$W/probe no-landlock openshell run -- /sandbox/probe read:/home 2>$T/warn; grep -c 'LANDLOCK NOT ENFORCED' $T/warn" \
    "read:/home: ok
1"

testing "--explain says so honestly when Landlock is missing" \
    "$W/probe no-landlock openshell run --explain | grep -c '^landlock:   NOT ENFORCED'" "1"

done_testing
