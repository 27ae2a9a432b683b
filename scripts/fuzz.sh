#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the other, on one core at low
# priority, and prints libFuzzer's final statistics per target. Works on stable Rust:
#   cargo install cargo-fuzz          # once
#   scripts/fuzz.sh 600               # 10 minutes per target
#   scripts/fuzz.sh 60 frames jwt     # some targets
# New inputs go to target/fuzz-corpus/<target>/ (not committed); the committed seeds in
# fuzz/corpus/<target>/ are only read. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(frames envelope http_head jwt settings store_codecs v2_requests inflate delta msgpack cluster_recv)
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
nice -n 10 cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
  work=../target/fuzz-corpus/$t
  mkdir -p "$work"
  log=../target/fuzz-$t.log
  echo "== $t: ${secs}s" >&2
  rc=0
  nice -n 19 cargo fuzz run --sanitizer none "$t" "$work" "corpus/$t" -- \
    -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 -max_len=4096 \
    -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  # With -jobs the output goes to fuzz-0.log in the working directory.
  [[ -f fuzz-0.log ]] && { cat fuzz-0.log >>"$log"; rm -f fuzz-0.log; }
  echo "$t: exit $rc" >&2
  grep -E '^INFO: Loaded 1 PC tables|^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|==ERROR|panicked|SUMMARY' "$log" | awk '!seen[$0]++' || true
  ls "artifacts/$t" 2>/dev/null | sed "s|^|$t finding: |" || true
done
