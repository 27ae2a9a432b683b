#!/usr/bin/env bash
# Runs one ringhub-loadtest scenario against ringhub and every peer server in turn and
# prints one comparison table.
#
#   scripts/compare.sh SCENARIO [extra ringhub-loadtest args]
#   SCENARIO = fanout | echo | connect | idle
#   e.g. scripts/compare.sh fanout --subscribers 1000 --payload 64 --max --duration 10
#
# Environment:
#   SERVERS      servers to run (default: "ringhub-uring ringhub-epoll bun node-ws tungstenite uws")
#   UWS_BIN      uWebSockets peer binary for server `uws` (run as `$UWS_BIN PORT`); unset: skipped
#   SERVER_CPU   core the server is pinned to (default 0); LOAD_CPU for the loadtest (default 1)
#   PRIO         scheduling of server and loadtest: none (default) | rt (chrt -f 10, SCHED_FIFO:
#                other load on the machine, even niced builds, cannot delay their wake-ups) |
#                nice (nice -n -20)
#   OUT_DIR      where per-server JSON/logs go (default: a new /tmp/ringhub-compare.* dir)
#   BASE_PORT    first port to use (default 9400); CARGO_TARGET_DIR as usual
#   NO_BUILD=1   skip the cargo builds
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
SCENARIO=$1
shift
case "$SCENARIO" in fanout|echo|connect|idle) ;; *) usage ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
PEERS=$ROOT/scripts/peers
SERVERS=${SERVERS:-"ringhub-uring ringhub-epoll bun node-ws tungstenite uws"}
UWS_BIN=${UWS_BIN:-}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-9400}
PRIO=${PRIO:-none}
case "$PRIO" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -20) ;;
  *) echo "compare: PRIO must be none, rt or nice" >&2; exit 2 ;;
esac
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/ringhub-compare.XXXXXX)}
mkdir -p "$OUT_DIR"
CLK_TCK=$(getconf CLK_TCK)

SERVER_PID=""
# Stops the current server: SIGTERM, then SIGKILL if it is still there after 5 s.
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server $SERVER_PID ignored SIGTERM for 5s: SIGKILL"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

log() { echo "compare: $*" >&2; }

# --- build ---------------------------------------------------------------------------
RINGHUB_OK=1
if [ "${NO_BUILD:-0}" != 1 ]; then
  log "building ringhub-loadtest (release)"
  (cd "$ROOT" && cargo build --release -q -p ringhub-loadtest)
  if [[ " $SERVERS " == *" ringhub-"* ]]; then
    log "building ringhub (release)"
    if ! (cd "$ROOT" && cargo build --release -q -p ringhub --bin ringhub); then
      log "ringhub failed to build: skipping it"
      RINGHUB_OK=0
    fi
  fi
fi
[ -x "$BIN/ringhub" ] || RINGHUB_OK=0
if [[ " $SERVERS " == *" bun "* || " $SERVERS " == *" node-ws "* ]]; then
  "$PEERS/install.sh" >&2
fi

# --- servers -------------------------------------------------------------------------
# start_server NAME PORT: starts NAME pinned to SERVER_CPU, sets SERVER_PID and PROTOCOL.
start_server() {
  local name=$1 port=$2 mode=broadcast
  case "$SCENARIO" in echo) mode=echo ;; esac
  PROTOCOL=raw
  local pin=(taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}")
  case "$name" in
    ringhub-uring|ringhub-epoll)
      [ "$RINGHUB_OK" = 1 ] || return 1
      PROTOCOL=ringhub
      # The peers have no limits: measure ringhub without its default rate limit and caps too.
      RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 \
        RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
        "${pin[@]}" "$BIN/ringhub" --listen "127.0.0.1:$port" --shards 1 --io "${name#ringhub-}" --store memory \
        --echo-path /echo >"$OUT_DIR/$name.server.log" 2>&1 &
      ;;
    bun)
      PORT=$port "${pin[@]}" "$PEERS/node_modules/@oven/bun-linux-x64/bin/bun" "$PEERS/bun-server.js" \
        >"$OUT_DIR/$name.server.log" 2>&1 &
      ;;
    node-ws)
      PORT=$port "${pin[@]}" node "$PEERS/node-ws-server.js" >"$OUT_DIR/$name.server.log" 2>&1 &
      ;;
    tungstenite)
      "${pin[@]}" "$BIN/ringhub-peer-tungstenite" --listen "127.0.0.1:$port" --mode "$mode" \
        --threads 1 >"$OUT_DIR/$name.server.log" 2>&1 &
      ;;
    uws)
      if [ -z "$UWS_BIN" ]; then log "uws: UWS_BIN is not set (path to the uWebSockets peer binary)"; return 1; fi
      if [ ! -x "$UWS_BIN" ]; then log "uws: UWS_BIN=$UWS_BIN is not an executable"; return 1; fi
      "${pin[@]}" "$UWS_BIN" "$port" >"$OUT_DIR/$name.server.log" 2>&1 &
      ;;
    *) log "unknown server $name"; return 1 ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$name exited during startup: $(tail -3 "$OUT_DIR/$name.server.log")"
      SERVER_PID=""
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not listen on port $port within 10s"
  cleanup
  SERVER_PID=""
  return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Task-busy ticks (user + nice + system + steal; irq and softirq time, which the kernel
# charges to no task, are left out) and total ticks of one core from /proc/stat ("busy total").
core_ticks() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print $2 + $3 + $4 + $9, t}' /proc/stat; }
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# --- runs ----------------------------------------------------------------------------
port=$BASE_PORT
for name in $SERVERS; do
  port=$((port + 1))
  json=$OUT_DIR/$name.json
  rm -f "$json"
  if ! start_server "$name" "$port"; then
    log "skipping $name"
    continue
  fi
  extra=()
  [ "$SCENARIO" = idle ] && extra=(--server-pid "$SERVER_PID")
  log "$name: running $SCENARIO (server on core $SERVER_CPU, loadtest on core $LOAD_CPU)"
  t0=$(cpu_ticks "$SERVER_PID")
  read -r sb0 st0 < <(core_ticks "$SERVER_CPU")
  read -r lb0 lt0 < <(core_ticks "$LOAD_CPU")
  set +e
  taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$BIN/ringhub-loadtest" "$SCENARIO" --target "127.0.0.1:$port" \
    --protocol "$PROTOCOL" --label "$name" --json "$json" "${extra[@]}" "$@" \
    | tee "$OUT_DIR/$name.txt" >&2
  rc=${PIPESTATUS[0]}
  set -e
  read -r sb1 st1 < <(core_ticks "$SERVER_CPU")
  read -r lb1 lt1 < <(core_ticks "$LOAD_CPU")
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    t1=$(cpu_ticks "$SERVER_PID")
    rss=$(status_kb "$SERVER_PID" VmRSS)
    hwm=$(status_kb "$SERVER_PID" VmHWM)
  else
    log "$name died during the run"
    t1=$t0 rss=0 hwm=0
  fi
  cleanup
  SERVER_PID=""
  if [ -f "$json" ]; then
    cpu=$(awk -v a="$t0" -v b="$t1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')
    tmp=$(mktemp)
    # Other load on the two cores during the run: busy ticks of the core minus the server's
    # (resp. the loadtest's) own CPU time, as a share of the core.
    other=$(awk -v sb="$((sb1 - sb0))" -v st="$((st1 - st0))" -v lb="$((lb1 - lb0))" -v lt="$((lt1 - lt0))" \
      -v srv="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" -v tck="$CLK_TCK" \
      -v ltcpu="$(jq -r '.loadtest_cpu_s // 0' "$json")" 'BEGIN {
        s = st > 0 ? (sb - srv) / st : 0; l = lt > 0 ? (lb - ltcpu * tck) / lt : 0;
        if (s < 0) s = 0; if (l < 0) l = 0;
        printf "{\"server_core\": %.3f, \"loadtest_core\": %.3f}", s, l }')
    jq --argjson cpu "$cpu" --argjson rss "${rss:-0}" --argjson hwm "${hwm:-0}" --argjson rc "$rc" \
      --argjson other "$other" --arg prio "$PRIO" \
      '.server = {cpu_s: $cpu, rss_kb: $rss, hwm_kb: $hwm, loadtest_exit: $rc}
       | .machine = {other_load: $other, prio: $prio}' "$json" >"$tmp"
    mv "$tmp" "$json"
  else
    log "$name: loadtest produced no result (exit $rc)"
  fi
done

# --- table ---------------------------------------------------------------------------
echo
echo "scenario: $SCENARIO $*"
echo "server pinned to core $SERVER_CPU (taskset -c $SERVER_CPU), ringhub-loadtest to core $LOAD_CPU (taskset -c $LOAD_CPU), PRIO=$PRIO"
echo "other = CPU share of the server's / the loadtest's core used by other tasks during the run (with PRIO=rt they only get what the two leave idle)"
echo "server CPU s = utime+stime over the whole loadtest run (connect, warmup, measure, drain); RSS = peak VmHWM"
echo "CPU ns/msg = server CPU s / messages delivered (fanout) or echoed (echo) over the same whole run; LT CPU = loadtest CPU share of its core"
printf '%-15s %14s %11s %11s %9s %11s %12s %7s %11s  %s\n' server msgs/s p50 p99 "CPU s" "CPU ns/msg" "peak RSS" "LT CPU" other note
for name in $SERVERS; do
  json=$OUT_DIR/$name.json
  if [ ! -f "$json" ]; then
    printf '%-15s %14s\n' "$name" "not run"
    continue
  fi
  jq -r '[.label, (.msgs_per_s | floor | tostring),
          ((.latency_us.p50 // 0) | . * 10 | round / 10 | tostring) + "µs",
          ((.latency_us.p99 // 0) | . * 10 | round / 10 | tostring) + "µs",
          (.server.cpu_s | tostring),
          ((.counts.delivered // .counts.received // 0) as $n
           | if $n > 0 then (.server.cpu_s / $n * 1e9 | round | tostring) else "-" end),
          ((.server.hwm_kb / 1024) | . * 10 | round / 10 | tostring) + " MB",
          (if (.loadtest_wall_s // 0) > 0 then (.loadtest_cpu_s / .loadtest_wall_s * 100 | round | tostring) + "%" else "-" end),
          (if .machine.other_load then ((.machine.other_load.server_core * 100 | round | tostring) + "%/" + (.machine.other_load.loadtest_core * 100 | round | tostring) + "%") else "-" end),
          (if .ok then "" else "FAILED: " + (.failures | join("; ")) end)
          + (if .rss_per_conn_kb then "RSS/conn " + (.rss_per_conn_kb * 100 | round / 100 | tostring) + " kB" else "" end)]
         | @tsv' "$json" |
    awk -F'\t' '{printf "%-15s %14s %11s %11s %9s %11s %12s %7s %11s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
done

echo
for rh in ringhub-uring ringhub-epoll; do
  [ -f "$OUT_DIR/$rh.json" ] || continue
  for peer in $SERVERS; do
    case "$peer" in ringhub-*) continue ;; esac
    [ -f "$OUT_DIR/$peer.json" ] || continue
    jq -rn --slurpfile a "$OUT_DIR/$rh.json" --slurpfile b "$OUT_DIR/$peer.json" '
      def ratio(x; y): if (y // 0) == 0 then "n/a" else ((x / y) * 100 | round / 100 | tostring) + "x" end;
      $a[0] as $r | $b[0] as $p |
      "\($r.label) vs \($p.label): msgs/s \(ratio($r.msgs_per_s; $p.msgs_per_s)), " +
      "p99 \(ratio($r.latency_us.p99; $p.latency_us.p99)), CPU s \(ratio($r.server.cpu_s; $p.server.cpu_s)), " +
      "peak RSS \(ratio($r.server.hwm_kb; $p.server.hwm_kb))"'
  done
done
echo "results: $OUT_DIR"
