//! Sources: SQS queues ingested into tables, as the catalog sqs_ingest.sources configures them.
//! `catalog` changes them, `mapping` turns one into its INSERT, `stats` counts what each did.
pub mod catalog;
pub mod identity;
pub mod mapping;
pub mod stats;

/// Asks for the shared memory of sources; only possible while shared_preload_libraries load.
pub fn allocate() {
    catalog::allocate();
    stats::allocate();
}

use crate::errors::report;
use crate::plans;
use crate::settings::Overrides;
use crate::sqs::Protocol;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use sqs_ingest_core::envelope::Envelope;
use std::fmt;

/// The built-in source: the take-home's login pipeline, mapped in Rust (ingest/store.rs).
pub const LOGIN: &str = "login";

/// One row of sqs_ingest.sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    /// The target table; None for the login source (user_logins in the extension's schema).
    pub target: Option<pg_sys::Oid>,
    /// Target column and SQL expression, by column name; None: the body's keys of the same names.
    pub columns: Option<Vec<(String, String)>>,
    pub enabled: bool,
    pub owner: pg_sys::Oid,
    /// What the source sets itself instead of the server's settings (queue URL included).
    pub overrides: Overrides,
    /// Workers serving it at once; None: 1, and every worker for the login source.
    pub workers: Option<i32>,
    /// How its bodies are opened (SNS, EventBridge).
    pub envelope: Envelope,
    /// The identity (sqs_ingest.identities) its requests are signed as; None: the server's.
    pub identity: Option<String>,
}

impl Source {
    pub fn is_login(&self) -> bool {
        self.name == LOGIN
    }

    /// The source `name`.
    pub fn load(name: &str) -> Result<Source, SourceError> {
        Source::select(Some(name))?.pop().ok_or_else(|| SourceError::Unknown(name.to_owned()))
    }

    /// Every enabled source, by name.
    pub fn enabled() -> Result<Vec<Source>, SourceError> {
        Ok(Source::select(None)?.into_iter().filter(|s| s.enabled).collect())
    }

    /// The sources named `name` (every one when None). A database whose extension predates the
    /// catalog (before 0.3.0) has the login source only, as its settings configure it.
    fn select(name: Option<&str>) -> Result<Vec<Source>, SourceError> {
        let (extension, catalog): (Option<bool>, Option<bool>) = plans::read(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'sqs_ingest'), \
                    to_regclass('sqs_ingest.sources') IS NOT NULL",
            &[],
            |t| t.first().get_two(),
        )
        .map_err(SourceError::spi("reading sqs_ingest.sources"))?;
        if extension != Some(true) {
            return Err(SourceError::NoExtension);
        }
        if catalog != Some(true) {
            return Ok(match name {
                Some(n) if n != LOGIN => Vec::new(),
                _ => vec![Source {
                    name: LOGIN.to_owned(),
                    target: None,
                    columns: None,
                    enabled: true,
                    owner: crate::role::current(),
                    overrides: Overrides::default(),
                    workers: None,
                    envelope: Envelope::Auto,
                    identity: None,
                }],
            });
        }
        plans::read(
            "SELECT name, queue_url, target::oid, columns IS NOT NULL,
                            ARRAY(SELECT key FROM jsonb_each_text(columns) ORDER BY key),
                            ARRAY(SELECT value FROM jsonb_each_text(columns) ORDER BY key),
                            enabled, owner::oid, wait_seconds, visibility_timeout,
                            requests_in_flight, workers, protocol,
                            -- envelope from 0.4.0 on; a database not yet updated has none
                            to_jsonb(s) ->> 'envelope',
                            -- identity from 0.7.0 on
                            to_jsonb(s) ->> 'identity'
                     FROM sqs_ingest.sources s WHERE $1::text IS NULL OR name = $1 ORDER BY name",
            &[name.into()],
            |rows| {
                rows.map(|r| {
                    let mapped: bool = r.get(4)?.unwrap_or(false);
                    let keys: Vec<String> = r.get(5)?.unwrap_or_default();
                    let values: Vec<String> = r.get(6)?.unwrap_or_default();
                    // Attributes are asked for only when an expression may read them; a
                    // mention anywhere (even in a string) only costs a larger answer.
                    let message_attributes = values.iter().any(|e| e.to_ascii_lowercase().contains("attributes"));
                    Ok(Source {
                        name: r.get(1)?.unwrap_or_default(),
                        target: r.get(3)?,
                        columns: mapped.then(|| keys.into_iter().zip(values).collect()),
                        enabled: r.get(7)?.unwrap_or(false),
                        owner: r.get(8)?.unwrap_or(pg_sys::Oid::INVALID),
                        overrides: Overrides {
                            queue_url: r.get(2)?,
                            wait_seconds: r.get(9)?,
                            visibility_timeout: r.get(10)?,
                            requests_in_flight: r.get(11)?,
                            protocol: r.get::<String>(13)?.as_deref().and_then(Protocol::from_name),
                            message_attributes,
                        },
                        workers: r.get(12)?,
                        envelope: r.get::<String>(14)?.as_deref().and_then(Envelope::from_name).unwrap_or_default(),
                        identity: r.get(15)?,
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            },
        )
        .map_err(SourceError::spi("reading sqs_ingest.sources"))
    }
}

#[derive(Debug)]
pub enum SourceError {
    NoExtension,
    Unknown(String),
    Disabled(String),
    Null(&'static str),
    Exists(String),
    BadName(String),
    /// The built-in login source is configured by the server's settings.
    BuiltIn(&'static str),
    NotOwner(String),
    /// The role that owns the source was dropped (REASSIGN OWNED does not reach the catalog).
    OwnerGone {
        source: String,
        owner: u32,
    },
    BadQueueUrl(String),
    /// A non-superuser named a queue URL that is not AWS's while no endpoint is configured.
    Endpoint(String),
    BadSetting {
        name: &'static str,
        value: i32,
        bounds: (i32, i32),
    },
    BadProtocol(String),
    NotATable(String),
    BadColumns(String),
    NoColumn {
        table: String,
        column: String,
    },
    /// A generated or identity column: the table computes it.
    Computed {
        table: String,
        column: String,
    },
    /// The INSERT the mapping makes is refused by Postgres; its message says why.
    Mapping {
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        code: PgSqlErrorCode,
    },
    Spi {
        doing: &'static str,
        error: String,
    },
}

impl SourceError {
    pub fn spi(doing: &'static str) -> impl Fn(pgrx::spi::SpiError) -> SourceError {
        move |e| SourceError::Spi { doing, error: e.to_string() }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NoExtension => f.write_str("extension sqs_ingest is not created in this database"),
            SourceError::Unknown(name) => write!(f, "source \"{name}\" does not exist"),
            SourceError::Null(what) => write!(f, "{what} must not be NULL"),
            SourceError::Disabled(name) => write!(f, "source \"{name}\" is disabled"),
            SourceError::Exists(name) => write!(f, "source \"{name}\" already exists"),
            SourceError::BadName(name) => write!(f, "invalid source name \"{name}\""),
            SourceError::BuiltIn(what) => write!(f, "the built-in source login cannot be {what}"),
            SourceError::NotOwner(name) => write!(f, "must be owner of source \"{name}\""),
            SourceError::OwnerGone { source, owner } => {
                write!(f, "the owner of source \"{source}\" (role {owner}) no longer exists")
            }
            SourceError::BadQueueUrl(url) => write!(f, "queue_url \"{url}\" is not an http:// or https:// URL"),
            SourceError::Endpoint(url) => {
                write!(
                    f,
                    "only a superuser may name a queue outside AWS (\"{url}\") while sqs_ingest.endpoint_url is empty"
                )
            }
            SourceError::BadSetting { name, value, bounds } => {
                write!(f, "{name} must be between {} and {}, not {value}", bounds.0, bounds.1)
            }
            SourceError::BadProtocol(p) => write!(f, "protocol must be auto, json or query, not \"{p}\""),
            SourceError::NotATable(t) => write!(f, "{t} is not a table"),
            SourceError::BadColumns(why) => write!(f, "columns {why}"),
            SourceError::NoColumn { table, column } => write!(f, "table {table} has no column \"{column}\""),
            SourceError::Computed { table, column } => {
                write!(f, "column \"{column}\" of {table} is generated or an identity column")
            }
            SourceError::Mapping { message, .. } => write!(f, "the source's mapping is refused: {message}"),
            SourceError::Spi { doing, error } => write!(f, "{doing} failed: {error}"),
        }
    }
}

impl From<SourceError> for ErrorReport {
    fn from(e: SourceError) -> Self {
        use PgSqlErrorCode::*;
        let (code, hint) = match &e {
            SourceError::NoExtension => {
                (ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "Run CREATE EXTENSION sqs_ingest in this database.".to_owned())
            }
            SourceError::Unknown(_) => {
                (ERRCODE_UNDEFINED_OBJECT, "SELECT name FROM sqs_ingest.sources lists the sources.".to_owned())
            }
            SourceError::Disabled(name) => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("Enable it: SELECT sqs_ingest.alter_source('{name}', enabled => true);"),
            ),
            SourceError::Null(_) => (
                ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "Give a source's name, queue_url and target; columns may be NULL.".to_owned(),
            ),
            SourceError::Exists(_) => {
                (ERRCODE_DUPLICATE_OBJECT, "Change it with sqs_ingest.alter_source, or choose another name.".to_owned())
            }
            SourceError::BadName(_) => (
                ERRCODE_INVALID_NAME,
                "A source name has 1 to 63 letters, digits, '_', '-' or '.'.".to_owned(),
            ),
            SourceError::BuiltIn(_) => (
                ERRCODE_FEATURE_NOT_SUPPORTED,
                "Only enabled may be changed: its queue and workers are the settings sqs_ingest.queue_url and sqs_ingest.workers.".to_owned(),
            ),
            SourceError::NotOwner(_) => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "A source is changed by its owner (a member of it) or a superuser.".to_owned(),
            ),
            SourceError::OwnerGone { source, .. } => (
                ERRCODE_UNDEFINED_OBJECT,
                format!(
                    "REASSIGN OWNED does not reach sources. A superuser gives it to another role: UPDATE sqs_ingest.sources SET owner = 'role' WHERE name = '{source}'; or drops it: SELECT sqs_ingest.drop_source('{source}');"
                ),
            ),
            SourceError::BadQueueUrl(_) => (
                ERRCODE_INVALID_PARAMETER_VALUE,
                "Give the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/orders.".to_owned(),
            ),
            SourceError::Endpoint(_) => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "The server's AWS credentials sign every request: see the README's threat model. Ask a superuser to create the source.".to_owned(),
            ),
            SourceError::BadSetting { .. } => (ERRCODE_INVALID_PARAMETER_VALUE, "See the README for each bound.".to_owned()),
            SourceError::BadProtocol(_) => {
                (ERRCODE_INVALID_PARAMETER_VALUE, "NULL follows sqs_ingest.protocol.".to_owned())
            }
            SourceError::NotATable(_) => (
                ERRCODE_WRONG_OBJECT_TYPE,
                "A source's target is a table (partitioned or not) the owner may INSERT into.".to_owned(),
            ),
            SourceError::BadColumns(_) => (
                ERRCODE_INVALID_PARAMETER_VALUE,
                r#"Give a JSON object of column names and SQL expressions, e.g. '{"order_id": "body->>''id''", "ordered_at": "sent_at"}'."#.to_owned(),
            ),
            SourceError::NoColumn { .. } => {
                (ERRCODE_UNDEFINED_COLUMN, "The keys of columns are the target table's column names.".to_owned())
            }
            SourceError::Computed { .. } => {
                (ERRCODE_INVALID_COLUMN_REFERENCE, "Leave it out of columns: the table computes it.".to_owned())
            }
            SourceError::Mapping { code, hint, detail, .. } => (
                *code,
                format!(
                    "{}{}Expressions may use body (jsonb), message_id, sent_at, receive_count and attributes, and run as the source's owner.",
                    detail.as_deref().map(|d| format!("{d} ")).unwrap_or_default(),
                    hint.as_deref().map(|h| format!("{h} ")).unwrap_or_default()
                ),
            ),
            SourceError::Spi { .. } => (ERRCODE_INTERNAL_ERROR, "This is a bug of sqs_ingest; please report it.".to_owned()),
        };
        report(code, e.to_string(), &hint)
    }
}
