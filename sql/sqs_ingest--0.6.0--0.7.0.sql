-- sqs_ingest 0.6.0 -> 0.7.0: the workers serve every database where the extension is created,
-- started by a launcher; worker_status names each worker's database.

-- The library installed, loaded by a path the server has not loaded it by: where the server runs
-- another version (preloaded at its start, the package upgraded since), the new library refuses
-- here, naming the restart, before any of this script lays new SQL over the old library.
LOAD '$libdir/./sqs_ingest';

DROP VIEW sqs_ingest.worker_status;
DROP FUNCTION sqs_ingest.worker_status_rows();
CREATE FUNCTION sqs_ingest."worker_status_rows"() RETURNS TABLE (
	"database" TEXT,  /* Option < String > */
	"worker" INT,  /* i32 */
	"pid" INT,  /* Option < i32 > */
	"source" TEXT,  /* Option < String > */
	"state" TEXT,  /* String */
	"last_poll" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_success" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"ingested" bigint,  /* i64 */
	"dead_lettered" bigint,  /* i64 */
	"duplicates_skipped" bigint,  /* i64 */
	"last_error" TEXT  /* Option < String > */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_status_rows_wrapper';
CREATE VIEW sqs_ingest.worker_status AS SELECT * FROM sqs_ingest.worker_status_rows();
GRANT SELECT ON sqs_ingest.worker_status TO sqs_ingest_operator;

-- retry_dead_letters moves to the schema of every other source function (its grants go with it);
-- the name it had stays, calling it.
ALTER FUNCTION @extschema@.retry_dead_letters(bigint[]) SET SCHEMA sqs_ingest;
CREATE FUNCTION @extschema@.retry_dead_letters(ids bigint[] DEFAULT NULL) RETURNS integer
    LANGUAGE sql VOLATILE PARALLEL UNSAFE
    RETURN sqs_ingest.retry_dead_letters(ids);
REVOKE ALL ON FUNCTION @extschema@.retry_dead_letters(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_dead_letters(bigint[]) TO sqs_ingest_operator;
