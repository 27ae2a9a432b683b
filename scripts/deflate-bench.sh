#!/usr/bin/env bash
# permessage-deflate: wire bytes and server CPU per delivery, compressed vs uncompressed
# (BENCHMARKS.md, "Compression"). Fan-out of one publisher to SUBS subscribers of one topic,
# closed loop with W publications in flight, for each payload size; each case runs once with
# `--deflate` (every subscriber negotiates compression) and once without, back to back.
# MODES picks other cases: `json`/`plain` (uncompressed JSON), `deflate`, `msgpack` (every
# subscriber on the `ringhub.msgpack` subprotocol: the server converts each publication once),
# `msgpack+deflate`, `json+deflate` (BENCHMARKS.md, "MessagePack").
# Builds nothing: uses target/release/ringhub and ringhub-loadtest.
#
#   scripts/deflate-bench.sh                       # 1,000 subs, 64 B / 1 KB / 16 KB, W = 16 and 64
#   RUNS=3 IO=epoll SIZES="1024" WINDOWS="64" scripts/deflate-bench.sh
#   MODES="json msgpack json+deflate msgpack+deflate" SIZES="1024" WINDOWS="64" scripts/deflate-bench.sh
#
# Payloads are chat-like words (`--words`), not a run of one letter. The server runs with one
# shard (as the engine campaign does), the memory store and no rate limits. Server CPU is its
# utime+stime over the whole run (setup included) ÷ deliveries; bytes are every byte the
# clients read (handshakes included) ÷ deliveries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SUBS=${SUBS:-1000}
SIZES=${SIZES:-"64 1024 16384"}
WINDOWS=${WINDOWS:-"16 64"}
MODES=${MODES:-"plain deflate"}
RUNS=${RUNS:-1}
IO=${IO:-uring}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
LEVEL=${LEVEL:-3}
THRESHOLD=${THRESHOLD:-128}
SERVER="$TARGET/release/ringhub"
LOADTEST="$TARGET/release/ringhub-loadtest"
. "$(dirname "$0")/bench-lib.sh"
need_bins "$SERVER" "$LOADTEST"
TMP=$(mktemp -d)
SRV=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

one() { # SIZE W MODE -> "bytes_per_delivery cpu_ns_per_delivery msgs_per_s"
  local size=$1 w=$2 mode=$3 port flag=()
  [[ $mode == *deflate* ]] && flag+=(--deflate)
  [[ $mode == msgpack* ]] && flag+=(--msgpack)
  port=$(free_port)
  RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    RINGHUB_COMPRESSION_LEVEL=$LEVEL RINGHUB_COMPRESSION_THRESHOLD=$THRESHOLD \
    "$SERVER" --listen "127.0.0.1:$port" --shards 1 --io "$IO" --store memory --stats-interval 0s \
    >"$TMP/server.log" 2>&1 &
  SRV=$!
  wait_listening "$port"
  local t0 t1
  t0=$(ticks "$SRV")
  "$LOADTEST" --target "127.0.0.1:$port" --words ${flag[@]+"${flag[@]}"} --json "$TMP/out.json" fanout \
    --subscribers "$SUBS" --payload "$size" --max --window "$w" --duration "$DURATION" --warmup "$WARMUP" \
    >"$TMP/lt.log" 2>&1 || { echo "load generator failed:" >&2; cat "$TMP/lt.log" >&2; exit 1; }
  t1=$(ticks "$SRV")
  stop_server
  local bytes
  bytes=$(awk -F': ' '/^wire bytes in/ { print $2 }' "$TMP/lt.log")
  per_delivery "$TMP/out.json" "$bytes" "$((t1 - t0))"
}

echo "fan-out to $SUBS subscribers, --io $IO, level $LEVEL, threshold $THRESHOLD B, $RUNS run(s)"
printf '%-8s %-4s %-16s %14s %14s %12s\n' payload W mode "bytes/deliv" "CPU ns/deliv" "msgs/s"
for run in $(seq 1 "$RUNS"); do
  for size in $SIZES; do
    for w in $WINDOWS; do
      for mode in $MODES; do
        read -r b c r < <(one "$size" "$w" "$mode")
        printf '%-8s %-4s %-16s %14s %14s %12s\n' "$size" "$w" "$mode" "$b" "$c" "$r"
      done
    done
  done
done
