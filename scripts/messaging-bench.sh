#!/usr/bin/env bash
# Measurement for the messaging issue (protocol v2: history, recovery, durable user messages).
# Runs every case below RUNS times, interleaved (run 1 of every case, then run 2, ...), one
# server at a time pinned to SERVER_CPU and ringhub-loadtest pinned to LOAD_CPU (both under
# SCHED_FIFO with PRIO=rt, as scripts/campaign.sh does), then condenses everything with
# scripts/messaging_condense.py into docs/benchmarks/<NAME>.md and .json (medians of the runs,
# ratios taken within each run, then their median).
#
#   scripts/messaging-bench.sh                       # everything, 3 runs
#   RUNS=1 DURATION=2 WARMUP=1 PARTS="recover" scripts/messaging-bench.sh
#   # what BENCHMARKS.md reports: two invocations, condensed together
#   NO_BUILD=1 RUNS=3 DURATION=5 WARMUP=1 PARTS="history durable recover" scripts/messaging-bench.sh
#   NO_BUILD=1 RUNS=3 DURATION=5 WARMUP=1 PARTS=fanout EV2_BIN=/work/target-bench9-ev2/release/ringhub \
#     NAME=messaging-fanout RESULT_NAME=messaging MERGE_DIRS=/tmp/ringhub-messaging/messaging \
#     scripts/messaging-bench.sh
#   scripts/messaging-bench.sh --list                # the cases and their loadtest arguments
#
# Groups (PARTS, default all four):
#   history   fan-out publishing to a topic with history (hist:t0, history_size 100) with the
#             memory and the redb store, and to a topic without history (nohi:t0, the same
#             length, so history ÷ none compares history alone, not 5 more bytes of topic per
#             message and delivery; NOHIST_PREFIX=t gives the t0 of the earlier runs) on the
#             same build, SUBS subscribers (default "1 10"), W in WINDOWS (default "1 16 64 512")
#   durable   POST /api/v1/send with "durable": true, CONCURRENCY requests in flight (default
#             "64 256"), 10,000 users of which 100 connected and acking; redb and memory, plus
#             a plain (not durable) send at the largest concurrency for reference
#   recover   subscribe with since after 1,000 missed publications, REPS repetitions (default 50)
#             per run, memory and redb
#   fanout    the engine-v2 fan-out (1,000 subscribers, W = 1/16/64/512, no history) on this
#             build and on EV2_BIN (engine-v2 commit 5a7d70a built separately, see below)
#
# Environment:
#   RUNS (3), DURATION (6 measured seconds), WARMUP (2), PAYLOAD (64), IO (epoll: --io of ringhub)
#   NOHIST_PREFIX the topic prefix of the history group's no-history cases (default nohi:t)
#   SHARDS (1: --shards of ringhub; every shard shares SERVER_CPU)
#   STORES        the stores of group history (default "memory redb")
#   PRIO          none | nice | rt (default rt: chrt -f 10 for server and loadtest)
#   SERVER_CPU (0), LOAD_CPU (1), BASE_PORT (9600)
#   EV2_BIN       the engine-v2 ringhub binary for group fanout; unset or missing: only this build
#                 (git worktree add /tmp/ev2 5a7d70a && cd /tmp/ev2 &&
#                  CARGO_TARGET_DIR=/work/target-bench9-ev2 cargo build --release -p ringhub --bin ringhub)
#   STORE_DIR     where the redb stores go (default /tmp/ringhub-messaging/store; must be a real
#                 disk, not tmpfs, or fsync is free); each server start gets a fresh one
#   STORE_SYNC    the redb store's [store] sync: always (default) | interval; STORE_SYNC_INTERVAL
#                 its sync_interval (default 1s)
#   NAME          run name (default messaging); OUT_DIR raw results (default /tmp/ringhub-messaging/NAME)
#   RESULTS_DIR   where RESULT_NAME.md / .json go (default docs/benchmarks; RESULT_NAME default NAME)
#   MERGE_DIRS    raw result dirs of earlier runs (e.g. other PARTS) condensed together with this one
#   CARGO_TARGET_DIR as usual; NO_BUILD=1 skips `cargo build --release -p ringhub -p ringhub-loadtest`
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
PAYLOAD=${PAYLOAD:-64}
IO=${IO:-epoll}
PRIO=${PRIO:-rt}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-9600}
PARTS=${PARTS:-"history durable recover fanout"}
SUBS=${SUBS:-"1 10"}
WINDOWS=${WINDOWS:-"1 16 64 512"}
SHARDS=${SHARDS:-1}
# Same length as hist:t (the history cases' prefix) and matching no pattern of TOPICS.
NOHIST_PREFIX=${NOHIST_PREFIX:-nohi:t}
STORES=${STORES:-"memory redb"}
CONCURRENCY=${CONCURRENCY:-"64 256"}
REPS=${REPS:-50}
NAME=${NAME:-messaging}
OUT_DIR=${OUT_DIR:-/tmp/ringhub-messaging/$NAME}
STORE_DIR=${STORE_DIR:-/tmp/ringhub-messaging/store}
STORE_SYNC=${STORE_SYNC:-always}
STORE_SYNC_INTERVAL=${STORE_SYNC_INTERVAL:-1s}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/benchmarks}
RESULT_NAME=${RESULT_NAME:-$NAME}
MERGE_DIRS=${MERGE_DIRS:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
EV2_BIN=${EV2_BIN:-}
JWT_SECRET=messaging-bench-secret-0123456789abcdef
TOPICS='[{"pattern":"hist:*","history_size":100},{"pattern":"rec:*","history_size":1000}]'
case "$PRIO" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -20) ;;
  *) echo "messaging-bench: PRIO must be none, rt or nice" >&2; exit 2 ;;
esac

T="--duration $DURATION --warmup $WARMUP"
# id | server (cur | ev2) | store (memory | redb | -) | loadtest arguments
matrix() {
  local g s w c st
  for g in $PARTS; do
    case "$g" in
      history)
        for s in $SUBS; do
          for w in $WINDOWS; do
            echo "nohist-s$s-w$w|cur|memory|fanout --topic-prefix $NOHIST_PREFIX --subscribers $s --payload $PAYLOAD --max --window $w $T"
            for st in $STORES; do
              echo "hist-$st-s$s-w$w|cur|$st|fanout --topic-prefix hist:t --offsets --subscribers $s --payload $PAYLOAD --max --window $w $T"
            done
          done
        done ;;
      durable)
        for c in $CONCURRENCY; do
          for st in redb memory; do
            echo "durable-$st-c$c|cur|$st|durable --concurrency $c --users 10000 --connected 100 --jwt-secret $JWT_SECRET --payload $PAYLOAD $T"
          done
        done
        c=${CONCURRENCY##* }
        echo "plain-memory-c$c|cur|memory|durable --plain --concurrency $c --users 10000 --connected 100 --jwt-secret $JWT_SECRET --payload $PAYLOAD $T" ;;
      recover)
        for st in memory redb; do
          echo "recover-$st|cur|$st|recover --topic rec:t0 --missed 1000 --repetitions $REPS --payload $PAYLOAD"
        done ;;
      fanout)
        for w in $WINDOWS; do
          echo "fanout-s1000-w$w-cur|cur|memory|fanout --subscribers 1000 --payload $PAYLOAD --max --window $w $T"
          if [ -n "$EV2_BIN" ]; then
            echo "fanout-s1000-w$w-ev2|ev2|-|fanout --subscribers 1000 --payload $PAYLOAD --max --window $w $T"
          fi
        done ;;
      *) echo "messaging-bench: unknown group $g" >&2; exit 2 ;;
    esac
  done
}

if [ "${1:-}" = --list ]; then
  matrix | awk -F'|' '{printf "%-26s %-4s %-7s ringhub-loadtest %s\n", $1, $2, $3, $4}'
  exit 0
fi
[ $# -eq 0 ] || { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
if [ -n "$EV2_BIN" ] && [ ! -x "$EV2_BIN" ]; then
  echo "messaging-bench: EV2_BIN=$EV2_BIN is not an executable" >&2
  exit 2
fi

mkdir -p "$OUT_DIR" "$STORE_DIR" "$RESULTS_DIR"
log() { echo "messaging-bench: $*" | tee -a "$OUT_DIR/bench.log" >&2; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  log "building ringhub and ringhub-loadtest (release)"
  (cd "$ROOT" && cargo build --release -q -p ringhub -p ringhub-loadtest)
fi

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT INT TERM

# start_server KIND STORE PORT LOG: this build (cur) with a fresh store, or engine-v2 (ev2).
start_server() {
  local kind=$1 store=$2 port=$3 logf=$4 bin=$BIN/ringhub args=()
  args=(--listen "127.0.0.1:$port" --shards "$SHARDS" --io "$IO")
  if [ "$kind" = cur ]; then
    local dir=$STORE_DIR/s$port
    rm -rf "$dir"
    args+=(--store "$store" --store-path "$dir")
  else
    bin=$EV2_BIN
  fi
  RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 \
    RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGHUB_TOPICS="$TOPICS" RINGHUB_API_KEY=bench \
    RINGHUB_AUTH_JWT_SECRET="$JWT_SECRET" RINGHUB_AUTH_ANONYMOUS=true RINGHUB_UI_ENABLED=false \
    RINGHUB_STORE_SYNC="$STORE_SYNC" RINGHUB_STORE_SYNC_INTERVAL="$STORE_SYNC_INTERVAL" \
    taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}" "$bin" "${args[@]}" >"$logf" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited: $(tail -3 "$logf")"; SERVER_PID=""; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "server did not listen on $port"
  stop_server
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# --- metadata --------------------------------------------------------------------------
commit=$(cd "$ROOT" && git rev-parse --short HEAD)
(cd "$ROOT" && git diff --quiet HEAD) || commit="$commit (+ uncommitted changes)"
ev2_commit=""
[ -n "$EV2_BIN" ] && ev2_commit=$(git -C "$(dirname "$EV2_BIN")/../.." rev-parse --short HEAD 2>/dev/null || echo "5a7d70a (EV2_BIN=$EV2_BIN)")
matrix >"$OUT_DIR/matrix.txt"
jq -n --arg name "$NAME" --arg started "$(date -u +%FT%TZ)" --argjson runs "$RUNS" \
  --arg commit "$commit" --arg ev2 "${ev2_commit:-not run}" --arg io "$IO" \
  --arg kernel "$(uname -r)" --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg nproc "$(nproc)" --arg rustc "$(rustc --version 2>/dev/null || true)" \
  --arg pin "server taskset -c $SERVER_CPU, loadtest taskset -c $LOAD_CPU, PRIO=$PRIO" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg store_fs "$(df -T "$STORE_DIR" | awk 'NR==2 {print $2}')" \
  --arg topics "$TOPICS" --arg matrix "$(cat "$OUT_DIR/matrix.txt")" \
  --arg cmd "RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP IO=$IO PRIO=$PRIO SHARDS=$SHARDS STORE_SYNC=$STORE_SYNC PARTS=\"$PARTS\" ${EV2_BIN:+EV2_BIN=$EV2_BIN }scripts/messaging-bench.sh" '
  {name: $name, started: $started, runs: $runs, commit: $commit, ev2_commit: $ev2, io: $io,
   command: $cmd, topics: $topics,
   env: {kernel: $kernel, cpu: $cpu, nproc: $nproc, rustc: $rustc, pinning: $pin,
         "load average at start": $load, "store filesystem": $store_fs},
   cases: [$matrix | split("\n")[] | select(length > 0) | split("|")
           | {id: .[0], server: .[1], store: .[2], args: .[3]}]}' >"$OUT_DIR/meta.json"

# --- runs ----------------------------------------------------------------------------------
port=$BASE_PORT
log "$NAME: $RUNS run(s) of $(wc -l <"$OUT_DIR/matrix.txt") cases; raw results in $OUT_DIR"
for run in $(seq "$RUNS"); do
  while IFS='|' read -r id kind store args; do
    port=$((port + 1))
    [ "$port" -lt 60000 ] || port=$BASE_PORT
    dir=$OUT_DIR/$id
    mkdir -p "$dir"
    json=$dir/run-$run.json
    rm -f "$json"
    if ! start_server "$kind" "$store" "$port" "$dir/run-$run.server.log"; then
      log "run $run $id: server did not start"
      continue
    fi
    t0=$(cpu_ticks "$SERVER_PID")
    set +e
    # shellcheck disable=SC2086 # $args is a word list on purpose
    taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$BIN/ringhub-loadtest" $args --target "127.0.0.1:$port" \
      --label "$id" --json "$json" >"$dir/run-$run.txt" 2>"$dir/run-$run.err"
    rc=$?
    set -e
    t1=$t0 hwm=0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      t1=$(cpu_ticks "$SERVER_PID")
      hwm=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$SERVER_PID/status")
    fi
    stop_server
    if [ -f "$json" ]; then
      tmp=$(mktemp)
      jq --argjson cpu "$(awk -v a="$t0" -v b="$t1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')" \
        --argjson hwm "${hwm:-0}" --argjson rc "$rc" --arg kind "$kind" --arg store "$store" --argjson run "$run" \
        '.server = {cpu_s: $cpu, hwm_kb: $hwm, kind: $kind, store: $store} | .loadtest_exit = $rc | .run = $run' \
        "$json" >"$tmp" && mv "$tmp" "$json"
      log "run $run/$RUNS $id: $(jq -r '[(.published_per_s // .sends_per_s // .msgs_per_s | floor | tostring) + "/s",
            "p50 " + ((.latency_us.p50 // 0) | floor | tostring) + "µs", "server CPU " + (.server.cpu_s | tostring) + "s",
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
python3 "$ROOT/scripts/messaging_condense.py" $MERGE_DIRS "$OUT_DIR" \
  -o "$RESULTS_DIR/$RESULT_NAME.json" --md "$RESULTS_DIR/$RESULT_NAME.md"
log "condensed: $RESULTS_DIR/$RESULT_NAME.md and $RESULTS_DIR/$RESULT_NAME.json"
