#!/bin/sh
# Builds (or locates) the ringhub server, then runs the client tests against it.
# RINGHUB_BIN=/path/to/ringhub skips the build.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "$RINGHUB_BIN" ]; then
  (cd "$root" && cargo build --quiet)
  RINGHUB_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/ringhub"
fi
export RINGHUB_BIN
cd "$here"
major=$(node -p 'process.versions.node.split(".")[0]')
flag=""
# Node 20 has WebSocket behind a flag; 22 has it on by default.
if [ "$major" -lt 22 ]; then flag="--experimental-websocket"; fi
# The one runtime dependency (@msgpack/msgpack, for `format: 'msgpack'`), as locked.
[ -d node_modules/@msgpack/msgpack ] || npm ci --omit=dev --no-audit --no-fund --silent
exec node $flag --test --test-concurrency=1 "$@" test/*.test.js
