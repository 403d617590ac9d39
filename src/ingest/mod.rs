//! Ingestion: received messages become rows, ledger entries and dead letters in the current
//! transaction, and their deletion from SQS waits for COMMIT (xact.rs). `fetch` and `retry` are
//! the SQL entry points, `table` finds the login source's table, `store` writes its batches and
//! `mapped` those of every other source.
mod fetch;
mod mapped;
mod retry;
mod store;
mod table;

pub use fetch::MAX_FETCH;
pub use store::{prune_ledger, Stored};
pub use table::Target;

use crate::errors::report;
use crate::settings::FetchSettings;
use crate::source::mapping::Mapping;
use crate::source::stats::Counts;
use crate::source::{Source, SourceError};
use crate::sqs::Received;
use crate::{unkeyed, xact};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use sqs_ingest_core::envelope::Envelope;
use std::fmt;

/// Where a source's rows go, how they are made, and how its bodies are opened.
pub struct Sink {
    envelope: Envelope,
    rows: Rows,
}

enum Rows {
    /// The login source: validated, masked and encoded in Rust (store.rs).
    Login(Target),
    /// Any other source: its mapping's INSERT (mapped.rs).
    Mapped(Mapping),
}

impl Sink {
    /// The sink of `source`, on its table as it is now, in a transaction that can write.
    pub fn resolve(source: &Source) -> Result<Sink, IngestError> {
        writable()?;
        let rows = if source.is_login() {
            Rows::Login(Target::resolve()?)
        } else {
            Rows::Mapped(Mapping::resolve(source).map_err(IngestError::Source)?)
        };
        Ok(Sink { envelope: source.envelope, rows })
    }

    /// Stores a batch received from `source` in the current transaction: its ids enter the
    /// ledger first, and only the messages new to it become rows or dead letters. A batch whose
    /// ledger entries deadlocked is left in the queue (see [`store::Deferred`]).
    fn store(&self, source: &str, settings: &FetchSettings, received: &[Received]) -> Stored {
        let Ok(fresh) = store::enter_ledger(received) else {
            return Stored { deferred: received.len() as i32, ..Stored::default() };
        };
        match &self.rows {
            Rows::Login(target) => {
                store::store(target, received, &fresh, self.envelope, &settings.masker, settings.sealer.as_ref())
            }
            Rows::Mapped(mapping) => mapped::store(mapping, source, received, &fresh, self.envelope),
        }
    }

    /// Stores kept dead letters of `source` again (retry_dead_letters), their ledger entries
    /// removed first: the rows inserted and the ids of the messages that are dead letters
    /// again. A deadlock is raised: retrying cannot leave a batch for later.
    fn restore(&self, source: &str, batch: &[Received]) -> (i32, Vec<String>) {
        let fresh = store::enter_ledger(batch).unwrap_or_else(|d| d.raise());
        match &self.rows {
            Rows::Login(target) => store::restore(target, batch, &fresh, self.envelope),
            Rows::Mapped(mapping) => mapped::restore(mapping, source, batch, &fresh, self.envelope),
        }
    }
}

/// Refuses a transaction that cannot write, before anything is received: messages received
/// there could not be stored, and would be hidden from every consumer for the visibility
/// timeout. Checked before the catalog is read, too: a kept plan's execution takes a
/// transaction id, which a standby cannot give.
pub fn writable() -> Result<(), IngestError> {
    // SAFETY: a question about this server's state and a flag of the current transaction.
    let (recovery, read_only) = unsafe { (pg_sys::RecoveryInProgress(), pg_sys::XactReadOnly) };
    if recovery || read_only {
        return Err(IngestError::ReadOnly { recovery });
    }
    Ok(())
}

/// Stores one batch received from `source` in the current transaction and schedules its
/// deletion from SQS for after COMMIT: the one path of fetch_source and the workers alike.
pub fn ingest(source: &str, sink: &Sink, settings: &FetchSettings, received: Vec<Received>) -> Stored {
    unkeyed::warn_once();
    let stored = sink.store(source, settings, &received);
    let counts = Counts {
        rows: stored.rows as i64,
        dead_letters: stored.dead_letters as i64,
        duplicates: stored.duplicates as i64,
        newest_sent: received
            .iter()
            .filter_map(|m| m.sent_millis)
            .max()
            .and_then(sqs_ingest_core::message::pg_timestamp_from_unix_millis),
        ..Counts::ZERO
    };
    // A deferred batch stays in the queue: SQS delivers it again.
    let handles = match stored.deferred {
        0 => received.into_iter().map(|m| m.receipt_handle).collect(),
        _ => Vec::new(),
    };
    xact::delete_after_commit(source, &settings.queue, settings.in_flight, handles, counts);
    stored
}

#[derive(Debug)]
pub enum IngestError {
    BadMax(Option<i32>),
    /// A read-only transaction; `recovery`: on a standby, where every transaction is.
    ReadOnly {
        recovery: bool,
    },
    Source(SourceError),
    NoExtension,
    NoTable(String),
    NoColumn {
        table: String,
        column: &'static str,
    },
    ColumnType {
        column: &'static str,
        found: String,
        expected: &'static str,
    },
    /// A statement of ours failed: `doing` says which.
    Spi {
        doing: &'static str,
        error: String,
    },
}

impl IngestError {
    /// Maps an SPI failure of ours to the error it is, saying what was being done.
    fn spi(doing: &'static str) -> impl Fn(pgrx::spi::SpiError) -> IngestError {
        move |e| IngestError::Spi { doing, error: e.to_string() }
    }
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::BadMax(Some(max)) => write!(f, "max must be between 1 and {MAX_FETCH}, not {max}"),
            IngestError::BadMax(None) => write!(f, "max must be between 1 and {MAX_FETCH}, not NULL"),
            IngestError::ReadOnly { recovery: true } => write!(f, "cannot ingest on a server in recovery (a standby)"),
            IngestError::ReadOnly { recovery: false } => write!(f, "cannot ingest in a read-only transaction"),
            IngestError::Source(e) => e.fmt(f),
            IngestError::NoExtension => write!(f, "extension sqs_ingest is not created in this database"),
            IngestError::NoTable(table) => write!(f, "table {table} does not exist"),
            IngestError::NoColumn { table, column } => write!(f, "table {table} has no column \"{column}\""),
            IngestError::ColumnType { column, found, expected } => {
                write!(f, "column \"{column}\" of user_logins is {found}, but must be {expected}")
            }
            IngestError::Spi { doing, error } => write!(f, "{doing} failed: {error}"),
        }
    }
}

impl From<IngestError> for ErrorReport {
    fn from(e: IngestError) -> Self {
        let (code, hint) = match e {
            IngestError::Source(e) => return e.into(),
            IngestError::BadMax(_) => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "Pass a number of messages from 1 to 10000, e.g. SELECT fetch_login_queue(100);".to_owned(),
            ),
            IngestError::ReadOnly { recovery: true } => (
                PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                "Nothing was received from SQS. Ingest on the primary: its rows and ledger reach this standby by replication.".to_owned(),
            ),
            IngestError::ReadOnly { recovery: false } => (
                PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                "Nothing was received from SQS. The transaction is read-only (BEGIN READ ONLY, or default_transaction_read_only = on for the session, role, database or server): ingest in a read-write one.".to_owned(),
            ),
            IngestError::NoExtension => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "Run CREATE EXTENSION sqs_ingest in the database sqs_ingest.database names.".to_owned(),
            ),
            IngestError::NoTable(ref table) => (
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("Create {table} again (see the README for its columns), or recreate the extension."),
            ),
            IngestError::NoColumn { .. } => (
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                "user_logins needs the columns user_id, device_type, masked_ip, masked_device_id, locale, app_version and create_date.".to_owned(),
            ),
            IngestError::ColumnType { .. } => (
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                "See the README for the column types user_logins may have.".to_owned(),
            ),
            IngestError::Spi { .. } => (
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "The transaction is rolled back and its messages stay in the queue.".to_owned(),
            ),
        };
        report(code, e.to_string(), &hint)
    }
}
