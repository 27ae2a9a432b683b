#!/usr/bin/env bash
# Kernel slab memory per idle WebSocket connection (docs/CAPACITY.md, M4): the objects the kernel
# allocates per TCP connection (socket, sockfs inode, file, dentry, epoll entry), counted from
# /proc/slabinfo before and while COUNT idle connections are held. Needs root (slabinfo) and a
# release build of ringhub and ringhub-loadtest.
#
#   COUNT=10000 IO=epoll scripts/kernel-mem-per-conn.sh
#
# Both ends are on this machine (loopback): the deltas count the server's and the load
# generator's sockets; the server's share is reported as half of the socket objects, plus its
# own epoll entries. Socket buffers of data in flight are not included (idle connections).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COUNT=${COUNT:-10000}
IO=${IO:-epoll}
CACHES="TCP sock_inode_cache filp dentry eventpoll_epi"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TMP=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

# "cache active_objs objsize" for each cache of interest.
snapshot() { awk -v want=" $CACHES " 'index(want, " " $1 " ") { print $1, $2, $4 }' /proc/slabinfo; }
conns() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ringhub_connections\{/ { s += $2 } END { print s + 0 }'; }

RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 "$TARGET/release/ringhub" --listen "127.0.0.1:$PORT" \
  --io "$IO" --shards 1 --store memory --stats-interval 0s >"$TMP/server.log" 2>&1 &
PIDS+=("$!")
end=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do
  ((SECONDS < end)) || { echo "server did not start"; cat "$TMP/server.log"; exit 1; }
  sleep 0.1
done
snapshot >"$TMP/before"
"$TARGET/release/ringhub-loadtest" idle --target "127.0.0.1:$PORT" --count "$COUNT" --hold 15 \
  >"$TMP/loadtest.log" 2>&1 &
LT=$!
PIDS+=("$LT")
end=$((SECONDS + 60))
until [[ $(conns) -ge $COUNT ]]; do
  ((SECONDS < end)) || { echo "connections did not open"; cat "$TMP/loadtest.log"; exit 1; }
  sleep 0.2
done
snapshot >"$TMP/during"
wait "$LT" || true
echo "kernel slab objects for $COUNT idle connections (both ends on loopback, --io $IO):"
join "$TMP/before" "$TMP/during" | awk -v n="$COUNT" -v io="$IO" '
  { d = $4 - $2; b = d * $3; total += b
    printf "  %-18s %+8d objects x %5d B = %8.1f kB  (%.2f objects per connection)\n", $1, d, $3, b / 1024, d / n
    if ($1 == "eventpoll_epi") epi = b; else sock += b }
  END {
    printf "  total %.0f B per connection (both ends)\n", total / n
    # epoll: both ends register each socket once; io_uring: only the load generator does.
    own = (io == "epoll") ? epi / 2 : 0
    printf "  server side: half the socket objects + its epoll entries = %.0f B per connection\n", (sock / 2 + own) / n
  }'
