#!/usr/bin/env bash
# Soak test (issue #8): for each I/O backend, a plain and a TLS ringhub (2 shards each) under
# mixed load for --duration seconds, with RSS and open descriptors sampled every second, then
# checked to come back to their baselines. See scripts/README.md ("soak.sh").
#
#   scripts/soak.sh [--duration SECONDS] [--io uring|epoll|both] [--out DIR]
#
# Exit 0: every backend passed; 1: a check failed (the reason is printed); 2: usage/setup error.
# All traffic goes to 127.0.0.1; every load loop stops by itself at the deadline.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=600
IOS=both
OUT=${SOAK_OUT:-target/soak}
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --io) IOS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 10 && $DURATION -le 86400 ]] \
  || { echo "soak: --duration must be 10..86400 seconds" >&2; exit 2; }
case $IOS in both) IOS="uring epoll" ;; uring|epoll) ;; *) echo "soak: --io uring|epoll|both" >&2; exit 2 ;; esac

# Tunables (environment). Bounds are justified in scripts/README.md.
WARMUP=${SOAK_WARMUP:-6}              # seconds of the same load mix before the RSS baseline
SETTLE=${SOAK_SETTLE:-15}             # seconds sampled after the load stops
RSS_SLACK_PCT=${SOAK_RSS_SLACK_PCT:-25}   # final RSS may exceed the baseline by this much ...
RSS_SLACK_MB=${SOAK_RSS_SLACK_MB:-12}     # ... or by this many MiB, whichever is larger
FD_SLACK=${SOAK_FD_SLACK:-0}          # descriptors allowed above the baseline at the end
QUEUE=${SOAK_OUTBOUND_QUEUE:-262144}  # small outbound queue, so slow consumers are cut quickly
PORT=${SOAK_PORT:-9501}
BIN=${CARGO_TARGET_DIR:-target}/release
API_KEY="soak-$$-$RANDOM$RANDOM"

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release --bin ringhub -p ringhub -q
  cargo build --release -p ringhub-loadtest -q
fi
for b in ringhub ringhub-loadtest; do
  [[ -x $BIN/$b ]] || { echo "soak: $BIN/$b not built" >&2; exit 2; }
done
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/ringhub-soak.XXXXXX)

# --- cleanup: every process this script started, by pid --------------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.log" \
  || { cat "$TMP/openssl.log"; echo "soak: openssl failed" >&2; exit 2; }

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN {printf "%.1f", a - b}'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { if [[ -d /proc/$1/fd ]]; then ls "/proc/$1/fd" 2>/dev/null | wc -l; else echo 0; fi; }
alive() { [[ -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" 2>/dev/null || true; }

# start_server NAME PORT [extra env...]: ringhub under `timeout` (a bound should the trap not run);
# sets SERVER_PID to ringhub's own pid (for /proc sampling).
start_server() {
  local name=$1 port=$2; shift 2
  env RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 \
    RINGHUB_OUTBOUND_QUEUE="$QUEUE" RINGHUB_API_KEY="$API_KEY" "$@" \
    timeout -s INT $((DURATION + WARMUP + SETTLE + 300)) \
    "$BIN/ringhub" --listen "127.0.0.1:$port" --shards 2 --io "$IO" --stats-interval 0s --store memory \
    >"$OUT/server-$IO-$name.log" 2>&1 &
  local tpid=$! p=""
  PIDS+=("$tpid")
  for _ in $(seq 50); do p=$(pgrep -P "$tpid" -x ringhub || true); [[ -n $p ]] && break; sleep 0.1; done
  [[ -n $p ]] || { echo "soak: $name ringhub did not start"; cat "$OUT/server-$IO-$name.log"; return 1; }
  PIDS+=("$p")
  SERVER_PID=$p
  wait_port "$port" || { echo "soak: $name ringhub not listening"; cat "$OUT/server-$IO-$name.log"; return 1; }
}

# sampler: one CSV row per second until $TMP/stop exists.
sampler() {
  local csv=$1 t0=$2 ph
  echo "t,phase,plain_rss_kb,plain_fds,plain_alive,tls_rss_kb,tls_fds,tls_alive" >"$csv"
  while [[ ! -e $TMP/stop ]]; do
    ph=$(cat "$TMP/phase" 2>/dev/null || echo "?")
    local a1=1 a2=1
    alive "$PLAIN" || a1=0
    alive "$TLS" || a2=0
    printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$(since "$t0")" "$ph" \
      "$(rss_kb "$PLAIN")" "$(fds "$PLAIN")" "$a1" "$(rss_kb "$TLS")" "$(fds "$TLS")" "$a2" >>"$csv"
    sleep 1
  done
}

# --- the load: every loop runs until $1 (epoch seconds) and writes a summary line ------------
churn_loop() {  # connection churn: handshake storms of 500 with 16 in flight
  local until=$1 runs=0 bad=0
  while (( $(date +%s) < ${until%.*} )); do
    runs=$((runs + 1))
    timeout 40 "$BIN/ringhub-loadtest" --target "127.0.0.1:$PP" --threads 1 connect --count 500 \
      --concurrency 16 --timeout 30 >"$TMP/churn.out" 2>&1 || { bad=$((bad + 1)); cp "$TMP/churn.out" "$OUT/churn-$IO-failed.txt"; }
    sleep 0.3
  done
  echo "{\"client\":\"churn\",\"runs\":$runs,\"failed_runs\":$bad}"
}

fanout_loop() {  # open-loop pub/sub, verified exactly-once: 100 subscribers, 4 topics, 500 msg/s
  local until=$1 runs=0 bad=0 left d
  while :; do
    left=$(( ${until%.*} - $(date +%s) ))
    (( left >= 5 )) || break
    d=$(( left - 3 < 10 ? left - 3 : 10 ))
    runs=$((runs + 1))
    timeout $((d + 40)) "$BIN/ringhub-loadtest" --target "127.0.0.1:$PP" --threads 1 fanout \
      --subscribers 100 --topics 4 --publishers 2 --rate 500 --warmup 1 --duration "$d" --drain 5 \
      --verify >"$TMP/fanout.out" 2>&1 || { bad=$((bad + 1)); cp "$TMP/fanout.out" "$OUT/fanout-$IO-failed-$runs.txt"; }
  done
  echo "{\"client\":\"fanout\",\"runs\":$runs,\"verify_failed_runs\":$bad}"
}

api_loop() {  # HTTP API and probes, plain or TLS: publish, metrics, online, healthz
  local until=$1 base=$2 name=$3 ok=0 bad=0 c codes=""
  local -a k=()
  [[ $base == https* ]] && k=(-k)
  while (( $(date +%s) < ${until%.*} )); do
    for req in publish metrics online healthz; do
      case $req in
        publish) c=$(http_code "${k[@]}" -X POST -H "Authorization: Bearer $API_KEY" \
                   -H 'Content-Type: application/json' \
                   --data '{"topic":"api","event":"soak","data":{"n":1}}' "$base/api/v1/publish") ;;
        metrics) c=$(http_code "${k[@]}" "$base/metrics") ;;
        online)  c=$(http_code "${k[@]}" -H "Authorization: Bearer $API_KEY" "$base/api/v1/online") ;;
        healthz) c=$(http_code "${k[@]}" "$base/healthz") ;;
      esac
      if [[ $c == 200 ]]; then ok=$((ok + 1)); else bad=$((bad + 1)); codes="$codes $req:$c"; fi
    done
    sleep 0.05
  done
  [[ -z $codes ]] || codes=$(printf '%s\n' $codes | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' | cut -c1-200)
  echo "{\"client\":\"$name\",\"ok\":$ok,\"failed\":$bad,\"failures\":\"$codes\"}"
}

# run_load SECONDS LABEL: the whole mix against both servers; waits for every loop to end.
run_load() {
  local until=$(( $(date +%s) + $1 )) label=$2 py=scripts/soak_clients.py hold=3:8
  (( $1 >= 15 )) || hold=1.5:2.5  # the warm-up: one short cycle per slow consumer
  local -a lp=()
  local npids=${#PIDS[@]}
  churn_loop "$until" >"$TMP/$label-churn.json" & lp+=($!)
  fanout_loop "$until" >"$TMP/$label-fanout.json" & lp+=($!)
  python3 $py slow --port "$PP" --count 4 --hold "$hold" --until "$until" --label slow >"$TMP/$label-slow.json" & lp+=($!)
  python3 $py feed --port "$PP" --rate 200 --payload 16384 --until "$until" --label feed >"$TMP/$label-feed.json" & lp+=($!)
  python3 $py slow --port "$TP" --tls --count 1 --hold "$hold" --until "$until" --label slow-tls >"$TMP/$label-slow-tls.json" & lp+=($!)
  python3 $py feed --port "$TP" --tls --rate 100 --payload 16384 --until "$until" --label feed-tls >"$TMP/$label-feed-tls.json" & lp+=($!)
  python3 $py wss --port "$TP" --pause 0.2 --until "$until" --label wss >"$TMP/$label-wss.json" & lp+=($!)
  api_loop "$until" "http://127.0.0.1:$PP" api >"$TMP/$label-api.json" & lp+=($!)
  api_loop "$until" "https://127.0.0.1:$TP" api-tls >"$TMP/$label-api-tls.json" & lp+=($!)
  PIDS+=("${lp[@]}")
  local p
  for p in "${lp[@]}"; do wait "$p" || true; done
  PIDS=("${PIDS[@]:0:$npids}")
  cat "$TMP/$label"-*.json
}

# wait_fds N_PLAIN N_TLS MAX_S: until both servers are back at those descriptor counts.
wait_fds() {
  local i
  for i in $(seq $(( $3 * 2 ))); do
    [[ $(fds "$PLAIN") -le $1 && $(fds "$TLS") -le $2 ]] && return 0
    sleep 0.5
  done
  return 1
}

metric() { curl -s --max-time 5 "$@" 2>/dev/null | awk -v m="$METRIC" '$1 ~ "^"m {s += $2} END {print s + 0}'; }

FAILED=()
for IO in $IOS; do
  echo "== soak $IO: ${DURATION}s (plain :$PORT, TLS :$((PORT + 1))) =="
  PP=$PORT TP=$((PORT + 1))
  rm -f "$TMP/stop" "$TMP"/*.json "$OUT"/churn-"$IO"-failed.txt "$OUT"/fanout-"$IO"-failed-*.txt
  fail=() warn=()
  start_server plain "$PP" || { FAILED+=("$IO: plain server did not start"); continue; }
  PLAIN=$SERVER_PID
  start_server tls "$TP" RINGHUB_TLS_CERT_FILE="$TMP/cert.pem" RINGHUB_TLS_KEY_FILE="$TMP/key.pem" \
    || { FAILED+=("$IO: TLS server did not start"); continue; }
  TLS=$SERVER_PID
  [[ $(http_code "http://127.0.0.1:$PP/healthz") == 200 && $(http_code -k "https://127.0.0.1:$TP/healthz") == 200 ]] \
    || { FAILED+=("$IO: /healthz not answering at start"); continue; }
  csv=$OUT/soak-$IO.csv
  echo start >"$TMP/phase"
  t0=$(now)
  sampler "$csv" "$t0" & SAMPLER=$!; PIDS+=("$SAMPLER")
  sleep 1
  # Descriptor baseline: listeners, io_uring/epoll, eventfds, the reserve fd, std streams.
  fd0_p=$(fds "$PLAIN") fd0_t=$(fds "$TLS")

  echo warmup >"$TMP/phase"
  run_load "$WARMUP" warmup >"$OUT/clients-$IO-warmup.jsonl"
  ss -tan "( sport = :$PP or sport = :$TP )" >"$OUT/ss-$IO-warmup-end.txt" 2>/dev/null || true
  echo idle >"$TMP/phase"
  wait_fds "$fd0_p" "$fd0_t" 20 || true
  sleep 2
  # RSS baseline: after the warm-up has touched every code path and pool once.
  rss0_p=$(rss_kb "$PLAIN") rss0_t=$(rss_kb "$TLS")
  t_load=$(since "$t0")

  echo load >"$TMP/phase"
  run_load "$DURATION" load >"$OUT/clients-$IO.jsonl"
  t_end=$(since "$t0")
  echo settle >"$TMP/phase"
  # Diagnostics: the servers' sockets right after the load (states other than TIME-WAIT are
  # connections the server still holds a descriptor for).
  ss -tan "( sport = :$PP or sport = :$TP )" >"$OUT/ss-$IO-load-end.txt" 2>/dev/null || true
  back="" settle_end=$(( $(date +%s) + SETTLE ))
  while (( $(date +%s) < settle_end )); do
    if [[ -z $back && $(fds "$PLAIN") -le $fd0_p && $(fds "$TLS") -le $fd0_t ]]; then
      back=$(awk -v a="$(since "$t0")" -v b="$t_end" 'BEGIN {printf "%.1f", a - b}')
    fi
    sleep 0.5
  done
  touch "$TMP/stop"; wait "$SAMPLER" 2>/dev/null || true

  # --- checks ---------------------------------------------------------------------------------
  rssf_p=$(rss_kb "$PLAIN") rssf_t=$(rss_kb "$TLS") fdf_p=$(fds "$PLAIN") fdf_t=$(fds "$TLS")
  # Peak RSS: VmHWM, or the largest sample if higher (the kernel's RSS counters are per-thread
  # and folded in lazily, so the two can differ by a few hundred kB).
  hwm_p=$(awk -F, -v h="$(hwm_kb "$PLAIN")" 'NR>1 && $3>h {h=$3} END {print h+0}' "$csv")
  hwm_t=$(awk -F, -v h="$(hwm_kb "$TLS")" 'NR>1 && $6>h {h=$6} END {print h+0}' "$csv")
  peakfd_p=$(awk -F, 'NR>1 && $4>m {m=$4} END {print m+0}' "$csv")
  peakfd_t=$(awk -F, 'NR>1 && $7>m {m=$7} END {print m+0}' "$csv")
  if awk -F, 'NR>1 && ($5==0 || $8==0) {bad=1} END {exit !bad}' "$csv" || ! alive "$PLAIN" || ! alive "$TLS"; then
    fail+=("a server died during the run (see $OUT/server-$IO-*.log)")
  fi
  [[ $(http_code "http://127.0.0.1:$PP/healthz") == 200 ]] || fail+=("plain /healthz does not answer 200 after the load")
  [[ $(http_code -k "https://127.0.0.1:$TP/healthz") == 200 ]] || fail+=("TLS /healthz does not answer 200 after the load")
  METRIC=ringhub_slow_consumer_disconnects; cut_p=$(metric "http://127.0.0.1:$PP/metrics"); cut_t=$(metric -k "https://127.0.0.1:$TP/metrics")
  METRIC=ringhub_connections; conns_p=$(metric "http://127.0.0.1:$PP/metrics"); conns_t=$(metric -k "https://127.0.0.1:$TP/metrics")
  for s in "plain $fd0_p $fdf_p $rss0_p $rssf_p" "tls $fd0_t $fdf_t $rss0_t $rssf_t"; do
    read -r name f0 ff r0 rf <<<"$s"
    (( ff <= f0 + FD_SLACK && ff >= f0 - FD_SLACK )) \
      || fail+=("$name: $ff descriptors open after the load, baseline $f0 (allowed ±$FD_SLACK)")
    bound=$(( r0 * (100 + RSS_SLACK_PCT) / 100 ))
    (( bound >= r0 + RSS_SLACK_MB * 1024 )) || bound=$(( r0 + RSS_SLACK_MB * 1024 ))
    (( rf <= bound )) || fail+=("$name: RSS ${rf} kB after the load, baseline ${r0} kB, bound ${bound} kB")
  done
  [[ $(( ${cut_p:-0} )) -gt 0 ]] || fail+=("plain: no slow consumer was ever cut (the 1008 path was not exercised)")
  if grep -q '"verify_failed_runs":[1-9]' "$OUT/clients-$IO.jsonl"; then
    fail+=("fanout --verify failed (messages lost or duplicated; see $OUT/fanout-$IO-failed-*.txt)")
  fi
  # Stream integrity: every frame the WebSocket clients read must be well formed, and the wss
  # loop must get each publication back intact. SOAK_TLS_INTEGRITY=warn reports TLS-side
  # findings without failing (for a known, reported server bug; see scripts/README.md).
  while read -r client n why; do
    [[ -n $client ]] || continue
    msg="$client: $n connection(s) with a corrupted or incomplete stream (last: $why)"
    if [[ $client != slow && ${SOAK_TLS_INTEGRITY:-fail} == warn ]]; then warn+=("$msg"); else fail+=("$msg"); fi
  done < <(python3 - "$OUT/clients-$IO.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        c = json.loads(line)
        n = c.get("corrupt", 0) + (c.get("failed", 0) if c["client"] == "wss" else 0)
        if n:
            print(c["client"], n, c.get("last_corrupt") or c.get("last_error", "?"))
EOF
)
  if grep -l 'panicked' "$OUT"/server-"$IO"-*.log >/dev/null 2>&1; then fail+=("a server log shows a panic"); fi

  # Stop the servers (SIGINT: graceful) and make sure they exit.
  for p in "$PLAIN" "$TLS"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 150); do alive "$PLAIN" || alive "$TLS" || break; sleep 0.1; done

  verdict=pass; [[ ${#fail[@]} -eq 0 ]] || verdict=fail
  { printf '%s\n' "${fail[@]}"; printf 'warning: %s\n' "${warn[@]}"; } | grep -v '^warning: $' >"$TMP/fail.txt" || true
  python3 - "$OUT/soak-$IO.json" "$OUT/clients-$IO.jsonl" "$TMP/fail.txt" \
    io="$IO" duration_s="$DURATION" verdict="$verdict" load_start_s="$t_load" load_end_s="$t_end" \
    fds_back_after_s="${back:-never}" rss_slack_pct="$RSS_SLACK_PCT" rss_slack_mb="$RSS_SLACK_MB" \
    fd_slack="$FD_SLACK" outbound_queue="$QUEUE" \
    plain.fd_baseline="$fd0_p" plain.fd_peak="$peakfd_p" plain.fd_final="$fdf_p" \
    plain.rss_baseline_kb="$rss0_p" plain.rss_peak_kb="$hwm_p" plain.rss_final_kb="$rssf_p" \
    plain.slow_consumer_cuts="${cut_p:-0}" plain.connections_final="${conns_p:-0}" \
    tls.fd_baseline="$fd0_t" tls.fd_peak="$peakfd_t" tls.fd_final="$fdf_t" \
    tls.rss_baseline_kb="$rss0_t" tls.rss_peak_kb="$hwm_t" tls.rss_final_kb="$rssf_t" \
    tls.slow_consumer_cuts="${cut_t:-0}" tls.connections_final="${conns_t:-0}" <<'EOF'
import json, sys
out, clients, fails, *kv = sys.argv[1:]
d = {"servers": {"plain": {}, "tls": {}}}
for a in kv:
    k, v = a.split("=", 1)
    for conv in (int, float):
        try:
            v = conv(v)
            break
        except ValueError:
            pass
    if "." in k:
        s, k = k.split(".", 1)
        d["servers"][s][k] = v
    else:
        d[k] = v
d["failures"] = [l.strip() for l in open(fails) if l.strip()]
d["clients"] = [json.loads(l) for l in open(clients) if l.startswith("{")]
json.dump(d, open(out, "w"), indent=1)
EOF
  python3 scripts/soak_plot.py "$csv" --summary "$OUT/soak-$IO.json" -o "$OUT/soak-$IO.svg" || true
  printf 'soak %s: %s\n' "$IO" "$verdict"
  printf '  %-5s fds baseline/peak/final %s/%s/%s   RSS baseline/peak(HWM)/final %s/%s/%s MiB   slow consumers cut %s\n' \
    plain "$fd0_p" "$peakfd_p" "$fdf_p" "$((rss0_p / 1024))" "$((hwm_p / 1024))" "$((rssf_p / 1024))" "${cut_p:-0}" \
    tls "$fd0_t" "$peakfd_t" "$fdf_t" "$((rss0_t / 1024))" "$((hwm_t / 1024))" "$((rssf_t / 1024))" "${cut_t:-0}"
  echo "  descriptors back at baseline ${back:-never} s after the load stopped"
  sed 's/^/  client /' "$OUT/clients-$IO.jsonl"
  for f in "${warn[@]}"; do echo "  WARNING (SOAK_TLS_INTEGRITY=warn): $f"; done
  for f in "${fail[@]}"; do echo "  FAIL: $f"; FAILED+=("$IO: $f"); done
  echo "  $csv, $OUT/soak-$IO.svg, $OUT/soak-$IO.json"
done

if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "soak: FAILED"; printf '  %s\n' "${FAILED[@]}"; exit 1
fi
echo "soak: passed ($IOS)"
