#!/usr/bin/env bash
# A scripted tour of XSC on six local nodes: the market, placement, two nodes lost, get, restart, repair.
set -euo pipefail
cd "$(dirname "$0")/.."
XSC=${XSC:-.venv/bin/xsc}
TMP=$(mktemp -d)
DIR=$TMP/devnet
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Stop the nodes and remove every file of the run (data dirs, logs, the test file), however it ends.
cleanup() { $XSC devnet down --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

step "six nodes on loopback, peered together"
$XSC devnet up -n 6 --dir "$DIR"
GATEWAY="$XSC --data-dir $DIR/node-0"
pid_of() { $XSC devnet status --dir "$DIR" --json | python3 -c "import json,sys; print(next(n['pid'] for n in json.load(sys.stdin) if n['name'] == '$1'))"; }

step "the market: every node offers storage and compute at its asking price"
sleep 2  # let the offers reach node-0
$GATEWAY market book --kind storage

step "put 20 MB through node-0: six needs matched to six providers at one price"
head -c 20000000 /dev/urandom > "$DIR/demo.bin"
CAP=$($GATEWAY store put "$DIR/demo.bin")
$GATEWAY store check "$CAP"
$GATEWAY market status

step "kill -9 node-1 and node-2"
kill -9 "$(pid_of node-1)" "$(pid_of node-2)"
$XSC devnet status --dir "$DIR"

step "get still returns the exact bytes"
$GATEWAY store get "$CAP" -o "$DIR/back.bin"
cmp "$DIR/demo.bin" "$DIR/back.bin" && echo "identical"

step "restart the devnet: the same six nodes come back with their shares"
$XSC devnet down --dir "$DIR" >/dev/null
$XSC devnet up -n 6 --dir "$DIR" >/dev/null
$XSC devnet status --dir "$DIR"
$GATEWAY store check "$CAP"

step "repair: nothing is lost, so nothing needs rebuilding"
$GATEWAY store repair "$CAP"

step "lose node-3 for good, repair onto the nodes that are left"
kill -9 "$(pid_of node-3)"
sleep 3  # let the probes see it down
$GATEWAY store repair "$CAP"
$GATEWAY store get "$CAP" | cmp - "$DIR/demo.bin" && echo "identical after repair"
