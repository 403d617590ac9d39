//! Writes one batch of a mapped source, its ledger entries in already: the rows through the
//! source's INSERT as its owner, each body out of its envelope; bodies that are not JSON objects
//! and rows the table or an expression refuses as dead letters that name the source.
use super::store::{insert_or_isolate, sent_at, update, DeadLetters, Stored};
use crate::source::mapping::Mapping;
use crate::sqs::Received;
use pgrx::datum::DatumWithOid;
use sqs_ingest_core::envelope::{self, Envelope, Opened};
use sqs_ingest_core::masking::Masker;
use sqs_ingest_core::message;
use std::collections::HashSet;

/// Stores a batch received from `source` whose ids new to the ledger are `fresh`. Bodies are
/// kept as they came in its dead letters: only the login source knows which fields are
/// personal, and a retry must see the original.
pub fn store(mapping: &Mapping, source: &str, batch: &[Received], fresh: &HashSet<&str>, envelope: Envelope) -> Stored {
    let (stored, dead, duplicates) = write(mapping, source, batch, fresh, envelope);
    let dead_letters = dead.insert(true);
    Stored { rows: stored, dead_letters, duplicates, deferred: 0 }
}

/// Stores the kept bodies of dead letters again (retry_dead_letters), those whose ids are
/// `fresh` entered in the ledger again: the rows inserted, and the ids of the messages that are
/// dead letters again, whose dead letters get their new reason and error, and their ledger
/// entries back.
pub fn restore(
    mapping: &Mapping,
    source: &str,
    batch: &[Received],
    fresh: &HashSet<&str>,
    envelope: Envelope,
) -> (i32, Vec<String>) {
    let (stored, dead, _) = write(mapping, source, batch, fresh, envelope);
    let again = dead.message_ids().to_vec();
    dead.update(true);
    (stored, again)
}

/// Inserts the rows of the messages whose ids are `fresh`: the rows inserted, the dead letters
/// to write, and how many were ingested before.
fn write(
    mapping: &Mapping,
    source: &str,
    batch: &[Received],
    fresh: &HashSet<&str>,
    envelope: Envelope,
) -> (i32, DeadLetters, i32) {
    let mut seen = HashSet::with_capacity(batch.len());
    let batch: Vec<&Received> = batch.iter().filter(|m| seen.insert(m.message_id.as_str())).collect();
    let mut rows = Vec::with_capacity(fresh.len());
    let mut dead = DeadLetters::new(&mapping.table, &mapping.relation, Some(source));
    let as_is = Masker::AlreadyMasked;
    for m in batch.iter().copied().filter(|m| fresh.contains(m.message_id.as_str())) {
        let opened = envelope::open(&m.body, envelope).and_then(|opened| {
            message::object(opened.as_ref().map_or(m.body.as_str(), |o| o.payload.as_str()))?;
            Ok(opened)
        });
        match opened {
            Ok(opened) => rows.push(Row { message: m, opened }),
            Err(reason) => dead.push(m, reason.to_string(), None, &as_is),
        }
    }
    let inserted = insert_or_isolate(&rows, |r| r.message, |rows| insert(mapping, rows), &mut dead, &as_is);
    (inserted, dead, (batch.len() - fresh.len()) as i32)
}

/// A message to insert, out of its envelope when it had one.
struct Row<'a> {
    message: &'a Received,
    opened: Option<Opened>,
}

/// Inserts `rows` through the source's INSERT, as its owner.
fn insert(mapping: &Mapping, rows: &[Row]) -> i32 {
    // Borrowed, not cloned: a batch of large bodies is copied once, into the array Postgres reads.
    let column =
        |f: for<'r> fn(&'r Row) -> Option<&'r str>| -> DatumWithOid { rows.iter().map(f).collect::<Vec<_>>().into() };
    let args: [DatumWithOid; 8] = [
        column(|r| Some(&r.message.message_id)),
        column(|r| Some(r.opened.as_ref().map_or(&r.message.body, |o| &o.payload))),
        rows.iter().map(|r| sent_at(r.message)).collect::<Vec<_>>().into(),
        rows.iter().map(|r| r.message.receive_count).collect::<Vec<_>>().into(),
        column(|r| r.message.attributes.as_deref()),
        column(|r| r.opened.as_ref().map(|o| o.envelope.as_str())),
        column(|r| r.message.group_id.as_deref()),
        column(|r| r.message.sequence_number.as_deref()),
    ];
    mapping.as_owner(|| update(&mapping.insert, &args))
}
