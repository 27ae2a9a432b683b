#!/usr/bin/env bash
# Measurement campaign for issue #7 ("Engine v2"): runs the whole scenario matrix with
# scripts/compare.sh RUNS times (runs interleaved: run 1 of every scenario, then run 2, ...),
# keeps every run's directory under one campaign folder, then condenses everything into
# docs/benchmarks/<CAMPAIGN>.json (every run's key numbers) and <CAMPAIGN>.md (medians and
# within-run ratios) with scripts/condense.py.
#
#   scripts/campaign.sh            # the full matrix, 3 runs
#   RUNS=1 DURATION=3 WARMUP=1 SCENARIOS="fanout-s1000-w512 echo-c50-k1" scripts/campaign.sh
#   scripts/campaign.sh --list     # prints the matrix (scenario ids and compare.sh arguments)
#
# Environment:
#   SERVERS       servers (default "ringhub-uring ringhub-epoll bun uws"; uws needs UWS_BIN)
#   RUNS          runs per scenario (default 3)
#   SCENARIOS     subset of scenario ids (default: all, see --list)
#   DURATION      measured seconds (default 10); WARMUP (default 2); PAYLOAD bytes (default 64)
#   FANOUT_WINDOW window for the 100- and 10,000-subscriber fan-outs (default 64)
#   IDLE_HOLD     seconds the idle connections are held (default 5)
#   CAMPAIGN      name (default campaign-<UTC date-time>); CAMPAIGN_DIR (default /tmp/ringhub-campaign/<name>)
#   RESULTS_DIR   where the condensed .json/.md go (default docs/benchmarks)
#   REFS          reference servers for the ratios (default "bun,uws")
#   PRIO          compare.sh scheduling (default here: rt = SCHED_FIFO for server and loadtest; with
#                 other load on the machine, even niced builds, closed-loop results were 3x lower
#                 without it); none | nice | rt
#   NO_BUILD=1    skip the cargo build; everything compare.sh reads (UWS_BIN, SERVER_CPU, LOAD_CPU,
#                 CARGO_TARGET_DIR, BASE_PORT) is passed through
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PAYLOAD=${PAYLOAD:-64}
FANOUT_WINDOW=${FANOUT_WINDOW:-64}
IDLE_HOLD=${IDLE_HOLD:-5}
export SERVERS=${SERVERS:-"ringhub-uring ringhub-epoll bun uws"}
export PRIO=${PRIO:-rt}
CAMPAIGN=${CAMPAIGN:-campaign-$(date -u +%Y%m%d-%H%M)}
CAMPAIGN_DIR=${CAMPAIGN_DIR:-/tmp/ringhub-campaign/$CAMPAIGN}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/benchmarks}
REFS=${REFS:-bun,uws}

T="--duration $DURATION --warmup $WARMUP"
P="--payload $PAYLOAD"
# id | title | compare.sh arguments
MATRIX=$(cat <<EOF
fanout-s1000-w1|fan-out, 1,000 subscribers, 1 publication in flight|fanout --subscribers 1000 $P --max --window 1 $T
fanout-s1000-w16|fan-out, 1,000 subscribers, 16 in flight|fanout --subscribers 1000 $P --max --window 16 $T
fanout-s1000-w64|fan-out, 1,000 subscribers, 64 in flight|fanout --subscribers 1000 $P --max --window 64 $T
fanout-s1000-w512|fan-out, 1,000 subscribers, 512 in flight|fanout --subscribers 1000 $P --max --window 512 $T
fanout-s100-w$FANOUT_WINDOW|fan-out, 100 subscribers, $FANOUT_WINDOW in flight|fanout --subscribers 100 $P --max --window $FANOUT_WINDOW $T
fanout-s10000-w$FANOUT_WINDOW|fan-out, 10,000 subscribers, $FANOUT_WINDOW in flight|fanout --subscribers 10000 $P --max --window $FANOUT_WINDOW $T
latency-s1000-r200|latency, 1,000 subscribers × 200 publications/s (open loop)|fanout --subscribers 1000 $P --rate 200 $T
latency-s100-r1000|latency, 100 subscribers × 1,000 publications/s (open loop)|fanout --subscribers 100 $P --rate 1000 $T
echo-c50-k1|echo, 50 connections × 1 in flight|echo --connections 50 --pipeline 1 $P $T
echo-c100-k16|echo, 100 connections × 16 in flight|echo --connections 100 --pipeline 16 $P $T
idle-c10000|idle RSS growth per connection, 10,000 connections held ${IDLE_HOLD} s|idle --count 10000 --hold $IDLE_HOLD
EOF
)

if [ "${1:-}" = --list ]; then
  echo "$MATRIX" | awk -F'|' '{printf "%-22s compare.sh %s\n", $1, $3}'
  exit 0
fi
[ $# -eq 0 ] || { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

selected() { [ -z "${SCENARIOS:-}" ] || [[ " $SCENARIOS " == *" $1 "* ]]; }
if [ -n "${SCENARIOS:-}" ]; then
  for s in $SCENARIOS; do
    echo "$MATRIX" | cut -d'|' -f1 | grep -qx -- "$s" || { echo "campaign: unknown scenario $s (see --list)" >&2; exit 2; }
  done
fi

mkdir -p "$CAMPAIGN_DIR" "$RESULTS_DIR"
log() { echo "campaign: $*" | tee -a "$CAMPAIGN_DIR/campaign.log" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  log "building ringhub and ringhub-loadtest (release)"
  (cd "$ROOT" && cargo build --release -q -p ringhub-loadtest)
  if [[ " $SERVERS " == *" ringhub"* ]]; then
    (cd "$ROOT" && cargo build --release -q -p ringhub --bin ringhub) || log "ringhub failed to build (compare.sh will skip it)"
  fi
fi
export NO_BUILD=1
if [[ " $SERVERS " == *" uws "* ]] && [ -z "${UWS_BIN:-}" ]; then
  log "UWS_BIN is not set: uws will be skipped in every scenario"
fi

# --- metadata (campaign.json) --------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ver() { "$@" 2>/dev/null | head -1 || true; }
bun_bin=$ROOT/scripts/peers/node_modules/@oven/bun-linux-x64/bin/bun
uws_version=""
[ -n "${UWS_BIN:-}" ] && [ -f "$UWS_BIN.version" ] && uws_version=$(head -c 300 "$UWS_BIN.version" | tr '\n' ' ')
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null) || commit="$commit (+ uncommitted changes)"
commands=()
port_base=${BASE_PORT:-9400}
while IFS='|' read -r id title args; do
  selected "$id" || continue
  commands+=("PRIO=$PRIO SERVERS=\"$SERVERS\" NO_BUILD=1 scripts/compare.sh $args   # $id")
done <<<"$MATRIX"
jq -n --arg name "$CAMPAIGN" --arg started "$(date -u +%FT%TZ)" --argjson runs "$RUNS" \
  --arg servers "$SERVERS" --arg commit "$commit" \
  --arg kernel "$(uname -r)" --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg nproc "$(nproc)" --arg rustc "$(ver rustc --version)" --arg bun "$(ver "$bun_bin" --version)" \
  --arg uws "${uws_version:-${UWS_BIN:-not run}}" \
  --arg pin "server taskset -c ${SERVER_CPU:-0}, loadtest taskset -c ${LOAD_CPU:-1}, PRIO=$PRIO" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --arg lt "$(ver "$TARGET_DIR/release/ringhub-loadtest" --version)" \
  --arg matrix "$MATRIX" --args '
  { name: $name, started: $started, runs: $runs, servers: $servers, commit: $commit,
    env: {kernel: $kernel, cpu: $cpu, nproc: $nproc, rustc: $rustc, bun: $bun, uws: $uws,
          pinning: $pin, loadtest: $lt, "load average at start": $load},
    commands: $ARGS.positional,
    scenarios: [$matrix | split("\n")[] | select(length > 0) | split("|")
                | {id: .[0], title: .[1], command: ("compare.sh " + .[2])}] }' \
  "${commands[@]}" >"$CAMPAIGN_DIR/campaign.json"

# --- runs ------------------------------------------------------------------------------
log "campaign $CAMPAIGN: $RUNS run(s), servers: $SERVERS; results in $CAMPAIGN_DIR"
for run in $(seq "$RUNS"); do
  while IFS='|' read -r id title args; do
    selected "$id" || continue
    out=$CAMPAIGN_DIR/$id/run-$run
    mkdir -p "$out"
    port_base=$((port_base + 20))
    [ "$port_base" -lt 60000 ] || port_base=${BASE_PORT:-9400}
    log "run $run/$RUNS $id: compare.sh $args ($(date -u +%T))"
    # shellcheck disable=SC2086 # $args is a word list on purpose
    if ! BASE_PORT=$port_base OUT_DIR=$out "$ROOT/scripts/compare.sh" $args \
        >"$out/table.txt" 2>"$out/compare.log"; then
      log "run $run $id: compare.sh failed (see $out/compare.log)"
    fi
    sed -n '/^server  *msgs\/s/,/^results:/p' "$out/table.txt" | grep -v '^results:' >&2 || true
  done <<<"$MATRIX"
done

tmp=$(mktemp)
jq --arg f "$(date -u +%FT%TZ)" '.finished = $f' "$CAMPAIGN_DIR/campaign.json" >"$tmp" && mv "$tmp" "$CAMPAIGN_DIR/campaign.json"
python3 "$ROOT/scripts/condense.py" "$CAMPAIGN_DIR" --ref "$REFS" \
  -o "$RESULTS_DIR/$CAMPAIGN.json" --md "$RESULTS_DIR/$CAMPAIGN.md"
log "raw results: $CAMPAIGN_DIR"
log "condensed: $RESULTS_DIR/$CAMPAIGN.json and $RESULTS_DIR/$CAMPAIGN.md"
