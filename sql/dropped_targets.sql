-- A source whose table, or a column its mapping fills, is dropped is disabled on the spot, with a
-- WARNING that says how to point it again. Left enabled, its workers would fail on every poll,
-- and its target would name a table that no longer exists by its number, which pg_dump would
-- carry into a restore, where that number may be another table's. The drop itself is never
-- refused: DROP TABLE, DROP SCHEMA ... CASCADE and pg_restore --clean work as they always did.
CREATE FUNCTION sqs_ingest.disable_sources_of_dropped_targets() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hit record;
BEGIN
    -- DROP EXTENSION sqs_ingest has dropped the catalog with everything else.
    IF to_regclass('sqs_ingest.sources') IS NULL THEN
        RETURN;
    END IF;
    FOR hit IN
        SELECT s.name, d.object_identity, d.objsubid, d.address_names[3] AS column_name,
               array_to_string(d.address_names[1:2], '.') AS table_name
        FROM pg_event_trigger_dropped_objects() d
        JOIN sqs_ingest.sources s ON s.target::oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass
          AND (d.objsubid = 0 OR s.columns ? d.address_names[3])
        ORDER BY s.name
    LOOP
        UPDATE sqs_ingest.sources SET enabled = false WHERE name = hit.name;
        IF hit.objsubid = 0 THEN
            RAISE WARNING 'sqs_ingest: source "%" is disabled: its table % was dropped', hit.name, hit.object_identity
                USING HINT = format('Once the table exists again: SELECT sqs_ingest.alter_source(%L, target => %L, enabled => true); or SELECT sqs_ingest.drop_source(%L). Its messages wait in the queue.',
                                    hit.name, hit.object_identity, hit.name);
        ELSE
            RAISE WARNING 'sqs_ingest: source "%" is disabled: column "%" of %, which its mapping fills, was dropped',
                          hit.name, hit.column_name, hit.table_name
                USING HINT = format('Add the column again, or map without it (SELECT sqs_ingest.alter_source(%L, columns => ...)), then SELECT sqs_ingest.alter_source(%L, enabled => true). Its messages wait in the queue.',
                                    hit.name, hit.name);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION sqs_ingest.disable_sources_of_dropped_targets() FROM PUBLIC;
CREATE EVENT TRIGGER sqs_ingest_dropped_targets ON sql_drop
    EXECUTE FUNCTION sqs_ingest.disable_sources_of_dropped_targets();
