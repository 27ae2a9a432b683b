#!/usr/bin/env bash
# A/B of the history path: scripts/messaging-bench.sh PARTS=history (memory store only) on two
# release builds, one run of every case per invocation, invocations alternated main / branch for
# ROUNDS rounds (so each ratio branch ÷ main pairs runs minutes apart, and history ÷ none is
# taken within one run), each invocation under the exclusive bench lock (retried until granted:
# a hold is a few minutes). Then scripts/history-ab.py prints the table BENCHMARKS.md shows.
#
#   MAIN_DIR=/tmp/memhist-main BRANCH_DIR=/tmp/memhist-after SHARDS=1 scripts/history-ab.sh
#
# MAIN_DIR / BRANCH_DIR: target dirs holding release/ringhub and release/ringhub-loadtest.
# SHARDS (1), SUBS ("1 10"), WINDOWS ("1 16 64 512"), ROUNDS (3), OUT_ROOT (/tmp/history-ab),
# LOCK (/work/wt/bench.lock; empty: no lock).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${MAIN_DIR:?target dir of the main build}" "${BRANCH_DIR:?target dir of the branch build}"
SHARDS=${SHARDS:-1}
SUBS=${SUBS:-"1 10"}
WINDOWS=${WINDOWS:-"1 16 64 512"}
ROUNDS=${ROUNDS:-3}
OUT_ROOT=${OUT_ROOT:-/tmp/history-ab}
LOCK=${LOCK-/work/wt/bench.lock}
mkdir -p "$OUT_ROOT"
for r in $(seq "$ROUNDS"); do
  for b in main after; do
    dir=$MAIN_DIR
    [ "$b" = after ] && dir=$BRANCH_DIR
    out=$OUT_ROOT/sh$SHARDS-$b-r$r
    run=(env NO_BUILD=1 RUNS=1 DURATION=5 WARMUP=1 PARTS=history STORES=memory SHARDS="$SHARDS"
      SUBS="$SUBS" WINDOWS="$WINDOWS" PRIO=rt CARGO_TARGET_DIR="$dir" NAME="history-ab-sh$SHARDS-$b-r$r"
      OUT_DIR="$out" RESULTS_DIR="$OUT_ROOT/condensed" "$ROOT/scripts/messaging-bench.sh")
    until [ -f "$out/.done" ]; do
      if [ -n "$LOCK" ]; then
        flock -x -w 300 "$LOCK" "${run[@]}" >"$out.log" 2>&1 && touch "$out/.done"
      else
        "${run[@]}" >"$out.log" 2>&1 && touch "$out/.done"
      fi
    done
  done
done
python3 "$ROOT/scripts/history-ab.py" "$OUT_ROOT" "$SHARDS"
