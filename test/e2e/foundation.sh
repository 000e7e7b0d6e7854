#!/bin/sh
# Foundation: the static binary, applet dispatch, bad input, version/licence
# reporting, logging, install, the dependency recipe's cache and its
# air-gapped tarball build.
. "$(dirname "$0")/lib.sh"
TOP=$OPENSHELL_TOP
B=$OPENSHELL_BUILD
DEPS="mbedtls libevent nghttp2 cjson libyaml libseccomp sqlite httpparser"

# ---------------------------------------------------------------- the binary
testing "file says statically linked" \
    "file -b '$OPENSHELL_BIN' | grep -o 'statically linked'" "statically linked"
testing "ldd says not a dynamic executable" \
    "ldd '$OPENSHELL_BIN' 2>&1 | tr -d '\t'" "not a dynamic executable"
testing "no program interpreter" "readelf -l '$OPENSHELL_BIN' | grep -c INTERP" "0"
testing "runs under env -i" "env -i '$OPENSHELL_BIN' --version | cut -d' ' -f1,2" \
    "openshell $(sed -n 's/^VERSION := //p' "$TOP/Makefile")"
check "unstripped copy beside it has symbols" "nm '$B/openshell.debug' | grep -q ' T client_main$'"
testing "stripped binary has no symbols" "nm '$OPENSHELL_BIN' 2>&1 | grep -c ' T '" "0"

# ---------------------------------------------------------------- dispatch
testing "applet --list lists the four applets" "openshell applet --list | awk '{print \$1}'" \
    "openshell
openshell-gateway
openshell-proxy
openshell-supervisor"
testing "openshell-proxy symlink reaches the proxy" "openshell-proxy --help | head -n 1 | cut -d' ' -f1,2" \
    "Usage: openshell-proxy"
testing "applet NAME reaches an applet" "openshell applet proxy --version | cut -d' ' -f1" \
    "openshell-proxy"
testing "applet full name works too" \
    "openshell applet openshell-gateway --help | head -n 1 | cut -d' ' -f1,2" "Usage: openshell-gateway"
for a in openshell openshell-gateway openshell-proxy openshell-supervisor; do
    testing "$a --version" "$a --version | cut -d' ' -f1" "$a"
    testing_rc "$a --help exits 0" "$a --help" 0
    testing_rc "$a -h exits 0" "$a -h" 0
done
ln -s openshell "$T/bin/agentctl"
testing "a renamed copy is the client" "agentctl --version | cut -d' ' -f1" "openshell"
# --help must tell the truth: a command marked "not built yet" exits 69, and
# no other command does.
openshell --help | awk '/^Commands:/ { c = 1; next } c && /^  [a-z]/ { print $1, /not built yet/ } /^$/ { c = 0 }' \
    >"$T/cmds"
testing "the help lists commands" "wc -l <'$T/cmds' | tr -d ' '" "$(wc -l <"$T/cmds" | tr -d ' ' | grep -v '^0$')"
while read -r cmd unbuilt; do
    if [ "$unbuilt" = 1 ]; then
        testing_rc "'$cmd' is marked not built, and is not" "openshell $cmd" 69
    else
        testing "'$cmd' is not marked, and runs" "openshell $cmd --help >/dev/null 2>&1; echo \$?" "0"
    fi
done <"$T/cmds"

# ---------------------------------------------------------------- bad input
# One clear line on stderr, the right status, nothing on stdout.
bad() {
    name=$1 cmd=$2 rc_want=$3 msg=$4
    testing_rc "$name: exit $rc_want" "$cmd" "$rc_want"
    testing "$name: one line on stderr" "$cmd 2>&1 >/dev/null | wc -l | tr -d ' '" "1"
    testing "$name: says why" "$cmd 2>&1 >/dev/null | grep -c -F -e \"$msg\"" "1"
    testing "$name: nothing on stdout" "$cmd 2>/dev/null | wc -c | tr -d ' '" "0"
}
bad "unknown long flag" "openshell --frobnicate" 2 "option '--frobnicate' is unknown"
bad "unknown short flag" "openshell -Z" 2 "option '-Z' is unknown"
bad "flag missing its value" "openshell --log-level" 2 "option '--log-level' is unknown or needs a value"
bad "unknown command" "openshell frobnicate" 2 "unknown command 'frobnicate'"
bad "unknown applet flag" "openshell-proxy --frobnicate" 2 "openshell-proxy: option '--frobnicate'"
bad "unknown applet" "openshell applet frobnicate" 127 "no such applet: frobnicate"
bad "applet without a name" "openshell applet" 2 "missing applet name"
bad "bad log level" "openshell --log-level loud version" 2 "--log-level 'loud'"
bad "bad log format" "openshell --log-format xml version" 2 "--log-format 'xml'"
bad "version extra argument" "openshell version extra" 2 "unexpected argument 'extra'"
ln -s openshell "$T/bin/openshell-frobnicate"
bad "unknown applet symlink" "openshell-frobnicate --help" 127 "no such applet: openshell-frobnicate"
if openshell --help | grep -q '^  status .*not built yet'; then
    bad "command not built yet" "openshell status" 69 "is not available in this build yet"
fi

# ---------------------------------------------------------------- version --deps / --licenses
testing "version --deps: eight libraries and musl" \
    "openshell version --deps | awk 'NR > 1 { print \$1 }' | tr '\n' ' '" \
    "$DEPS musl "
for d in $DEPS; do
    # The Debian revision must start with the version the linked code reports
    # (libevent reports 2.1.12-stable for 2.1.12-stable-10, http-parser 2.9.4 for 2.9.4-5).
    testing "version --deps: $d revision matches what it reports" \
        "openshell version --deps | awk -v n=$d '\$1 == n { print (index(\$3, \$4) == 1) }'" "1"
    testing "version --deps: $d revision is what was built" \
        "openshell version --deps | awk -v n=$d '\$1 == n { print \$3 }'" \
        "$(cut -d' ' -f3 "$TOP/build/deps/versions/$d")"
done
testing "version --licenses carries every library's notice" \
    "openshell version --licenses | grep -c '^==== '" "9"
check "version --licenses carries Apache-2.0 for our code" \
    "openshell version --licenses | grep -q 'Apache License'"
check "version --licenses carries the LGPL for libseccomp" \
    "openshell version --licenses | grep -q 'GNU LESSER GENERAL PUBLIC LICENSE'"
check "version --licenses carries musl's copyright" \
    "openshell version --licenses | grep -q 'Rich Felker'"

# ---------------------------------------------------------------- logging
testing "log lines are JSON when stderr is not a terminal" \
    "OPENSHELL_LOG_LEVEL=loud openshell version 2>&1 >/dev/null | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d[\"level\"], d[\"applet\"], d[\"pid\"] > 0, \"ts\" in d)'" \
    "warn openshell True True"
testing "log lines as text on request" \
    "OPENSHELL_LOG_FORMAT=text OPENSHELL_LOG_LEVEL=loud openshell-proxy --version 2>&1 >/dev/null | sed -E 's/^[0-9T:.-]+Z openshell-proxy\[[0-9]+\] warn: ignoring OPENSHELL_LOG_LEVEL=loud.*/ok/'" \
    "ok"

# ---------------------------------------------------------------- install
check "make install DESTDIR" \
    "make -s -C '$TOP' B='$B' install DESTDIR='$T/dest' PREFIX=/usr/local >/dev/null"
testing "installed applet symlinks" \
    "cd '$T/dest/usr/local/bin' && for l in openshell-gateway openshell-proxy openshell-supervisor; do readlink \$l; done | sort -u" \
    "openshell"
testing "installed proxy symlink works" \
    "'$T/dest/usr/local/bin/openshell-proxy' --help | head -n 1 | cut -d' ' -f1,2" "Usage: openshell-proxy"
check "installed binary is the built one" "cmp '$T/dest/usr/local/bin/openshell' '$OPENSHELL_BIN'"

# ---------------------------------------------------------------- the dependency recipe
testing "a second make does no dependency work" \
    "make -n -C '$TOP' B='$B' all | grep -c 'vendor.sh'" "0"
testing "an unchanged library is not rebuilt" \
    "'$TOP/vendor/vendor.sh' build '$TOP/build/deps' musl-gcc cjson 2>&1 | wc -l | tr -d ' '" "0"
testing "no package mirror host is written in the tree" \
    "cd '$TOP' && git grep -nIE 'https?://[a-z0-9.-]+/debian' -- . ':!*.md' | wc -l | tr -d ' '" "0"
# A changed recipe rebuilds only its library: a copy of vendor/ builds two
# libraries into a scratch prefix, then one recipe changes.
mkdir -p "$T/top" && cp -r "$TOP/vendor" "$T/top/vendor"
check "scratch build of two libraries" \
    "for n in cjson httpparser; do VENDOR_SRC='$TOP/build/vendor/src' VENDOR_WORK='$T/vwork' \
        '$T/top/vendor/vendor.sh' build '$T/vprefix' musl-gcc \$n || exit 1; done"
echo "# changed" >>"$T/top/vendor/recipes/cjson.sh"
testing "a changed recipe rebuilds only that library" \
    "for n in cjson httpparser; do VENDOR_SRC='$TOP/build/vendor/src' VENDOR_WORK='$T/vwork' \
        '$T/top/vendor/vendor.sh' build '$T/vprefix' musl-gcc \$n 2>&1; done | sed -n 's/^vendor: building \([a-z]*\) .*/\1/p'" \
    "cjson"
check "vendor tarball is written" "'$TOP/vendor/vendor.sh' tarball '$T/vendor.tar' 2>/dev/null"
testing "vendor tarball holds every library's .dsc" \
    "tar tf '$T/vendor.tar' | grep -c '\.dsc\$'" "8"
if unshare -n true 2>/dev/null; then
    # No network at all inside a fresh network namespace: the build must come
    # from the tarball alone.
    check "air-gapped build from the tarball (no network namespace)" \
        "VENDOR_TARBALL='$T/vendor.tar' VENDOR_SRC='$T/src' VENDOR_WORK='$T/work' unshare -n \
            '$TOP/vendor/vendor.sh' build '$T/prefix' musl-gcc cjson"
    check "air-gapped build produced the library" "test -s '$T/prefix/lib/libcjson.a'"
    testing "air-gapped build recorded its version" "cut -d' ' -f3 '$T/prefix/versions/cjson'" \
        "$(cut -d' ' -f3 "$TOP/build/deps/versions/cjson")"
    # A tampered source must be refused (dpkg-source checks it against the .dsc).
    mkdir -p "$T/bad" && tar xf "$T/vendor.tar" -C "$T/bad"
    orig=$(ls "$T"/bad/openshell-vendor-src/cjson_*.orig.tar.* | head -n 1)
    printf 'x' >>"$orig"
    tar cf "$T/bad.tar" -C "$T/bad" openshell-vendor-src
    testing_rc "a tampered tarball is refused" \
        "VENDOR_TARBALL='$T/bad.tar' VENDOR_SRC='$T/src2' VENDOR_WORK='$T/work2' unshare -n \
            '$TOP/vendor/vendor.sh' build '$T/prefix2' musl-gcc cjson" 1
    cp "$ERR" "$T/tamper.err"
    check "and says why" "grep -q 'dpkg-source -x' '$T/tamper.err'"
else
    skip "air-gapped build from the tarball" "unshare -n is not permitted here"
fi

# ---------------------------------------------------------------- style and figures
if command -v clang-format >/dev/null 2>&1; then
    check "sources are clang-formatted (make fmt-check)" "make -s -C '$TOP' fmt-check"
else
    skip "sources are clang-formatted" "clang-format is not installed"
fi
check "bench/size reports the budget" "'$TOP/bench/size' '$B' | grep -q 'budget 4 MiB'"

done_testing
