#!/usr/bin/env bash
# CI: proves that a command (the demo, the test suite) leaves an existing PostgreSQL 15 "main"
# cluster, running and holding a table, exactly as it found it.
# Usage: cluster_guard.sh COMMAND [ARG...]. It changes only what it made itself: a database of its
# own in that cluster, the cluster's start (when it was down), the cluster itself (when absent).
set -euo pipefail
log() { printf '==> cluster guard: %s\n' "$*" >&2; }

if ! [ -x /usr/lib/postgresql/15/bin/postgres ]; then
  log "apt-get install postgresql-15 (as a user's workstation has it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
created=false started=false
if ! pg_lsclusters -h | grep -q '^15 \+main '; then
  log "pg_createcluster 15 main"
  pg_createcluster 15 main >/dev/null
  created=true
fi
if ! pg_lsclusters -h | grep -q '^15 \+main .* online '; then
  log "pg_ctlcluster 15 main start"
  pg_ctlcluster 15 main start
  started=true
fi
port=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" { print $3 }')
data=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" { print $6 }')
# From / : the postgres user may not enter the directory this runs in.
psql_main() { (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p "$port" "$@"); }
token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
# Whatever happens from here (a failure, an interrupt), leave the cluster as it was found.
restore() {
  psql_main -d postgres -c 'DROP DATABASE IF EXISTS sqs_ingest_guard' || true
  if $started; then pg_ctlcluster 15 main stop || true; fi
  if $created; then pg_dropcluster 15 main || true; fi
}
trap restore EXIT
trap "exit 130" INT TERM HUP
psql_main -d postgres -c 'CREATE DATABASE sqs_ingest_guard'
psql_main -d sqs_ingest_guard -c "CREATE TABLE someones_data(token text); INSERT INTO someones_data VALUES ('$token')"
pid=$(head -n1 "$data/postmaster.pid")

status=0
"$@" || status=$?

check() {
  if eval "$2"; then log "ok: $1"; else log "FAILED: $1"; status=1; fi
}
check "15/main still exists" "pg_lsclusters -h | grep -q '^15 \+main '"
check "15/main still runs, same postmaster (pid $pid)" \
  "[ \"\$(head -n1 '$data/postmaster.pid' 2>/dev/null)\" = $pid ]"
check "its table still holds its row" "[ \"\$(psql_main -d sqs_ingest_guard -c 'TABLE someones_data' 2>/dev/null)\" = $token ]"
if [ $status = 0 ]; then echo "cluster guard: 1 passed, 0 failed"; else echo "cluster guard: 0 passed, 1 failed"; fi
exit $status
