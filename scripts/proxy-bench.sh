#!/usr/bin/env bash
# Backend proxies (issue 18): what the connect and subscribe proxies cost (BENCHMARKS.md,
# "Backend proxies"). Each run starts the example backend (examples/backend/server.js, Node)
# and, per mode, a fresh server (one shard, memory store), then a connection storm:
#   connect-none   no proxy; a connection counts at its 101
#   connect-proxy  [proxy] connect; a connection counts at its `connected` frame (after the
#                  backend's answer: before it the client can do nothing)
#   sub-none       no proxy; a connection counts once `subscribe chat:1` is answered
#   sub-proxy      [proxy] subscribe; the same, with one backend call for the subscribe
# Prints handshakes/s, p50 and p99 (µs), with a proxy the mean proxy call (µs, from the
# server's ringhub_proxy_duration_seconds: one backend round trip as the server saw it), and
# the server's CPU time per connection (µs, user + system from /proc over the storm; the proxy
# thread's HTTP client included), of its shard thread alone, and of the proxy thread alone
# (`ringhub-proxy`, from /proc/.../schedstat in ns: per call).
# Builds nothing: uses target/release/ringhub and ringhub-loadtest.
#
#   scripts/proxy-bench.sh                    # 20,000 connections, 64 in flight, 3 runs
#   RUNS=5 COUNT=20000 CONC=64 IO=epoll scripts/proxy-bench.sh
#   SERVER=/path/to/other/ringhub MODES="connect-none connect-proxy" scripts/proxy-bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COUNT=${COUNT:-20000}
CONC=${CONC:-64}
RUNS=${RUNS:-3}
IO=${IO:-uring}
SERVER=${SERVER:-$TARGET/release/ringhub}
LOADTEST="$TARGET/release/ringhub-loadtest"
. "$(dirname "$0")/bench-lib.sh"
need_bins "$SERVER" "$LOADTEST"
TMP=$(mktemp -d)
SRV=
BACKEND=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; [[ -n $BACKEND ]] && kill "$BACKEND" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

node "$ROOT/examples/backend/server.js" --port 0 >"$TMP/backend.log" 2>&1 &
BACKEND=$!
until grep -q '^listening' "$TMP/backend.log" 2>/dev/null; do
  kill -0 "$BACKEND" || { cat "$TMP/backend.log" >&2; exit 1; }
  sleep 0.1
done
BPORT=$(awk '/^listening/ {print $2; exit}' "$TMP/backend.log")
B="http://127.0.0.1:$BPORT"
# The session token of the example backend's user alice, as connect data.
DATA='%7B%22token%22%3A%22tok-alice%22%7D'

# CPU ticks of process $1's shard threads (ringhub-shard-N) so far.
shard_ticks() {
  local t=0 f
  for f in /proc/"$1"/task/*; do
    [[ $(cat "$f/comm" 2>/dev/null) == ringhub-shard* ]] && t=$((t + $(awk '{ print $14 + $15 }' "$f/stat")))
  done
  echo "$t"
}

# CPU time (ns) of process $1's proxy thread so far (0 when it has none).
proxy_ns() {
  local f
  for f in /proc/"$1"/task/*; do
    [[ $(cat "$f/comm" 2>/dev/null) == ringhub-proxy ]] && { awk '{ print $1 }' "$f/schedstat"; return; }
  done
  echo 0
}

one() { # MODE -> "handshakes_per_s p50_us p99_us proxy_mean_us cpu_us_per_conn shard_cpu_us proxy_thread_us"
  local mode=$1 port env=() path=/ws extra=()
  case $mode in
    connect-proxy) env=(RINGHUB_PROXY_CONNECT="$B/connect"); path="/ws?data=$DATA"; extra=(--first-frame) ;;
    sub-none) extra=(--subscribe chat:1) ;;
    sub-proxy) env=(RINGHUB_PROXY_SUBSCRIBE="$B/subscribe"); extra=(--subscribe chat:1) ;;
  esac
  port=$(free_port)
  env "${env[@]}" RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 \
    RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    "$SERVER" --listen "127.0.0.1:$port" --shards 1 --io "$IO" --store memory --stats-interval 0s \
    >"$TMP/server.log" 2>&1 &
  SRV=$!
  wait_listening "$port"
  local t0 t1 s0 s1 p0 p1
  t0=$(ticks "$SRV")
  s0=$(shard_ticks "$SRV")
  p0=$(proxy_ns "$SRV")
  "$LOADTEST" --target "127.0.0.1:$port" --path "$path" --threads 1 --json "$TMP/out.json" \
    connect -n "$COUNT" --concurrency "$CONC" "${extra[@]}" >/dev/null
  t1=$(ticks "$SRV")
  s1=$(shard_ticks "$SRV")
  p1=$(proxy_ns "$SRV")
  local mean=-
  if [[ $mode == *proxy ]]; then
    mean=$(curl -s "http://127.0.0.1:$port/metrics" | awk '
      /^ringhub_proxy_duration_seconds_sum/ {s=$2} /^ringhub_proxy_duration_seconds_count/ {c=$2}
      END {if (c > 0) printf "%.0f", s / c * 1e6; else print "-"}')
  fi
  stop_server
  python3 - "$TMP/out.json" "$mean" "$((t1 - t0))" "$HZ" "$COUNT" "$((s1 - s0))" "$((p1 - p0))" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["counts"]["failed"] == 0, j["counts"]
l = j["latency_us"]
cpu = int(sys.argv[3]) * 1e6 / int(sys.argv[4]) / int(sys.argv[5])
shard = int(sys.argv[6]) * 1e6 / int(sys.argv[4]) / int(sys.argv[5])
proxy = int(sys.argv[7]) / 1e3 / int(sys.argv[5])
print(f'{j["handshakes_per_s"]:.0f} {l["p50"]:.0f} {l["p99"]:.0f} {sys.argv[2]} {cpu:.1f} {shard:.1f} {proxy:.1f}')
PY
}

echo "mode handshakes/s p50_us p99_us proxy_call_mean_us server_cpu_us_per_conn shard_cpu_us_per_conn proxy_thread_us_per_call   ($COUNT connections, $CONC in flight, io $IO)"
for r in $(seq "$RUNS"); do
  for mode in ${MODES:-connect-none connect-proxy sub-none sub-proxy}; do
    echo "run$r $mode $(one "$mode")"
  done
done
