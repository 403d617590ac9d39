//! sqs_ingest: ingests messages from Amazon SQS into PostgreSQL tables exactly once, masking PII;
//! the take-home's login pipeline is its built-in source.
use pgrx::prelude::*;

mod errors;
mod ingest;
mod keys;
mod library;
mod masking;
mod plans;
mod recovery;
mod role;
mod settings;
mod shmem;
mod source;
mod sqs;
mod status;
mod subxact;
mod unkeyed;
mod worker;
mod xact;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/dropped_targets.sql", name = "dropped_targets", requires = ["bootstrap"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    match library::claim() {
        Ok(library::Claim::First) => {}
        Ok(library::Claim::Again) => return,
        Err(e) => errors::raise(e),
    }
    // Only settings and registrations here: _PG_init runs in the postmaster before fork, so
    // no runtime, thread or client may be created yet.
    settings::register();
    keys::register();
    // SAFETY: reads a flag Postgres sets while loading shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        settings::register_preloaded();
        status::allocate();
        unkeyed::allocate();
        source::allocate();
        worker::register();
    }
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
