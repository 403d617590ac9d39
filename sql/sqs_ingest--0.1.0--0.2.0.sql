-- sqs_ingest 0.1.0 -> 0.2.0: a row the table refuses (a constraint, a trigger, a missing
-- partition) becomes a dead letter with the table's error, instead of stalling its batch.
ALTER TABLE sqs_ingest.dead_letters
    ADD COLUMN sqlstate        text,
    ADD COLUMN error_message   text,
    ADD COLUMN error_detail    text,
    ADD COLUMN constraint_name text,
    ADD COLUMN table_name      text;

-- Once the cause of refusals is fixed: stores the kept bodies again (see the README).
CREATE FUNCTION "retry_dead_letters"(
	"ids" bigint[] DEFAULT NULL
) RETURNS INT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'retry_dead_letters_wrapper';
REVOKE ALL ON FUNCTION @extschema@.retry_dead_letters(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_dead_letters(bigint[]) TO sqs_ingest_operator;
-- retry_dead_letters updates the dead letters refused again.
GRANT UPDATE ON sqs_ingest.dead_letters TO sqs_ingest_operator;
