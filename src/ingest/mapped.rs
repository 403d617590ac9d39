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
/// to write, and how many were skipped: ingested before, or a second copy of one in the batch
/// (SQS may hand one message to two receives of a round).
fn write(
    mapping: &Mapping,
    source: &str,
    batch: &[Received],
    fresh: &HashSet<&str>,
    envelope: Envelope,
) -> (i32, DeadLetters, i32) {
    let received = batch.len();
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
    (inserted, dead, (received - fresh.len()) as i32)
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::ingest::Sink;
    use crate::settings;
    use crate::source::Source;
    use crate::sqs::Received;
    use pgrx::prelude::*;

    fn message(id: &str, handle: &str) -> Received {
        Received {
            message_id: id.to_owned(),
            receipt_handle: handle.to_owned(),
            body: format!(r#"{{"id": "{id}"}}"#),
            sent_millis: None,
            receive_count: Some(1),
            attributes: None,
            group_id: None,
            sequence_number: None,
        }
    }

    /// SQS delivers a message at least once: two receives of one round may both bring it, and
    /// their answers make one batch. It becomes one row; the other copy is a duplicate skipped,
    /// so that source_status's received minus duplicates_skipped is what reached the ledger.
    #[pg_test]
    fn a_message_twice_in_one_batch_is_one_row_and_one_duplicate_skipped() {
        Spi::run("CREATE TABLE twice (id text PRIMARY KEY)").unwrap();
        Spi::run(
            r#"SELECT sqs_ingest.create_source('twice', 'http://127.0.0.1:9/000000000000/twice', 'twice', '{"id": "body->>''id''"}')"#,
        )
        .unwrap();
        let source = Source::load("twice").unwrap();
        let sink = Sink::resolve(&source).unwrap();
        let settings = settings::fetch_settings(&source.overrides, None).unwrap();
        let batch = [message("m-1", "h-1"), message("m-2", "h-2"), message("m-1", "h-3")];
        let stored = sink.store("twice", &settings, &batch);
        assert_eq!((stored.rows, stored.dead_letters, stored.duplicates), (2, 0, 1));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM twice").unwrap(), Some(2));
    }
}
