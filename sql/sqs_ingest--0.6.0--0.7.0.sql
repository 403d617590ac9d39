-- sqs_ingest 0.6.0 -> 0.7.0: the workers serve every database where the extension is created,
-- started by a launcher; worker_status names each worker's database. Sources may name an
-- identity: an IAM role assumed through STS (sqs_ingest.identities).

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
AS 'MODULE_PATHNAME', 'worker_status_rows_by_database_wrapper';
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

-- Identities: IAM roles sources assume through STS, declared and granted by superusers.
CREATE TABLE sqs_ingest.identities (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    role_arn     text NOT NULL CHECK (role_arn ~ '^arn:aws[a-z-]*:iam::[0-9]{12}:role/'),
    external_id  text,
    session_name text,
    region       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sqs_ingest.identity_usage (
    identity text NOT NULL,
    grantee  regrole NOT NULL,
    PRIMARY KEY (identity, grantee)
);
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.identities', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.identity_usage', '');
CREATE TRIGGER identities_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.identities
    FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();
CREATE TRIGGER identity_usage_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sqs_ingest.identity_usage
    FOR EACH STATEMENT EXECUTE FUNCTION sqs_ingest.sources_changed();
GRANT SELECT ON sqs_ingest.identities, sqs_ingest.identity_usage TO sqs_ingest_operator;

ALTER TABLE sqs_ingest.sources ADD COLUMN identity text;
CREATE OR REPLACE VIEW sqs_ingest.source_status AS
     SELECT s.name AS source, s.enabled,
            coalesce(c.received, 0) AS received, coalesce(c.rows, 0) AS rows,
            coalesce(c.dead_letters, 0) AS dead_letters, coalesce(c.duplicates_skipped, 0) AS duplicates_skipped,
            coalesce(c.receive_requests, 0) AS receive_requests, coalesce(c.empty_receives, 0) AS empty_receives,
            coalesce(c.delete_requests, 0) AS delete_requests, c.newest_sent_at, c.last_error, s.identity
     FROM sqs_ingest.sources s LEFT JOIN sqs_ingest.source_counts() c ON c.source = s.name;

-- create_source and alter_source take an identity. A new signature is a new function (with a
-- symbol of its own: the old SQL's symbols stay in the library for the time before this update),
-- and the EXECUTE grants a superuser gave on the old ones (README: who may create sources) are
-- given again on the new ones before the old ones go.
CREATE FUNCTION sqs_ingest."create_source"(
	"name" TEXT, /* Option < String > */
	"queue_url" TEXT, /* Option < String > */
	"target" regclass, /* Option < PgRelation > */
	"columns" jsonb DEFAULT NULL, /* Option < JsonB > */
	"enabled" bool DEFAULT true, /* Option < bool > */
	"identity" TEXT DEFAULT NULL /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_source_with_identity_wrapper';
CREATE FUNCTION sqs_ingest."alter_source"(
	"name" TEXT, /* Option < String > */
	"queue_url" TEXT DEFAULT NULL, /* Option < String > */
	"target" regclass DEFAULT NULL, /* Option < PgRelation > */
	"columns" jsonb DEFAULT NULL, /* Option < JsonB > */
	"enabled" bool DEFAULT NULL, /* Option < bool > */
	"identity" TEXT DEFAULT NULL /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alter_source_with_identity_wrapper';
REVOKE ALL ON FUNCTION sqs_ingest.create_source(text, text, regclass, jsonb, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.alter_source(text, text, regclass, jsonb, boolean, text) FROM PUBLIC;
DO $$
DECLARE
    created regprocedure := 'sqs_ingest.create_source(text, text, regclass, jsonb, boolean, text)';
    altered regprocedure := 'sqs_ingest.alter_source(text, text, regclass, jsonb, boolean, text)';
    -- GRANTs in an extension's script count as the extension's own privileges (pg_init_privs),
    -- which pg_dump leaves out: the users' grants go back to being theirs after.
    own_privileges CONSTANT aclitem[] := (SELECT initprivs FROM pg_catalog.pg_init_privs
                                          WHERE classoid = 'pg_catalog.pg_proc'::regclass AND objoid = created);
    granted record;
BEGIN
    FOR granted IN
        SELECT CASE p.proname WHEN 'create_source' THEN created ELSE altered END AS new,
               a.grantee::regrole AS grantee, a.is_grantable
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid IN ('sqs_ingest.create_source(text, text, regclass, jsonb, boolean)'::regprocedure,
                        'sqs_ingest.alter_source(text, text, regclass, jsonb, boolean)'::regprocedure)
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', granted.new, granted.grantee,
                       CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    UPDATE pg_catalog.pg_init_privs SET initprivs = own_privileges
        WHERE classoid = 'pg_catalog.pg_proc'::regclass AND objoid IN (created, altered);
END
$$;
DROP FUNCTION sqs_ingest.create_source(text, text, regclass, jsonb, boolean);
DROP FUNCTION sqs_ingest.alter_source(text, text, regclass, jsonb, boolean);

CREATE FUNCTION sqs_ingest."create_identity"(
	"name" TEXT, /* Option < String > */
	"role_arn" TEXT, /* Option < String > */
	"external_id" TEXT DEFAULT NULL, /* Option < String > */
	"session_name" TEXT DEFAULT NULL, /* Option < String > */
	"region" TEXT DEFAULT NULL /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_identity_wrapper';
CREATE FUNCTION sqs_ingest."alter_identity"(
	"name" TEXT, /* Option < String > */
	"role_arn" TEXT DEFAULT NULL, /* Option < String > */
	"external_id" TEXT DEFAULT NULL, /* Option < String > */
	"session_name" TEXT DEFAULT NULL, /* Option < String > */
	"region" TEXT DEFAULT NULL /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alter_identity_wrapper';
CREATE FUNCTION sqs_ingest."drop_identity"(
	"name" TEXT /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_identity_wrapper';
CREATE FUNCTION sqs_ingest."grant_identity"(
	"name" TEXT, /* Option < String > */
	"role" TEXT /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'grant_identity_wrapper';
CREATE FUNCTION sqs_ingest."revoke_identity"(
	"name" TEXT, /* Option < String > */
	"role" TEXT /* Option < String > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_identity_wrapper';
REVOKE ALL ON FUNCTION sqs_ingest.create_identity(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.alter_identity(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.drop_identity(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.grant_identity(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sqs_ingest.revoke_identity(text, text) FROM PUBLIC;
