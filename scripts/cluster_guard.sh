#!/usr/bin/env bash
# CI: proves that a command (the demo, the test suite) leaves an existing PostgreSQL 15 "main"
# cluster, running and holding a table, exactly as it found it; and that a second cluster that
# preloads the installed sqs_ingest, its worker running, goes through it without a crash (the
# test command once copied its debug build over the library that cluster had mapped).
# Usage: cluster_guard.sh COMMAND [ARG...]. It changes only what it made itself: a database of its
# own in that cluster, the cluster's start (when it was down), the cluster itself (when absent),
# and the second cluster, which it creates and drops. Both names carry a random token: a machine
# may keep what an interrupted run left (seen: a CI machine restored from a snapshot taken mid-run),
# and that is not this run's to use or to drop.
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
db=sqs_ingest_guard_$token
guard=sqs_ingest_guard_$token
made_db=false preloading=false
# Whatever happens from here (a failure, an interrupt), leave the cluster as it was found.
restore() {
  if $made_db; then psql_main -d postgres -c "DROP DATABASE IF EXISTS $db" || true; fi
  if $started; then pg_ctlcluster 15 main stop || true; fi
  if $created; then pg_dropcluster 15 main || true; fi
  if $preloading; then pg_dropcluster --stop 15 "$guard" || true; fi
}
trap restore EXIT
trap "exit 130" INT TERM HUP
psql_main -d postgres -c "CREATE DATABASE $db"
made_db=true
psql_main -d "$db" -c "CREATE TABLE someones_data(token text); INSERT INTO someones_data VALUES ('$token')"
pid=$(head -n1 "$data/postmaster.pid")

# The second cluster: the installed sqs_ingest preloaded, its worker polling (a queue nobody
# answers: it backs off, a live process with the library mapped).
pg_createcluster 15 "$guard" -- --no-sync >/dev/null
preloading=true
guard_conf=/etc/postgresql/15/$guard/conf.d/sqs_ingest.conf
cat > "$guard_conf" <<'CONF'
shared_preload_libraries = 'sqs_ingest'
sqs_ingest.queue_url = 'http://127.0.0.1:9/000000000000/nobody'
sqs_ingest.worker_max_backoff = 5
CONF
pg_ctlcluster 15 "$guard" start
guard_port=$(pg_lsclusters -h | awk -v g="$guard" '$1 == 15 && $2 == g { print $3 }')
guard_data=$(pg_lsclusters -h | awk -v g="$guard" '$1 == 15 && $2 == g { print $6 }')
guard_log=$(pg_lsclusters -h | awk -v g="$guard" '$1 == 15 && $2 == g { print $7 }')
psql_guard() { (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -p "$guard_port" -d postgres "$@"); }
psql_guard -c 'CREATE EXTENSION sqs_ingest'
for _ in $(seq 100); do
  [ "$(psql_guard -c "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'backing off'")" = 1 ] && break
  sleep 0.1
done
guard_pid=$(head -n1 "$guard_data/postmaster.pid")
guard_worker=$(psql_guard -c "SELECT pid FROM sqs_ingest.worker_status")
log "15/$guard preloads sqs_ingest, worker pid $guard_worker"

status=0
"$@" || status=$?

check() {
  if eval "$2"; then log "ok: $1"; else log "FAILED: $1"; status=1; fi
}
check "15/main still exists" "pg_lsclusters -h | grep -q '^15 \+main '"
check "15/main still runs, same postmaster (pid $pid)" \
  "[ \"\$(head -n1 '$data/postmaster.pid' 2>/dev/null)\" = $pid ]"
check "its table still holds its row" "[ \"\$(psql_main -d $db -c 'TABLE someones_data' 2>/dev/null)\" = $token ]"
check "15/$guard still runs, same postmaster (pid $guard_pid)" \
  "[ \"\$(head -n1 '$guard_data/postmaster.pid' 2>/dev/null)\" = $guard_pid ]"
check "its worker (pid $guard_worker) still runs" "[ \"\$(psql_guard -c 'SELECT pid FROM sqs_ingest.worker_status' 2>/dev/null)\" = $guard_worker ]"
check "none of its processes ended by a signal" "! grep -q 'terminated by signal' '$guard_log'"
if [ $status = 0 ]; then echo "cluster guard: 1 passed, 0 failed"; else echo "cluster guard: 0 passed, 1 failed"; fi
exit $status
