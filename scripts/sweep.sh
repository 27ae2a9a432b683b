#!/usr/bin/env bash
# Fan-out sweep: runs scripts/compare.sh fanout at 100, 1,000 and 10,000 subscribers and
# plots delivered msgs/s against subscriber count.
#
#   scripts/sweep.sh [extra ringhub-loadtest fanout args]
#   default args: --payload 64 --max --duration 10 --warmup 2
# Environment: SWEEP_DIR (default /tmp/ringhub-sweep.<time>), SUBSCRIBERS ("100 1000 10000"),
# plus everything compare.sh reads (SERVERS, SERVER_CPU, LOAD_CPU, CARGO_TARGET_DIR, ...).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SWEEP_DIR=${SWEEP_DIR:-/tmp/ringhub-sweep.$(date +%Y%m%d-%H%M%S)}
SUBSCRIBERS=${SUBSCRIBERS:-"100 1000 10000"}
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--payload 64 --max --duration 10 --warmup 2)
mkdir -p "$SWEEP_DIR"
first=1
for s in $SUBSCRIBERS; do
  echo "== sweep: $s subscribers ==" | tee -a "$SWEEP_DIR/tables.txt"
  nobuild=1
  [ "$first" = 1 ] && nobuild=${NO_BUILD:-0}
  NO_BUILD=$nobuild OUT_DIR=$SWEEP_DIR/s$s "$ROOT/scripts/compare.sh" fanout --subscribers "$s" "${args[@]}" \
    | tee -a "$SWEEP_DIR/tables.txt"
  first=0
done
python3 "$ROOT/scripts/plot.py" "$SWEEP_DIR"/s*/*.json -o "$SWEEP_DIR/fanout.svg"
echo "sweep: tables in $SWEEP_DIR/tables.txt, plot in $SWEEP_DIR/fanout.svg"
