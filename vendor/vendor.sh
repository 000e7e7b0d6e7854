#!/bin/sh
# vendor/vendor.sh: fetch and build openshell's third-party libraries.
#
# Every library is a Debian 13 ("trixie") source package, fetched with apt
# (which checks each file against the signed Sources index), unpacked with
# dpkg-source (Debian's patches applied, tarballs checked against the .dsc)
# and built into a static archive under a prefix by vendor/recipes/NAME.sh.
# No third-party source is ever committed; see vendor/deps.list.
#
# Usage: vendor/vendor.sh COMMAND [ARGS]
#   tools [test]          install missing build (or test) tools with apt-get
#   fetch [NAME...]       download source packages into the source cache
#   build PREFIX CC NAME  build one library into PREFIX with compiler CC
#   tarball OUT           write the source cache (for air-gapped hosts) to OUT
#   versions PREFIX       print "NAME VERSION LICENSE" for each built library
#
# Environment:
#   VENDOR_SRC      source cache (default build/vendor/src)
#   VENDOR_TARBALL  build from this tarball instead of the network
#   JOBS            parallel build jobs (default: nproc)
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
VENDOR="$TOP/vendor"
VENDOR_SRC=${VENDOR_SRC:-$TOP/build/vendor/src}
VENDOR_WORK=${VENDOR_WORK:-$TOP/build/vendor/work}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
SUITE=trixie
SRC_ENTRY=/etc/apt/sources.list.d/openshell-$SUITE-src.sources

say() { printf 'vendor: %s\n' "$*" >&2; }
die() {
    printf 'vendor: error: %s\n' "$*" >&2
    exit 1
}

# deps_field NAME COLUMN: one column of NAME's line in deps.list.
deps_field() {
    awk -v n="$1" -v c="$2" '!/^#/ && $1 == n { print $c; found = 1 } END { exit !found }' \
        "$VENDOR/deps.list" || die "unknown library '$1' (not in vendor/deps.list)"
}

deps_names() { awk '!/^#/ && NF { print $1 }' "$VENDOR/deps.list"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root (run make as root, or install sudo)"
    fi
}

# ---------------------------------------------------------------- tools

# Each needed command and the Debian package that provides it.
TOOLS="musl-gcc:musl-tools gperf:gperf cmake:cmake tclsh:tcl pkg-config:pkg-config
dpkg-source:dpkg-dev python3:python3 file:file xz:xz-utils bzip2:bzip2 make:make gcc:gcc
curl:curl"
# What the test suite runs besides the binary: real clients and checkers.
TEST_TOOLS="curl:curl python3:python3 clang-format:clang-format unshare:util-linux
git:git ip:iproute2 openssl:openssl setpriv:util-linux node:nodejs bash:bash su:util-linux
h2load:nghttp2-client npm:npm tmux:tmux"

cmd_tools() {
    set="$TOOLS"
    [ "${1:-}" = test ] && set="$TEST_TOOLS"
    missing=
    for t in $set; do
        command -v "${t%%:*}" >/dev/null 2>&1 || missing="$missing ${t#*:}"
    done
    [ -z "$missing" ] && return 0
    say "installing build tools:$missing"
    if ! DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
        $missing >/dev/null; then
        say "apt-get install failed; refreshing the package index once"
        as_root apt-get update -q >/dev/null || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
            $missing >/dev/null || die "cannot install:$missing"
    fi
}

# ---------------------------------------------------------------- apt source entry

# The first Debian main-archive URI already configured on this machine, from
# deb822 .sources files or one-line sources.list entries. Security and
# third-party archives are skipped: only the main archive carries trixie/main.
mirror_uri() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        case "$f" in *openshell-*) continue ;; esac
        awk '
            /^[ \t]*$/ { if (uri != "" && suites !~ /security/) { print uri; exit } uri = ""; suites = "" }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { suites = $0 }
            /^Enabled:[ \t]*no/ { uri = "" }
            END { if (uri != "" && suites !~ /security/) print uri }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 ~ /^deb(-src)?$/ && $0 !~ /security/ {
                for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit }
            }' "$f"
    done
}

debian_mirror() {
    for u in $(mirror_uri); do
        case "$u" in */debian | */debian/) echo "${u%/}"; return 0 ;; esac
    done
    u=$(mirror_uri | head -n 1)
    [ -n "$u" ] || die "no Debian archive URI found in /etc/apt/sources.list{,.d} to derive a $SUITE deb-src entry from"
    echo "${u%/}"
}

# Write the deb-src entry for $SUITE/main and refresh just that entry's index,
# only when the entry is new (or its index is missing).
ensure_src_entry() {
    uri=$(debian_mirror)
    want=$(printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" "$SUITE")
    fresh=0
    if [ ! -r "$SRC_ENTRY" ] || [ "$(cat "$SRC_ENTRY")" != "$want" ]; then
        say "adding deb-src entry for $SUITE/main ($SRC_ENTRY)"
        printf '%s\n' "$want" | as_root tee "$SRC_ENTRY" >/dev/null
        fresh=1
    fi
    if [ $fresh -eq 1 ] || ! apt-cache showsrc mbedtls 2>/dev/null | grep -q '^Version: 3\.'; then
        say "apt-get update ($SUITE deb-src only)"
        as_root apt-get update -q -o Dir::Etc::sourcelist="$SRC_ENTRY" \
            -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >/dev/null ||
            die "apt-get update of $SRC_ENTRY failed"
    fi
}

# ---------------------------------------------------------------- fetch

# The .dsc recorded for NAME in the source cache, if all its files are there.
cached_dsc() {
    rec="$VENDOR_SRC/$1.dsc-name"
    [ -r "$rec" ] || return 1
    dsc=$(cat "$rec")
    [ -r "$VENDOR_SRC/$dsc" ] || return 1
    for f in $(dsc_files "$VENDOR_SRC/$dsc"); do
        [ -r "$VENDOR_SRC/$f" ] || return 1
    done
    echo "$dsc"
}

# The file names listed in a .dsc's Checksums-Sha256 section.
dsc_files() {
    awk '/^Checksums-Sha256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && NF == 3 { print $3 }' "$1"
}

# pool_dir PKG: the pool directory of a source package (lib* use 4 letters).
pool_dir() {
    case "$1" in
    lib?*) echo "pool/main/$(printf %.4s "$1")/$1" ;;
    *) echo "pool/main/$(printf %.1s "$1")/$1" ;;
    esac
}

# fetch_fallback NAME PKG VERSION SHA256: download a pinned revision by hash.
fetch_fallback() {
    name=$1 pkg=$2 ver=$3 sum=$4
    base="$(debian_mirror)/$(pool_dir "$pkg")"
    dsc="${pkg}_${ver}.dsc"
    tmp="$VENDOR_SRC/.part"
    rm -rf "$tmp" && mkdir -p "$tmp"
    /usr/lib/apt/apt-helper -q download-file "$base/$dsc" "$tmp/$dsc" "SHA256:$sum" >/dev/null 2>&1 ||
        return 1
    awk '/^Checksums-Sha256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && NF == 3 { print $1, $3 }' \
        "$tmp/$dsc" >"$tmp/.sums"
    while read -r h f; do
        /usr/lib/apt/apt-helper -q download-file "$base/$f" "$tmp/$f" "SHA256:$h" >/dev/null 2>&1 ||
            return 1
    done <"$tmp/.sums"
    rm -f "$tmp/.sums"
    mv "$tmp"/* "$VENDOR_SRC"/
    rmdir "$tmp"
    echo "$dsc" >"$VENDOR_SRC/$name.dsc-name"
}

fetch_one() {
    name=$1
    if dsc=$(cached_dsc "$name"); then
        return 0
    fi
    [ -z "${VENDOR_TARBALL:-}" ] || die "$name: not in $VENDOR_TARBALL"
    pkg=$(deps_field "$name" 2)
    ensure_src_entry
    mkdir -p "$VENDOR_SRC"
    # apt prints the .dsc it would fetch; remember its name before fetching.
    dsc=$(cd "$VENDOR_SRC" && apt-get source -q --print-uris "$pkg/$SUITE" 2>/dev/null |
        awk '$2 ~ /\.dsc$/ { print $2 }')
    [ -n "$dsc" ] || die "$name: apt has no source package '$pkg' in $SUITE"
    # apt downloads as root when _apt cannot write here; that is expected.
    if (cd "$VENDOR_SRC" && apt-get source -q --download-only "$pkg/$SUITE" >"$VENDOR_SRC/.apt.log" 2>&1); then
        echo "$dsc" >"$VENDOR_SRC/$name.dsc-name"
        say "$name: fetched $dsc (checked against the signed $SUITE Sources index)"
        return 0
    fi
    say "WARNING: $name: the archive mirror cannot serve $dsc:"
    grep '^E:' "$VENDOR_SRC/.apt.log" | head -n 3 | sed 's/^/vendor:   /' >&2
    for fb in $(deps_field "$name" 5 | tr ',' ' '); do
        [ "$fb" = - ] && continue
        if fetch_fallback "$name" "$pkg" "${fb%%=*}" "${fb#*=}"; then
            say "WARNING: $name: using pinned fallback ${pkg}_${fb%%=*} (.dsc sha256 ${fb#*=})"
            return 0
        fi
    done
    die "$name: no fetchable revision of source package '$pkg' (see $VENDOR_SRC/.apt.log)"
}

cmd_fetch() {
    if [ -n "${VENDOR_TARBALL:-}" ]; then
        [ -r "$VENDOR_TARBALL" ] || die "VENDOR_TARBALL=$VENDOR_TARBALL: no such file"
        mkdir -p "$VENDOR_SRC"
        if [ ! -e "$VENDOR_SRC/.from-tarball" ] ||
            [ "$(cat "$VENDOR_SRC/.from-tarball")" != "$(sha256sum <"$VENDOR_TARBALL")" ]; then
            say "unpacking sources from $VENDOR_TARBALL (no network used)"
            tar -xf "$VENDOR_TARBALL" -C "$VENDOR_SRC" --strip-components=1 ||
                die "$VENDOR_TARBALL: not a readable tarball"
            sha256sum <"$VENDOR_TARBALL" >"$VENDOR_SRC/.from-tarball"
        fi
    fi
    [ $# -gt 0 ] || set -- $(deps_names)
    for n in "$@"; do fetch_one "$n"; done
}

# ---------------------------------------------------------------- build

# Kernel UAPI headers for musl builds (musl ships none). Copied, not linked,
# so that the prefix is self-contained.
install_uapi() {
    kinc="$1/kinc"
    [ -d "$kinc/linux" ] && return 0
    arch=$(gcc -dumpmachine)
    [ -d /usr/include/linux ] || die "kernel UAPI headers missing (apt-get install linux-libc-dev)"
    mkdir -p "$kinc.part"
    cp -rL /usr/include/linux /usr/include/asm-generic "$kinc.part"/
    cp -rL "/usr/include/$arch/asm" "$kinc.part"/asm
    mv "$kinc.part" "$kinc"
}

cmd_build() {
    [ $# -eq 3 ] || die "usage: vendor.sh build PREFIX CC NAME"
    prefix=$1 cc=$2 name=$3
    mkdir -p "$prefix/stamp" "$prefix/versions" "$prefix/licenses"
    prefix=$(cd "$prefix" && pwd)
    recipe="$VENDOR/recipes/$name.sh"
    [ -r "$recipe" ] || die "$name: no recipe $recipe"
    cmd_fetch "$name"
    dsc=$(cached_dsc "$name") || die "$name: source missing after fetch"
    # The stamp records every input; an unchanged input set is not rebuilt.
    key=$(cat "$recipe" "$VENDOR/recipes/common.sh" | sha256sum | cut -c1-16)
    key="$key $dsc $cc $(grep "^$name " "$VENDOR/deps.list" | tr -s ' ')"
    stamp="$prefix/stamp/$name"
    if [ -r "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        touch "$stamp"
        return 0
    fi
    [ "$cc" = musl-gcc ] && install_uapi "$prefix"
    src="$VENDOR_WORK/$(basename "$prefix")/$name"
    rm -rf "$src"
    mkdir -p "$(dirname "$src")"
    dpkg-source -q -x "$VENDOR_SRC/$dsc" "$src" >/dev/null 2>"$src.log" || {
        cat "$src.log" >&2
        die "$name: dpkg-source -x $dsc failed (checksum mismatch or damaged download)"
    }
    say "building $name from $dsc with $cc"
    t0=$(date +%s)
    log="$src.build.log"
    if ! (cd "$src" && PREFIX=$prefix CC=$cc JOBS=$JOBS KINC=$prefix/kinc \
        sh -eu -c '. "$1"; . "$2"; build' sh "$VENDOR/recipes/common.sh" "$recipe") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "$name: build failed (full log: $log)"
    fi
    lic=$(deps_field "$name" 4)
    cp "$src/$lic" "$prefix/licenses/$name" || die "$name: license file $lic missing"
    ver=${dsc#*_}
    printf '%s %s %s %s\n' "$name" "$(deps_field "$name" 2)" "${ver%.dsc}" "$(deps_field "$name" 3)" \
        >"$prefix/versions/$name"
    printf '%s\n' "$key" >"$stamp"
    say "built $name in $(($(date +%s) - t0)) s"
    rm -rf "$src"
}

cmd_versions() {
    for n in $(deps_names); do
        cat "$1/versions/$n" 2>/dev/null || die "$n: not built in $1"
    done
}

cmd_tarball() {
    [ $# -eq 1 ] || die "usage: vendor.sh tarball OUT"
    cmd_fetch
    out=$1
    list=$(for n in $(deps_names); do
        echo "$n.dsc-name"
        d=$(cached_dsc "$n")
        echo "$d"
        dsc_files "$VENDOR_SRC/$d"
    done | sort -u)
    tmp="$out.part"
    # Members live under one top directory; reproducible order and owner.
    (cd "$VENDOR_SRC" && tar --sort=name --owner=0 --group=0 --numeric-owner \
        --transform 's,^,openshell-vendor-src/,' -cf - $list) >"$tmp"
    mv "$tmp" "$out"
    say "wrote $out ($(wc -c <"$out") bytes, $(echo "$list" | wc -l) files)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
tools) cmd_tools "$@" ;;
fetch) cmd_fetch "$@" ;;
build) cmd_build "$@" ;;
versions) cmd_versions "$@" ;;
tarball) cmd_tarball "$@" ;;
*) die "usage: vendor.sh tools|fetch|build|versions|tarball (see the header of vendor/vendor.sh)" ;;
esac
