#!/usr/bin/env bash
# Reconnect storm (issue 21, item 1): one ringhub (release build, default redb store, 2 shards),
# user "victim" with PENDING (1000) unacknowledged 1 KiB durable messages, LOOPS (20) parallel
# loops that upgrade with victim's token, read the 101 and abort, for DURATION (30) seconds.
# Prints peak RSS above baseline and the max latency of a store-backed API call probed during
# the storm (GET /api/v1/messages/ID every 100 ms). RUNS (1) repeats it, each on a fresh server.
# Build first: cargo build --release -p ringhub -p ringhub-loadtest
set -euo pipefail
cd "$(dirname "$0")/.."
IO=${IO:-epoll} PENDING=${PENDING:-1000} LOOPS=${LOOPS:-20} DURATION=${DURATION:-30} RUNS=${RUNS:-1}
bin=./target/release/ringhub
[[ -x $bin ]] || { echo "build first: cargo build --release -p ringhub -p ringhub-loadtest"; exit 1; }
secret=storm-secret-0123456789abcdef0123 key=storm-key
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for run in $(seq "$RUNS"); do
  port=$((9600 + run)) dir=$(mktemp -d)
  # Every client is 127.0.0.1: the per-IP cap and the message rate would only blur the storm.
  RINGHUB_AUTH_JWT_SECRET=$secret RINGHUB_API_KEY=$key RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
  RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 \
    $bin --listen 127.0.0.1:$port --shards 2 --io "$IO" --stats-interval 0s --store-path "$dir" \
    >"$dir/ringhub.log" 2>&1 &
  pid=$!
  wait_port $port || { echo "ringhub did not start"; cat "$dir/ringhub.log"; exit 1; }
  echo "run $run ($IO): $(python3 scripts/reconnect_storm.py $port $pid $secret $key "$PENDING" "$LOOPS" "$DURATION")"
  kill -INT $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
done
