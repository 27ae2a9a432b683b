#!/usr/bin/env bash
# Webhook throughput (issue 18): client publications → `publication` events in the redb outbox
# (fsync per store batch) → signed batches POSTed to tests/webhook/receiver.js (Node, which
# verifies every signature). Three runs; prints each and the median delivered rate.
#
#   scripts/webhook-bench.sh [events] [connections] [batch_size]     (defaults 200000 4 100)
#
# Measure under `flock -x /work/wt/bench.lock` on a shared machine (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-200000}
conns=${2:-4}
batch=${3:-100}
cargo build --release --example webhook_bench >/dev/null 2>&1
rates=()
for run in 1 2 3; do
  line=$(./target/release/examples/webhook_bench "$events" "$conns" "$batch")
  echo "run $run: $line"
  rates+=("$(sed -E 's/.*delivered_rate=([0-9]+).*/\1/' <<<"$line")")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 2p)
echo "median delivered rate: ${median} events/s (events=$events connections=$conns batch_size=$batch)"
