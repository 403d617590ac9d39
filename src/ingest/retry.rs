//! retry_dead_letters: once their cause is fixed (a constraint relaxed, a partition added, a
//! mapping corrected), stores the kept bodies of dead letters again, each through its source,
//! in the caller's transaction.
use super::store::as_extension;
use super::{IngestError, Sink};
use crate::source::{Source, LOGIN};
use crate::sqs::Received;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::collections::BTreeMap;

#[pg_schema]
mod sqs_ingest {
    use pgrx::pg_sys::panic::ErrorReport;
    use pgrx::prelude::*;

    /// Re-ingests the dead letters `ids` (all of them when NULL); removes those that became
    /// rows and returns how many did. Those refused again stay, with their new reason and error.
    #[pg_extern(volatile, parallel_unsafe)]
    fn retry_dead_letters(ids: default!(Option<Vec<i64>>, "NULL")) -> Result<i32, ErrorReport> {
        super::retry(ids)
    }
}

// The name releases before 0.7.0 gave it, in the extension's schema.
extension_sql_file!(
    "../../sql/retry_dead_letters_alias.sql",
    name = "retry_dead_letters_alias",
    requires = [sqs_ingest::retry_dead_letters]
);

fn retry(ids: Option<Vec<i64>>) -> Result<i32, ErrorReport> {
    super::writable()?;
    // Dead letters name their source from 0.3.0 on; before, every one is the login source's.
    let named: Option<bool> = Spi::get_one("SELECT to_regclass('sqs_ingest.sources') IS NOT NULL")
        .map_err(IngestError::spi("reading the dead letters"))?;
    let source = if named == Some(true) { "source" } else { "'login'" };
    // Dead letters and the ledger change with the extension's rights: retry_dead_letters is
    // the one way its operators may change them.
    let letters = as_extension(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                    "SELECT id, message_id, (extract(epoch FROM sent_at) * 1000)::int8, receive_count, body, {source}
                     FROM sqs_ingest.dead_letters WHERE $1::int8[] IS NULL OR id = ANY($1)
                     ORDER BY id FOR UPDATE"
                ),
                    None,
                    &[ids.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<String>(6)?.unwrap_or_else(|| LOGIN.to_owned()),
                        r.get::<i64>(1)?.unwrap_or_default(),
                        Received {
                            message_id: r.get(2)?.unwrap_or_default(),
                            receipt_handle: String::new(),
                            sent_millis: r.get(3)?,
                            receive_count: r.get(4)?,
                            body: r.get(5)?.unwrap_or_default(),
                            // Not kept with a dead letter: an expression reading them gets NULL.
                            ..Received::default()
                        },
                    ))
                })
                .collect::<Result<Vec<(String, i64, Received)>, pgrx::spi::SpiError>>()
        })
    })
    .map_err(IngestError::spi("reading the dead letters"))?;
    let mut by_source: BTreeMap<String, (Vec<i64>, Vec<Received>)> = BTreeMap::new();
    for (source, id, message) in letters {
        let (ids, batch) = by_source.entry(source).or_default();
        ids.push(id);
        batch.push(message);
    }
    let mut stored = 0;
    for (name, (ids, batch)) in by_source {
        let sink = Sink::resolve(&Source::load(&name)?)?;
        let message_ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
        // A dead letter's message id is in the ledger, which would skip it as ingested already.
        as_extension(|| {
            Spi::run_with_args(
                "DELETE FROM sqs_ingest.processed_messages WHERE message_id = ANY($1)",
                &[message_ids.into()],
            )
        })
        .map_err(IngestError::spi("clearing the ledger entries"))?;
        let (rows, again) = sink.restore(&name, &batch);
        stored += rows;
        as_extension(|| {
            Spi::run_with_args(
                "DELETE FROM sqs_ingest.dead_letters WHERE id = ANY($1) AND message_id <> ALL($2)",
                &[ids.into(), again.into()],
            )
        })
        .map_err(IngestError::spi("removing the dead letters that became rows"))?;
    }
    Ok(stored)
}
