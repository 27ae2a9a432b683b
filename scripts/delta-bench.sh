#!/usr/bin/env bash
# Delta updates (`delta: "fossil"`): wire bytes and server CPU per delivery of a state object
# sent to SUBS subscribers as Fossil deltas vs in full (BENCHMARKS.md, "Delta updates").
# Each run starts a fresh server (one shard, memory store, `state:*` with history) per mode,
# full then delta, back to back; the load generator's `delta` scenario counts from the first
# publication to the last delivery (handshakes and subscribes excluded) and reads the server's
# CPU time from /proc over that span. Builds nothing: uses target/release/ringhub and
# ringhub-loadtest.
#
#   scripts/delta-bench.sh                          # 1,000 subs, 2 KB state, 500 publications, W 16
#   RUNS=3 SUBS=1000 PUBS=500 SIZE=2048 WINDOW=16 IO=epoll scripts/delta-bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SUBS=${SUBS:-1000}
PUBS=${PUBS:-500}
SIZE=${SIZE:-2048}
WINDOW=${WINDOW:-16}
RUNS=${RUNS:-1}
IO=${IO:-uring}
FULL_EVERY=${FULL_EVERY:-100}
SERVER=${SERVER:-$TARGET/release/ringhub}
LOADTEST="$TARGET/release/ringhub-loadtest"
. "$(dirname "$0")/bench-lib.sh"
need_bins "$SERVER" "$LOADTEST"
TMP=$(mktemp -d)
SRV=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

one() { # MODE -> "bytes_per_delivery cpu_ns_per_delivery deliveries_per_s"
  local mode=$1 port flag=()
  [[ $mode == delta ]] && flag=(--delta)
  port=$(free_port)
  RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    RINGHUB_TOPICS='[{"pattern": "state:*", "history_size": 100}]' \
    RINGHUB_COMPRESSION_DELTA_FULL_EVERY=$FULL_EVERY \
    "$SERVER" --listen "127.0.0.1:$port" --shards 1 --io "$IO" --store memory --stats-interval 0s \
    >"$TMP/server.log" 2>&1 &
  SRV=$!
  wait_listening "$port"
  "$LOADTEST" --target "127.0.0.1:$port" --json "$TMP/out.json" delta "${flag[@]}" \
    --subscribers "$SUBS" --publications "$PUBS" --size "$SIZE" --window "$WINDOW" --server-pid "$SRV" \
    >"$TMP/lt.log" 2>&1 || { echo "load generator failed:" >&2; cat "$TMP/lt.log" >&2; exit 1; }
  stop_server
  python3 - "$TMP/out.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"{j['bytes_per_delivery']:.1f} {j.get('server_cpu_ns_per_delivery', 0):.0f} {j['msgs_per_s']:.0f}")
PY
}

echo "state object of ~$SIZE B to $SUBS subscribers, $PUBS publications, W $WINDOW, --io $IO, full every $FULL_EVERY, $RUNS run(s)"
printf '%-4s %-6s %14s %14s %14s\n' run mode "bytes/deliv" "CPU ns/deliv" "deliv/s"
for run in $(seq 1 "$RUNS"); do
  for mode in full delta; do
    read -r b c r < <(one "$mode")
    printf '%-4s %-6s %14s %14s %14s\n' "$run" "$mode" "$b" "$c" "$r"
  done
done
