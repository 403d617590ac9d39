//! retry_dead_letters: once their cause is fixed (a constraint relaxed, a partition added),
//! stores the kept bodies of dead letters again, in the caller's transaction.
use super::{store, IngestError, Target};
use crate::sqs::Received;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Re-ingests the dead letters `ids` (all of them when NULL); removes those that became rows
/// and returns how many did. Those refused again stay, with their new reason and error.
#[pg_extern(volatile, parallel_unsafe)]
fn retry_dead_letters(ids: default!(Option<Vec<i64>>, "NULL")) -> Result<i32, ErrorReport> {
    let target = Target::resolve()?;
    let letters = Spi::connect(|client| {
        client
            .select(
                "SELECT id, message_id, (extract(epoch FROM sent_at) * 1000)::int8, receive_count, body
                 FROM sqs_ingest.dead_letters WHERE $1::int8[] IS NULL OR id = ANY($1)
                 ORDER BY id FOR UPDATE",
                None,
                &[ids.into()],
            )?
            .map(|r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    Received {
                        message_id: r.get(2)?.unwrap_or_default(),
                        receipt_handle: String::new(),
                        sent_millis: r.get(3)?,
                        receive_count: r.get(4)?,
                        body: r.get(5)?.unwrap_or_default(),
                    },
                ))
            })
            .collect::<Result<Vec<(i64, Received)>, pgrx::spi::SpiError>>()
    })
    .map_err(IngestError::spi("reading the dead letters"))?;
    if letters.is_empty() {
        return Ok(0);
    }
    let (ids, batch): (Vec<i64>, Vec<Received>) = letters.into_iter().unzip();
    let message_ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
    // A dead letter's message id is in the ledger, which would skip it as ingested already.
    Spi::run_with_args("DELETE FROM sqs_ingest.processed_messages WHERE message_id = ANY($1)", &[message_ids.into()])
        .map_err(IngestError::spi("clearing the ledger entries"))?;
    let (stored, again) = store::restore(&target, &batch);
    Spi::run_with_args(
        "DELETE FROM sqs_ingest.dead_letters WHERE id = ANY($1) AND message_id <> ALL($2)",
        &[ids.into(), again.into()],
    )
    .map_err(IngestError::spi("removing the dead letters that became rows"))?;
    Ok(stored)
}
