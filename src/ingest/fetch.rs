//! fetch_login_queue: pulls messages in rounds and ingests each round in the caller's transaction.
use super::{ingest, prune_ledger, IngestError, Stored, Target, MAX_FETCH};
use crate::settings;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Pulls up to `max` messages, `sqs_ingest.requests_in_flight` requests of ten at a time, and
/// returns the number of rows inserted.
#[pg_extern(volatile, parallel_unsafe)]
fn fetch_login_queue(max: default!(Option<i32>, 10)) -> Result<i32, ErrorReport> {
    let max = match max {
        Some(m) if (1..=MAX_FETCH).contains(&m) => m,
        other => return Err(IngestError::BadMax(other).into()),
    };
    let settings = settings::fetch_settings()?;
    let target = Target::resolve()?;
    prune_ledger(settings.ledger_retention_seconds);
    let mut remaining = max;
    let mut total = Stored::default();
    while remaining > 0 {
        let received = settings
            .queue
            .receive_blocking(remaining as usize, settings.in_flight, settings.wait_seconds, || {
                check_for_interrupts!();
                true
            })
            .expect("only an ERROR stops a backend's request")?;
        if received.is_empty() {
            break;
        }
        remaining -= received.len() as i32;
        total += ingest(&target, &settings, received);
    }
    if total.dead_letters > 0 || total.duplicates > 0 {
        notice!(
            "sqs_ingest: {} rows inserted, {} messages dead-lettered (see sqs_ingest.dead_letters), {} already ingested and skipped",
            total.rows,
            total.dead_letters,
            total.duplicates
        );
    }
    Ok(total.rows)
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
