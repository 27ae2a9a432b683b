#!/usr/bin/env bash
# Bytes of server RSS growth per idle WebSocket connection, for both shells (BENCHMARKS.md,
# "Idle connections"). Builds nothing: uses target/release/ringhub and ringhub-loadtest
# (`cargo build --release -p ringhub -p ringhub-loadtest`).
#
#   scripts/idle-mem.sh                 # 10,000 connections, 3 runs per shell
#   N=2500 RUNS=5 IO="epoll" scripts/idle-mem.sh
#   DEFLATE=1 scripts/idle-mem.sh       # every connection negotiates permessage-deflate
#
# The server runs with its defaults (shards = cores, the embedded redb store, rate limits and
# connection caps on) from a temporary directory, so its store file lands there; only the
# per-address cap is lifted (RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0) because the load generator
# holds N connections from a few loopback addresses. The load generator opens N connections
# (over SOURCES source addresses), waits 0.5 s, reads the server's VmRSS, holds them HOLD
# seconds; the figure is (VmRSS after - VmRSS before) / connections opened, in bytes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-10000}
RUNS=${RUNS:-3}
HOLD=${HOLD:-5}
SOURCES=${SOURCES:-4}
IO=${IO:-"uring epoll"}
SERVER="$TARGET/release/ringhub"
LOADTEST="$TARGET/release/ringhub-loadtest"
for b in "$SERVER" "$LOADTEST"; do
  [[ -x $b ]] || { echo "missing $b: cargo build --release -p ringhub -p ringhub-loadtest" >&2; exit 2; }
done
need=$((N + 1024))
if (($(ulimit -n) < need)); then
  ulimit -n "$need" 2>/dev/null || { echo "RLIMIT_NOFILE $(ulimit -n) < $need: raise it (ulimit -n)" >&2; exit 2; }
fi
TMP=$(mktemp -d)
SRV=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT

one_run() { # IO RUN -> prints bytes per connection
  local io=$1 run=$2 port dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir="$TMP/$io-$run"
  mkdir -p "$dir"
  (cd "$dir" && RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 exec "$SERVER" --listen "127.0.0.1:$port" \
    --io "$io" >"$dir/server.log" 2>&1) &
  SRV=$!
  local end=$((SECONDS + 30))
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    ((SECONDS < end)) || { echo "server did not start" >&2; cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
  done
  if ! "$LOADTEST" ${DEFLATE:+--deflate} idle --target "127.0.0.1:$port" --count "$N" --hold "$HOLD" \
    --source-addrs "$SOURCES" --server-pid "$SRV" --json "$dir/idle.json" >"$dir/loadtest.log" 2>&1; then
    echo "load generator failed (--io $io):" >&2
    cat "$dir/loadtest.log" >&2
    exit 1
  fi
  kill "$SRV" 2>/dev/null || true
  wait "$SRV" 2>/dev/null || true
  SRV=
  python3 - "$dir/idle.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
n = j["connections"]
print(round((j["rss_after_kb"] - j["rss_before_kb"]) * 1024 / n))
EOF
}

echo "RSS growth per idle connection: $N connections, defaults${DEFLATE:+, permessage-deflate}, $RUNS runs per shell"
for io in $IO; do
  vals=()
  for r in $(seq 1 "$RUNS"); do
    vals+=("$(one_run "$io" "$r")")
  done
  median=$(printf '%s\n' "${vals[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }')
  printf '  --io %-6s median %5d B per connection   (runs: %s)\n' "$io" "$median" "${vals[*]}"
done
