#!/usr/bin/env bash
# The demo: builds and installs sqs_ingest, starts a throwaway PostgreSQL 15 cluster and a local
# SQS emulator full of generated login messages, ingests them, and prints what was stored.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
install_extension
echo "==> run the demo"
cargo run -q -p sqs_ingest_it --bin demo
