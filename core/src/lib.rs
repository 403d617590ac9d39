//! Pure logic of sqs_ingest, free of pgrx so it is unit-tested with `cargo test` and fuzzed.
pub mod assignment;
pub mod endpoint;
pub mod envelope;
pub mod http;
pub mod key_file;
pub mod masking;
pub mod message;
pub mod query;
pub mod received;
pub mod redact;
pub mod refusal;
pub mod vault;
pub mod version;
