-- Least privilege: ingesting and the extension's tables are granted through roles, masking is
-- for everyone, revealing PII only for its readers. The audit of reveals is written by a worker,
-- so no reader needs (or has) any right to change it.
REVOKE ALL ON FUNCTION @extschema@.fetch_login_queue(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.fetch_login_queue(integer) TO sqs_ingest_operator;
REVOKE ALL ON FUNCTION sqs_ingest.retry_dead_letters(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sqs_ingest.retry_dead_letters(bigint[]) TO sqs_ingest_operator;
REVOKE ALL ON FUNCTION @extschema@.retry_dead_letters(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_dead_letters(bigint[]) TO sqs_ingest_operator;
REVOKE ALL ON FUNCTION @extschema@.reveal_pii(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.reveal_pii(text) TO sqs_ingest_pii_reader;

GRANT USAGE ON SCHEMA sqs_ingest TO sqs_ingest_operator, sqs_ingest_pii_reader;
-- Exactly what ingesting needs: adding ledger entries and dead letters. Pruning the ledger,
-- writing the vault and retrying dead letters run with the extension's own rights (its
-- functions, not its operators, decide what they remove or change).
GRANT SELECT, INSERT ON sqs_ingest.processed_messages TO sqs_ingest_operator;
GRANT SELECT, INSERT ON sqs_ingest.dead_letters TO sqs_ingest_operator;
GRANT USAGE ON SEQUENCE sqs_ingest.dead_letters_id_seq TO sqs_ingest_operator;
GRANT SELECT ON sqs_ingest.worker_status TO sqs_ingest_operator;
-- Sealed values are useless without the server's key; reveal_pii reads them as its caller.
GRANT SELECT ON sqs_ingest.pii_vault, sqs_ingest.pii_reveals TO sqs_ingest_pii_reader;
-- Sources: creating, changing and dropping one lets its owner make the server read a queue
-- with the server's AWS credentials, so nobody may until a superuser grants it (README, threat
-- model). Operators fetch and watch them.
REVOKE ALL ON FUNCTION sqs_ingest.create_source(text, text, regclass, jsonb, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.alter_source(text, text, regclass, jsonb, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.drop_source(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.fetch_source(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sqs_ingest.fetch_source(text, integer) TO sqs_ingest_operator;
GRANT SELECT ON sqs_ingest.sources, sqs_ingest.source_status TO sqs_ingest_operator;
-- Identities: only superusers declare and grant them (the functions check too); operators see
-- which exist and who may use them. An external id is not a secret (AWS's IAM guide says so):
-- it keeps a role from being assumed for anyone but this server's sources.
REVOKE ALL ON FUNCTION sqs_ingest.create_identity(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.alter_identity(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.drop_identity(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.grant_identity(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.revoke_identity(text, text) FROM PUBLIC;
GRANT SELECT ON sqs_ingest.identities, sqs_ingest.identity_usage TO sqs_ingest_operator;
