//! The background workers: each long-polls the queue and ingests every batch in a transaction
//! of its own, through the same code as fetch_login_queue.
use crate::ingest::{self, IngestError, Target};
use crate::settings::{
    self, WORKER_ENABLED, WORKER_LOCK_TIMEOUT, WORKER_MAX_BACKOFF, WORKER_RESTART_INTERVAL, WORKER_STATEMENT_TIMEOUT,
    WORKER_WAIT,
};
use crate::sqs::{self, SqsError};
use crate::status::{self, State};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// How often a disabled worker looks at its settings again (a reload wakes it at once).
const DISABLED_RECHECK: Duration = Duration::from_secs(10);

/// Registers the workers; called from _PG_init while shared_preload_libraries load.
pub fn register() {
    let restart = Duration::from_secs(WORKER_RESTART_INTERVAL.get() as u64);
    for index in 0..settings::worker_count() {
        BackgroundWorkerBuilder::new(&format!("sqs_ingest worker {index}"))
            .set_type("sqs_ingest worker")
            .set_library("sqs_ingest")
            .set_function("sqs_ingest_worker_main")
            .set_argument((index as i32).into_datum())
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(restart))
            .load();
    }
}

/// What one round of the loop came to.
enum Round {
    /// A poll that came back empty, or a batch stored and committed; `full` when it brought
    /// all it asked for, so that more are likely waiting.
    Done {
        full: bool,
    },
    /// Nothing to do until something changes (the extension is not created yet).
    Waiting(Problem),
    Failed(Problem),
    Stop,
}

/// A problem as logged: `what` says which problem it is, so that it is logged once however
/// its details vary from one attempt to the next (connection refused, then reset, ...).
struct Problem {
    what: String,
    text: String,
}

impl Problem {
    fn new(text: String) -> Problem {
        Problem { what: text.clone(), text }
    }
}

impl From<SqsError> for Problem {
    fn from(e: SqsError) -> Problem {
        Problem { what: e.what(), text: e.to_string() }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_worker_main(arg: pg_sys::Datum) {
    // SAFETY: the argument is the int4 Datum set at registration.
    let index = unsafe { i32::from_datum(arg, false) }.unwrap_or(0) as usize;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::worker_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // SAFETY: reads this process's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    status::update(index, |s| {
        *s = status::Slot::EMPTY;
        s.pid = pid;
        s.state = State::Starting;
    });
    log!("sqs_ingest worker {index} started in database \"{database}\"");

    let mut pause = Duration::ZERO;
    let mut trouble: Option<String> = None;
    let mut backlog = false;
    while !shutdown_requested() {
        reload_if_asked();
        if !WORKER_ENABLED.get() {
            status::update(index, |s| s.state = State::Disabled);
            wait(DISABLED_RECHECK);
            continue;
        }
        let this = round(index, backlog);
        backlog = matches!(this, Round::Done { full: true });
        match this {
            Round::Stop => break,
            Round::Done { .. } => {
                if trouble.take().is_some() {
                    log!("sqs_ingest worker {index}: ingesting again");
                }
                pause = Duration::ZERO;
            }
            Round::Waiting(problem) | Round::Failed(problem) => {
                // Each distinct problem is logged once, however long it lasts.
                if trouble.as_deref() != Some(problem.what.as_str()) {
                    log!("sqs_ingest worker {index}: {}; retrying with backoff", problem.text);
                }
                status::update(index, |s| {
                    s.state = State::BackingOff;
                    s.set_error(Some(&problem.text));
                });
                trouble = Some(problem.what);
                let cap = Duration::from_secs(WORKER_MAX_BACKOFF.get() as u64);
                pause = (pause * 2).clamp(Duration::from_secs(1), cap);
                wait(pause);
            }
        }
    }
    status::update(index, |s| {
        s.state = State::Stopped;
        s.pid = 0;
    });
    // Exit code 1: the postmaster restarts the worker after the restart interval, unless it is
    // shutting down; exit code 0 would unregister it for good.
    // SAFETY: ends this process the way Postgres expects.
    unsafe { pg_sys::proc_exit(1) }
}

fn round(index: usize, backlog: bool) -> Round {
    let settings = match settings::fetch_settings() {
        Ok(s) => s,
        Err(e) => return Round::Failed(Problem::new(e.to_string())),
    };
    // The table is checked before receiving, so nothing is received that cannot be stored.
    let target = match in_transaction(Target::resolve) {
        Ok(Ok(target)) => target,
        Ok(Err(e @ IngestError::NoExtension)) => return Round::Waiting(Problem::new(e.to_string())),
        Ok(Err(e)) => return Round::Failed(Problem::new(e.to_string())),
        Err(e) => return Round::Failed(Problem::new(e)),
    };
    status::update(index, |s| {
        s.state = State::Polling;
        s.last_poll = Some(status::now());
    });
    // An idle queue costs one long poll per worker_wait. A full round means a backlog: the
    // next round sends requests_in_flight short polls at once, all into one transaction.
    let (max, in_flight, wait_seconds) = if backlog {
        (sqs::BATCH * settings.in_flight, settings.in_flight, 0)
    } else {
        (sqs::BATCH, 1, WORKER_WAIT.get())
    };
    let received = match settings.queue.receive_blocking(max, in_flight, wait_seconds, keep_waiting) {
        None => return Round::Stop,
        Some(Err(e)) => return Round::Failed(Problem::from(e)),
        Some(Ok(received)) => received,
    };
    let full = received.len() == max;
    if received.is_empty() {
        status::update(index, |s| {
            s.state = State::Idle;
            s.last_success = Some(status::now());
            s.set_error(None);
        });
        return Round::Done { full: false };
    }
    status::update(index, |s| s.state = State::Ingesting);
    let stored = in_transaction(AssertUnwindSafe(|| {
        ingest::prune_ledger(settings.ledger_retention_seconds);
        ingest::ingest(&target, &settings, received)
    }));
    match stored {
        Ok(stored) => {
            status::update(index, |s| {
                s.state = State::Idle;
                s.last_success = Some(status::now());
                s.ingested += stored.rows as i64;
                s.dead_letters += stored.dead_letters as i64;
                s.duplicates += stored.duplicates as i64;
                s.set_error(None);
            });
            Round::Done { full }
        }
        Err(e) => Round::Failed(Problem::new(e)),
    }
}

/// Runs `body` in a transaction of its own: committed when it returns, rolled back (and the
/// error returned as text) when it raises, so that an ERROR never ends the worker. The
/// transaction waits for a lock at most `sqs_ingest.worker_lock_timeout` and runs at most
/// `sqs_ingest.worker_statement_timeout`: a user's LOCK TABLE delays ingestion, never wedges it.
fn in_transaction<R>(body: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    // SAFETY: the worker is connected to a database and outside any transaction here; the
    // statement timeout is disarmed below whichever way the transaction ends.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        enable_timeout_after(STATEMENT_TIMEOUT, WORKER_STATEMENT_TIMEOUT.get());
    }
    let result = PgTryBuilder::new(|| {
        let lock_timeout = format!("SET LOCAL lock_timeout = {}", WORKER_LOCK_TIMEOUT.get());
        Spi::run(&lock_timeout).map_err(|e| e.to_string())?;
        Ok(body())
    })
    .catch_others(|caught| {
        Err(match caught {
            CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => e.message().to_owned(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
        })
    })
    .execute();
    // SAFETY: ends the transaction started above, whichever way it went.
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        match result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

// pgrx 0.18 does not bind utils/timeout.h. A background worker's statement timeout is not armed
// by Postgres (only a client's statements are): the worker arms it around each transaction.
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: u32, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: u32, keep_indicator: bool);
}
/// STATEMENT_TIMEOUT of utils/timeout.h's TimeoutId: the fourth, from PostgreSQL 13 to 18.
const STATEMENT_TIMEOUT: u32 = 3;

fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler.
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

fn reload_if_asked() {
    // SAFETY: a sig_atomic_t flag set by the SIGHUP handler; ProcessConfigFile runs outside
    // any transaction, as Postgres' own processes do it.
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Between slices of a long poll: go on unless a shutdown is asked for. A reload waits for
/// the poll to end: a poll abandoned on the client side may still take messages on the
/// server's, which would then come back only after their visibility timeout.
fn keep_waiting() -> bool {
    wait(Duration::ZERO);
    !shutdown_requested()
}

/// Sleeps up to `timeout` on the latch, which SIGTERM and SIGHUP set; exits at once if the
/// postmaster has died. Then processes interrupts: cluster-wide operations (DROP DATABASE,
/// ALTER DATABASE SET TABLESPACE, DROP TABLESPACE) wait until every process has absorbed their
/// ProcSignalBarrier, which only CHECK_FOR_INTERRUPTS does.
fn wait(timeout: Duration) {
    let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH;
    // SAFETY: MyLatch is this process's latch.
    unsafe {
        let rc =
            pg_sys::WaitLatch(pg_sys::MyLatch, events as i32, timeout.as_millis() as i64, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
        if rc & pg_sys::WL_POSTMASTER_DEATH as i32 != 0 {
            pg_sys::proc_exit(1);
        }
    }
    check_for_interrupts!();
}
