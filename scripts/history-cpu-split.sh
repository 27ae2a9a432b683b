#!/bin/bash
# User / kernel split of the server's CPU per publication, history topic against none: one shard,
# one subscriber, W = 512 (`ringhub-loadtest fanout --max`), the server pinned to core 0 and the
# load generator to core 1, both SCHED_FIFO; three rounds alternating none / history (with the
# generator's --offsets check) / history without it. "none" publishes to nohi:t0, as long as
# hist:t0, so the split compares history alone. Reads utime and stime of the server from
# /proc around each run. Run it under the bench lock:
#
#   BIN=<target>/release flock -x /work/wt/bench.lock scripts/history-cpu-split.sh
set -u
BIN=${BIN:?directory holding ringhub and ringhub-loadtest}
port=${BASE_PORT:-9750}
TOPICS='[{"pattern":"hist:*","history_size":100}]'
TCK=$(getconf CLK_TCK)
STORE=$(mktemp -d)
OUT=$(mktemp)
for r in 1 2 3; do
  for c in none hist hist-nooff; do
    port=$((port + 1))
    case $c in
      none) a="--topic-prefix nohi:t" ;;
      hist) a="--topic-prefix hist:t --offsets" ;;
      hist-nooff) a="--topic-prefix hist:t" ;;
    esac
    RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
      RINGHUB_TOPICS="$TOPICS" RINGHUB_API_KEY=bench RINGHUB_AUTH_ANONYMOUS=true RINGHUB_UI_ENABLED=false \
      taskset -c 0 chrt -f 10 "$BIN/ringhub" --listen "127.0.0.1:$port" --shards 1 --io epoll \
      --store memory --store-path "$STORE/s$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    s0=$(awk '{print $14, $15}' "/proc/$pid/stat")
    # shellcheck disable=SC2086 # $a is a word list on purpose
    taskset -c 1 chrt -f 10 "$BIN/ringhub-loadtest" fanout $a --subscribers 1 --payload 64 --max \
      --window 512 --duration 3 --warmup 1 --target "127.0.0.1:$port" --json "$OUT" >/dev/null 2>&1
    s1=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null
    jq -r --arg c "$c" --arg r "$r" --arg s0 "$s0" --arg s1 "$s1" --argjson t "$TCK" '
      ($s0 | split(" ") | map(tonumber)) as $a | ($s1 | split(" ") | map(tonumber)) as $b |
      "r\($r) \($c): \(.published_per_s | floor)/s  user \((($b[0] - $a[0]) / $t * 1e6 / .counts.published) * 1000 | floor / 1000) µs/pub  kernel \((($b[1] - $a[1]) / $t * 1e6 / .counts.published) * 1000 | floor / 1000) µs/pub  offset errors \(.counts.offset_errors)"' "$OUT"
  done
done
rm -rf "$STORE" "$OUT"
