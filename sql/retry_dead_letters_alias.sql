-- retry_dead_letters under the name releases before 0.7.0 gave it, in the extension's schema
-- (public, as a rule), for the jobs and scripts that call it so: a call of it is a call of
-- sqs_ingest.retry_dead_letters, with the caller's rights.
CREATE FUNCTION @extschema@.retry_dead_letters(ids bigint[] DEFAULT NULL) RETURNS integer
    LANGUAGE sql VOLATILE PARALLEL UNSAFE
    RETURN sqs_ingest.retry_dead_letters(ids);
