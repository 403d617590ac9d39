-- sqs_ingest 0.4.0 -> 0.5.0: the ledger's key compares message ids as bytes (COLLATE "C"):
-- cheaper than the database's collation, and immune to a C library upgrade that changes its
-- collation rules (which would leave the key's index out of order and exactly-once unsure).
-- The column keeps its values; its primary key index is rebuilt, under an ACCESS EXCLUSIVE lock
-- on the ledger for as long as that takes (seconds per million entries): ingestion waits.

-- Postgres cannot change the collation of a column a view selects: a view of the user's over
-- the ledger's ids stops the update, said plainly, before anything is changed.
DO $views$
DECLARE
    views text;
BEGIN
    SELECT string_agg(DISTINCT v.oid::regclass::text, ', ') INTO views
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_rewrite'::regclass
      AND d.refobjid = 'sqs_ingest.processed_messages'::regclass
      AND a.attname = 'message_id'
      AND v.oid <> d.refobjid;
    IF views IS NOT NULL THEN
        RAISE EXCEPTION 'sqs_ingest 0.5.0 changes the collation of sqs_ingest.processed_messages.message_id, which these views select: %', views
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Save their definitions (pg_get_viewdef), drop them, run ALTER EXTENSION sqs_ingest UPDATE again, then create them again.';
    END IF;
END
$views$;

ALTER TABLE sqs_ingest.processed_messages ALTER COLUMN message_id TYPE text COLLATE "C";
