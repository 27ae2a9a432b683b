#!/usr/bin/env bash
# Profiles the server during one `durable-c64` run of scripts/http-api-bench.sh (BENCHMARKS.md,
# "Durable sends answered on the shard"): one shard on CPU 0, the generator on CPU 1, both
# SCHED_FIFO, redb in STORE_DIR; `perf record -g` on the server for 3 s from 1.5 s in.
#
#   scripts/durable-profile.sh target/release /tmp/prof      # then:
#   perf report -i /tmp/prof.data --no-children --sort comm,dso -g none
#   perf report -i /tmp/prof.data --no-children --sort comm,sym -g none
#
# Take the exclusive bench lock around it on a shared machine.
set -euo pipefail
BIN=${1:?binary dir (ringhub, ringhub-loadtest)}
OUT=${2:?output prefix}
PORT=${PORT:-9711}
DIR=${STORE_DIR:-/tmp/ringhub-durable-prof}
rm -rf "$DIR"
mkdir -p "$DIR"
RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 \
  RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGHUB_API_KEY=bench RINGHUB_UI_ENABLED=false \
  RINGHUB_AUTH_ANONYMOUS=true taskset -c 0 chrt -f 10 "$BIN/ringhub" --listen "127.0.0.1:$PORT" \
  --shards 1 --io epoll --store redb --store-path "$DIR" >"$DIR/log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
taskset -c 1 chrt -f 10 "$BIN/ringhub-loadtest" --target "127.0.0.1:$PORT" --threads 1 durable \
  --connected 0 --concurrency 64 --users 10000 --duration 4 --warmup 1 >"$OUT.load" 2>&1 &
LP=$!
sleep 1.5
perf record -F 2000 -g -p "$SP" -o "$OUT.data" -- sleep 3 >/dev/null 2>&1
wait "$LP"
curl -s "http://127.0.0.1:$PORT/metrics" | grep '^ringhub_store_commits' >>"$OUT.load"
grep -E 'sends/s|latency|commits' "$OUT.load"
