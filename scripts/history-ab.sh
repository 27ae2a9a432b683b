#!/usr/bin/env bash
# A/B of the history path: scripts/messaging-bench.sh PARTS=history (memory store only) on two
# release builds, one run of every case per invocation, invocations alternated main / branch for
# ROUNDS rounds (so each ratio branch ÷ main pairs runs a minute or two apart, and history ÷
# none is taken within one run), all of it under one hold of the exclusive bench lock (about
# 9 minutes with the defaults). Then scripts/history-ab.py prints the table BENCHMARKS.md shows.
#
#   MAIN_DIR=/tmp/memhist-main BRANCH_DIR=/tmp/memhist-after SHARDS=1 scripts/history-ab.sh
#
# MAIN_DIR / BRANCH_DIR: target dirs holding release/ringhub and release/ringhub-loadtest.
# SHARDS (1), SUBS ("1 10"), WINDOWS ("1 16 64 512"), ROUNDS (3), DURATION (3 measured
# seconds per case, after 1 of warm-up), OUT_ROOT (/tmp/history-ab), LOCK (/work/wt/bench.lock;
# empty: no lock), NOHIST_PREFIX (nohi:t: the no-history topic, as long as hist:t so both builds
# compare history alone; t for the shorter topic of the earlier runs).
# The cases come from this checkout's scripts/messaging-bench.sh for both builds.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${MAIN_DIR:?target dir of the main build}" "${BRANCH_DIR:?target dir of the branch build}"
SHARDS=${SHARDS:-1}
SUBS=${SUBS:-"1 10"}
WINDOWS=${WINDOWS:-"1 16 64 512"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
NOHIST_PREFIX=${NOHIST_PREFIX:-nohi:t}
OUT_ROOT=${OUT_ROOT:-/tmp/history-ab}
LOCK=${LOCK-/work/wt/bench.lock}
mkdir -p "$OUT_ROOT"
if [ -n "$LOCK" ]; then
  # The whole A/B under one exclusive hold; nobody builds meanwhile.
  flock -x "$LOCK" env LOCK= MAIN_DIR="$MAIN_DIR" BRANCH_DIR="$BRANCH_DIR" SHARDS="$SHARDS" \
    NOHIST_PREFIX="$NOHIST_PREFIX" SUBS="$SUBS" WINDOWS="$WINDOWS" ROUNDS="$ROUNDS" DURATION="$DURATION" OUT_ROOT="$OUT_ROOT" "$0"
  exit $?
fi
for r in $(seq "$ROUNDS"); do
  for b in main after; do
    dir=$MAIN_DIR
    [ "$b" = after ] && dir=$BRANCH_DIR
    out=$OUT_ROOT/sh$SHARDS-$b-r$r
    run=(env NO_BUILD=1 RUNS=1 DURATION="$DURATION" WARMUP=1 PARTS=history STORES=memory SHARDS="$SHARDS"
      NOHIST_PREFIX="$NOHIST_PREFIX" SUBS="$SUBS" WINDOWS="$WINDOWS" PRIO=rt CARGO_TARGET_DIR="$dir" NAME="history-ab-sh$SHARDS-$b-r$r"
      OUT_DIR="$out" RESULTS_DIR="$OUT_ROOT/condensed" "$ROOT/scripts/messaging-bench.sh")
    [ -f "$out/.done" ] || { "${run[@]}" >"$out.log" 2>&1 && touch "$out/.done"; }
  done
done
python3 "$ROOT/scripts/history-ab.py" "$OUT_ROOT" "$SHARDS"
