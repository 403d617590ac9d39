#!/usr/bin/env bash
# Runs once, when the data directory is created: settings from the environment, a restart of
# the entrypoint's temporary server so that they take effect (pg_cron can only be created in the
# database cron.database_name names at server start), then the extensions in $POSTGRES_DB.
# Nothing secret is baked into the image or set here: the key comes from a compose secret.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v queue_url="${SQS_QUEUE_URL:-http://localstack:4566/000000000000/login-queue}" \
     -v region="${AWS_REGION:-us-east-1}" \
     -v worker_enabled="${SQS_INGEST_WORKER_ENABLED:-on}" \
     -v database="$POSTGRES_DB" -v socket_dir="${PGHOST:-/var/run/postgresql}" <<'SQL'
ALTER SYSTEM SET sqs_ingest.queue_url = :'queue_url';
ALTER SYSTEM SET sqs_ingest.region = :'region';
ALTER SYSTEM SET sqs_ingest.worker_enabled = :'worker_enabled';
ALTER SYSTEM SET sqs_ingest.database = :'database';
ALTER SYSTEM SET cron.database_name = :'database';
-- pg_cron's jobs connect over the Unix socket this script uses, which the image trusts.
ALTER SYSTEM SET cron.host = :'socket_dir';
SQL
# The path of the masking key's file, never the key: docker/entrypoint.sh installs the file.
if [ -n "${SQS_INGEST_PII_KEY_FILE:-}" ]; then
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
       -v path="$SQS_INGEST_PII_KEY_FILE" <<<"ALTER SYSTEM SET sqs_ingest.pii_key_file = :'path'"
fi
# pg_ctl restart starts the server again with the options it was started with (postmaster.opts):
# the entrypoint's temporary server stays local-only.
pg_ctl -D "$PGDATA" -m fast -w restart
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS sqs_ingest;
CREATE EXTENSION IF NOT EXISTS pg_cron;
SQL
