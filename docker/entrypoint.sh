#!/usr/bin/env bash
# The image's entrypoint: installs the compose secret that holds the masking key as a file only
# the server's user can read (compose mounts a secret with its host file's owner and mode, which
# sqs_ingest refuses for a key, as PostgreSQL refuses a loose TLS key), then runs the official
# entrypoint. At every start, so a recreated container has it too; outside the data directory,
# so base backups never hold it.
set -euo pipefail
if [ -n "${SQS_INGEST_PII_KEY_SECRET:-}" ] && [ -n "${SQS_INGEST_PII_KEY_FILE:-}" ]; then
  install -m 600 "$SQS_INGEST_PII_KEY_SECRET" "$SQS_INGEST_PII_KEY_FILE"
fi
exec docker-entrypoint.sh "$@"
