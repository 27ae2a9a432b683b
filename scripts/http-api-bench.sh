#!/usr/bin/env bash
# HTTP API requests/s, one connection per request (`Connection: close`, ringhub's only mode
# before keep-alive) vs kept-alive connections, against the same release build (BENCHMARKS.md,
# "HTTP API: keep-alive"). Builds nothing: uses target/release/ringhub and ringhub-loadtest.
#
#   scripts/http-api-bench.sh                       # 3 runs of every case
#   RUNS=5 CASES="publish-c1" scripts/http-api-bench.sh
#   BIN_DIR=/tmp/old/release MODES=keepalive scripts/http-api-bench.sh   # another build's binaries
#
# Cases: publish-cN (topic without history, no subscriber, memory store), durable-cN (durable
# sends to 10,000 offline users, redb), durable100-cN (the same with 100 of the users connected
# over WebSocket and acking, as BENCHMARKS "Durable sends/s"), durable-bB-cN (durable-cN with
# each request a `POST /api/v1/batch` of B sends: B x N sends in flight; rates are sends/s),
# durable-pP-cN (durable-cN with P single sends pipelined on each of the N connections, written
# together: P x N sends in flight; rates are sends/s, latency per send); N requests (or
# connections) in flight.
#
# Server: one shard on SERVER_CPU (default 0), --io IO (default epoll), limits lifted, API key
# `bench`, memory store (redb for the durable case, in STORE_DIR: a real disk, or fsync is
# free; STORE_SYNC=interval for its [store] sync = "interval", STORE_SYNC_INTERVAL its interval,
# default 1s). Load generator: one thread on LOAD_CPU (default 1). Every run starts a fresh server.
# Prints one line per run: case, mode, requests/s, p50, p99.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${BIN_DIR:-$TARGET/release}
MODES=${MODES:-"close keepalive"}
JWT_SECRET=http-api-bench-secret-0123456789abcdef
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IO=${IO:-epoll}
# PRIO=rt runs server and generator under SCHED_FIFO (as scripts/messaging-bench.sh): on a
# machine shared with builds, it keeps them off the two measured cores while the pair is busy.
case "${PRIO:-none}" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  *) echo "http-api-bench: PRIO must be none or rt" >&2; exit 2 ;;
esac
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-9700}
STORE_DIR=${STORE_DIR:-/tmp/ringhub-http-bench}
CASES=${CASES:-"publish-c1 publish-c64 durable-c64"}
SERVER="$BIN_DIR/ringhub"
LOADTEST="$BIN_DIR/ringhub-loadtest"
for b in "$SERVER" "$LOADTEST"; do
  [[ -x $b ]] || { echo "missing $b: cargo build --release -p ringhub -p ringhub-loadtest" >&2; exit 2; }
done

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

start_server() {
  local store=$1 dir=$STORE_DIR/s$PORT
  rm -rf "$dir"
  mkdir -p "$dir"
  RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 \
    RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGHUB_API_KEY=bench RINGHUB_UI_ENABLED=false \
    RINGHUB_AUTH_JWT_SECRET="$JWT_SECRET" RINGHUB_AUTH_ANONYMOUS=true \
    RINGHUB_STORE_SYNC="${STORE_SYNC:-always}" RINGHUB_STORE_SYNC_INTERVAL="${STORE_SYNC_INTERVAL:-1s}" \
    taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}" "$SERVER" --listen "127.0.0.1:$PORT" --shards 1 --io "$IO" \
    --store "$store" --store-path "$dir" >"$STORE_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited: $(tail -3 "$STORE_DIR/server.log")" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not listen on $PORT" >&2
  exit 1
}

mkdir -p "$STORE_DIR"
echo "binaries $BIN_DIR, commit $(cd "$ROOT" && git rev-parse --short HEAD), io $IO, server cpu $SERVER_CPU, loadtest cpu $LOAD_CPU"
for case in $CASES; do
  case "$case" in
    publish-c*) store=memory; what="--publish news --connected 0" ;;
    durable-b*-c*) b=${case#durable-b}; store=redb; what="--connected 0 --batch ${b%%-c*}" ;;
    durable-p*-c*) p=${case#durable-p}; store=redb; what="--connected 0 --pipeline ${p%%-c*}" ;;
    durable-c*) store=redb; what="--connected 0" ;;
    durable100-c*) store=redb; what="--connected 100 --jwt-secret $JWT_SECRET" ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
  esac
  c=${case##*-c}
  for mode in $MODES; do
    flag=""
    [ "$mode" = close ] && flag="--close"
    for run in $(seq "$RUNS"); do
      start_server "$store"
      cpu0=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
      # shellcheck disable=SC2086
      out=$(taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$LOADTEST" --target "127.0.0.1:$PORT" --threads 1 durable \
        $what --concurrency "$c" --users 10000 $flag --duration "$DURATION" --warmup "$WARMUP" 2>&1) ||
        { echo "$out" >&2; exit 1; }
      # Store commits over the whole run (warmup included): messages per commit for the durable
      # cases (each commit is one fsync with redb).
      cpu1=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
      metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
      commits=$(echo "$metrics" | awk '/^ringhub_store_commits/ {print $2; exit}')
      syncs=$(echo "$metrics" | awk '/^ringhub_store_log_syncs/ {print $2; exit}')
      stop_server
      rate=$(echo "$out" | awk -F'  +' '/sends\/s/ {print $NF; exit}')
      # Server CPU (all its threads, user + system) per request over warmup + measured window.
      cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v r="${rate//,/}" \
        -v d=$((DURATION + WARMUP)) 'BEGIN { if (r > 0) printf "%.1f", t / hz * 1e6 / (r * d); else print "?" }')
      lat=$(echo "$out" | awk '/latency/ {sub(/^ *latency */, ""); print; exit}')
      unit=request
      case "$case" in durable-b*|durable-p*) unit=send ;; esac
      echo "$case $mode run $run: $rate ${unit}s/s; latency $lat (per request); store commits ${commits:-?}, log syncs ${syncs:-?}; server CPU ${cpu_us} µs/$unit"
    done
  done
done
