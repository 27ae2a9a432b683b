#!/usr/bin/env bash
# Load-test smoke run for CI: a few seconds of cross-shard fan-out on each backend, asserting that
# every published message was delivered exactly once (ringhub-loadtest --verify exits 1 otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ringhub -p ringhub -q
cargo build --release -p ringhub-loadtest -q
port=9401
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for io in uring epoll; do
  port=$((port + 1))
  # Every client is 127.0.0.1 and publishers run closed-loop: turn the default per-IP cap and
  # message rate off explicitly (they would cut this load test, as intended in production).
  RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 \
  timeout 120 ./target/release/ringhub --listen 127.0.0.1:$port --shards 2 --io "$io" --stats-interval 0s --store memory \
    >"target/smoke-$io.log" 2>&1 &
  pid=$!
  rc=0
  wait_port $port || { echo "smoke: ringhub did not start"; cat "target/smoke-$io.log"; exit 1; }
  # Closed loop (as fast as the window allows) and open loop (fixed rate), both verified.
  ./target/release/ringhub-loadtest fanout --target 127.0.0.1:$port --subscribers 200 --topics 4 \
    --publishers 4 --max --window 64 --warmup 1 --duration 3 --drain 10 --verify || rc=$?
  if [[ $rc == 0 ]]; then
    ./target/release/ringhub-loadtest fanout --target 127.0.0.1:$port --subscribers 100 --topics 2 \
      --publishers 2 --rate 2000 --warmup 1 --duration 2 --drain 10 --verify || rc=$?
  fi
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ $rc != 0 ]]; then
    echo "smoke: fan-out verification failed on $io (exit $rc)"; tail -n 20 "target/smoke-$io.log"; exit 1
  fi
  echo "smoke $io: every message delivered exactly once"
done
