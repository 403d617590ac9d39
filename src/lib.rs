//! sqs_ingest: ingests user-login events from Amazon SQS into `user_logins`, masking PII.
use pgrx::prelude::*;

mod errors;
mod ingest;
mod masking;
mod settings;
mod sqs_client;
mod xact;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Only settings here: _PG_init runs in the postmaster before fork, so no runtime, thread
    // or client may be created yet.
    settings::register();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'sqs_ingest'"]
    }
}
