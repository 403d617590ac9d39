#!/usr/bin/env bash
# Runs each cargo fuzz target for SECONDS (default 60) from the committed seeds, in a scratch
# corpus so the clone stays clean. cargo fuzz needs nightly flags: RUSTC_BOOTSTRAP lets the
# machine's stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
source ../scripts/env.sh
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
# Its own target dir: sanitizer builds must not mix with the workspace's.
export CARGO_TARGET_DIR=$SQS_INGEST_CACHE/fuzz-target
for target in parse_message encode_version query_answer http_answer; do
  corpus=$(mktemp -d)
  echo "==> cargo fuzz run $target for ${seconds}s"
  log=$(mktemp)
  # libFuzzer exits non-zero on a crash, a leak, an OOM or a timeout; so does a failed build.
  status=0
  cargo fuzz run -O "$target" "$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY|thread .* panicked)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz $target: FAILED (exit $status), see fuzz/artifacts/$target"; exit 1
  fi
  rm -f "$log"
  echo "fuzz $target: no crash"
  rm -rf "$corpus"
done
