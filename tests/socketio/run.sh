#!/bin/sh
# Runs the socket.io-client tests against the example server examples/socketio.rs.
# RINGHUB_SIO_BIN=/path/to/socketio skips the build.
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "$RINGHUB_SIO_BIN" ]; then
  (cd "$root" && cargo build --quiet --example socketio)
  RINGHUB_SIO_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/examples/socketio"
fi
export RINGHUB_SIO_BIN
cd "$here"
# socket.io-client as locked in package-lock.json.
[ -d node_modules/socket.io-client ] || npm ci --no-audit --no-fund --silent
exec node --test --test-concurrency=1 "$@" ./*.test.js
