#!/usr/bin/env bash
# Messaging soak (issue 21): durable sends and acks, history publishes and `since` recoveries,
# presence churn and reconnect storms against one ringhub (--io uring|epoll, redb store on disk)
# or a cluster (2 nodes, node 1 --io uring and node 2 --io epoll, and a redis-server this script
# starts on a free port and the workload kills and restarts every 60-90 s). Not a CI step.
#
#   scripts/soak-messaging.sh uring|epoll|cluster [DURATION_S (600)]
#
# Writes docs/benchmarks/soak-messaging-<variant>.{json,md,svg} (OUT_DIR to change) and keeps the
# raw samples and server logs in target/soak-messaging/<variant>/. Exit 0 when the verdict is
# pass. Needs a release build: cargo build --release --bin ringhub (NO_BUILD=1 skips it).
# Server settings are the binary's defaults except: max_connections_per_ip = 0 (every client is
# 127.0.0.1, the storms open thousands), [[topics]] hist:* (history_size 5000) and pres:*
# (presence, join_leave), a JWT secret and an API key.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: scripts/soak-messaging.sh uring|epoll|cluster [DURATION_S]}
DURATION=${2:-600}
case $VARIANT in uring|epoll|cluster) ;; *) echo "variant: uring, epoll or cluster" >&2; exit 2 ;; esac
OUT_DIR=${OUT_DIR:-docs/benchmarks}
BIN=${CARGO_TARGET_DIR:-target}/release/ringhub
WORK=${WORK:-$PWD/target/soak-messaging/$VARIANT}
[[ -n ${NO_BUILD:-} ]] || cargo build --release --bin ringhub -p ringhub -q
[[ -x $BIN ]] || { echo "build first: cargo build --release --bin ringhub" >&2; exit 2; }
rm -rf "$WORK"; mkdir -p "$WORK" "$OUT_DIR"
SECRET=soak-secret-$RANDOM$RANDOM-0123456789abcdef KEY=soak-key-$$-$RANDOM
export RINGHUB_AUTH_JWT_SECRET=$SECRET RINGHUB_API_KEY=$KEY RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0
export RINGHUB_TOPICS='[{"pattern":"hist:*","history_size":5000},{"pattern":"pres:*","presence":true,"join_leave":true}]'

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [[ -f $WORK/redis/redis.pid ]] && kill -TERM "$(cat "$WORK/redis/redis.pid")" 2>/dev/null || true
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [[ -f $WORK/redis/redis.pid ]] && kill -KILL "$(cat "$WORK/redis/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start NAME IO PORT [args...]: ringhub in the background (its own pid, for /proc sampling).
PORTS=() SPIDS=() LABELS=()
start() {
  local name=$1 io=$2 port=$3; shift 3
  "$BIN" --listen "127.0.0.1:$port" --io "$io" --stats-interval 0s "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!); SPIDS+=($!); PORTS+=("$port"); LABELS+=("$name (--io $io)")
  wait_port "$port" || { echo "$name did not start"; cat "$WORK/$name.log"; exit 1; }
}

REDIS_ARGS=()
if [[ $VARIANT == cluster ]]; then
  rport=$(free_port)
  mkdir -p "$WORK/redis"
  # AOF with appendfsync always: a write Redis answered survives its SIGKILL, so a lost durable
  # message would be ringhub's, not Redis's. The workload restarts Redis with argv.json.
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' redis-server --port "$rport" \
    --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always --dir "$WORK/redis" >"$WORK/redis/argv.json"
  (cd "$WORK/redis" && exec redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly yes \
     --appendfsync always --dir "$WORK/redis" >>"$WORK/redis/redis.log" 2>&1) &
  echo $! >"$WORK/redis/redis.pid"
  wait_port "$rport" || { echo "redis did not start"; cat "$WORK/redis/redis.log"; exit 1; }
  export RINGHUB_CLUSTER_REDIS=redis://127.0.0.1:$rport
  start n1 uring "$(free_port)" --node n1
  start n2 epoll "$(free_port)" --node n2
  REDIS_ARGS=(--redis-pidfile "$WORK/redis/redis.pid")
else
  start "$VARIANT" "$VARIANT" "$(free_port)" --store redb --store-path "$WORK/store"
fi
join() { local IFS=,; echo "$*"; }
CMD="scripts/soak-messaging.sh $VARIANT $DURATION"
echo "== soak-messaging $VARIANT: ${DURATION}s, servers ${LABELS[*]} on ${PORTS[*]}"
python3 scripts/soak_messaging.py --ports "$(join "${PORTS[@]}")" --pids "$(join "${SPIDS[@]}")" \
  --secret "$SECRET" --key "$KEY" --duration "$DURATION" --out "$WORK/soak" "${REDIS_ARGS[@]}" \
  | tee "$WORK/workload.json"
panics=$(cat "$WORK"/*.log | grep -c 'panicked' || true)
for p in "${SPIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${SPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
python3 scripts/soak_messaging_report.py "$WORK/soak" --variant "$VARIANT" --command "$CMD" \
  --labels "$(join "${LABELS[@]}")" --panics "$panics" --out-dir "$OUT_DIR"
