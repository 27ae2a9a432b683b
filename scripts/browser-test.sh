#!/usr/bin/env bash
# Browser tests of the built-in pages (chat demo at /, dashboard at /admin) and of
# socket.io-client in a page (/socket.io/: polling + upgrade, polling only, WebSocket only):
# starts the release binary on a free port (memory store, an API key) on each I/O backend and
# runs tests/browser/ui.test.mjs and socketio.test.mjs (Node's test runner, playwright-core
# driving Debian's Chromium).
# Installs what is missing: chromium (apt), playwright-core (npm ci in tests/browser).
# Screenshots and the measured recovery time go to target/browser/.
#   BROWSER_IO="uring epoll" (default)   RINGHUB_BIN, RINGHUB_LOADTEST (default target/release/...)
set -euo pipefail
cd "$(dirname "$0")/.."

# The pages are embedded at compile time: build (a no-op when up to date) unless told a binary.
target=${CARGO_TARGET_DIR:-target}
[[ -n ${RINGHUB_BIN:-} ]] || cargo build --release --bin ringhub -p ringhub -q
[[ -n ${RINGHUB_LOADTEST:-} ]] || cargo build --release -p ringhub-loadtest -q
BIN=${RINGHUB_BIN:-$target/release/ringhub}
LOADTEST=${RINGHUB_LOADTEST:-$target/release/ringhub-loadtest}

if [[ ! -x ${CHROMIUM:-/usr/bin/chromium} ]]; then
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || { echo "browser tests need node (>= 20) and npm"; exit 1; }
(cd tests/browser && npm ci --no-audit --no-fund --silent)
# socket.io-client's browser bundle for tests/browser/socketio.test.mjs (the Node tests' lock).
[[ -d tests/socketio/node_modules/socket.io-client ]] ||
  (cd tests/socketio && npm ci --no-audit --no-fund --silent)

mkdir -p target/browser
key="browser-test-$RANDOM$RANDOM"
free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}

rc=0
for io in ${BROWSER_IO:-uring epoll}; do
  port=$(free_port)
  log="target/browser/server-$io.log"
  RINGHUB_API_KEY=$key timeout 300 "$BIN" --listen "127.0.0.1:$port" --io "$io" --shards 2 \
    --store memory --stats-interval 0s >"$log" 2>&1 &
  pid=$!
  echo "browser tests on $io (port $port)"
  RINGHUB_URL="http://127.0.0.1:$port" RINGHUB_API_KEY=$key RINGHUB_IO=$io RINGHUB_LOADTEST=$LOADTEST \
    timeout 240 node --test --test-concurrency=1 --test-reporter=spec tests/browser/ui.test.mjs \
    tests/browser/socketio.test.mjs || rc=$?
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ $rc != 0 ]]; then
    echo "browser tests failed on $io (exit $rc); server log:"; tail -n 30 "$log"; exit "$rc"
  fi
done
cat target/browser/recovery-*.txt
echo "screenshots: $(ls target/browser/*.png | tr '\n' ' ')"
