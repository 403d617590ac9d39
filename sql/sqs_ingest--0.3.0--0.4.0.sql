-- sqs_ingest 0.3.0 -> 0.4.0: real SQS traffic. A source opens SNS notifications and
-- EventBridge events around its messages as its envelope says; FIFO queues and message
-- attributes need no schema.
ALTER TABLE sqs_ingest.sources
    ADD COLUMN envelope text NOT NULL DEFAULT 'auto' CHECK (envelope IN ('auto', 'none', 'sns', 'eventbridge'));
