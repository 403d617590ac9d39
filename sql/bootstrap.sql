-- The library installed, loaded by a path the server has not loaded it by: where the server runs
-- another version (preloaded at its start, the package upgraded since), the new library refuses
-- here, naming the restart, before any of this script lays new SQL over the old library.
LOAD '$libdir/./sqs_ingest';

-- Tables of sqs_ingest. The ledger and dead letters belong to the extension (and are dumped
-- by pg_dump); user_logins is user data and is detached so that DROP EXTENSION keeps it.
-- Roles are cluster-wide, so they may exist from another database (and outlive the extension).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqs_ingest_operator') THEN
        CREATE ROLE sqs_ingest_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqs_ingest_pii_reader') THEN
        CREATE ROLE sqs_ingest_pii_reader NOLOGIN;
    END IF;
END
$roles$;

CREATE SCHEMA sqs_ingest;

-- Message ids are opaque: their key compares bytes ("C"), which costs less than the database's
-- collation and cannot be invalidated by an upgrade of the C library's collation rules.
CREATE TABLE sqs_ingest.processed_messages (
    message_id  text COLLATE "C" PRIMARY KEY,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- Pruning (sqs_ingest.ledger_retention) deletes the oldest entries first.
CREATE INDEX processed_messages_ingested_at ON sqs_ingest.processed_messages (ingested_at);

CREATE TABLE sqs_ingest.dead_letters (
    id            bigserial PRIMARY KEY,
    message_id    text NOT NULL,
    sent_at       timestamptz,
    receive_count integer,
    received_at   timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL,
    body          text NOT NULL,
    -- When the table refused the row (a constraint, a trigger, a missing partition): its error.
    sqlstate        text,
    error_message   text,
    error_detail    text,
    constraint_name text,
    table_name      text,
    -- The source whose message it is (sqs_ingest.sources).
    source          text NOT NULL DEFAULT 'login'
);

SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.processed_messages', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.dead_letters_id_seq', '');

DO $bootstrap$
BEGIN
    -- A restore of pg_dump's output (which turns row_security off, as nothing else does) brings
    -- the table itself, with its rows, right after this.
    IF to_regclass('@extschema@.user_logins') IS NULL AND current_setting('row_security')::boolean THEN
        CREATE TABLE @extschema@.user_logins (
            user_id          varchar(128),
            device_type      varchar(32),
            masked_ip        varchar(256),
            masked_device_id varchar(256),
            locale           varchar(32),
            app_version      varchar(32),
            create_date      date
        );
        ALTER EXTENSION sqs_ingest DROP TABLE @extschema@.user_logins;
        -- A table that already existed keeps the privileges its owner gave it.
        GRANT SELECT, INSERT ON @extschema@.user_logins TO sqs_ingest_operator;
    END IF;
END
$bootstrap$;

-- Opt-in PII recovery (sqs_ingest.recovery_key): each original ip and device_id, sealed with
-- AES-256-GCM under the masked value it hides, and the audit of every reveal_pii.
CREATE TABLE sqs_ingest.pii_vault (
    masked    text PRIMARY KEY,
    sealed    bytea NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sqs_ingest.pii_reveals (
    id           bigserial PRIMARY KEY,
    revealed_at  timestamptz NOT NULL DEFAULT now(),
    revealed_by  name NOT NULL,
    session_role name NOT NULL,
    masked       text NOT NULL,
    found        boolean NOT NULL,
    token        bigint NOT NULL UNIQUE
);

SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.pii_vault', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.pii_reveals', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.pii_reveals_id_seq', '');

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
    -- How bodies are opened: auto (SNS notifications and EventBridge events, anything else as
    -- it is), none, sns, eventbridge. Added in 0.4.0, hence after created_at.
    envelope           text NOT NULL DEFAULT 'auto' CHECK (envelope IN ('auto', 'none', 'sns', 'eventbridge')),
    CHECK (name = 'login' OR (queue_url IS NOT NULL AND target IS NOT NULL)),
    -- The identity (sqs_ingest.identities) its requests are signed as; NULL: the server's own
    -- credentials. Added in 0.7.0. Not a foreign key: pg_dump restores configuration tables
    -- in no order that one could rely on; drop_identity refuses while a source names it.
    identity           text
);
-- The built-in login source: created here, so pg_dump leaves it out (a restore's CREATE
-- EXTENSION makes it again).
INSERT INTO sqs_ingest.sources (name, owner) VALUES ('login', current_user::regrole);
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.sources', $$WHERE name <> 'login'$$);

-- Identities (0.7.0): IAM roles that sources assume through STS with the server's credentials,
-- declared and granted by superusers only (README, threat model).
CREATE TABLE sqs_ingest.identities (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    role_arn     text NOT NULL CHECK (role_arn ~ '^arn:aws[a-z-]*:iam::[0-9]{12}:role/'),
    -- Sent with every AssumeRole; the role's trust policy names it (sts:ExternalId).
    external_id  text,
    -- NULL: '<source>@<cluster_name, else the system identifier>'.
    session_name text,
    -- STS's region; NULL: the queue's.
    region       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- Who may name an identity in their sources: these roles, and the roles with their privileges.
CREATE TABLE sqs_ingest.identity_usage (
    identity text NOT NULL,
    grantee  regrole NOT NULL,
    PRIMARY KEY (identity, grantee)
);
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.identities', '');
SELECT pg_catalog.pg_extension_config_dump('sqs_ingest.identity_usage', '');
