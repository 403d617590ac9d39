//! The `sqs_ingest.*` settings: their definitions, bounds, and a validated snapshot for one fetch.
use crate::errors::report;
use crate::keys;
use crate::sqs::{AssumeRole, ClientConfig, Protocol, Queue};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use sqs_ingest_core::endpoint::{endpoint_for_queue, region_of_queue};
use sqs_ingest_core::masking::Masker;
use sqs_ingest_core::vault::{Sealer, VaultError};
use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::time::Duration;

pub static QUEUE_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"http://localhost:4566/000000000000/login-queue"));
pub static ENDPOINT_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
pub static PII_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static RECOVERY_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static FETCH_WAIT: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static VISIBILITY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(-1);
pub static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2_000);
pub static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static REQUESTS_IN_FLIGHT: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static PROTOCOL: GucSetting<Protocol> = GucSetting::<Protocol>::new(Protocol::Auto);
pub static LEDGER_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(LEDGER_RETENTION_DEFAULT);

pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static WORKER_WAIT: GucSetting<i32> = GucSetting::<i32>::new(MAX_WAIT_SECONDS);
pub static WORKER_RESTART_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static WORKER_MAX_BACKOFF: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static WORKER_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5_000);
pub static WORKER_STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);

/// SQS keeps a message at most 14 days, so no redelivery can come after that.
const LEDGER_RETENTION_DEFAULT: i32 = 14 * 24 * 3600;

/// SQS limits (seconds): long polls wait at most 20 s, visibility lasts at most 12 h.
pub const MAX_WAIT_SECONDS: i32 = 20;
pub const MAX_VISIBILITY_SECONDS: i32 = 43_200;
/// Upper bound of `sqs_ingest.workers`: status slots are sized once, at server start.
pub const MAX_WORKERS: usize = 16;
/// Bounds what one round holds: requests × 10 messages × 1 MiB (SQS's largest message).
const MAX_IN_FLIGHT: i32 = 16;

pub fn register() {
    // Settings that redirect traffic or hold secrets are superuser-only (PGC_SUSET).
    GucRegistry::define_string_guc(
        c"sqs_ingest.queue_url",
        c"URL of the SQS queue to ingest from.",
        c"An AWS queue URL, or an emulator's (LocalStack, moto), whose origin then becomes the endpoint.",
        &QUEUE_URL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sqs_ingest.endpoint_url",
        c"SQS endpoint override; empty: derived from a non-AWS queue URL.",
        c"",
        &ENDPOINT_URL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sqs_ingest.region",
        c"AWS region of the queue.",
        c"",
        &REGION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"sqs_ingest.protocol",
        c"SQS wire protocol: auto, json or query.",
        c"auto speaks JSON until an endpoint answers in the older Query protocol (LocalStack before 3.0), then Query to it.",
        &PROTOCOL,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Deprecated by the key files (keys.rs): ALTER SYSTEM keeps a key in postgresql.auto.conf.
    // Kept so that a configuration using them keeps masking the same way, with a WARNING at
    // every start and reload while set; the key goes from the check hook to the assign hook and
    // the setting holds an empty string, so that a reload never logs it (keys::hide).
    // SAFETY: the hooks are #[pg_guard] functions that live as long as the library.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sqs_ingest.pii_key",
            c"Deprecated: the HMAC-SHA256 key itself; use sqs_ingest.pii_key_file.",
            c"",
            &PII_KEY,
            GucContext::Suset,
            GucFlags::NO_SHOW_ALL | GucFlags::SUPERUSER_ONLY,
            Some(keys::hide_pii_key),
            Some(keys::assign_deprecated_pii_key),
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"sqs_ingest.recovery_key",
            c"Deprecated: the AES-256 key itself (64 hex digits); use sqs_ingest.recovery_key_file.",
            c"",
            &RECOVERY_KEY,
            GucContext::Suset,
            GucFlags::NO_SHOW_ALL | GucFlags::SUPERUSER_ONLY,
            Some(keys::hide_recovery_key),
            Some(keys::assign_deprecated_recovery_key),
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"sqs_ingest.fetch_wait",
        c"How long fetch_login_queue waits for messages per ReceiveMessage (0: short poll).",
        c"",
        &FETCH_WAIT,
        0,
        MAX_WAIT_SECONDS,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.visibility_timeout",
        c"Visibility timeout asked for received messages; -1: the queue's own.",
        c"",
        &VISIBILITY_TIMEOUT,
        -1,
        MAX_VISIBILITY_SECONDS,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.connect_timeout",
        c"Time limit for opening a connection to SQS.",
        c"",
        &CONNECT_TIMEOUT_MS,
        10,
        60_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.request_timeout",
        c"Time limit for one SQS request, on top of its long-poll wait.",
        c"",
        &REQUEST_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.requests_in_flight",
        c"Most SQS receives one backend or worker keeps in flight at once, and as many deletes after commit.",
        c"",
        &REQUESTS_IN_FLIGHT,
        1,
        MAX_IN_FLIGHT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.ledger_retention",
        c"How long message ids stay in sqs_ingest.processed_messages.",
        c"Ids older than this are pruned by each fetch. Keep it at least the queue's retention period, or a very late redelivery could become a second row.",
        &LEDGER_RETENTION,
        3600,
        365 * 24 * 3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"sqs_ingest.worker_enabled",
        c"Whether the background workers poll the queue.",
        c"",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.worker_wait",
        c"Long-poll wait of the background workers' ReceiveMessage.",
        c"",
        &WORKER_WAIT,
        1,
        MAX_WAIT_SECONDS,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.worker_lock_timeout",
        c"Longest wait of a worker's transaction for a lock (a user's LOCK TABLE, ALTER TABLE).",
        c"The batch is then rolled back and retried with backoff; its messages stay in the queue.",
        &WORKER_LOCK_TIMEOUT,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.worker_statement_timeout",
        c"Longest run of a worker's transaction.",
        c"The batch is then rolled back and retried with backoff; its messages stay in the queue.",
        &WORKER_STATEMENT_TIMEOUT,
        1_000,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.worker_max_backoff",
        c"Longest pause of a worker between attempts after errors (the pause doubles from 1 s).",
        c"",
        &WORKER_MAX_BACKOFF,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// The settings read once at server start (PGC_POSTMASTER). Postgres refuses to define those
/// after startup with FATAL, which would end the session of a `CREATE EXTENSION` or `LOAD` in a
/// server that does not preload the library; only the workers read them, and there are none
/// then. So they exist only in a server that preloads sqs_ingest (as pg_prewarm does).
pub fn register_preloaded() {
    GucRegistry::define_string_guc(
        c"sqs_ingest.database",
        c"The one database the background workers serve; empty: every database where the extension is created.",
        c"",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.workers",
        c"Number of background workers serving the sources (needs sqs_ingest in shared_preload_libraries).",
        c"",
        &WORKERS,
        0,
        MAX_WORKERS as i32,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sqs_ingest.worker_restart_interval",
        c"How soon the postmaster restarts a worker that died or was terminated.",
        c"",
        &WORKER_RESTART_INTERVAL,
        1,
        3600,
        GucContext::Postmaster,
        GucFlags::UNIT_S,
    );
}

/// Whether sqs_ingest.endpoint_url sends every request to one endpoint.
pub fn endpoint_is_set() -> bool {
    !text(&ENDPOINT_URL).is_empty()
}

/// How many workers were configured at server start.
pub fn worker_count() -> usize {
    WORKERS.get() as usize
}

/// The one database the workers serve; empty: every one with the extension.
pub fn worker_database() -> String {
    text(&DATABASE)
}

#[derive(Debug)]
pub enum SettingsError {
    Empty(&'static str),
    NotHttpUrl(&'static str),
    RecoveryKey(VaultError),
    /// The configuration names a key file that could not be used, and no key is loaded.
    KeyFile {
        setting: &'static str,
        problem: String,
    },
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Empty(name) => write!(f, "sqs_ingest.{name} is not set"),
            SettingsError::NotHttpUrl(name) => {
                write!(f, "sqs_ingest.{name} is not an http:// or https:// URL")
            }
            SettingsError::RecoveryKey(e) => write!(f, "sqs_ingest.recovery_key is unusable: {e}"),
            SettingsError::KeyFile { setting, problem } => {
                write!(f, "sqs_ingest.{setting} names a key file that cannot be used: {problem}")
            }
        }
    }
}

impl From<SettingsError> for ErrorReport {
    fn from(e: SettingsError) -> Self {
        let hint = match e {
            SettingsError::KeyFile { setting: "pii_key_file", .. } => {
                "Nothing is masked or ingested meanwhile (messages wait in the queue): make the file usable (see the README's Keys) and SELECT pg_reload_conf(); or set sqs_ingest.pii_key_file to '' to mask without a key."
            }
            SettingsError::KeyFile { .. } => {
                "Nothing is ingested meanwhile (messages wait in the queue; their originals could not be sealed): make the file usable (see the README's Keys) and SELECT pg_reload_conf(); or set sqs_ingest.recovery_key_file to '' to keep no originals."
            }
            SettingsError::Empty("region") => {
                "Set it, e.g. ALTER SYSTEM SET sqs_ingest.region = 'us-east-1'; SELECT pg_reload_conf();"
            }
            SettingsError::RecoveryKey(_) => {
                "Put a key made by openssl rand -hex 32 in a file only the server's user can read and set sqs_ingest.recovery_key_file to its path, or empty sqs_ingest.recovery_key to keep no originals."
            }
            _ => "Set it to the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/login-queue or http://localhost:4566/000000000000/login-queue.",
        };
        let code = match e {
            SettingsError::KeyFile { .. } => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            _ => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        };
        report(code, e.to_string(), hint)
    }
}

/// What a source sets itself instead of the server's settings (sqs_ingest.sources); None
/// follows the setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub queue_url: Option<String>,
    /// The workers' long-poll wait (sqs_ingest.worker_wait).
    pub wait_seconds: Option<i32>,
    pub visibility_timeout: Option<i32>,
    pub requests_in_flight: Option<i32>,
    pub protocol: Option<Protocol>,
    /// Receives ask for message attributes: the source's expressions use them.
    pub message_attributes: bool,
}

/// What one fetch needs, read on the backend's main thread before any async code runs.
/// Not Debug: it holds the keys.
#[derive(Clone)]
pub struct FetchSettings {
    pub queue: Queue,
    /// fetch_source's wait per ReceiveMessage (sqs_ingest.fetch_wait).
    pub wait_seconds: i32,
    /// The workers' long-poll wait.
    pub worker_wait: i32,
    pub in_flight: usize,
    pub ledger_retention_seconds: i32,
    pub masker: Masker,
    /// Seals the originals of masked values when recovery is on.
    pub sealer: Option<Sealer>,
}

fn text(setting: &GucSetting<Option<CString>>) -> String {
    setting.get().map(|s| s.to_string_lossy().trim().to_owned()).unwrap_or_default()
}

fn http_url(name: &'static str, value: String) -> Result<String, SettingsError> {
    if value.is_empty() {
        Err(SettingsError::Empty(name))
    } else if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value)
    } else {
        Err(SettingsError::NotHttpUrl(name))
    }
}

/// The settings of a fetch from a source with `overrides`.
pub fn fetch_settings(overrides: &Overrides, assume: Option<AssumeRole>) -> Result<FetchSettings, SettingsError> {
    let queue_url = http_url("queue_url", overrides.queue_url.clone().unwrap_or_else(|| text(&QUEUE_URL)))?;
    let endpoint = match text(&ENDPOINT_URL) {
        e if e.is_empty() => endpoint_for_queue(&queue_url).map(str::to_owned),
        e => Some(http_url("endpoint_url", e)?),
    };
    // A queue is in the region its URL names; sqs_ingest.region is for URLs that name none.
    let region = match region_of_queue(&queue_url) {
        Some(region) => region.to_owned(),
        None => text(&REGION),
    };
    if region.is_empty() {
        return Err(SettingsError::Empty("region"));
    }
    let visibility = overrides.visibility_timeout.unwrap_or_else(|| VISIBILITY_TIMEOUT.get());
    Ok(FetchSettings {
        queue: Queue {
            config: ClientConfig {
                endpoint,
                region,
                connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS.get() as u64),
                request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS.get() as u64),
                protocol: overrides.protocol.unwrap_or_else(|| PROTOCOL.get()),
                assume,
            },
            url: queue_url,
            visibility_timeout: (visibility >= 0).then_some(visibility),
            message_attributes: overrides.message_attributes,
        },
        wait_seconds: FETCH_WAIT.get(),
        worker_wait: overrides.wait_seconds.unwrap_or_else(|| WORKER_WAIT.get()),
        in_flight: overrides.requests_in_flight.map_or_else(requests_in_flight, |n| n as usize),
        ledger_retention_seconds: LEDGER_RETENTION.get(),
        masker: with_masker(Masker::clone)?,
        sealer: sealer()?,
    })
}

/// `sqs_ingest.requests_in_flight`: receives of a round, and deletes after its commit alike.
fn requests_in_flight() -> usize {
    REQUESTS_IN_FLIGHT.get() as usize
}

/// The recovery sealer: from `sqs_ingest.recovery_key_file`, else the deprecated
/// `sqs_ingest.recovery_key`; None when neither is set.
pub fn sealer() -> Result<Option<Sealer>, SettingsError> {
    if let Some(problem) = keys::refused(true) {
        return Err(SettingsError::KeyFile { setting: "recovery_key_file", problem });
    }
    let key = keys::recovery_key().or_else(keys::deprecated_recovery_key).unwrap_or_default();
    match String::from_utf8_lossy(&key).into_owned() {
        key if key.is_empty() => Ok(None),
        key => Sealer::from_hex(&key).map(Some).map_err(SettingsError::RecoveryKey),
    }
}

/// The masking key: from `sqs_ingest.pii_key_file`, else the deprecated `sqs_ingest.pii_key`;
/// empty when neither is set.
fn pii_key() -> Vec<u8> {
    keys::pii_key().or_else(keys::deprecated_pii_key).unwrap_or_default()
}

/// Whether masking is keyed; unkeyed hashes of IPv4 addresses and device ids are reversible by
/// enumeration.
pub fn pii_key_is_set() -> bool {
    !pii_key().is_empty()
}

thread_local! {
    /// The masker, and the key generation it was made at: a call of mask_pii takes it as it
    /// is, with neither the key's locks nor its HMAC key schedule.
    static MASKER: RefCell<Option<(u64, Masker)>> = const { RefCell::new(None) };
}

/// Runs `f` with the masker of `mask_pii` and ingestion alike, so that both always agree;
/// none while the configured key file cannot be used.
pub fn with_masker<R>(f: impl FnOnce(&Masker) -> R) -> Result<R, SettingsError> {
    let generation = keys::pii_generation();
    MASKER.with_borrow_mut(|cached| {
        if cached.as_ref().is_none_or(|(made_at, _)| *made_at != generation) {
            if let Some(problem) = keys::refused(false) {
                return Err(SettingsError::KeyFile { setting: "pii_key_file", problem });
            }
            *cached = Some((generation, Masker::new(&pii_key())));
        }
        Ok(f(&cached.as_ref().expect("made above").1))
    })
}
