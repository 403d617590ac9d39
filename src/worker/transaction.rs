//! A worker's transaction: committed when its body returns, rolled back when it raises, and
//! bounded by the worker's lock and statement timeouts.
use crate::settings::{WORKER_LOCK_TIMEOUT, WORKER_STATEMENT_TIMEOUT};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// Runs `body` in a transaction of its own: committed when it returns, rolled back (and the
/// error returned as text) when it raises, so that an ERROR never ends the worker. The
/// transaction waits for a lock at most `sqs_ingest.worker_lock_timeout` and runs at most
/// `sqs_ingest.worker_statement_timeout`: a user's LOCK TABLE delays ingestion, never wedges it.
/// A transaction that only reads takes no transaction id and writes no WAL.
pub fn in_transaction<R>(body: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    // SAFETY: the worker is connected to a database and outside any transaction here; the
    // statement timeout is disarmed below whichever way the transaction ends.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        enable_timeout_after(STATEMENT_TIMEOUT, WORKER_STATEMENT_TIMEOUT.get());
    }
    let result = PgTryBuilder::new(|| {
        set_lock_timeout(WORKER_LOCK_TIMEOUT.get());
        Ok(body())
    })
    .catch_others(|caught| {
        Err(match caught {
            CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => e.message().to_owned(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
        })
    })
    .execute();
    // SAFETY: ends the transaction started above, whichever way it went.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        match result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

/// SET LOCAL lock_timeout, without SPI: a SET through SPI marks the transaction as writing.
fn set_lock_timeout(ms: i32) {
    let value = std::ffi::CString::new(ms.to_string()).expect("digits have no NUL");
    // SAFETY: both strings outlive the call; GUC_ACTION_LOCAL ends with the transaction, and an
    // invalid value raises an ERROR, which the caller's PgTryBuilder catches.
    unsafe {
        pg_sys::set_config_option(
            c"lock_timeout".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

// pgrx 0.18 does not bind utils/timeout.h. A background worker's statement timeout is not armed
// by Postgres (only a client's statements are): the worker arms it around each transaction.
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: u32, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: u32, keep_indicator: bool);
}
/// STATEMENT_TIMEOUT of utils/timeout.h's TimeoutId: the fourth, from PostgreSQL 13 to 18.
const STATEMENT_TIMEOUT: u32 = 3;
