//! The one WARNING a server that ingests without a masking key logs: unkeyed hashes of
//! IPv4 addresses and device ids are reversible by enumeration.
use crate::errors::report;
use crate::settings;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic, PgLogLevel, PgSqlErrorCode};
use std::sync::atomic::{AtomicBool, Ordering};

// SAFETY: the only atomic of this name.
static WARNED: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"sqs_ingest_unkeyed_warned") };
/// Without shared memory (not preloaded), each backend warns once.
static WARNED_HERE: AtomicBool = AtomicBool::new(false);
/// Set in the postmaster while preloading, and so inherited by every process it forks.
static ALLOCATED: AtomicBool = AtomicBool::new(false);

/// Asks for the shared flag; only possible while shared_preload_libraries load.
pub fn allocate() {
    pg_shmem_init!(WARNED);
    ALLOCATED.store(true, Ordering::Relaxed);
}

/// Before storing a batch: warns when masking is unkeyed, once in the server's life (per
/// backend when not preloaded), not once per batch.
pub fn warn_once() {
    if settings::pii_key_is_set() {
        return;
    }
    let flag = if ALLOCATED.load(Ordering::Relaxed) { WARNED.get() } else { &WARNED_HERE };
    if flag.swap(true, Ordering::Relaxed) {
        return;
    }
    report(
        PgSqlErrorCode::ERRCODE_WARNING,
        "sqs_ingest.pii_key is not set, so ip and device_id are masked with unkeyed SHA-256, which anyone can reverse by hashing every IPv4 address and device id".to_owned(),
        "Put a secret key in a file only the server's user can read (openssl rand -hex 32 > FILE; chmod 600 FILE), then ALTER SYSTEM SET sqs_ingest.pii_key_file = 'FILE'; SELECT pg_reload_conf(); (see the README, \"Keys\").",
    )
    .report(PgLogLevel::WARNING);
}
