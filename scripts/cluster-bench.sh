#!/usr/bin/env bash
# Measurement for the cluster issue: N ringhub nodes joined through one Redis vs one node, and
# the socket.io Redis adapter on the same scenario, side by side in one run. Every case runs
# RUNS times, interleaved (run 1 of every case, then run 2, ...). Each run starts its topology
# afresh: a redis-server of its own on a free port (--save "" --appendonly no: no persistence,
# throughput runs), then the node(s); all of them pinned to SERVER_CPU, ringhub-loadtest to
# LOAD_CPU (both under SCHED_FIFO with PRIO=rt, as scripts/campaign.sh does). Redis `INFO
# commandstats` is read before and after the load generator runs (commands per publication),
# and every process's CPU time (per thread for ringhub: shard vs cluster thread). scripts/cluster_condense.py then writes
# docs/benchmarks/<NAME>.md and .json (medians of the runs, ratios within each run).
#
#   scripts/cluster-bench.sh                                   # fanout latency socketio, 3 runs
#   RUNS=1 DURATION=2 WARMUP=1 PARTS=latency scripts/cluster-bench.sh
#   NO_BUILD=1 RUNS=3 DURATION=5 WARMUP=1 scripts/cluster-bench.sh   # what BENCHMARKS.md reports
#   PARTS=history NAME=cluster-history scripts/cluster-bench.sh      # once the Redis store is in
#   scripts/cluster-bench.sh --list                            # the cases and their arguments
#
# Parts (PARTS, default "fanout latency socketio"):
#   fanout    SUBS (1000) subscribers of t0 spread round-robin over the NODES (3) nodes, the
#             publisher on node 1, W in WINDOWS ("1 16 64") publications in flight, plus an open
#             loop at RATE (1000) publications/s; the same load on one node without Redis
#   latency   LAT_SUBS (30) subscribers spread over the nodes, open loop at each of LAT_RATES
#             ("10000 1000") publications/s: publish -> deliver latency of same-node and
#             cross-node subscribers in the same run; and on one node
#   socketio  the fanout and latency cases against socket.io 4 (scripts/peers/
#             socketio-cluster-server.js): NODES processes with @socket.io/redis-adapter on one
#             Redis, and one process without adapter
#   redis     what one Redis sustains here: redis-benchmark PUBLISH of a 160-byte message (about
#             a ringhub cluster message with a 64 B payload) from NODES pipelined connections
#             (-P 64) to a channel with NODES subscribers (redis-cli, standing in for the nodes);
#             Redis alone on SERVER_CPU, redis-benchmark and the subscribers on LOAD_CPU; the
#             subscribers must still be there at the end (subscribers_after)
#   recv      received publications/s per node: NODES subscribers of t0, one per node, the
#             publisher on node 1 at W in RECV_WINDOWS ("64 256") publications in flight; every
#             other node receives every publication from Redis (its cluster thread's rate and
#             CPU per received publication: threads_cpu_s)
#   history   publications/s to hist:t0 (history_size 100) in cluster mode vs t0 (no history),
#             HIST_SUBS (3) subscribers spread over the nodes, --offsets checked, W in WINDOWS.
#             The store is the server's choice in cluster mode (HIST_STORE=NAME forces --store)
#
# Environment:
#   RUNS (3), DURATION (5 measured seconds), WARMUP (1), PAYLOAD (64), IO (epoll), NODES (3)
#   PRIO          none | nice | rt (default rt: chrt -f 10 for servers, Redis and loadtest;
#                 nice: nice -n -20, which left W = 1 at a tenth of its rate beside other builds)
#   NODE_FLAGS    flags of the socket.io processes (default with PRIO=rt: --single-threaded,
#                 no V8 helper threads: under SCHED_FIFO on one core Node's main thread spins
#                 waiting for a helper thread that its FIFO peers never let run, and never starts)
#   SERVER_CPU (0: every node and Redis), LOAD_CPU (1), BASE_PORT (9700)
#   NAME (cluster), OUT_DIR raw results (/tmp/ringhub-cluster/NAME), RESULTS_DIR (docs/benchmarks),
#   RESULT_NAME (NAME), MERGE_DIRS raw result dirs of earlier runs condensed together with this one
#   REDIS_SERVER (redis-server), NODE (node), CARGO_TARGET_DIR as usual; NO_BUILD=1 skips cargo
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
PAYLOAD=${PAYLOAD:-64}
IO=${IO:-epoll}
NODES=${NODES:-3}
PRIO=${PRIO:-rt}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-9700}
PARTS=${PARTS:-"fanout latency socketio"}
SUBS=${SUBS:-1000}
WINDOWS=${WINDOWS:-"1 16 64"}
RATE=${RATE:-1000}
LAT_SUBS=${LAT_SUBS:-30}
LAT_RATES=${LAT_RATES:-"10000 1000"}
HIST_SUBS=${HIST_SUBS:-3}
RECV_WINDOWS=${RECV_WINDOWS:-"64 256"}
HIST_STORE=${HIST_STORE:-}
NAME=${NAME:-cluster}
OUT_DIR=${OUT_DIR:-/tmp/ringhub-cluster/$NAME}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/benchmarks}
RESULT_NAME=${RESULT_NAME:-$NAME}
MERGE_DIRS=${MERGE_DIRS:-}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
NODE=${NODE:-node}
NODE_FLAGS=${NODE_FLAGS-$([ "$PRIO" = rt ] && echo --single-threaded || true)}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
STORE_DIR=$OUT_DIR/store
TOPICS='[{"pattern":"hist:*","history_size":100}]'
SIO_SERVER=$ROOT/scripts/peers/socketio-cluster-server.js
case "$PRIO" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -20) ;;
  *) echo "cluster-bench: PRIO must be none, rt or nice" >&2; exit 2 ;;
esac

T="--duration $DURATION --warmup $WARMUP --payload $PAYLOAD --verify"
# id | topology (ringhub-1 | ringhub-N | sio-1 | sio-N) | store (memory | auto: the server's
# choice, or HIST_STORE) | loadtest arguments (targets added later)
matrix() {
  local g w r topo kind
  for g in $PARTS; do
    case "$g" in
      fanout | socketio)
        kind=ringhub; [ "$g" = socketio ] && kind=sio
        for topo in "$kind-1" "$kind-$NODES"; do
          for w in $WINDOWS; do
            echo "fanout-w$w-$topo|$topo|memory|fanout --subscribers $SUBS --max --window $w $T"
          done
          echo "fanout-r$RATE-$topo|$topo|memory|fanout --subscribers $SUBS --rate $RATE $T"
          if [ "$g" = socketio ]; then
            for r in $LAT_RATES; do
              echo "latency-r$r-$topo|$topo|memory|fanout --subscribers $LAT_SUBS --rate $r $T"
            done
          fi
        done ;;
      latency)
        for topo in "ringhub-1" "ringhub-$NODES"; do
          for r in $LAT_RATES; do
            echo "latency-r$r-$topo|$topo|memory|fanout --subscribers $LAT_SUBS --rate $r $T"
          done
        done ;;
      recv)
        for w in $RECV_WINDOWS; do
          echo "recv-s$NODES-w$w-ringhub-$NODES|ringhub-$NODES|memory|fanout --subscribers $NODES --max --window $w $T"
        done ;;
      redis) ;;  # not a loadtest case: see redis_publish below
      history)
        for w in $WINDOWS; do
          echo "nohist-s$HIST_SUBS-w$w-ringhub-$NODES|ringhub-$NODES|memory|fanout --subscribers $HIST_SUBS --max --window $w $T"
          echo "hist-s$HIST_SUBS-w$w-ringhub-$NODES|ringhub-$NODES|${HIST_STORE:-auto}|fanout --topic-prefix hist:t --offsets --subscribers $HIST_SUBS --max --window $w $T"
        done ;;
      *) echo "cluster-bench: unknown part $g" >&2; exit 2 ;;
    esac
  done
}

if [ "${1:-}" = --list ]; then
  matrix | awk -F'|' '{printf "%-28s %-10s %-7s ringhub-loadtest %s\n", $1, $2, $3, $4}'
  exit 0
fi
[ $# -eq 0 ] || { sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

mkdir -p "$OUT_DIR" "$RESULTS_DIR"
log() { echo "cluster-bench: $*" | tee -a "$OUT_DIR/bench.log" >&2; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  log "building ringhub and ringhub-loadtest (release)"
  (cd "$ROOT" && cargo build --release -q -p ringhub -p ringhub-loadtest)
fi
if matrix | grep -q '|sio-'; then
  "$ROOT/scripts/peers/install.sh"
fi

PIDS=()        # every process of the current topology, Redis first
NAMES=()       # and what each one is: redis, ringhub or sio
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=() NAMES=()
}
trap stop_all EXIT INT TERM

free_port() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_listening PID PORT LOG: until PORT accepts (or the process dies)
wait_listening() {
  for _ in $(seq 150); do
    kill -0 "$1" 2>/dev/null || { log "process on $2 exited: $(tail -3 "$3" | tr '\n' ' ')"; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $2"
  return 1
}
# Run in the background (`on_server_cpu CMD &`): exec, so that $! is the server itself.
on_server_cpu() { exec taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}" "$@"; }

# start_topology TOPO STORE FIRST_PORT LOGPREFIX: sets PORTS (node ports) and REDIS_PORT
# ("" without Redis)
start_topology() {
  local topo=$1 store=$2 port=$3 logp=$4 kind=${1%-*} n=${1##*-} i store_args=()
  [ "$store" = auto ] || store_args=(--store "$store")
  PORTS=() REDIS_PORT=""
  if [ "$n" -gt 1 ]; then
    REDIS_PORT=$port
    while ! free_port "$REDIS_PORT"; do REDIS_PORT=$((REDIS_PORT + 1)); done
    on_server_cpu "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      --protected-mode yes </dev/null >"$logp.redis.log" 2>&1 &
    PIDS+=($!) NAMES+=(redis)
    wait_listening "$!" "$REDIS_PORT" "$logp.redis.log" || return 1
    port=$((REDIS_PORT + 1))
  fi
  for i in $(seq "$n"); do
    while ! free_port "$port"; do port=$((port + 1)); done
    if [ "$kind" = sio ]; then
      # shellcheck disable=SC2086 # NODE_FLAGS is a word list
      on_server_cpu "$NODE" $NODE_FLAGS "$SIO_SERVER" "$port" ${REDIS_PORT:+"redis://127.0.0.1:$REDIS_PORT"} \
        </dev/null >"$logp.node$i.log" 2>&1 &
      NAMES+=(sio)
    else
      rm -rf "$STORE_DIR/node$i"
      local envs=(RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0
        RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 "RINGHUB_TOPICS=$TOPICS" RINGHUB_API_KEY=bench
        RINGHUB_AUTH_ANONYMOUS=true RINGHUB_UI_ENABLED=false)
      [ -n "$REDIS_PORT" ] && envs+=("RINGHUB_CLUSTER_REDIS=redis://127.0.0.1:$REDIS_PORT")
      on_server_cpu env "${envs[@]}" "$BIN/ringhub" --listen "127.0.0.1:$port" --shards 1 --no-pin --io "$IO" \
        --node "n$i" "${store_args[@]}" --store-path "$STORE_DIR/node$i" </dev/null >"$logp.node$i.log" 2>&1 &
      NAMES+=(ringhub)
    fi
    PIDS+=($!)
    wait_listening "$!" "$port" "$logp.node$i.log" || return 1
    PORTS+=("$port")
    port=$((port + 1))
  done
}

# Per process: "name total_ticks" plus, for ringhub, one line per thread name (summed).
cpu_snapshot() {
  local i p
  for i in "${!PIDS[@]}"; do
    p=${PIDS[$i]}
    [ -r "/proc/$p/stat" ] || continue
    echo "${NAMES[$i]}$i total $(awk '{print $14 + $15}' "/proc/$p/stat")"
    if [ "${NAMES[$i]}" = ringhub ]; then
      for t in /proc/"$p"/task/*; do
        echo "${NAMES[$i]}$i $(tr ' ' '_' <"$t/comm") $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"
      done
    fi
  done
}
commandstats() {
  [ -n "$REDIS_PORT" ] || return 0
  redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p'
}
CLK_TCK=$(getconf CLK_TCK)

# --- metadata --------------------------------------------------------------------------
commit=$(cd "$ROOT" && git rev-parse --short HEAD)
(cd "$ROOT" && git diff --quiet HEAD) || commit="$commit (+ uncommitted changes)"
sio_version=$(cd "$ROOT/scripts/peers" && "$NODE" -e 'for (const p of ["socket.io","@socket.io/redis-adapter","redis"]) { try { process.stdout.write(p + " " + require(p + "/package.json").version + "; ") } catch (e) {} }' 2>/dev/null || true)
matrix >"$OUT_DIR/matrix.txt"
jq -n --arg name "$NAME" --arg started "$(date -u +%FT%TZ)" --argjson runs "$RUNS" \
  --arg commit "$commit" --arg io "$IO" --argjson nodes "$NODES" \
  --arg kernel "$(uname -r)" --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg nproc "$(nproc)" --arg rustc "$(rustc --version 2>/dev/null || true)" \
  --arg redis "$("$REDIS_SERVER" --version | head -1)" --arg node "$("$NODE" --version) $NODE_FLAGS" --arg sio "$sio_version" \
  --arg pin "nodes and Redis taskset -c $SERVER_CPU, loadtest taskset -c $LOAD_CPU, PRIO=$PRIO" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg topics "$TOPICS" --arg hist_store "${HIST_STORE:-server default}" \
  --arg matrix "$(cat "$OUT_DIR/matrix.txt")" \
  --arg cmd "RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP IO=$IO PRIO=$PRIO NODES=$NODES PARTS=\"$PARTS\" scripts/cluster-bench.sh" '
  {name: $name, started: $started, runs: $runs, commit: $commit, io: $io, nodes: $nodes,
   command: $cmd, topics: $topics, history_store: $hist_store,
   env: {kernel: $kernel, cpu: $cpu, nproc: $nproc, rustc: $rustc, redis: $redis, node: $node,
         socketio: $sio, pinning: $pin, "load average at start": $load},
   cases: [$matrix | split("\n")[] | select(length > 0) | split("|")
           | {id: .[0], topology: .[1], store: .[2], args: .[3]}]}' >"$OUT_DIR/meta.json"

# redis_publish RUN PORT: PUBLISH/s one Redis sustains (part redis), into $OUT_DIR/redis-publish
redis_publish() {
  local run=$1 port=$2 dir=$OUT_DIR/redis-publish i out
  mkdir -p "$dir"
  while ! free_port "$port"; do port=$((port + 1)); done
  REDIS_PORT=$port
  on_server_cpu "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --client-output-buffer-limit "pubsub 256mb 256mb 0" </dev/null >"$dir/run-$run.redis.log" 2>&1 &
  PIDS+=($!) NAMES+=(redis)
  wait_listening "$!" "$port" "$dir/run-$run.redis.log" || { stop_all; return 1; }
  for i in $(seq "$NODES"); do
    (exec taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" redis-cli -p "$port" SUBSCRIBE rh:t:t0 </dev/null >/dev/null 2>&1) &
    PIDS+=($!) NAMES+=(subscriber)
  done
  for _ in $(seq 50); do
    [ "$(redis-cli -p "$port" PUBSUB NUMSUB rh:t:t0 | tail -1)" = "$NODES" ] && break
    sleep 0.1
  done
  cpu_snapshot >"$dir/run-$run.cpu0"
  local t0 t1
  t0=$(date +%s.%N)
  out=$(taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" redis-benchmark -p "$port" -c "$NODES" -P 64 \
    -n "${REDIS_REQUESTS:-1000000}" --csv PUBLISH rh:t:t0 "$(head -c 160 /dev/zero | tr '\0' x)" </dev/null)
  t1=$(date +%s.%N)
  cpu_snapshot >"$dir/run-$run.cpu1"
  after=$(redis-cli -p "$port" PUBSUB NUMSUB rh:t:t0 | tail -1)
  echo "$out" >"$dir/run-$run.csv"
  stop_all
  REDIS_PORT=""
  jq -n --argjson run "$run" --arg csv "$out" --argjson nodes "$NODES" --argjson after "${after:-0}" \
    --argjson share "$(awk -v t0="$t0" -v t1="$t1" -v k="$CLK_TCK" '$1 == "redis0" && $2 == "total" {
      if (FILENAME ~ /cpu0$/) a = $3; else b = $3 } END {printf "%.3f", (b - a) / k / (t1 - t0)}' \
      "$dir/run-$run.cpu0" "$dir/run-$run.cpu1")" '
    {run: $run, redis_cpu_share: $share, subscribers: $nodes, subscribers_after: $after, pipeline: 64, connections: $nodes, payload_bytes: 160,
     publish_per_s: ($csv | split("\n")[1] | split(",")[1] | gsub("\""; "") | tonumber)}' >"$dir/run-$run.json"
  log "run $run/$RUNS redis PUBLISH: $(jq -r '"\(.publish_per_s | floor)/s, Redis at \(.redis_cpu_share * 100 | floor)% of its core, subscribers at the end: \(.subscribers_after)"' "$dir/run-$run.json")"
}

# --- runs ----------------------------------------------------------------------------------
port=$BASE_PORT
log "$NAME: $RUNS run(s) of $(wc -l <"$OUT_DIR/matrix.txt") cases; raw results in $OUT_DIR"
for run in $(seq "$RUNS"); do
  if [[ " $PARTS " == *" redis "* ]]; then
    port=$((port + 10))
    redis_publish "$run" "$port" || log "run $run redis PUBLISH: failed"
  fi
  while IFS='|' read -r id topo store args; do
    port=$((port + 10))
    [ "$port" -lt 60000 ] || port=$BASE_PORT
    dir=$OUT_DIR/$id
    mkdir -p "$dir"
    json=$dir/run-$run.json
    rm -f "$json"
    if ! start_topology "$topo" "$store" "$port" "$dir/run-$run"; then
      log "run $run $id: topology did not start"
      stop_all
      continue
    fi
    subs=$(printf '127.0.0.1:%s,' "${PORTS[@]}")
    proto=(); [[ "$topo" == sio-* ]] && proto=(--protocol socketio)
    cpu_snapshot >"$dir/run-$run.cpu0"
    commandstats >"$dir/run-$run.cmd0"
    set +e
    # shellcheck disable=SC2086 # $args is a word list on purpose
    taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$BIN/ringhub-loadtest" $args "${proto[@]}" \
      --target "127.0.0.1:${PORTS[0]}" --sub-targets "${subs%,}" \
      --label "$id" --json "$json" </dev/null >"$dir/run-$run.txt" 2>"$dir/run-$run.err"
    rc=$?
    set -e
    commandstats >"$dir/run-$run.cmd1"
    cpu_snapshot >"$dir/run-$run.cpu1"
    alive=$(for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && echo 1 || echo 0; done | paste -sd, -)
    stop_all
    if [ -f "$json" ]; then
      tmp=$(mktemp)
      python3 "$ROOT/scripts/cluster_condense.py" --annotate "$json" --run "$run" --rc "$rc" \
        --topology "$topo" --store "$store" --clk-tck "$CLK_TCK" --alive "$alive" --snapshots "$dir/run-$run" >"$tmp" && mv "$tmp" "$json"
      log "run $run/$RUNS $id: $(jq -r '[(.published_per_s | floor | tostring) + " pub/s",
            (.msgs_per_s | floor | tostring) + " deliveries/s",
            "p50 " + ((.latency_us.p50 // 0) | floor | tostring) + "µs",
            "redis cmds/pub " + ((.redis.commands_per_publication // 0) * 100 | round / 100 | tostring),
            "servers CPU " + (.servers.cpu_s | tostring) + "s",
            (if .ok then "" else "FAILED " + (.failures | join("; ")) end)] | join("  ")' "$json")"
    else
      log "run $run/$RUNS $id: no result (exit $rc): $(tail -2 "$dir/run-$run.err" "$dir/run-$run.txt" | tr '\n' ' ')"
    fi
  done <"$OUT_DIR/matrix.txt"
done
rm -rf "$STORE_DIR"

tmp=$(mktemp)
jq --arg f "$(date -u +%FT%TZ)" '.finished = $f' "$OUT_DIR/meta.json" >"$tmp" && mv "$tmp" "$OUT_DIR/meta.json"
# shellcheck disable=SC2086 # MERGE_DIRS is a list of directories
python3 "$ROOT/scripts/cluster_condense.py" $MERGE_DIRS "$OUT_DIR" \
  -o "$RESULTS_DIR/$RESULT_NAME.json" --md "$RESULTS_DIR/$RESULT_NAME.md"
log "condensed: $RESULTS_DIR/$RESULT_NAME.md and $RESULTS_DIR/$RESULT_NAME.json"
