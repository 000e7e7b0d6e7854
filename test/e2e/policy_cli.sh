#!/bin/sh
# policy_cli: 'openshell policy validate|check|default' through the real binary:
# output shapes, exit statuses, hostile files (bounded by timeout, never hang).
. "$(dirname "$0")/lib.sh"

cat >"$T/good.yaml" <<'YAML'
version: 1
network_policies:
  github:
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest
        access: read-only
        tls: terminate
    binaries:
      - path: /usr/bin/curl
YAML
cat >"$T/bad.yaml" <<'YAML'
version: 1
network_policies:
  github:
    endpoints:
      - host: "*.com"
        port: 0
    binaries: []
YAML

testing "validate ok" "openshell policy validate $T/good.yaml" "$T/good.yaml: ok"
check "validate prints warnings on stderr" "openshell policy validate $T/good.yaml 2>&1 | grep -q '$T/good.yaml:9:14: network_policies.github.endpoints\[0\].tls: warning: tls: terminate is deprecated'"
testing_rc "validate bad exits 1" "openshell policy validate $T/bad.yaml" 1
check "every error, with FILE:LINE:COL and field path" \
    "openshell policy validate $T/bad.yaml 2>&1 | grep -c '^$T/bad.yaml:[0-9]*:[0-9]*: network_policies.github' | grep -qx 3"
check "host error names what is expected" \
    "openshell policy validate $T/bad.yaml 2>&1 | grep -q 'bad.yaml:5:15: network_policies.github.endpoints\[0\].host: wildcard host is too broad'"
testing_rc "validate several files: one bad fails" "openshell policy validate $T/good.yaml $T/bad.yaml" 1
testing_rc "validate missing file" "openshell policy validate $T/nope.yaml" 1
check "missing file is named" "openshell policy validate $T/nope.yaml 2>&1 | grep -q 'nope.yaml'"
testing_rc "validate without file is a usage error" "openshell policy validate" 2
testing_rc "unknown subcommand" "openshell policy frobnicate" 2

openshell policy default >"$T/default.yaml"
testing "default policy validates" "openshell policy validate $T/default.yaml" "$T/default.yaml: ok"
check "default policy denies the network" "grep -qx 'network_policies: {}' $T/default.yaml"

testing "check stdin allow" \
    "echo '{\"binary\":\"/usr/bin/curl\",\"host\":\"api.github.com\",\"port\":443}' | openshell policy check $T/good.yaml" \
    '{"decision":"allow","policy":"github","l7_decision":null,"reason":null}'
testing "check stdin L7 deny" \
    "echo '{\"transport\":\"l7\",\"binary\":\"/usr/bin/curl\",\"host\":\"api.github.com\",\"port\":443,\"method\":\"POST\",\"path\":\"/x\"}' | openshell policy check $T/good.yaml" \
    '{"decision":"deny","policy":"github","l7_decision":"deny","reason":"POST /x not permitted by policy"}'
testing_rc "check: a malformed line makes the status 1" \
    "printf '%s\n' '{\"host\":1}' '{\"binary\":\"/x\",\"host\":\"h\",\"port\":1}' | openshell policy check $T/good.yaml" 1
check "check: malformed line answered with an error, later lines still decided" \
    "printf '%s\n' 'not json' '{\"binary\":\"/x\",\"host\":\"h\",\"port\":1}' | openshell policy check $T/good.yaml | sed -n 2p | grep -q '\"decision\":\"deny\"'"
testing "check flags: allow" \
    "openshell policy check --binary /usr/bin/curl --host api.github.com --port 443 --method GET --path /a $T/good.yaml" \
    "allow (policy github), L7 allow"
testing_rc "check flags: deny exits 1" \
    "openshell policy check --binary /usr/bin/wget --host api.github.com --port 443 $T/good.yaml" 1
check "check flags: deny reason" \
    "openshell policy check --binary /usr/bin/wget --ancestor /bin/sh --host api.github.com --port 443 $T/good.yaml | grep -q \"deny: binary '/usr/bin/wget' not allowed in policy 'github' (ancestors: \[/bin/sh\]\""
testing "check flags: relaxed identity from the environment" \
    "OPENSHELL_NETWORK_BINARY_IDENTITY=relaxed openshell policy check --json --binary /usr/bin/wget --host api.github.com --port 443 $T/good.yaml" \
    '{"decision":"allow","policy":"github","l7_decision":null,"reason":null}'
testing_rc "check refuses an invalid policy" "echo '{}' | openshell policy check $T/bad.yaml" 1

# Hostile files: one clear error, bounded in time by timeout(1).
python3 - "$T" <<'PY'
import sys
t = sys.argv[1]
open(t + "/big.yaml", "w").write("version: 1\n" + "#" * (4 * 1024 * 1024 + 10) + "\n")
open(t + "/list.yaml", "w").write("version: 1\nfilesystem_policy:\n  read_only:\n" +
                                  "".join("    - /p%d\n" % i for i in range(100000)))
open(t + "/deep.yaml", "w").write("version: 1\nx: " + "[" * 50000 + "]" * 50000 + "\n")
bomb = "version: 1\na: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
for i, c in enumerate("bcdefghij"):
    p = "abcdefghij"[i]
    bomb += "%s: &%s [%s]\n" % (c, c, ",".join(["*" + p] * 9))
open(t + "/bomb.yaml", "w").write(bomb)
open(t + "/utf8.yaml", "wb").write(b"version: 1\nnetwork_policies:\n  caf\xe9: {}\n")
PY
for f in big:'larger than 4 MiB' list:'too many items in one list' deep:'nesting deeper than 32' \
    bomb:'anchors' utf8:'utf8.yaml:3:6: invalid UTF-8'; do
    name=${f%%:*} want=${f#*:}
    check "hostile $name: clear error" \
        "timeout 10 openshell policy validate $T/$name.yaml 2>&1 | grep -q '$want'"
done

done_testing
