#!/bin/sh
# E2E: openshell-gateway's PKI (made on first start, reused after, a partial
# one refused) and its TLS listener (TLS 1.3 only, ALPN h2, served with the
# generated server certificate; callers without a verified identity get 401
# beyond the health probes).
. "$(dirname "$0")/lib.sh"

if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    skip "gateway TLS" "needs openssl and curl"
    done_testing
    exit $?
fi
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export HOME="$T/home"
ST=$T/state
P=$ST/tls
M=$HOME/.config/openshell/gateways/openshell/mtls
S=$T/gw.sock
GW=
trap '[ -n "$GW" ] && kill $GW 2>/dev/null; rm -rf "$T"' EXIT
start() {
    openshell-gateway --state-dir "$ST" --socket "$S" --listen "127.0.0.1:$PORT" \
        --log-format text 2>>"$T/gw.log" &
    GW=$!
    for _ in $(seq 100); do
        curl -s --unix-socket "$S" --http2-prior-knowledge http://x/healthz >/dev/null 2>&1 && return 0
        kill -0 $GW 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
stop() { kill $GW; wait $GW; GW=; }
export P M PORT

if start; then tap_ok "gateway starts with a TLS listener"; else
    tap_not_ok "gateway starts with a TLS listener" "$(cat "$T/gw.log")"; done_testing; exit 1; fi
testing "PKI files and modes" "cd $P && stat -c '%a %n' ca.crt ca.key server/tls.crt server/tls.key client/tls.crt client/tls.key" \
"644 ca.crt
600 ca.key
644 server/tls.crt
600 server/tls.key
644 client/tls.crt
600 client/tls.key"
testing "client bundle copied for the CLI" "cd $M && stat -c '%a %n' ca.crt tls.crt tls.key && cmp ca.crt $P/ca.crt && cmp tls.key $P/client/tls.key && echo same" \
"644 ca.crt
644 tls.crt
600 tls.key
same"
testing "metadata.json" "/usr/bin/python3 -c 'import json,sys; m = json.load(open(\"$M/../metadata.json\")); print(m[\"name\"], m[\"gateway_endpoint\"], m[\"auth_mode\"])'" \
    "openshell https://127.0.0.1:$PORT mtls"
testing "CA subject and basic constraints" "openssl x509 -in $P/ca.crt -noout -subject -ext basicConstraints | tr -s ' ' | sed 's/^ //'" \
"subject=CN = openshell-ca, O = openshell
X509v3 Basic Constraints: critical
CA:TRUE, pathlen:0"
testing "server and client certificates chain to the CA" "openssl verify -CAfile $P/ca.crt $P/server/tls.crt $P/client/tls.crt" \
"$P/server/tls.crt: OK
$P/client/tls.crt: OK"
testing "server certificate: name, SANs, serverAuth" "openssl x509 -in $P/server/tls.crt -noout -subject -ext subjectAltName,extendedKeyUsage | tr -s ' ' | sed 's/^ //'" \
"subject=CN = openshell-server
X509v3 Extended Key Usage: critical
TLS Web Server Authentication
X509v3 Subject Alternative Name: 
IP Address:0:0:0:0:0:0:0:1, IP Address:127.0.0.1, DNS:openshell, DNS:localhost"
testing "client certificate: CN and OU, clientAuth" "openssl x509 -in $P/client/tls.crt -noout -subject -ext extendedKeyUsage | tr -s ' ' | sed 's/^ //'" \
"subject=CN = openshell-client, OU = openshell-user
X509v3 Extended Key Usage: critical
TLS Web Client Authentication"
testing "keys are ECDSA P-256" "openssl pkey -in $P/server/tls.key -noout -text | grep -c 'ASN1 OID: prime256v1'" "1"
testing "health over TLS 1.3 and HTTP/2 (ALPN h2)" "curl -sS --http2 --tlsv1.3 --cacert $M/ca.crt -w ' %{http_code} %{http_version}' https://127.0.0.1:$PORT/healthz | tr -d '\\n'" \
    '{"status":"ok"} 200 2'
testing "also valid for localhost" "curl -sS --http2 --cacert $M/ca.crt -o /dev/null -w '%{http_code}' https://localhost:$PORT/v1/health" "200"
testing_rc "TLS 1.2 is refused" "curl -sS --http2 --tls-max 1.2 --cacert $M/ca.crt https://127.0.0.1:$PORT/healthz" 35
testing_rc "an untrusted server is refused by curl (self-made CA)" "curl -sS --http2 https://127.0.0.1:$PORT/healthz" 60
testing "no identity: API is 401 unauthenticated" "curl -sS --http2 --cacert $M/ca.crt -w ' %{http_code}' https://127.0.0.1:$PORT/v1/sandboxes | tr -d '\\n' | sed 's/.*\"code\":\"\\([a-z_]*\\)\".* \\([0-9]*\\)\$/\\1 \\2/'" \
    "unauthenticated 401"
testing "mTLS: the client certificate from the bundle is accepted" "curl -sS --http2 --cacert $M/ca.crt --cert $M/tls.crt --key $M/tls.key -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/gateway" "200"
testing "mTLS: sandboxes listed with it" "curl -sS --http2 --cacert $M/ca.crt --cert $M/tls.crt --key $M/tls.key -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/sandboxes" "200"
# A client certificate from another CA with the same names: 401 (or the
# handshake refused), never served.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=openshell-ca/O=openshell -keyout "$T/oca.key" -out "$T/oca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=openshell-client/OU=openshell-user -keyout "$T/o.key" -out "$T/o.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$T/o.ext"
openssl x509 -req -in "$T/o.csr" -CA "$T/oca.crt" -CAkey "$T/oca.key" -CAcreateserial -days 1 \
    -extfile "$T/o.ext" -out "$T/o.crt" 2>/dev/null
testing "mTLS: a certificate from another CA is 401" "curl -sS --http2 --cacert $M/ca.crt --cert $T/o.crt --key $T/o.key -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/gateway 2>/dev/null; true" "401"
testing "mTLS: the gateway's own server certificate is no client identity (serverAuth only)" "curl -sS --http2 --cacert $M/ca.crt --cert $P/server/tls.crt --key $P/server/tls.key -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/gateway 2>/dev/null; true" "401"
testing "mTLS: health still answers without a certificate" "curl -sS --http2 --cacert $M/ca.crt -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/health" "200"
U=http://x/v1/workspaces/default/sandboxes
curl -sS --unix-socket "$S" --http2-prior-knowledge -H content-type:application/json -d '{"name":"sv"}' $U >/dev/null
TOK=$(curl -sS --unix-socket "$S" --http2-prior-knowledge -X POST $U/sv/token | sed 's/.*"token":"\([^"]*\)".*/\1/')
export TOK
testing "a sandbox token authenticates a supervisor over TLS" "curl -sS --http2 --cacert $M/ca.crt -H \"authorization: Bearer \$TOK\" https://127.0.0.1:$PORT/v1/supervisor/config | grep -o '\"sandbox_name\":\"sv\"'" '"sandbox_name":"sv"'
testing "a sandbox token reaches no user endpoint" "curl -sS --http2 --cacert $M/ca.crt -H \"authorization: Bearer \$TOK\" -o /dev/null -w '%{http_code}' https://127.0.0.1:$PORT/v1/workspaces/default/sandboxes/sv" "401"
testing "the unix socket still serves the owner" "curl -sS --unix-socket $S --http2-prior-knowledge -o /dev/null -w '%{http_code}' http://x/v1/gateway" "200"
SUM=$(sha256sum "$P/ca.crt" "$P/server/tls.key")
stop
if start && [ "$(sha256sum "$P/ca.crt" "$P/server/tls.key")" = "$SUM" ]; then
    tap_ok "restart reuses the PKI"
else
    tap_not_ok "restart reuses the PKI" "$(cat "$T/gw.log")"
fi
stop
rm "$P/client/tls.key"
testing_rc "a partial PKI is refused" "openshell-gateway --state-dir $ST --socket $S --listen 127.0.0.1:$PORT 2>$T/partial.err" 1
check "with a clear message" "grep -q 'partial PKI (missing client/tls.key)' $T/partial.err"
testing_rc "bad --listen is a usage error" "openshell-gateway --state-dir $ST --socket $S --listen 127.0.0.1" 1
done_testing
