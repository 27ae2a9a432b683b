# Sourced by the per-delivery bench scripts (deflate-bench.sh, delta-bench.sh,
# deflate-compare.sh, proxy-bench.sh): the pieces they share. Needs TMP (a scratch folder) and SRV (set by the
# caller to the server's PID).

HZ=$(getconf CLK_TCK)

# Exits 2 unless every given release binary is built (this library builds nothing).
need_bins() {
  local b
  for b in "$@"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p ringhub -p ringhub-loadtest" >&2; exit 2; }
  done
}

# CPU ticks (user + system) of process $1 so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits up to 30 s until the server $SRV accepts on port $1 (name $2 for the message); on
# failure prints its log ($TMP/server.log) and exits.
wait_listening() {
  local end=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < end)) && kill -0 "$SRV" 2>/dev/null || { echo "${2:-server} did not start" >&2; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
  done
}

# Stops the server $SRV and clears it.
stop_server() { kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=; }

# "bytes_per_delivery cpu_ns_per_delivery msgs_per_s" from the load generator's JSON ($1), the
# wire bytes it received ($2) and the server's CPU ticks over the run ($3).
per_delivery() {
  python3 - "$1" "$2" "$3" "$HZ" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
n = j["delivered_total"]
print(f"{int(sys.argv[2]) / n:.1f} {int(sys.argv[3]) * 1e9 / int(sys.argv[4]) / n:.0f} {j['msgs_per_s']:.0f}")
PY
}
