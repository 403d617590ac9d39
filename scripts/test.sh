#!/usr/bin/env bash
# Runs every test: unit tests of the pure core, #[pg_test]s, and the integration tests against
# real PostgreSQL 15 and 18 clusters and real SQS emulators. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# scripts/setup.sh and LocalStack, which the FIFO tests and the benchmark run against.
bash bench/setup.sh

echo "==> formatting (cargo fmt --check, rustfmt.toml)"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

echo "==> unit tests (cargo test -p sqs_ingest_core)"
cargo test -p sqs_ingest_core

echo "==> fuzzing smoke: each cargo fuzz target for a minute"
bash scripts/fuzz.sh 60

echo "==> #[pg_test]s (cargo pgrx test), against a private copy of PostgreSQL 15"
# cargo pgrx test copies its debug build over the library of the PostgreSQL it tests with, in
# place, under every process that maps it: never the system's, which running clusters load.
pgrx_test_postgres
pgdata=$(mktemp -d)
chown postgres "$pgdata"
PGRX_HOME=$PGRX_TEST_HOME cargo pgrx test pg15 --runas postgres --pgdata "$pgdata/data"
rm -rf "$pgdata"

install_extension
# From here on, nothing may change the system PostgreSQL's files: every later step runs a
# PostgreSQL of its own or only reads them.
installed() {
  find "$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)/extension" -maxdepth 1 -printf '%p %i %s %T@\n' | sort
}
installed_before=$(installed)

echo "==> the Docker files: the build stage's package step in its own build context, hadolint, docker/check.py"
# The build context as Docker sends it (.dockerignore) and the WORKDIR as the build stage's COPY
# lines fill it: a file the image leaves out fails here as it would fail docker build.
image=$(mktemp -d)
package=$(mktemp -d)
workdir=$("$SQS_INGEST_VENV/bin/python" docker/build_context.py "$image")
(cd "$workdir" && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$package" >/dev/null)
"$SQS_INGEST_VENV/bin/hadolint" --failure-threshold error Dockerfile.postgres
"$SQS_INGEST_VENV/bin/python" docker/check.py "$package"
rm -rf "$package" "$image"

echo "==> integration tests (cargo test -p sqs_ingest_it)"
# The clusters' logs go to a directory of this run's own, for the log scan after the suite.
TMPDIR=$(mktemp -d)
chmod 755 "$TMPDIR"
export TMPDIR
cargo test -p sqs_ingest_it -- --skip server_logs_hold_no_secret

echo "==> the whole suite's server logs: no secret, receipt handle or raw PII"
cargo test -p sqs_ingest_it --test log_scan -- --nocapture server_logs_hold_no_secret
rm -rf "$TMPDIR"
unset TMPDIR SQS_INGEST_PG_BIN

echo "==> benchmark smoke: bench/run.sh on a small queue (the figures need the full run)"
SQS_INGEST_INSTALLED=1 bash bench/run.sh --messages 500 --rounds 1 --rss 0

echo "==> PostgreSQL 18: build, install, the integration suite and its log scan"
# pg_cron has no build for 18 here: its test and the Docker scripts' (which preload it) run on 15.
cargo pgrx install --pg-config "$PG18_CONFIG" --no-default-features --features pg18 >/dev/null
TMPDIR=$(mktemp -d)
chmod 755 "$TMPDIR"
export TMPDIR
export SQS_INGEST_PG_BIN
SQS_INGEST_PG_BIN=$(dirname "$PG18_CONFIG")
cargo test -p sqs_ingest_it -- --skip server_logs_hold_no_secret --skip pg_cron \
  --skip compose_scripts_fill_the_queue --skip take_home_table_created_first
cargo test -p sqs_ingest_it --test log_scan -- --nocapture server_logs_hold_no_secret
rm -rf "$TMPDIR"
unset TMPDIR SQS_INGEST_PG_BIN

echo "==> the system PostgreSQL's files, as the release install left them"
if [ "$(installed)" = "$installed_before" ]; then
  echo "installed files: 1 passed, 0 failed"
else
  diff <(echo "$installed_before") <(installed) || true
  echo "installed files: 0 passed, 1 failed"
  exit 1
fi
