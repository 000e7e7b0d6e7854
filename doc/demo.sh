#!/bin/sh
# doc/demo.sh: the main job on the embedded defaults (run by `make demo`).
#
# It runs an "agent" (a shell script) in a sandbox built from the built-in
# default policy, shows what the sandbox allows and refuses, shows the policy
# engine deciding requests, and then drives a private local gateway through
# the CLI: a sandbox created, commands run in it, a file uploaded, a policy
# revision pushed to its running proxy, its logs, its deletion. Only the
# built binary is used; the gateway's state and configuration live in a
# temporary directory, and everything is stopped and removed at the end.
set -eu
cd "$(dirname "$0")/.."
OS=$PWD/build/openshell
WD=$(mktemp -d /tmp/openshell-demo.XXXXXX)
cleanup() {
    if [ -n "${GW_STARTED:-}" ]; then
        "$OS" sandbox delete --all >/dev/null 2>&1 || true
        "$OS" gateway stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WD"
}
trap cleanup EXIT
# As root, the agent runs as uid 65534 (never root): give it a workdir it owns.
[ "$(id -u)" -eq 0 ] && chown 65534:65534 "$WD"

step() { printf '\n== %s\n' "$*"; }

step "the binary: $("$OS" --version)"
file -b "$OS"
"$OS" applet --list

step "the built-in default policy (openshell policy default)"
"$OS" policy default | grep -v '^#'

step "an agent in a sandbox on that policy (openshell run -- sh -c ...)"
cat >"$WD/agent.sh" <<'EOF'
echo "I am:        $(id)"
echo "I run in:    $(pwd), as pid $$ of a pid namespace whose init is $(tr '\0' ' ' </proc/1/cmdline)"
echo note >/sandbox/note.txt && echo "write /sandbox/note.txt: allowed"
(echo x >/etc/openshell-demo) 2>/dev/null || echo "write /etc:   refused (read-only)"
(ls /root) 2>/dev/null || echo "read /root:   refused (not in the policy)"
(exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null || true
if command -v curl >/dev/null; then
    curl -s -m 3 http://1.1.1.1/ >/dev/null 2>&1 || echo "network:     none (loopback only, and this policy allows no egress)"
fi
exit 7
EOF
chmod 0644 "$WD/agent.sh"
set +e
"$OS" run --workdir "$WD" -- sh /sandbox/agent.sh
rc=$?
set -e
echo "openshell run exited with the agent's status: $rc"

step "what that sandbox enforces (openshell run --explain, first lines)"
"$OS" run --workdir "$WD" --explain -- true | head -n 12

step "the policy engine deciding requests (openshell policy check)"
cat >"$WD/policy.yaml" <<'EOF'
version: 1
network_policies:
  github:
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest
        access: read-only
    binaries:
      - path: /usr/bin/curl
EOF
"$OS" policy validate "$WD/policy.yaml"
for req in \
    '{"binary":"/usr/bin/curl","host":"api.github.com","port":443}' \
    '{"binary":"/usr/bin/python3","host":"api.github.com","port":443}' \
    '{"binary":"/usr/bin/curl","host":"evil.example","port":443}' \
    '{"transport":"l7","binary":"/usr/bin/curl","host":"api.github.com","port":443,"method":"GET","path":"/repos/x/y"}' \
    '{"transport":"l7","binary":"/usr/bin/curl","host":"api.github.com","port":443,"method":"POST","path":"/repos/x/y/issues"}'; do
    printf '%s\n  -> %s\n' "$req" "$(printf '%s\n' "$req" | "$OS" policy check "$WD/policy.yaml")"
done

step "a private local gateway (openshell gateway start)"
# Config and state under the demo's directory, not the user's.
export HOME="$WD/home" XDG_CONFIG_HOME="$WD/home/.config" XDG_STATE_HOME="$WD/home/.local/state"
mkdir -p "$HOME"
GW_STARTED=1
"$OS" gateway start
"$OS" status

step "a sandbox from the gateway (openshell sandbox create --name demo --detach)"
"$OS" sandbox create --name demo --detach
"$OS" sandbox list

step "commands in it (openshell sandbox exec demo -- ...)"
"$OS" sandbox exec demo -- sh -c 'echo "I am $(id -un) in $(pwd)"; echo hello >note.txt; cat note.txt'
set +e
"$OS" sandbox exec demo -- sh -c 'exit 5'
echo "exit status passed through: $?"
set -e

step "files in and out (openshell sandbox upload / download)"
mkdir -p "$WD/project/src"
echo 'print("hi from the sandbox")' >"$WD/project/src/main.py"
"$OS" sandbox upload demo "$WD/project" /sandbox
"$OS" sandbox exec demo -- python3 /sandbox/project/src/main.py
"$OS" sandbox download demo /sandbox/note.txt "$WD/note-back.txt"
echo "downloaded: $(cat "$WD/note-back.txt")"

step "egress is denied until the policy allows it"
"$OS" sandbox exec demo -- curl -sS -m 5 -o /dev/null https://api.github.com/zen || true
"$OS" policy update demo --add-endpoint api.github.com:443:read-only:rest --binary /usr/bin/curl --wait
"$OS" policy list demo
echo "(with the rule loaded, curl is let through to the upstream; this demo does not"
echo " assume the machine can reach it)"

step "the sandbox's log: supervisor and proxy decisions (openshell logs demo -n 6)"
"$OS" logs demo -n 6

step "cleaning up (openshell sandbox delete demo; openshell gateway stop)"
"$OS" sandbox delete demo
"$OS" gateway stop
GW_STARTED=
