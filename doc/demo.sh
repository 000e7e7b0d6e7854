#!/bin/sh
# doc/demo.sh: the main job on the embedded defaults (run by `make demo`).
# It shows what this build of openshell can do today, using only the built
# binary; it grows as features land.
set -eu
cd "$(dirname "$0")/.."
OS=build/openshell

echo "== the binary"
file -b "$OS"
ls -l "$OS" | awk '{ printf "%s bytes\n", $5 }'
"$OS" --version
echo
echo "== its applets (one binary, dispatched on argv[0])"
"$OS" applet --list
echo
echo "== the libraries linked in (Debian source revision and what the code reports)"
"$OS" version --deps
