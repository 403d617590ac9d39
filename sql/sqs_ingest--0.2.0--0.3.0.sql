-- sqs_ingest 0.2.0 -> 0.3.0: sources. Any SQS queue into any table, configured in the catalog
-- sqs_ingest.sources; the login pipeline becomes its built-in source "login", and dead letters
-- name their source.
ALTER TABLE sqs_ingest.dead_letters ADD COLUMN source text NOT NULL DEFAULT 'login';

-- Sources: each an SQS queue ingested into a table (see the README). A NULL setting column
-- follows the server's sqs_ingest.* setting of the same meaning.
CREATE TABLE sqs_ingest.sources (
    name               text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    -- NULL: sqs_ingest.queue_url (the built-in login source only).
    queue_url          text CHECK (queue_url ~ '^https?://'),
    -- NULL: user_logins in the extension's schema (the built-in login source only).
    target             regclass,
    -- Target column -> SQL expression; NULL: the body's keys of the same names.
    columns            jsonb CHECK (jsonb_typeof(columns) = 'object'),
    enabled            boolean NOT NULL DEFAULT true,
    -- Expressions and the INSERT run with this role's privileges.
    owner              regrole NOT NULL,
    wait_seconds       integer CHECK (wait_seconds BETWEEN 1 AND 20),
    visibility_timeout integer CHECK (visibility_timeout BETWEEN 0 AND 43200),
    requests_in_flight integer CHECK (requests_in_flight BETWEEN 1 AND 16),
    -- Workers serving it at once; 0: none (fetch_source only). NULL: 1, and for the login
    -- source every worker of the pool.
    workers            integer CHECK (workers BETWEEN 0 AND 16),
    protocol           text CHECK (protocol IN ('auto', 'json', 'query')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (name = 'login' OR (queue_url IS NOT NULL AND target IS NOT NULL))
);
-- The built-in login source: created here, so pg_dump leaves it out (a restore's CREATE
-- EXTENSION makes it again).
INSERT INTO sqs_ingest.sources (name, owner) VALUES ('login', current_user::regrole);
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.sources', $$WHERE name <> 'login'$$);

CREATE  FUNCTION sqs_ingest."source_counts"() RETURNS TABLE (
	"source" TEXT,
	"received" bigint,
	"rows" bigint,
	"dead_letters" bigint,
	"duplicates_skipped" bigint,
	"receive_requests" bigint,
	"empty_receives" bigint,
	"delete_requests" bigint,
	"newest_sent_at" timestamp with time zone,
	"last_error" TEXT
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'source_counts_wrapper';

CREATE VIEW sqs_ingest.source_status AS
     SELECT s.name AS source, s.enabled,
            coalesce(c.received, 0) AS received, coalesce(c.rows, 0) AS rows,
            coalesce(c.dead_letters, 0) AS dead_letters, coalesce(c.duplicates_skipped, 0) AS duplicates_skipped,
            coalesce(c.receive_requests, 0) AS receive_requests, coalesce(c.empty_receives, 0) AS empty_receives,
            coalesce(c.delete_requests, 0) AS delete_requests, c.newest_sent_at, c.last_error
     FROM sqs_ingest.sources s LEFT JOIN sqs_ingest.source_counts() c ON c.source = s.name;

CREATE  FUNCTION sqs_ingest."create_source"(
	"name" TEXT,
	"queue_url" TEXT,
	"target" regclass,
	"columns" jsonb DEFAULT NULL,
	"enabled" bool DEFAULT true
) RETURNS VOID
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_source_wrapper';

CREATE  FUNCTION sqs_ingest."alter_source"(
	"name" TEXT,
	"queue_url" TEXT DEFAULT NULL,
	"target" regclass DEFAULT NULL,
	"columns" jsonb DEFAULT NULL,
	"enabled" bool DEFAULT NULL
) RETURNS VOID
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'alter_source_wrapper';

CREATE  FUNCTION sqs_ingest."drop_source"(
	"name" TEXT
) RETURNS VOID
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_source_wrapper';

CREATE FUNCTION sqs_ingest."sources_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'sources_changed_wrapper';

CREATE TRIGGER sources_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.sources
         FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();

CREATE  FUNCTION sqs_ingest."fetch_source"(
	"name" TEXT,
	"max" INT DEFAULT 10
) RETURNS INT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'fetch_source_wrapper';

-- worker_status names the source each worker serves.
DROP VIEW sqs_ingest.worker_status;
DROP FUNCTION sqs_ingest.worker_status_rows();
CREATE  FUNCTION sqs_ingest."worker_status_rows"() RETURNS TABLE (
	"worker" INT,
	"pid" INT,
	"source" TEXT,
	"state" TEXT,
	"last_poll" timestamp with time zone,
	"last_success" timestamp with time zone,
	"ingested" bigint,
	"dead_lettered" bigint,
	"duplicates_skipped" bigint,
	"last_error" TEXT
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'worker_status_rows_wrapper';
CREATE VIEW sqs_ingest.worker_status AS SELECT * FROM sqs_ingest.worker_status_rows();
GRANT SELECT ON sqs_ingest.worker_status TO sqs_ingest_operator;

-- Sources: creating, changing and dropping one lets its owner make the server read a queue
-- with the server's AWS credentials, so nobody may until a superuser grants it (README, threat
-- model). Operators fetch and watch them.
REVOKE ALL ON FUNCTION sqs_ingest.create_source(text, text, regclass, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.alter_source(text, text, regclass, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.drop_source(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.fetch_source(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sqs_ingest.fetch_source(text, integer) TO sqs_ingest_operator;
GRANT SELECT ON sqs_ingest.sources, sqs_ingest.source_status TO sqs_ingest_operator;
