//! The one place where each module's error becomes a Postgres error: SQLSTATE, message, HINT.
use crate::ingest::IngestError;
use crate::recovery::RecoveryError;
use crate::settings::SettingsError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `error` as an ERROR; never returns.
pub fn raise(error: impl Into<ErrorReport>) -> ! {
    error.into().report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// The one WARNING a server ingesting without sqs_ingest.pii_key logs.
pub fn warn_unkeyed() {
    report(
        PgSqlErrorCode::ERRCODE_WARNING,
        "sqs_ingest.pii_key is not set, so ip and device_id are masked with unkeyed SHA-256, which anyone can reverse by hashing every IPv4 address and device id".to_owned(),
        "Set a secret key: ALTER SYSTEM SET sqs_ingest.pii_key = '<output of openssl rand -hex 32>'; SELECT pg_reload_conf(); (see the README, \"Masking\").",
    )
    .report(PgLogLevel::WARNING);
}

pub fn report(code: PgSqlErrorCode, message: String, hint: &str) -> ErrorReport {
    ErrorReport::new(code, format!("sqs_ingest: {message}"), "sqs_ingest").set_hint(hint)
}

impl From<SettingsError> for ErrorReport {
    fn from(e: SettingsError) -> Self {
        let hint = match e {
            SettingsError::Empty("region") => {
                "Set it, e.g. ALTER SYSTEM SET sqs_ingest.region = 'us-east-1'; SELECT pg_reload_conf();"
            }
            SettingsError::RecoveryKey(_) => {
                "Generate a key with openssl rand -hex 32 and set it in postgresql.conf, or set the setting to '' to keep no originals."
            }
            _ => "Set it to the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/login-queue or http://localhost:4566/000000000000/login-queue.",
        };
        report(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), hint)
    }
}

impl From<IngestError> for ErrorReport {
    fn from(e: IngestError) -> Self {
        let (code, hint) = match e {
            IngestError::BadMax(_) => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "Pass a number of messages from 1 to 10000, e.g. SELECT fetch_login_queue(100);".to_owned(),
            ),
            IngestError::NoExtension => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "Run CREATE EXTENSION sqs_ingest in the database sqs_ingest.database names.".to_owned(),
            ),
            IngestError::NoTable(ref table) => (
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("Create {table} again (see the README for its columns), or recreate the extension."),
            ),
            IngestError::NoColumn { .. } => (
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                "user_logins needs the columns user_id, device_type, masked_ip, masked_device_id, locale, app_version and create_date.".to_owned(),
            ),
            IngestError::ColumnType { .. } => (
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                "See the README for the column types user_logins may have.".to_owned(),
            ),
            IngestError::Spi(_) => (
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "The transaction is rolled back and its messages stay in the queue.".to_owned(),
            ),
        };
        report(code, e.to_string(), &hint)
    }
}

impl From<RecoveryError> for ErrorReport {
    fn from(e: RecoveryError) -> Self {
        let (code, hint) = match e {
            RecoveryError::NotReader => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "Only members of sqs_ingest_pii_reader may reveal: GRANT sqs_ingest_pii_reader TO <role>;",
            ),
            RecoveryError::NotMasked => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "Pass a value of user_logins.masked_ip or masked_device_id, or mask_pii(<original>).",
            ),
            RecoveryError::Off => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "Originals are kept only while sqs_ingest.recovery_key is set (see the README, \"Recovering PII\").",
            ),
            RecoveryError::Sealed(_) => (
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                "The value was sealed under another sqs_ingest.recovery_key, or its sqs_ingest.pii_vault row was altered.",
            ),
            RecoveryError::Unaudited(_) => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
                "Every reveal is audited first; check max_worker_processes and the server log.",
            ),
        };
        report(code, e.to_string(), hint)
    }
}
