#!/usr/bin/env bash
# Redis memory per kept history entry and per inbox message (docs/CAPACITY.md, M11;
# docs/DEPLOYMENT.md, "Memory"): fills its own redis-server (free port, no persistence) with
# shapes like the Redis store's and reports `used_memory` growth per entry.
#
#   scripts/redis-mem-per-entry.sh
#
# Shapes (the store's exact key layout is in src/store/redis once it lands; these are the Redis
# data types it uses, with comparable fields):
#   stream KEYS PER SIZE: KEYS streams of PER entries (XADD with explicit ids, MAXLEN PER), fields
#                         e (event), d (a SIZE-byte JSON payload), t (a millisecond time)
#   hash   KEYS PER SIZE: KEYS users with PER messages each: a hash field (offset → a JSON message
#                         around a SIZE-byte payload) and a sorted-set member (offset, deadline)
set -euo pipefail
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TMP=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
end=$((SECONDS + 10))
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
  ((SECONDS < end)) || { echo "redis-server did not start"; exit 1; }
  sleep 0.1
done
echo "$(redis-server --version | cut -d' ' -f1-3)"

gen() {
  python3 - "$@" <<'EOF'
import sys
def resp(*a):
    a = [x if isinstance(x, bytes) else str(x).encode() for x in a]
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)
kind, keys, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = sys.stdout.buffer
payload = b'{"text":"' + b"x" * (size - 11) + b'"}'
for k in range(keys):
    for i in range(1, per + 1):
        if kind == "stream":
            out.write(resp("XADD", f"ringhub:h:chat:room:{k}", "MAXLEN", per, f"{i}-0",
                           "e", "message", "d", payload, "t", 1764500000000 + i))
        else:
            msg = b'{"id":%d,"event":"invoice","data":' % (i * 7) + payload + b',"t":1764500000000,"a":0}'
            out.write(resp("HSET", f"ringhub:inbox:user{k}", i, msg))
            out.write(resp("ZADD", f"ringhub:inbox-deadlines:user{k}", 1764500000000 + i, i))
EOF
}
used() { redis-cli -p "$PORT" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'; }

printf '%-7s %6s %6s %6s %12s %10s\n' shape keys per size "bytes total" "per entry"
for args in "stream 1000 100 64" "stream 1000 1000 64" "stream 1000 100 512" "hash 1000 100 64" "hash 1000 1000 64"; do
  set -- $args
  redis-cli -p "$PORT" flushall >/dev/null
  before=$(used)
  gen "$@" | redis-cli -p "$PORT" --pipe >/dev/null
  after=$(used)
  printf '%-7s %6d %6d %6d %12d %10d\n' "$1" "$2" "$3" "$4" $((after - before)) $(((after - before) / ($2 * $3)))
done
