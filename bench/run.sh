#!/usr/bin/env bash
# The benchmark, in one command: installs what is missing, builds and installs the extension
# (release), then runs bench/ against its own cluster and LocalStack and prints the table.
# Arguments go to the bench binary: --messages N (default 5000), --rounds R (5), --rss N (20000).
# SQS_INGEST_INSTALLED=1: the release build is installed already (the test command's smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash bench/setup.sh
[ "${SQS_INGEST_INSTALLED:-}" = 1 ] || install_extension
echo "==> cargo build --release -p sqs_ingest_bench"
cargo build -q --release -p sqs_ingest_bench
"$CARGO_TARGET_DIR/release/sqs_ingest_bench" "$@"
