//! Writes one batch in the current transaction: rows and dead letters, each with its ledger
//! entry in the same statement, through plans kept for the backend's life.
use super::{IngestError, Target};
use crate::errors::raise;
use crate::sqs::Received;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use sqs_ingest_core::masking::Masker;
use sqs_ingest_core::message::{self, AppVersion, AppVersionColumn};
use sqs_ingest_core::vault::Sealer;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Inserts the batch's valid messages as rows and the others as dead letters, each with
/// its ledger entry; ids already in the ledger are skipped. No INSERT can fail on data:
/// everything was validated against the columns first.
pub fn store(target: &Target, batch: &[Received], masker: &Masker, sealer: Option<&Sealer>) -> Stored {
    let mut good = Rows::default();
    let mut dead = DeadLetters::default();
    let mut seen = HashSet::with_capacity(batch.len());
    for m in batch.iter().filter(|m| seen.insert(m.message_id.as_str())) {
        match message::parse(&m.body, &target.columns) {
            Ok(login) => good.push(m, login, masker, sealer),
            Err(reason) => dead.push(m, reason.to_string(), message::dead_letter_body(&m.body, masker)),
        }
    }
    let rows = good.insert(&target.table, target.columns.app_version);
    let dead_letters = dead.insert();
    Stored { rows, dead_letters, duplicates: batch.len() as i32 - rows - dead_letters }
}

/// What storing one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stored {
    pub rows: i32,
    pub dead_letters: i32,
    pub duplicates: i32,
}

impl std::ops::AddAssign for Stored {
    fn add_assign(&mut self, other: Stored) {
        self.rows += other.rows;
        self.dead_letters += other.dead_letters;
        self.duplicates += other.duplicates;
    }
}

/// Most expired ledger entries one call removes, so a backlog is worked off over several
/// calls instead of making one call slow.
const PRUNE_LIMIT: i64 = 10_000;

/// Removes ledger entries older than the retention, in the caller's transaction. Rows another
/// transaction is already deleting are skipped rather than waited for.
pub fn prune_ledger(retention_seconds: i32) {
    let sql = "DELETE FROM sqs_ingest.processed_messages WHERE message_id IN (
                   SELECT message_id FROM sqs_ingest.processed_messages
                   WHERE ingested_at < now() - make_interval(secs => $1)
                   ORDER BY ingested_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    update(sql, &[(retention_seconds as f64).into(), PRUNE_LIMIT.into()]);
}

/// A statement that enters the batch's message ids in the ledger and runs `insert` (an
/// INSERT ... SELECT) over the rows of `batch` whose id was new: a row or dead letter exists iff
/// its message id entered the ledger in this very statement.
fn ledgered(batch: &str, more: &str, insert: &str) -> String {
    format!(
        "WITH batch AS ({batch}), fresh AS (
            INSERT INTO sqs_ingest.processed_messages (message_id)
            SELECT message_id FROM batch ON CONFLICT DO NOTHING RETURNING message_id
         ){more}
         {insert}
         FROM batch JOIN fresh USING (message_id)"
    )
}

/// SQS's SentTimestamp as a timestamptz; NULL when absent or out of range.
fn sent_at(m: &Received) -> Option<TimestampWithTimeZone> {
    m.sent_millis.and_then(message::pg_timestamp_from_unix_millis).and_then(|t| t.try_into().ok())
}

#[derive(Default)]
struct Rows {
    message_id: Vec<String>,
    user_id: Vec<String>,
    device_type: Vec<String>,
    masked_ip: Vec<String>,
    masked_device_id: Vec<String>,
    locale: Vec<Option<String>>,
    version_text: Vec<String>,
    version_int: Vec<i32>,
    sent_at: Vec<Option<TimestampWithTimeZone>>,
    /// The originals, sealed, when recovery is on (sqs_ingest.recovery_key).
    sealed_ip: Vec<Vec<u8>>,
    sealed_device_id: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, m: &Received, login: message::Login, masker: &Masker, sealer: Option<&Sealer>) {
        let masked_ip = masker.mask(&login.ip);
        let masked_device_id = masker.mask(&login.device_id);
        if let Some(sealer) = sealer {
            self.sealed_ip.push(sealer.seal(&masked_ip, &login.ip));
            self.sealed_device_id.push(sealer.seal(&masked_device_id, &login.device_id));
        }
        self.message_id.push(m.message_id.clone());
        self.user_id.push(login.user_id.into_owned());
        self.device_type.push(login.device_type.into_owned());
        self.masked_ip.push(masked_ip);
        self.masked_device_id.push(masked_device_id);
        self.locale.push(login.locale.map(|l| l.into_owned()));
        match login.app_version {
            AppVersion::Text(v) => self.version_text.push(v.into_owned()),
            AppVersion::Integer(v) => self.version_int.push(v),
        }
        self.sent_at.push(sent_at(m));
    }

    fn insert(self, table: &str, version: AppVersionColumn) -> i32 {
        if self.message_id.is_empty() {
            return 0;
        }
        let (version_type, versions): (&str, DatumWithOid) = match version {
            AppVersionColumn::Text(_) => ("text", self.version_text.into()),
            AppVersionColumn::Integer => ("int4", self.version_int.into()),
        };
        let sealing = !self.sealed_ip.is_empty();
        // The originals are sealed under their masked values, once each: the first seal stays.
        let vault = if sealing {
            ", vault AS (
                INSERT INTO sqs_ingest.pii_vault (masked, sealed)
                SELECT v.masked, v.sealed FROM batch JOIN fresh USING (message_id),
                    LATERAL (VALUES (masked_ip, sealed_ip), (masked_device_id, sealed_device_id))
                    AS v(masked, sealed)
                ON CONFLICT DO NOTHING
             )"
        } else {
            ""
        };
        let sealed_columns = if sealing { ", $9::bytea[], $10::bytea[]" } else { "" };
        let sealed_names = if sealing { ", sealed_ip, sealed_device_id" } else { "" };
        let sql = ledgered(
            &format!(
                "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                     $6::text[], $7::{version_type}[], $8::timestamptz[]{sealed_columns})
                    AS b(message_id, user_id, device_type, masked_ip, masked_device_id, locale,
                         app_version, sent_at{sealed_names})"
            ),
            vault,
            &format!(
                "INSERT INTO {table}
                    (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
                 SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                        (coalesce(sent_at, now()) AT TIME ZONE 'UTC')::date"
            ),
        );
        let mut args: Vec<DatumWithOid> = vec![
            self.message_id.into(),
            self.user_id.into(),
            self.device_type.into(),
            self.masked_ip.into(),
            self.masked_device_id.into(),
            self.locale.into(),
            versions,
            self.sent_at.into(),
        ];
        if sealing {
            args.push(self.sealed_ip.into());
            args.push(self.sealed_device_id.into());
        }
        update(&sql, &args)
    }
}

#[derive(Default)]
struct DeadLetters {
    message_id: Vec<String>,
    sent_at: Vec<Option<TimestampWithTimeZone>>,
    receive_count: Vec<Option<i32>>,
    reason: Vec<String>,
    body: Vec<String>,
}

impl DeadLetters {
    fn push(&mut self, m: &Received, reason: String, body: String) {
        self.message_id.push(m.message_id.clone());
        self.sent_at.push(sent_at(m));
        self.receive_count.push(m.receive_count);
        self.reason.push(reason);
        self.body.push(body);
    }

    fn insert(self) -> i32 {
        if self.message_id.is_empty() {
            return 0;
        }
        let sql = ledgered(
            "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int4[], $4::text[], $5::text[])
                AS b(message_id, sent_at, receive_count, reason, body)",
            "",
            "INSERT INTO sqs_ingest.dead_letters (message_id, sent_at, receive_count, reason, body)
             SELECT message_id, sent_at, receive_count, reason, body",
        );
        let args: [DatumWithOid; 5] = [
            self.message_id.into(),
            self.sent_at.into(),
            self.receive_count.into(),
            self.reason.into(),
            self.body.into(),
        ];
        update(&sql, &args)
    }
}

thread_local! {
    /// Ingestion's statements, planned once per backend and kept (SPI_keepplan), keyed by their
    /// text: another table or app_version type is another text. Postgres replans a kept plan by
    /// itself when a table it uses changes.
    static PLANS: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs an INSERT or DELETE through its kept plan and returns how many rows it touched. An SPI
/// failure here is a bug or a broken table (a trigger, a constraint), so it is raised as the
/// ERROR it is.
fn update(sql: &str, args: &[DatumWithOid]) -> i32 {
    Spi::connect_mut(|client| {
        PLANS.with_borrow_mut(|plans| {
            if !plans.contains_key(sql) {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                plans.insert(sql.to_owned(), client.prepare_mut(sql, &types)?.keep());
            }
            client.update(&plans[sql], None, args).map(|t| t.len() as i32)
        })
    })
    .unwrap_or_else(|e| raise(IngestError::Spi { doing: "storing a batch", error: e.to_string() }))
}
