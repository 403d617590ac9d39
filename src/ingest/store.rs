//! Writes one batch in the current transaction: its ledger entries first, then the rows and dead
//! letters of the messages new to the ledger, through plans kept for the backend's life. A row
//! the table refuses (a constraint, a trigger, a missing partition) becomes a dead letter, not a
//! stall.
use super::table::TABLE;
use super::{IngestError, Target};
use crate::errors::raise;
use crate::plans;
use crate::sqs::Received;
use crate::subxact::{subtransaction, with_setting};
use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sqs_ingest_core::envelope::{self, Envelope};
use sqs_ingest_core::masking::Masker;
use sqs_ingest_core::message::{self, AppVersion, AppVersionColumn};
use sqs_ingest_core::refusal;
use sqs_ingest_core::vault::Sealer;
use std::collections::HashSet;

/// Inserts the valid messages of the batch whose ids are `fresh` (new to the ledger) as rows
/// and the others as dead letters; ids already in the ledger are skipped, before they are
/// parsed. Rows are validated against the columns first; what the table itself refuses is found
/// row by row (see [`insert_or_isolate`]).
pub fn store(
    target: &Target,
    batch: &[Received],
    fresh: &HashSet<&str>,
    envelope: Envelope,
    masker: &Masker,
    sealer: Option<&Sealer>,
) -> Stored {
    let (rows, mut dead) = parse(target, batch, fresh, envelope, masker, sealer);
    seal(&rows);
    let stored = insert_or_isolate(&rows, |r| r.message, |rows| insert_rows(target, rows), &mut dead, masker);
    let dead_letters = dead.insert(target.dead_letter_errors);
    Stored { rows: stored, dead_letters, duplicates: batch.len() as i32 - stored - dead_letters, deferred: 0 }
}

/// Enters the ids of `batch` in the ledger; those that were not there yet. A row or dead letter
/// is written only for these, in the same transaction: exactly once, whoever received it.
pub(super) fn enter_ledger(batch: &[Received]) -> Result<HashSet<&str>, Deferred> {
    let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
    // Ids seen before are rare (redeliveries): a plain INSERT, undone when one of them violates
    // the key, costs less than ON CONFLICT's probe of the key before every insert and the
    // second WAL record of each speculative insertion.
    let plain = subtransaction(|| {
        update(
            "INSERT INTO sqs_ingest.processed_messages (message_id) SELECT unnest($1::text[])",
            &[ids.as_slice().into()],
        )
    });
    let new = match plain {
        Ok(_) => return Ok(ids.into_iter().collect()),
        Err(error) if has_code(&error, PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION) => subtransaction(|| {
            let sql = "INSERT INTO sqs_ingest.processed_messages (message_id) SELECT unnest($1::text[])
                       ON CONFLICT DO NOTHING RETURNING message_id";
            returning(sql, &[ids.as_slice().into()]).into_iter().collect::<HashSet<String>>()
        }),
        Err(error) => Err(error),
    };
    match new {
        Ok(new) => Ok(ids.into_iter().filter(|id| new.contains(*id)).collect()),
        Err(error) if has_code(&error, PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED) => Err(Deferred(Box::new(error))),
        Err(error) => error.rethrow(),
    }
}

/// A batch left in the queue: entering it in the ledger deadlocked with another transaction
/// entering some of the same ids (a message SQS delivered twice, to both), which holds others
/// of them. Its entries were undone, which lets the other go on; it is neither stored nor
/// deleted, so SQS delivers it again after the visibility timeout, and the ledger then tells
/// which of its messages the other transaction ingested.
pub(super) struct Deferred(Box<CaughtError>);

impl Deferred {
    /// Raises the deadlock, where the batch cannot be left for later (retry_dead_letters).
    pub(super) fn raise(self) -> ! {
        (*self.0).rethrow()
    }
}

fn has_code(error: &CaughtError, code: PgSqlErrorCode) -> bool {
    report(error).is_some_and(|e| e.sql_error_code() == code)
}

/// Keeps the originals of the rows' masked values, sealed, in the vault (when recovery is on),
/// with the extension's rights: nobody is granted writes to the vault. Each masked value keeps
/// its first seal; a value sealed for a row the table then refuses stays, as its dead letter's
/// masked body names it.
fn seal(rows: &[Row]) {
    let (mut masked, mut seals) = (Vec::new(), Vec::new());
    for r in rows {
        if let Some((ip, device_id)) = &r.sealed {
            masked.extend([r.masked_ip.clone(), r.masked_device_id.clone()]);
            seals.extend([ip.clone(), device_id.clone()]);
        }
    }
    if masked.is_empty() {
        return;
    }
    as_extension(|| {
        update(
            "INSERT INTO sqs_ingest.pii_vault (masked, sealed) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT DO NOTHING",
            &[masked.into(), seals.into()],
        )
    });
}

/// Stores the kept bodies of dead letters again (retry_dead_letters), whose ip and device_id
/// were masked when they were kept; those whose ids are `fresh` were entered in the ledger
/// again. Returns the rows inserted and the ids of the messages that are dead letters again,
/// whose dead letters get their new reason and error, and their ledger entries back.
pub fn restore(target: &Target, batch: &[Received], fresh: &HashSet<&str>, envelope: Envelope) -> (i32, Vec<String>) {
    let (rows, mut dead) = parse(target, batch, fresh, envelope, &Masker::AlreadyMasked, None);
    let stored =
        insert_or_isolate(&rows, |r| r.message, |rows| insert_rows(target, rows), &mut dead, &Masker::AlreadyMasked);
    let again = dead.message_id.clone();
    dead.update(target.dead_letter_errors);
    (stored, again)
}

/// The valid messages of the batch whose ids are `fresh` as rows, the others as dead letters; a
/// message id given twice is taken once. A body in an envelope (SNS, EventBridge) is the login
/// its envelope holds.
fn parse<'a>(
    target: &Target,
    batch: &'a [Received],
    fresh: &HashSet<&str>,
    envelope: Envelope,
    masker: &Masker,
    sealer: Option<&Sealer>,
) -> (Vec<Row<'a>>, DeadLetters) {
    let mut rows = Vec::with_capacity(batch.len());
    let mut dead = DeadLetters::new(&target.table, TABLE, None);
    let mut seen = HashSet::with_capacity(batch.len());
    for m in batch.iter().filter(|m| fresh.contains(m.message_id.as_str()) && seen.insert(m.message_id.as_str())) {
        let row = envelope::open(&m.body, envelope).and_then(|opened| {
            let payload = opened.as_ref().map_or(m.body.as_str(), |o| o.payload.as_str());
            message::parse(payload, &target.columns).map(|login| Row::new(m, login, masker, sealer))
        });
        match row {
            Ok(row) => rows.push(row),
            Err(reason) => dead.push(m, reason.to_string(), None, masker),
        }
    }
    (rows, dead)
}

/// Inserts `rows` in one statement (`insert`). When the table refuses it for a row's data (see
/// [`refusal::is_about_the_row`]), inserts them again one by one, each in a subtransaction of
/// its own, and dead-letters exactly those it refuses. Any other error is raised as it is.
pub(super) fn insert_or_isolate<R>(
    rows: &[R],
    message: impl Fn(&R) -> &Received,
    insert: impl Fn(&[R]) -> i32,
    dead: &mut DeadLetters,
    masker: &Masker,
) -> i32 {
    if rows.is_empty() {
        return 0;
    }
    match subtransaction(|| insert(rows)) {
        Ok(inserted) => inserted,
        Err(error) => {
            if refused(&error).is_none() {
                error.rethrow();
            }
            // English messages name the constraint and relation (refusal::names).
            with_setting(c"lc_messages", c"C", || {
                let mut inserted = 0;
                for row in rows {
                    match subtransaction(|| insert(std::slice::from_ref(row))) {
                        Ok(n) => inserted += n,
                        Err(error) => match refused(&error) {
                            Some(report) => {
                                let reason = format!("refused by {}: {}", dead.table, report.message());
                                dead.push(message(row), reason, Some(report), masker)
                            }
                            None => error.rethrow(),
                        },
                    }
                }
                inserted
            })
        }
    }
}

/// The error's report when it is about the row's data.
fn refused(error: &CaughtError) -> Option<&ErrorReportWithLevel> {
    report(error).filter(|e| refusal::is_about_the_row(&refusal::sqlstate(e.sql_error_code() as i32)))
}

/// The report of a Postgres ERROR; None for a Rust panic.
fn report(error: &CaughtError) -> Option<&ErrorReportWithLevel> {
    match error {
        CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => Some(e),
        CaughtError::RustPanic { .. } => None,
    }
}

/// What storing one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stored {
    pub rows: i32,
    pub dead_letters: i32,
    pub duplicates: i32,
    /// Messages left in the queue for later (see [`Deferred`]).
    pub deferred: i32,
}

impl std::ops::AddAssign for Stored {
    fn add_assign(&mut self, other: Stored) {
        self.rows += other.rows;
        self.dead_letters += other.dead_letters;
        self.duplicates += other.duplicates;
        self.deferred += other.deferred;
    }
}

/// Most expired ledger entries one call removes, so a backlog is worked off over several
/// calls instead of making one call slow.
const PRUNE_LIMIT: i64 = 10_000;

/// Removes ledger entries older than the retention, in the caller's transaction, with the
/// extension's rights: its operators may add to the ledger, not remove from it. Rows another
/// transaction is already deleting are skipped rather than waited for.
pub fn prune_ledger(retention_seconds: i32) {
    let sql = "DELETE FROM sqs_ingest.processed_messages WHERE message_id IN (
                   SELECT message_id FROM sqs_ingest.processed_messages
                   WHERE ingested_at < now() - make_interval(secs => $1)
                   ORDER BY ingested_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    as_extension(|| update(sql, &[(retention_seconds as f64).into(), PRUNE_LIMIT.into()]));
}

/// Runs `body` with the extension's rights (role::as_extension); inside one of its functions the
/// extension exists, so its absence is raised.
pub(super) fn as_extension<R>(body: impl FnOnce() -> R) -> R {
    crate::role::as_extension(body).unwrap_or_else(|| raise(IngestError::NoExtension))
}

/// SQS's SentTimestamp as a timestamptz; NULL when absent or out of range.
pub(super) fn sent_at(m: &Received) -> Option<TimestampWithTimeZone> {
    m.sent_millis.and_then(message::pg_timestamp_from_unix_millis).and_then(|t| t.try_into().ok())
}

/// A valid message as the values of its row.
struct Row<'a> {
    message: &'a Received,
    user_id: String,
    device_type: String,
    masked_ip: String,
    masked_device_id: String,
    locale: Option<String>,
    app_version: AppVersion<'static>,
    create_date: Date,
    /// The originals, sealed, when recovery is on (sqs_ingest.recovery_key).
    sealed: Option<(Vec<u8>, Vec<u8>)>,
}

impl<'a> Row<'a> {
    fn new(m: &'a Received, login: message::Login<'_>, masker: &Masker, sealer: Option<&Sealer>) -> Row<'a> {
        let masked_ip = masker.mask(&login.ip);
        let masked_device_id = masker.mask(&login.device_id);
        let sealed = sealer.map(|s| (s.seal(&masked_ip, &login.ip), s.seal(&masked_device_id, &login.device_id)));
        Row {
            message: m,
            user_id: login.user_id.into_owned(),
            device_type: login.device_type.into_owned(),
            masked_ip,
            masked_device_id,
            locale: login.locale.map(|l| l.into_owned()),
            app_version: login.app_version.into_owned(),
            create_date: create_date(m),
            sealed,
        }
    }
}

/// The UTC date SQS sent `m` on; the date the transaction began on (`now()`'s) when SQS gave no
/// SentTimestamp.
fn create_date(m: &Received) -> Date {
    let at = sent_at(m).map(pg_sys::TimestampTz::from).unwrap_or_else(|| {
        // SAFETY: reads the current transaction's start time; ingestion runs in a transaction.
        unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
    });
    Date::saturating_from_raw(message::pg_utc_date(at))
}

/// Inserts `rows` in one statement; how many rows it inserted.
fn insert_rows(target: &Target, rows: &[Row]) -> i32 {
    // Borrowed: the arrays are built from the rows' own strings, not copies of them.
    let column =
        |f: for<'r> fn(&'r Row<'_>) -> &'r str| -> DatumWithOid { rows.iter().map(f).collect::<Vec<_>>().into() };
    let (version_type, versions): (&str, DatumWithOid) = match target.columns.app_version {
        AppVersionColumn::Text(_) => (
            "text",
            rows.iter()
                .map(|r| match &r.app_version {
                    AppVersion::Text(v) => v.to_string(),
                    AppVersion::Integer(v) => v.to_string(),
                })
                .collect::<Vec<_>>()
                .into(),
        ),
        AppVersionColumn::Integer => (
            "int4",
            rows.iter()
                .map(|r| match r.app_version {
                    AppVersion::Integer(v) => v,
                    AppVersion::Text(_) => unreachable!("an integer column gets integer versions"),
                })
                .collect::<Vec<_>>()
                .into(),
        ),
    };
    let table = &target.table;
    // unnest in the select list, not in FROM: FROM would first copy the arrays' elements into a
    // tuplestore.
    let sql = format!(
        "INSERT INTO {table}
            (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
         SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::text[]),
                unnest($5::text[]), unnest($6::{version_type}[]), unnest($7::date[])"
    );
    let args: [DatumWithOid; 7] = [
        column(|r| &r.user_id),
        column(|r| &r.device_type),
        column(|r| &r.masked_ip),
        column(|r| &r.masked_device_id),
        rows.iter().map(|r| r.locale.as_deref()).collect::<Vec<_>>().into(),
        versions,
        rows.iter().map(|r| r.create_date).collect::<Vec<_>>().into(),
    ];
    update(&sql, &args)
}

/// Messages that cannot become rows, written together.
#[derive(Default)]
pub(super) struct DeadLetters {
    /// The table rows go to, as reasons name it.
    table: String,
    /// Its name, as error messages name it: a refusal that names no relation is this table's.
    relation: String,
    /// The source, when not the login source (whose name is the column's default).
    source: Option<String>,
    message_id: Vec<String>,
    sent_at: Vec<Option<TimestampWithTimeZone>>,
    receive_count: Vec<Option<i32>>,
    reason: Vec<String>,
    body: Vec<String>,
    sqlstate: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    error_detail: Vec<Option<String>>,
    constraint_name: Vec<Option<String>>,
    table_name: Vec<Option<String>>,
}

impl DeadLetters {
    pub(super) fn message_ids(&self) -> &[String] {
        &self.message_id
    }

    pub(super) fn new(table: &str, relation: &str, source: Option<&str>) -> DeadLetters {
        DeadLetters {
            table: table.to_owned(),
            relation: relation.to_owned(),
            source: source.map(str::to_owned),
            ..DeadLetters::default()
        }
    }

    /// A message that cannot become a row: `refused` is the table's error when the table
    /// refused its row. The body is kept with its ip and device_id masked.
    pub(super) fn push(
        &mut self,
        m: &Received,
        reason: String,
        refused: Option<&ErrorReportWithLevel>,
        masker: &Masker,
    ) {
        self.message_id.push(m.message_id.clone());
        self.sent_at.push(sent_at(m));
        self.receive_count.push(m.receive_count);
        self.reason.push(reason);
        self.body.push(message::dead_letter_body(&m.body, masker));
        let (constraint, relation) = refused.map(|e| refusal::names(e.message())).unwrap_or_default();
        // A refusal the message names no relation in (a unique index, a trigger) is the table's.
        let relation = relation.or_else(|| refused.map(|_| self.relation.clone()));
        self.sqlstate.push(refused.map(|e| refusal::sqlstate(e.sql_error_code() as i32)));
        self.error_message.push(refused.map(|e| e.message().to_owned()));
        self.error_detail.push(refused.and_then(|e| e.detail().map(str::to_owned)));
        self.constraint_name.push(constraint);
        self.table_name.push(relation);
    }

    /// Updates the existing dead letters of these messages with their new reason and error,
    /// and puts their ledger entries back.
    pub(super) fn update(self, dead_letter_errors: bool) {
        if self.message_id.is_empty() {
            return;
        }
        let errors = if dead_letter_errors {
            ", sqlstate = b.sqlstate, error_message = b.error_message, error_detail = b.error_detail,
               constraint_name = b.constraint_name, table_name = b.table_name"
        } else {
            ""
        };
        let sql = format!(
            "WITH ledger AS (
                INSERT INTO sqs_ingest.processed_messages (message_id)
                SELECT unnest($1::text[]) ON CONFLICT DO NOTHING
             )
             UPDATE sqs_ingest.dead_letters d SET reason = b.reason{errors}
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                 AS b(message_id, reason, sqlstate, error_message, error_detail, constraint_name, table_name)
             WHERE d.message_id = b.message_id"
        );
        let args: [DatumWithOid; 7] = [
            self.message_id.into(),
            self.reason.into(),
            self.sqlstate.into(),
            self.error_message.into(),
            self.error_detail.into(),
            self.constraint_name.into(),
            self.table_name.into(),
        ];
        // Dead letters are changed only by retry_dead_letters, with the extension's rights.
        as_extension(|| update(&sql, &args));
    }

    /// Inserts them; their ledger entries are in already. `dead_letter_errors`: the table has
    /// the refusal's columns (0.2.0).
    pub(super) fn insert(self, dead_letter_errors: bool) -> i32 {
        if self.message_id.is_empty() {
            return 0;
        }
        let mut args: Vec<DatumWithOid> = vec![
            self.message_id.into(),
            self.sent_at.into(),
            self.receive_count.into(),
            self.reason.into(),
            self.body.into(),
        ];
        let (mut types, mut names) = (String::new(), String::new());
        if dead_letter_errors {
            args.extend([
                self.sqlstate.into(),
                self.error_message.into(),
                self.error_detail.into(),
                self.constraint_name.into(),
                self.table_name.into(),
            ]);
            types.push_str(", $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]");
            names.push_str(", sqlstate, error_message, error_detail, constraint_name, table_name");
        }
        let (source_value, source_name) = match self.source {
            Some(source) => {
                args.push(source.into());
                (format!(", ${}::text", args.len()), ", source")
            }
            None => (String::new(), ""),
        };
        let sql = format!(
            "INSERT INTO sqs_ingest.dead_letters (message_id, sent_at, receive_count, reason, body{names}{source_name})
             SELECT message_id, sent_at, receive_count, reason, body{names}{source_value}
             FROM unnest($1::text[], $2::timestamptz[], $3::int4[], $4::text[], $5::text[]{types})
                 AS b(message_id, sent_at, receive_count, reason, body{names})"
        );
        update(&sql, &args)
    }
}

/// Runs an INSERT or DELETE through its kept plan and returns how many rows it touched. An
/// ERROR of the statement propagates as it is; an SPI failure is a bug, raised as such.
pub(super) fn update(sql: &str, args: &[DatumWithOid]) -> i32 {
    plans::run(sql, args, |rows| Ok(rows.len() as i32)).unwrap_or_else(spi_failed)
}

/// Runs an INSERT ... RETURNING of one text column through its kept plan: the values returned.
pub(super) fn returning(sql: &str, args: &[DatumWithOid]) -> Vec<String> {
    plans::run(sql, args, |rows| rows.map(|r| r.get::<String>(1).map(Option::unwrap_or_default)).collect())
        .unwrap_or_else(spi_failed)
}

fn spi_failed<R>(e: pgrx::spi::SpiError) -> R {
    raise(IngestError::Spi { doing: "storing a batch", error: e.to_string() })
}
