#!/bin/sh
# doc/demo.sh: the main job on the embedded defaults (run by `make demo`).
#
# It runs an "agent" (a shell script) in a sandbox built from the built-in
# default policy, shows what the sandbox allows and refuses, and then shows
# the policy engine deciding requests. Only the built binary is used; it
# cleans up after itself.
set -eu
cd "$(dirname "$0")/.."
OS=$PWD/build/openshell
WD=$(mktemp -d /tmp/openshell-demo.XXXXXX)
trap 'rm -rf "$WD"' EXIT
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
