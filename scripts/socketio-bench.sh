#!/usr/bin/env bash
# Socket.IO side by side (BENCHMARKS.md, "Socket.IO"): the same closed-loop fan-out (one
# publisher, SUBS subscribers of one room, W publications in flight, 64 B payloads) through
#   ringhub-sio   ringhub's /socket.io/ (Engine.IO v4 over WebSocket, Socket.IO v5, default
#                 events `join` and `publish` with ack)
#   socketio      socket.io 4.8 in one Node process (scripts/peers/socketio-cluster-server.js
#                 without Redis: the same events, `io.to(topic).emit(event, data)` then ack)
#   ringhub-ws    ringhub's own /ws envelope protocol (`subscribe`, `publish` without id)
# one server at a time, pinned to SERVER_CPU, the load generator to LOAD_CPU, in the same run;
# then the long-polling fan-out (subscribers on Engine.IO polling, publisher on WebSocket) and
# idle memory per Socket.IO client (N idle clients connected to the default namespace, over
# WebSocket and, part idlepoll, over long-polling with a GET pending).
# Builds nothing (cargo build --release -p ringhub -p ringhub-loadtest; scripts/peers/install.sh).
#
#   RUNS=3 scripts/socketio-bench.sh | tee /tmp/sio.txt      # then the summary is printed
#
# Environment:
#   PARTS        "fanout polling idle idlepoll" (default: all four; idlepoll: idle clients on
#                long-polling, a GET always pending, against POLL_SERVERS)
#   SERVERS      fanout servers (default "ringhub-sio socketio ringhub-ws")
#   POLL_SERVERS polling servers (default "ringhub-sio socketio")
#   IDLE_SERVERS (default "ringhub-sio socketio ringhub-ws"); N idle clients (10000), HOLD (3)
#   WINDOWS ("1 16 64"), POLL_WINDOWS ("16 64"), SUBS (1000), PAYLOAD (64), RUNS (3),
#   DURATION (5), WARMUP (1), IO (epoll: ringhub's shell, --shards 1)
#   PRIO         none | rt (default: chrt -f 10, as scripts/compare.sh) | nice
#   NODE_FLAGS   Node's flags (default with PRIO=rt: --single-threaded, see scripts/cluster-bench.sh)
#   SERVER_CPU (0) / LOAD_CPU (1)
#
# One output line per case:
#   run part server W deliveries/s server_cpu_ns/delivery server_cpu% loadtest_cpu%
# (idle: run idle server N bytes/client - -). Server CPU is utime+stime over the whole load
# generator run (connecting, warmup and drain included) ÷ deliveries. The summary gives the
# median per case and the ratios taken within each run (then their median).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PARTS=${PARTS:-"fanout polling idle idlepoll"}
SERVERS=${SERVERS:-"ringhub-sio socketio ringhub-ws"}
POLL_SERVERS=${POLL_SERVERS:-"ringhub-sio socketio"}
IDLE_SERVERS=${IDLE_SERVERS:-"ringhub-sio socketio ringhub-ws"}
WINDOWS=${WINDOWS:-"1 16 64"}
POLL_WINDOWS=${POLL_WINDOWS:-"16 64"}
SUBS=${SUBS:-1000}
PAYLOAD=${PAYLOAD:-64}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IO=${IO:-epoll}
N=${N:-10000}
HOLD=${HOLD:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PRIO=${PRIO:-rt}
case "$PRIO" in
  none) PRIO_CMD=() ;;
  rt) PRIO_CMD=(chrt -f 10) ;;
  nice) PRIO_CMD=(nice -n -20) ;;
  *) echo "PRIO must be none, rt or nice" >&2; exit 2 ;;
esac
NODE_FLAGS=${NODE_FLAGS-$([ "$PRIO" = rt ] && echo --single-threaded || true)}
SERVER="$TARGET/release/ringhub"
LOADTEST="$TARGET/release/ringhub-loadtest"
SIO_SERVER=$ROOT/scripts/peers/socketio-cluster-server.js
. "$(dirname "$0")/bench-lib.sh"
need_bins "$SERVER" "$LOADTEST"
[[ -f $ROOT/scripts/peers/node_modules/socket.io/package.json ]] || { echo "socket.io: run scripts/peers/install.sh" >&2; exit 2; }
need=$((N + 1024))
if (($(ulimit -n) < need)); then
  ulimit -n "$need" 2>/dev/null || { echo "RLIMIT_NOFILE $(ulimit -n) < $need: raise it (ulimit -n)" >&2; exit 2; }
fi
TMP=$(mktemp -d)
SRV=
trap '[[ -n $SRV ]] && kill "$SRV" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
PIN=(taskset -c "$SERVER_CPU" "${PRIO_CMD[@]}")

start() { # SERVER PORT: starts the server in the background, sets SRV
  local server=$1 port=$2
  case $server in
    ringhub-*)
      RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 RINGHUB_LIMITS_MAX_CONNECTIONS=0 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
        "${PIN[@]}" "$SERVER" --listen "127.0.0.1:$port" --shards 1 --io "$IO" --store memory \
        --stats-interval 0s >"$TMP/server.log" 2>&1 &
      ;;
    socketio)
      # shellcheck disable=SC2086
      "${PIN[@]}" node $NODE_FLAGS "$SIO_SERVER" "$port" >"$TMP/server.log" 2>&1 &
      ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  SRV=$!
  wait_listening "$port" "$server"
}

# The load generator's protocol for a server.
proto() { [[ $1 == ringhub-ws ]] && echo ringhub || echo socketio; }

fan() { # SERVER W TRANSPORT -> "deliveries/s cpu_ns/delivery server_cpu% loadtest_cpu%"
  local server=$1 w=$2 transport=$3 port t0 t1 w0 w1
  port=$(free_port)
  start "$server" "$port"
  t0=$(ticks "$SRV")
  w0=$(date +%s.%N)
  taskset -c "$LOAD_CPU" "${PRIO_CMD[@]}" "$LOADTEST" --target "127.0.0.1:$port" --protocol "$(proto "$server")" \
    --json "$TMP/out.json" fanout --subscribers "$SUBS" --payload "$PAYLOAD" --max --window "$w" \
    --transport "$transport" --duration "$DURATION" --warmup "$WARMUP" --verify >"$TMP/lt.log" 2>&1 ||
    { echo "load generator failed ($server W=$w $transport):" >&2; cat "$TMP/lt.log" "$TMP/server.log" >&2; exit 1; }
  t1=$(ticks "$SRV")
  w1=$(date +%s.%N)
  stop_server
  python3 - "$TMP/out.json" "$((t1 - t0))" "$HZ" "$w0" "$w1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
ticks, hz, wall = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[5]) - float(sys.argv[4])
n = j["delivered_total"]
lt = 100 * j["loadtest_cpu_s"] / j["loadtest_wall_s"]
print(f"{j['msgs_per_s']:.0f} {ticks * 1e9 / hz / n:.0f} {100 * ticks / hz / wall:.0f} {lt:.0f}")
PY
}

idle() { # SERVER [TRANSPORT] -> bytes of server RSS growth per idle client
  local server=$1 transport=${2:-websocket} port
  local more=()
  [[ $transport == polling ]] && more=(--transport polling)
  port=$(free_port)
  start "$server" "$port"
  taskset -c "$LOAD_CPU" "$LOADTEST" --protocol "$(proto "$server")" idle --target "127.0.0.1:$port" \
    --count "$N" --hold "$HOLD" --source-addrs 4 --server-pid "$SRV" --json "$TMP/idle.json" "${more[@]}" >"$TMP/lt.log" 2>&1 ||
    { echo "load generator failed (idle $server $transport):" >&2; cat "$TMP/lt.log" "$TMP/server.log" >&2; exit 1; }
  stop_server
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round((j["rss_after_kb"]-j["rss_before_kb"])*1024/j["connections"]))' "$TMP/idle.json"
}

{
  echo "# socketio-bench: $SUBS subscribers, $PAYLOAD B, ${DURATION}s after ${WARMUP}s warmup; ringhub --io $IO --shards 1 --store memory; server on core $SERVER_CPU, load generator on core $LOAD_CPU, PRIO=$PRIO; node $(node --version) $NODE_FLAGS, socket.io $(node -p 'require(process.argv[1]).version' "$ROOT/scripts/peers/node_modules/socket.io/package.json"); $RUNS run(s)"
  echo "# ringhub $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo -); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-4s %-8s %-12s %-6s %12s %12s %8s %8s\n' run part server W "deliv/s" "CPU ns/del" "srv CPU%" "LT CPU%"
  for run in $(seq 1 "$RUNS"); do
    for part in $PARTS; do
      case $part in
        fanout)
          for w in $WINDOWS; do
            for s in $SERVERS; do
              printf '%-4s %-8s %-12s %-6s %12s %12s %8s %8s\n' "$run" fanout "$s" "$w" $(fan "$s" "$w" websocket)
            done
          done
          ;;
        polling)
          for w in $POLL_WINDOWS; do
            for s in $POLL_SERVERS; do
              printf '%-4s %-8s %-12s %-6s %12s %12s %8s %8s\n' "$run" polling "$s" "$w" $(fan "$s" "$w" polling)
            done
          done
          ;;
        idle)
          for s in $IDLE_SERVERS; do
            printf '%-4s %-8s %-12s %-6s %12s %12s %8s %8s\n' "$run" idle "$s" "$N" "$(idle "$s")" - - -
          done
          ;;
        idlepoll)
          for s in $POLL_SERVERS; do
            printf '%-4s %-8s %-12s %-6s %12s %12s %8s %8s\n' "$run" idlepoll "$s" "$N" "$(idle "$s" polling)" - - -
          done
          ;;
        *) echo "unknown part $part" >&2; exit 2 ;;
      esac
    done
  done
} | tee "$TMP/lines.txt"

# Medians per case; ratios within each run (ringhub-sio ÷ socketio, ringhub-sio ÷ ringhub-ws).
python3 - "$TMP/lines.txt" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
val = {}
for run, part, server, w, v, *_ in rows:
    val[(part, server, w, run)] = float(v)
cases = sorted({(p, s, w) for p, s, w, _ in val}, key=lambda c: (c[0], int(c[2]), c[1]))
print("\n# medians (value: deliveries/s; idle, idlepoll: bytes per client)")
for p, s, w in cases:
    vs = [v for (pp, ss, ww, _), v in val.items() if (pp, ss, ww) == (p, s, w)]
    print(f"{p:8} {s:12} {w:>6} {st.median(vs):14,.0f}   runs: {', '.join(f'{x:,.0f}' for x in vs)}")
print("\n# ratios within each run, median (runs)")
for p in sorted({c[0] for c in cases}):
    for w in sorted({c[2] for c in cases if c[0] == p}, key=int):
        for a, b in (("ringhub-sio", "socketio"), ("ringhub-sio", "ringhub-ws"), ("socketio", "ringhub-sio")):
            if not p.startswith("idle") and a == "socketio":
                continue
            rs = [val[(p, a, w, r)] / val[(p, b, w, r)] for (pp, ss, ww, r) in val
                  if (pp, ss, ww) == (p, a, w) and (p, b, w, r) in val and val[(p, b, w, r)]]
            if rs:
                print(f"{p:8} W/N {w:>6} {a} / {b}: {st.median(rs):.2f}x   runs: {', '.join(f'{x:.2f}' for x in rs)}")
PY
