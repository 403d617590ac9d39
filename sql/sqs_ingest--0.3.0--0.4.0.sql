-- sqs_ingest 0.3.0 -> 0.4.0: real SQS traffic. A source opens SNS notifications and
-- EventBridge events around its messages as its envelope says; FIFO queues and message
-- attributes need no schema.
ALTER TABLE sqs_ingest.sources
    ADD COLUMN envelope text NOT NULL DEFAULT 'auto' CHECK (envelope IN ('auto', 'none', 'sns', 'eventbridge'));

-- The operator role narrowed to what ingesting needs: pruning the ledger, writing the vault and
-- retrying dead letters now run with the extension's own rights.
REVOKE UPDATE, DELETE ON sqs_ingest.processed_messages FROM sqs_ingest_operator;
REVOKE UPDATE, DELETE ON sqs_ingest.dead_letters FROM sqs_ingest_operator;
REVOKE INSERT ON sqs_ingest.pii_vault FROM sqs_ingest_operator;
