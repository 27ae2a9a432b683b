#!/bin/sh
# Runs the socket.io-client and engine.io-client tests against the example servers
# examples/socketio.rs, examples/socketio_protocol_suite.rs and
# examples/engineio_protocol_suite.rs. RINGHUB_SIO_BIN=/path/to/socketio,
# RINGHUB_SIO_SUITE_BIN=/path/to/socketio_protocol_suite and
# RINGHUB_EIO_SUITE_BIN=/path/to/engineio_protocol_suite skip the build.
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "$RINGHUB_SIO_BIN" ] || [ -z "$RINGHUB_SIO_SUITE_BIN" ] || [ -z "$RINGHUB_EIO_SUITE_BIN" ]; then
  (cd "$root" && cargo build --quiet --example socketio --example socketio_protocol_suite --example engineio_protocol_suite)
  RINGHUB_SIO_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/examples/socketio"
  RINGHUB_SIO_SUITE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/examples/socketio_protocol_suite"
  RINGHUB_EIO_SUITE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/examples/engineio_protocol_suite"
fi
export RINGHUB_SIO_BIN RINGHUB_SIO_SUITE_BIN RINGHUB_EIO_SUITE_BIN
cd "$here"
# socket.io-client and engine.io-client as locked in package-lock.json.
[ -d node_modules/socket.io-client ] && [ -d node_modules/engine.io-client ] || npm ci --no-audit --no-fund --silent
# A test that hangs fails after two minutes instead of holding CI.
exec node --test --test-concurrency=1 --test-timeout=120000 "$@" ./*.test.js
