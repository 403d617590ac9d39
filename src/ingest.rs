//! fetch_login_queue: receives messages, validates and masks them, and stores rows, ledger
//! entries and dead letters in the caller's transaction; deletion waits for COMMIT (xact.rs).
use crate::errors::raise;
use crate::settings::{self, FetchSettings};
use crate::sqs::Received;
use crate::xact;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use sqs_ingest_core::masking::{Masker, MASKED_LEN};
use sqs_ingest_core::message::{self, AppVersion, AppVersionColumn, Columns};
use sqs_ingest_core::vault::Sealer;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Bounds of `max`: enough for any cron interval, small enough to keep one call's memory bounded.
pub const MAX_FETCH: i32 = 10_000;

#[derive(Debug)]
pub enum IngestError {
    BadMax(Option<i32>),
    NoExtension,
    NoTable(String),
    NoColumn { table: String, column: &'static str },
    ColumnType { column: &'static str, found: String, expected: &'static str },
    Spi(String),
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::BadMax(Some(max)) => write!(f, "max must be between 1 and {MAX_FETCH}, not {max}"),
            IngestError::BadMax(None) => write!(f, "max must be between 1 and {MAX_FETCH}, not NULL"),
            IngestError::NoExtension => write!(f, "extension sqs_ingest is not created in this database"),
            IngestError::NoTable(table) => write!(f, "table {table} does not exist"),
            IngestError::NoColumn { table, column } => {
                write!(f, "table {table} has no column \"{column}\"")
            }
            IngestError::ColumnType { column, found, expected } => {
                write!(f, "column \"{column}\" of user_logins is {found}, but must be {expected}")
            }
            IngestError::Spi(e) => write!(f, "storing a batch failed: {e}"),
        }
    }
}

/// Pulls up to `max` messages, `sqs_ingest.requests_in_flight` requests of ten at a time, and
/// returns the number of rows inserted.
#[pg_extern(volatile, parallel_unsafe)]
fn fetch_login_queue(max: default!(Option<i32>, 10)) -> i32 {
    let max = match max {
        Some(m) if (1..=MAX_FETCH).contains(&m) => m,
        other => raise(IngestError::BadMax(other)),
    };
    let settings = settings::fetch_settings().unwrap_or_else(|e| raise(e));
    let target = Target::resolve().unwrap_or_else(|e| raise(e));
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
            .expect("only an ERROR stops a backend's request")
            .unwrap_or_else(|e| raise(e));
        if received.is_empty() {
            break;
        }
        remaining -= received.len() as i32;
        total += ingest(&target, &settings, received);
    }
    if total.dead_letters > 0 || total.duplicates > 0 {
        notice!(
            "sqs_ingest: {} rows inserted, {} messages dead-lettered (see sqs_ingest.dead_letters), {} already ingested and skipped",
            total.rows, total.dead_letters, total.duplicates
        );
    }
    total.rows
}

/// Stores one received batch in the current transaction and schedules its deletion from SQS
/// for after COMMIT: the one path of fetch_login_queue and the workers alike.
pub fn ingest(target: &Target, settings: &FetchSettings, received: Vec<Received>) -> Stored {
    if !settings::pii_key_is_set() && crate::status::first_unkeyed_ingest() {
        crate::errors::warn_unkeyed();
    }
    let stored = target.store(&received, &settings.masker, settings.sealer.as_ref());
    let handles = received.into_iter().map(|m| m.receipt_handle).collect();
    xact::delete_after_commit(&settings.queue, handles);
    stored
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

/// `user_logins` as found in the extension's schema, with the limits its columns impose.
pub struct Target {
    table: String,
    columns: Columns,
}

/// What a column may be: text of any length limit, or also an integer (app_version), or a date.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    TextOrInteger,
    Date,
}

impl Target {
    pub fn resolve() -> Result<Target, IngestError> {
        let table: String = Spi::get_one(
            "SELECT quote_ident(n.nspname) || '.user_logins' FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'sqs_ingest'",
        )
        .ok()
        .flatten()
        .ok_or(IngestError::NoExtension)?;
        let found: Vec<(String, String, Option<i32>)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT a.attname::text, t.typname::text, \
                            CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod >= 4 \
                                 THEN a.atttypmod - 4 END \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                    None,
                    &[table.as_str().into()],
                )
                .map(|rows| {
                    rows.map(|r| {
                        (
                            r.get::<String>(1).ok().flatten().unwrap_or_default(),
                            r.get::<String>(2).ok().flatten().unwrap_or_default(),
                            r.get::<i32>(3).ok().flatten(),
                        )
                    })
                    .collect()
                })
                .unwrap_or_default()
        });
        if found.is_empty() {
            return Err(IngestError::NoTable(table));
        }
        // Returns the column's character limit (None: unbounded), or "integer".
        let column = |name: &'static str, kind: Kind| -> Result<Result<Option<usize>, ()>, IngestError> {
            let (_, typname, limit) = found
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| IngestError::NoColumn { table: table.clone(), column: name })?;
            let expected = match kind {
                Kind::Text => "text or varchar",
                Kind::TextOrInteger => "text, varchar, integer or bigint",
                Kind::Date => "date",
            };
            let mismatch = || IngestError::ColumnType { column: name, found: typname.clone(), expected };
            match (typname.as_str(), kind) {
                ("date", Kind::Date) => Ok(Ok(None)),
                ("text" | "varchar" | "bpchar", Kind::Text | Kind::TextOrInteger) => Ok(Ok(limit.map(|l| l as usize))),
                ("int4" | "int8", Kind::TextOrInteger) => Ok(Err(())),
                _ => Err(mismatch()),
            }
        };
        let text = |name| column(name, Kind::Text).map(|c| c.expect("text columns are never integer"));
        for masked in ["masked_ip", "masked_device_id"] {
            if matches!(text(masked)?, Some(limit) if limit < MASKED_LEN) {
                return Err(IngestError::ColumnType {
                    column: masked,
                    found: format!("limited to fewer than {MASKED_LEN} characters"),
                    expected: "able to hold a 64-character hex digest",
                });
            }
        }
        column("create_date", Kind::Date)?.ok();
        let columns = Columns {
            user_id: text("user_id")?,
            device_type: text("device_type")?,
            locale: text("locale")?,
            app_version: match column("app_version", Kind::TextOrInteger)? {
                Ok(limit) => AppVersionColumn::Text(limit),
                Err(()) => AppVersionColumn::Integer,
            },
        };
        Ok(Target { table, columns })
    }

    /// Inserts the batch's valid messages as rows and the others as dead letters, each with
    /// its ledger entry; ids already in the ledger are skipped. No INSERT can fail on data:
    /// everything was validated against the columns first.
    pub fn store(&self, batch: &[Received], masker: &Masker, sealer: Option<&Sealer>) -> Stored {
        let mut good = Rows::default();
        let mut dead = DeadLetters::default();
        let mut seen = HashSet::with_capacity(batch.len());
        for m in batch.iter().filter(|m| seen.insert(m.message_id.as_str())) {
            match message::parse(&m.body, &self.columns) {
                Ok(login) => good.push(m, login, masker, sealer),
                Err(reason) => dead.push(m, reason.to_string(), message::dead_letter_body(&m.body, masker)),
            }
        }
        let rows = good.insert(&self.table, self.columns.app_version);
        let dead_letters = dead.insert();
        Stored { rows, dead_letters, duplicates: batch.len() as i32 - rows - dead_letters }
    }
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
    sent_day: Vec<Option<i32>>,
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
        self.sent_day.push(m.sent_millis.map(message::pg_date_from_unix_millis));
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
        // The ledger insert and the row insert are one statement: a row exists iff its
        // message id entered the ledger in this statement.
        let sql = format!(
            "WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                     $6::text[], $7::{version_type}[], $8::int4[]{sealed_columns})
                    AS b(message_id, user_id, device_type, masked_ip, masked_device_id, locale,
                         app_version, sent_day{sealed_names})
             ), fresh AS (
                INSERT INTO sqs_ingest.processed_messages (message_id)
                SELECT message_id FROM batch ON CONFLICT DO NOTHING RETURNING message_id
             ){vault}
             INSERT INTO {table}
                (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
             SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                    coalesce(date '2000-01-01' + sent_day, (now() AT TIME ZONE 'UTC')::date)
             FROM batch JOIN fresh USING (message_id)"
        );
        let mut args: Vec<DatumWithOid> = vec![
            self.message_id.into(),
            self.user_id.into(),
            self.device_type.into(),
            self.masked_ip.into(),
            self.masked_device_id.into(),
            self.locale.into(),
            versions,
            self.sent_day.into(),
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
    sent_millis: Vec<Option<i64>>,
    receive_count: Vec<Option<i32>>,
    reason: Vec<String>,
    body: Vec<String>,
}

impl DeadLetters {
    fn push(&mut self, m: &Received, reason: String, body: String) {
        self.message_id.push(m.message_id.clone());
        self.sent_millis.push(m.sent_millis);
        self.receive_count.push(m.receive_count);
        self.reason.push(reason);
        self.body.push(body);
    }

    fn insert(self) -> i32 {
        if self.message_id.is_empty() {
            return 0;
        }
        let sql = "WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::text[], $5::text[])
                    AS b(message_id, sent_millis, receive_count, reason, body)
             ), fresh AS (
                INSERT INTO sqs_ingest.processed_messages (message_id)
                SELECT message_id FROM batch ON CONFLICT DO NOTHING RETURNING message_id
             )
             INSERT INTO sqs_ingest.dead_letters (message_id, sent_at, receive_count, reason, body)
             SELECT message_id, to_timestamp(sent_millis / 1000.0), receive_count, reason, body
             FROM batch JOIN fresh USING (message_id)";
        let args: [DatumWithOid; 5] = [
            self.message_id.into(),
            self.sent_millis.into(),
            self.receive_count.into(),
            self.reason.into(),
            self.body.into(),
        ];
        update(sql, &args)
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
    .unwrap_or_else(|e| raise(IngestError::Spi(e.to_string())))
}
