//! fetch_source and fetch_login_queue: pull messages in rounds and ingest each round in the
//! caller's transaction.
use super::{ingest, prune_ledger, IngestError, Sink, Stored};
use crate::settings;
use crate::source::{identity, stats, Source, SourceError, LOGIN};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Bounds of `max`: enough for any cron interval, small enough to keep one call's memory bounded.
pub const MAX_FETCH: i32 = 10_000;

/// Pulls up to `max` messages from `source`'s queue, `requests_in_flight` requests of ten at a
/// time, and returns the number of rows inserted.
fn fetch(name: &str, max: Option<i32>) -> Result<i32, ErrorReport> {
    let max = match max {
        Some(m) if (1..=MAX_FETCH).contains(&m) => m,
        other => return Err(IngestError::BadMax(other).into()),
    };
    super::writable()?;
    let source = Source::load(name)?;
    if !source.enabled {
        return Err(SourceError::Disabled(source.name).into());
    }
    let settings = settings::fetch_settings(&source.overrides, identity::assume_for(&source)?)?;
    let sink = Sink::resolve(&source)?;
    prune_ledger(settings.ledger_retention_seconds);
    let fifo = settings.queue.is_fifo();
    let mut remaining = max;
    let mut total = Stored::default();
    while remaining > 0 {
        let receipt = settings
            .queue
            .receive_blocking(remaining as usize, settings.in_flight, settings.wait_seconds, || {
                check_for_interrupts!();
                true
            })
            .expect("only an ERROR stops a backend's request");
        let receipt = match receipt {
            Ok(r) => r,
            Err(e) => {
                stats::set_error(name, Some(&e.to_string()));
                return Err(e.into());
            }
        };
        stats::received(name, &receipt);
        if receipt.messages.is_empty() {
            break;
        }
        let asked = remaining as usize;
        // From a FIFO queue, groups are held until their messages are deleted after the
        // commit: once an answer came back empty, another receive would find no free group.
        let more = !fifo || receipt.more_now(asked, fifo);
        remaining -= receipt.messages.len() as i32;
        total += ingest(name, &sink, &settings, receipt.messages);
        if !more {
            break;
        }
    }
    if total.dead_letters > 0 || total.duplicates > 0 {
        notice!(
            "sqs_ingest: {} rows inserted, {} messages dead-lettered (see sqs_ingest.dead_letters), {} already ingested and skipped",
            total.rows,
            total.dead_letters,
            total.duplicates
        );
    }
    if total.deferred > 0 {
        notice!(
            "sqs_ingest: {} messages left in the queue: another transaction was entering some of them in the ledger; SQS delivers them again after the visibility timeout",
            total.deferred
        );
    }
    Ok(total.rows)
}

/// The login source's fetch, as the take-home calls it.
#[pg_extern(volatile, parallel_unsafe)]
fn fetch_login_queue(max: default!(Option<i32>, 10)) -> Result<i32, ErrorReport> {
    fetch(LOGIN, max)
}

#[pg_schema]
mod sqs_ingest {
    use pgrx::pg_sys::panic::ErrorReport;
    use pgrx::prelude::*;

    /// Pulls up to `max` messages from the source `name` into its table, in the caller's
    /// transaction; returns the number of rows inserted.
    #[pg_extern(volatile, parallel_unsafe)]
    fn fetch_source(name: Option<String>, max: default!(Option<i32>, 10)) -> Result<i32, ErrorReport> {
        let name = name.ok_or(super::SourceError::Null("name"))?;
        super::fetch(&name, max)
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test(error = "sqs_ingest: max must be between 1 and 10000, not 0")]
    fn fetch_rejects_zero() {
        Spi::run("SELECT fetch_login_queue(0)").unwrap();
    }

    #[pg_test(error = "sqs_ingest: max must be between 1 and 10000, not NULL")]
    fn fetch_rejects_null() {
        Spi::run("SELECT fetch_login_queue(NULL)").unwrap();
    }
}
