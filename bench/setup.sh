#!/usr/bin/env bash
# Installs what the benchmark needs beyond scripts/setup.sh: a venv with boto3 and psycopg2 for
# the reference pipeline, LocalStack (its SQS, run without Docker) in a venv of its own, and
# valgrind, whose callgrind counts instructions per message.
# LocalStack 4.4 needs Python 3.11 or later; its dependencies are resolved as of its release
# (uv --exclude-newer), since later releases of some of them no longer fit it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
if ! command -v valgrind >/dev/null; then
  echo "==> apt-get install valgrind" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

BENCH_PACKAGES=("boto3==1.*" "psycopg2-binary==2.9.*" "uv==0.11.*")
LOCALSTACK="localstack-core[runtime]==4.4.0"
LOCALSTACK_AS_OF=2025-06-01

venv_with "$SQS_INGEST_BENCH_VENV" "${BENCH_PACKAGES[@]}"
UV="$SQS_INGEST_BENCH_VENV/bin/uv" UV_ARGS="--exclude-newer $LOCALSTACK_AS_OF" \
  venv_with "$SQS_INGEST_LOCALSTACK_VENV" "$LOCALSTACK"
