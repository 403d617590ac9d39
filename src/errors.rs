//! Raising helpers: every module maps its own error enum to SQLSTATE and HINT beside it, and
//! reports through these. Imports no module of the crate.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `error` as an ERROR; never returns.
pub fn raise(error: impl Into<ErrorReport>) -> ! {
    error.into().report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// An ErrorReport of sqs_ingest: its message prefixed with the extension's name.
pub fn report(code: PgSqlErrorCode, message: String, hint: &str) -> ErrorReport {
    ErrorReport::new(code, format!("sqs_ingest: {message}"), "sqs_ingest").set_hint(hint)
}
