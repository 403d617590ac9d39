# Sourced by the scripts: where the toolchain, caches and PostgreSQL live.
export PATH="$HOME/.cargo/bin:$PATH"
export SQS_INGEST_CACHE=${SQS_INGEST_CACHE:-$HOME/.cache/sqs_ingest}
export SQS_INGEST_VENV=$SQS_INGEST_CACHE/venv
# Outside the clone, so that a fresh clone (CI) reuses what earlier builds compiled.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SQS_INGEST_CACHE/target}
export PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# Backtraces in a postmaster's environment slow every ERROR; the harness starts clusters clean.
unset RUST_BACKTRACE
