//! Opt-in PII recovery: reveal_pii opens a sealed original for members of sqs_ingest_pii_reader,
//! once a worker of its own has committed the audit row, so that no reveal escapes the audit.
use crate::errors::report;
use crate::settings;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use pgrx::{FromDatum, IntoDatum};
use sqs_ingest_core::masking::MASKED_LEN;
use sqs_ingest_core::vault::VaultError;
use std::fmt;

#[derive(Debug)]
pub enum RecoveryError {
    NotReader,
    NotMasked,
    Off,
    Sealed(VaultError),
    /// The audit row could not be committed, so nothing is revealed.
    Unaudited(String),
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::NotReader => f.write_str("permission denied to reveal PII"),
            RecoveryError::NotMasked => f.write_str("reveal_pii takes a masked value: 64 lowercase hexadecimal digits"),
            RecoveryError::Off => f.write_str("PII recovery is off: sqs_ingest.recovery_key is not set"),
            RecoveryError::Sealed(e) => write!(f, "cannot reveal: {e}"),
            RecoveryError::Unaudited(why) => {
                write!(f, "nothing revealed: the audit row could not be committed ({why})")
            }
        }
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

/// The original ip or device_id behind `masked`, or NULL when none was kept.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn reveal_pii(masked: &str) -> Result<Option<String>, ErrorReport> {
    // EXECUTE is granted to the role only; this also holds if EXECUTE is ever granted wider.
    if Spi::get_one::<bool>("SELECT pg_has_role('sqs_ingest_pii_reader', 'USAGE')") != Ok(Some(true)) {
        return Err(RecoveryError::NotReader.into());
    }
    if masked.len() != MASKED_LEN || !masked.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(RecoveryError::NotMasked.into());
    }
    let sealer = settings::sealer()?.ok_or(RecoveryError::Off)?;
    let sealed: Option<Vec<u8>> =
        // The scalar subquery gives one row, NULL when the value was never sealed.
        Spi::get_one_with_args("SELECT (SELECT sealed FROM sqs_ingest.pii_vault WHERE masked = $1)", &[masked.into()])
            .map_err(|e| RecoveryError::Unaudited(e.to_string()))?;
    audit(masked, sealed.is_some())?;
    Ok(sealed.map(|s| sealer.open(masked, &s).map_err(RecoveryError::Sealed)).transpose()?)
}

/// Has a worker insert and commit the audit row, waits for it, and checks that the row is there.
/// The caller's transaction may still roll back; the audit row does not.
fn audit(masked: &str, found: bool) -> Result<(), RecoveryError> {
    let mut token = [0u8; 8];
    // SAFETY: fills the buffer it is given.
    if !unsafe { pg_sys::pg_strong_random(token.as_mut_ptr().cast(), token.len()) } {
        return Err(RecoveryError::Unaudited("no random token".into()));
    }
    let token = i64::from_ne_bytes(token);
    // SAFETY: reads this backend's identity.
    let (user, session, database, pid) =
        unsafe { (pg_sys::GetUserId(), pg_sys::GetSessionUserId(), pg_sys::MyDatabaseId, pg_sys::MyProcPid) };
    let worker = BackgroundWorkerBuilder::new("sqs_ingest reveal audit")
        .set_type("sqs_ingest reveal audit")
        .set_library("sqs_ingest")
        .set_function("sqs_ingest_audit_main")
        .set_argument(database.into_datum())
        .set_extra(&format!("{token} {} {} {} {masked}", user.to_u32(), session.to_u32(), found as u8))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic()
        .map_err(|_| RecoveryError::Unaudited("no background worker slot free; raise max_worker_processes".into()))?;
    worker.wait_for_shutdown().map_err(|status| RecoveryError::Unaudited(format!("audit worker {status:?}")))?;
    // The worker committed after this transaction's snapshot was taken: look with a new one.
    // SAFETY: pushed and popped around one read-only query.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let audited = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM sqs_ingest.pii_reveals WHERE token = $1)",
        &[token.into()],
    );
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    match audited {
        Ok(Some(true)) => Ok(()),
        _ => Err(RecoveryError::Unaudited("the audit worker failed; see the server log".into())),
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_audit_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    // SAFETY: the argument is the database Oid set by audit().
    let database = unsafe { pg_sys::Oid::from_datum(arg, false) };
    BackgroundWorker::connect_worker_to_spi_by_oid(database, None);
    let extra = BackgroundWorker::get_extra().to_owned();
    let fields: Vec<&str> = extra.split(' ').collect();
    let [token, user, session, found, masked] = fields[..] else {
        panic!("sqs_ingest: malformed audit request");
    };
    let number = |s: &str| s.parse::<i64>().expect("sqs_ingest: malformed audit request");
    let (token, user, session, found) = (number(token), number(user), number(session), found == "1");
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "INSERT INTO sqs_ingest.pii_reveals (token, revealed_by, session_role, masked, found)
             SELECT $1, (SELECT rolname FROM pg_authid WHERE oid = $2::oid),
                    (SELECT rolname FROM pg_authid WHERE oid = $3::oid), $4, $5",
            &[token.into(), user.into(), session.into(), masked.into(), found.into()],
        )
        .expect("sqs_ingest: could not insert the audit row");
    });
}
