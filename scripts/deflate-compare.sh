#!/usr/bin/env bash
# permessage-deflate side by side (BENCHMARKS.md, "Compression: side by side"): wire bytes and
# server CPU per delivery, compressed and uncompressed, of ringhub (io_uring, epoll), the
# uWebSockets peer (SHARED_COMPRESSOR) and Bun (perMessageDeflate), with the same fan-out
# scenario in the same run: one publisher, SUBS subscribers of one topic, closed loop with W
# publications in flight, chat-like words (`--words`). Builds nothing.
#
#   RUNS=3 scripts/deflate-compare.sh          # then: scripts/deflate-compare.py < output
#
# Environment:
#   SERVERS   default "ringhub-uring ringhub-epoll uws bun"; uws needs UWS_BIN (scripts/README.md,
#             "The uWebSockets peer": UWS_COMPRESS=off|shared|prepared), bun scripts/peers/install.sh
#   SIZES     payload sizes (default "64 1024 16384"); WINDOWS (default "1 16 64"); SUBS (1000)
#   RUNS (1), DURATION (3), WARMUP (1), LEVEL (3), THRESHOLD (128): as scripts/deflate-bench.sh
#   PRIO      none | rt (default: chrt -f 10, as scripts/compare.sh) | nice
#   SERVER_CPU (0) / LOAD_CPU (1): cores the server and the load generator are pinned to
#
# Modes per server: `plain` (no compression offered), `deflate` (every subscriber negotiates
# permessage-deflate; ringhub compresses each publication once per shard, uWS with
# app.publish(compress) deflates once per delivery with its shared compressor, Bun likewise),
# and for uws `prepared` (SHARED_COMPRESSOR with loop->prepareMessage + app.publishPrepared:
# once per publication, what ringhub does). One output line per case:
#   run server size W mode bytes/delivery cpu_ns/delivery msgs/s
# Bytes are every byte the clients read (handshakes included) ÷ deliveries; ringhub's frames
# carry the JSON envelope (~40 B more than the peers' raw payload). Server CPU is utime+stime
# over the whole load-generator run ÷ deliveries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SERVERS=${SERVERS:-"ringhub-uring ringhub-epoll uws bun"}
SUBS=${SUBS:-1000}
SIZES=${SIZES:-"64 1024 16384"}
WINDOWS=${WINDOWS:-"1 16 64"}
RUNS=${RUNS:-1}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
LEVEL=${LEVEL:-3}
THRESHOLD=${THRESHOLD:-128}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
UWS_BIN=${UWS_BIN:-}
BUN=$ROOT/scripts/peers/node_modules/@oven/bun-linux-x64/bin/bun
case "${PRIO:-rt}" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -20) ;;
  *) echo "PRIO must be none, rt or nice" >&2; exit 2 ;;
esac
SERVER="$TARGET/release/ringhub"
LOADTEST="$TARGET/release/ringhub-loadtest"
. "$(dirname "$0")/bench-lib.sh"
need_bins "$SERVER" "$LOADTEST"
[[ " $SERVERS " != *" uws "* || -x $UWS_BIN ]] || { echo "uws: set UWS_BIN to the uWebSockets peer" >&2; exit 2; }
[[ " $SERVERS " != *" bun "* || -x $BUN ]] || { echo "bun: run scripts/peers/install.sh" >&2; exit 2; }
TMP=$(mktemp -d)
SRV=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
PIN=(taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}")

start() { # SERVER MODE PORT: starts the server in the background, sets SRV
  local server=$1 mode=$2 port=$3
  case $server in
    ringhub-*)
      RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
        RINGHUB_COMPRESSION_LEVEL=$LEVEL RINGHUB_COMPRESSION_THRESHOLD=$THRESHOLD \
        "${PIN[@]}" "$SERVER" --listen "127.0.0.1:$port" --shards 1 --io "${server#ringhub-}" --store memory \
        --stats-interval 0s >"$TMP/server.log" 2>&1 &
      ;;
    uws)
      local c=off
      case $mode in deflate) c=shared ;; prepared) c=prepared ;; esac
      UWS_COMPRESS=$c "${PIN[@]}" "$UWS_BIN" "$port" >"$TMP/server.log" 2>&1 &
      ;;
    bun)
      local d=0
      [[ $mode == deflate ]] && d=1
      BUN_DEFLATE=$d PORT=$port "${PIN[@]}" "$BUN" "$ROOT/scripts/peers/bun-server.js" >"$TMP/server.log" 2>&1 &
      ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  SRV=$!
  wait_listening "$port" "$server"
}

one() { # SERVER SIZE W MODE -> "bytes_per_delivery cpu_ns_per_delivery msgs_per_s"
  local server=$1 size=$2 w=$3 mode=$4 port flag=() proto=raw
  [[ $mode != plain ]] && flag=(--deflate)
  [[ $server == ringhub-* ]] && proto=ringhub
  port=$(free_port)
  start "$server" "$mode" "$port"
  local t0 t1
  t0=$(ticks "$SRV")
  taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$LOADTEST" --target "127.0.0.1:$port" --protocol "$proto" --words \
    "${flag[@]}" --json "$TMP/out.json" fanout --subscribers "$SUBS" --payload "$size" --max --window "$w" \
    --duration "$DURATION" --warmup "$WARMUP" >"$TMP/lt.log" 2>&1 ||
    { echo "load generator failed ($server $size $w $mode):" >&2; cat "$TMP/lt.log" >&2; exit 1; }
  t1=$(ticks "$SRV")
  stop_server
  local bytes
  bytes=$(awk -F': ' '/^wire bytes in/ { print $2 }' "$TMP/lt.log")
  per_delivery "$TMP/out.json" "$bytes" "$((t1 - t0))"
}

echo "# fan-out to $SUBS subscribers; ringhub level $LEVEL threshold $THRESHOLD B; server on core $SERVER_CPU, load generator on core $LOAD_CPU, PRIO=${PRIO:-rt}; $RUNS run(s)"
[[ -n $UWS_BIN && -f $UWS_BIN.version ]] && sed 's/^/# /' "$UWS_BIN.version"
echo "# bun $("$BUN" --version 2>/dev/null || echo -)"
printf '%-4s %-14s %-6s %-3s %-9s %12s %12s %10s\n' run server size W mode "bytes/deliv" "CPU ns/deliv" "msgs/s"
for run in $(seq 1 "$RUNS"); do
  for size in $SIZES; do
    for w in $WINDOWS; do
      for server in $SERVERS; do
        modes="plain deflate"
        [[ $server == uws ]] && modes="plain deflate prepared"
        for mode in $modes; do
          read -r b c r < <(one "$server" "$size" "$w" "$mode")
          printf '%-4s %-14s %-6s %-3s %-9s %12s %12s %10s\n' "$run" "$server" "$size" "$w" "$mode" "$b" "$c" "$r"
        done
      done
    done
  done
done
