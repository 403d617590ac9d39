-- sqs_ingest 0.4.0 -> 0.5.0: the ledger's key compares message ids as bytes (COLLATE "C"):
-- cheaper than the database's collation, and immune to a C library upgrade that changes its
-- collation rules (which would leave the key's index out of order and exactly-once unsure).
-- The column keeps its values; its primary key index is rebuilt, under an ACCESS EXCLUSIVE lock
-- on the ledger for as long as that takes (seconds per million entries): ingestion waits.
ALTER TABLE sqs_ingest.processed_messages ALTER COLUMN message_id TYPE text COLLATE "C";
