//! The background workers: a pool of `sqs_ingest.workers` processes serving the enabled
//! sources of sqs_ingest.sources. Each long-polls the queues assigned to it in turn and ingests
//! every batch in a transaction of its own, through the same code as fetch_source.
use crate::ingest::{self, IngestError, Sink};
use crate::settings::{
    self, WORKER_ENABLED, WORKER_LOCK_TIMEOUT, WORKER_MAX_BACKOFF, WORKER_RESTART_INTERVAL, WORKER_STATEMENT_TIMEOUT,
};
use crate::source::{catalog, stats, Source, SourceError};
use crate::sqs::{self, SqsError};
use crate::status::{self, State};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};
use sqs_ingest_core::assignment;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How often a worker with nothing to do looks at its settings again (a reload, and a change
/// of the catalog, wake it sooner).
const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// A backlog is stored this many messages, or this long, per transaction: rounds follow one
/// another into one transaction, so that its fixed cost (commit, catalog, ledger pruning) is
/// shared as a fetch_login_queue(1000) shares it, while rows still become visible every second.
const BACKLOG_MESSAGES: usize = 1000;
const BACKLOG_TIME: Duration = Duration::from_secs(1);
/// The wait of a backlog round's polls, in seconds.
const BACKLOG_WAIT: i32 = 1;
/// The longest pause before trying again to connect to a database that was not there.
const MAX_CONNECT_PAUSE: Duration = Duration::from_secs(60);

/// Registers the pool; called from _PG_init while shared_preload_libraries load.
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
    /// The catalog changed while polling: the poll was given up to read it again.
    Changed,
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

/// How a worker is doing with one of its sources.
#[derive(Default)]
struct Served {
    /// Its last round brought all it asked for: the next sends requests_in_flight short polls.
    backlog: bool,
    /// Backoff after errors: doubles from 1 s up to sqs_ingest.worker_max_backoff.
    pause: Duration,
    retry_at: Option<Instant>,
    /// The problem last logged, until a round succeeds.
    trouble: Option<String>,
    /// When its last poll began.
    polled_at: Option<Instant>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_worker_main(arg: pg_sys::Datum) {
    // SAFETY: the argument is the int4 Datum set at registration.
    let index = unsafe { i32::from_datum(arg, false) }.unwrap_or(0) as usize;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::worker_database();
    // SAFETY: reads this process's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    // A start that did not get through connecting (the database missing, dropped WITH (FORCE),
    // or not accepting connections) is followed by longer and longer pauses, up to a minute:
    // Postgres logs a FATAL for each try, which would otherwise come every restart interval.
    let failed = status::read(index, |s| s.failed_starts);
    if failed > 0 {
        let pause = (Duration::from_secs(WORKER_RESTART_INTERVAL.get() as u64) * 2u32.saturating_pow(failed))
            .min(MAX_CONNECT_PAUSE);
        let text = format!(
            "could not connect to database \"{database}\" (sqs_ingest.database; see the FATAL before: does it exist, does it accept connections?); trying again in {} s",
            pause.as_secs()
        );
        log!("sqs_ingest worker {index} {text}");
        status::update(index, |s| {
            s.pid = pid;
            s.state = State::Starting;
            s.error.set(Some(&text));
        });
        wait_for_change(pause, catalog::generation());
        if shutdown_requested() {
            // SAFETY: ends this process the way Postgres expects; the postmaster is stopping it.
            unsafe { pg_sys::proc_exit(1) }
        }
    }
    status::update(index, |s| s.failed_starts = failed.saturating_add(1));
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    status::update(index, |s| {
        *s = status::Slot::EMPTY;
        s.pid = pid;
        s.state = State::Starting;
    });
    log!("sqs_ingest worker {index} started in database \"{database}\"");

    let mut served: HashMap<String, Served> = HashMap::new();
    // The catalog's trouble (no extension yet, an unreadable catalog), like a source's.
    let mut catalog_trouble = Served::default();
    while !shutdown_requested() {
        reload_if_asked();
        if !WORKER_ENABLED.get() {
            status::update(index, |s| s.state = State::Disabled);
            wait_for_change(IDLE_RECHECK, catalog::generation());
            continue;
        }
        let generation = catalog::generation();
        let now = Instant::now();
        // The catalog, this worker's sources, and the next of them whose turn it is and that is
        // not backing off, read in one transaction with that source's table.
        type Picked = (Vec<Source>, Option<(Source, Result<Sink, IngestError>)>);
        let picked = in_transaction(AssertUnwindSafe(|| -> Result<Picked, SourceError> {
            let mine = assigned(index)?;
            // The ready source polled least recently (one never polled first): fair, and a
            // source just created or enabled is next whatever else changed.
            let ready = mine
                .iter()
                .filter(|s| served.get(&s.name).and_then(|s| s.retry_at).is_none_or(|at| at <= now))
                .min_by_key(|s| served.get(&s.name).and_then(|s| s.polled_at))
                .cloned();
            let picked = ready.map(|source| {
                let sink = Sink::resolve(&source);
                (source, sink)
            });
            Ok((mine, picked))
        }));
        let (mine, picked) = match picked.map_err(Problem::new).and_then(|r| r.map_err(|e| Problem::new(e.to_string())))
        {
            Ok(read) => read,
            Err(problem) => {
                back_off(index, None, &mut catalog_trouble, problem);
                wait_for_change(catalog_trouble.pause, generation);
                continue;
            }
        };
        // What is known of sources no longer served is forgotten.
        served.retain(|name, _| mine.iter().any(|s| &s.name == name));
        let Some((source, sink)) = picked else {
            // Nothing assigned, or every source backing off.
            let soonest = served.values().filter_map(|s| s.retry_at).min();
            let pause = soonest.map_or(IDLE_RECHECK, |at| at.saturating_duration_since(now)).min(IDLE_RECHECK);
            if soonest.is_none() {
                status::update(index, |s| {
                    s.state = State::Idle;
                    s.source.set(None);
                });
            }
            wait_for_change(pause, generation);
            continue;
        };
        let state = served.entry(source.name.clone()).or_default();
        state.polled_at = Some(Instant::now());
        // The catalog's trouble is over; its recovery is logged with this source's first good
        // round, once, as any other trouble's.
        if let Some(trouble) = std::mem::take(&mut catalog_trouble).trouble {
            state.trouble.get_or_insert(trouble);
        }
        // A source whose table is missing or does not fit backs off; the others go on.
        let outcome = match sink {
            Ok(sink) => round(index, &source, &sink, &mine, state.backlog, generation),
            Err(e) => Round::Failed(Problem::new(e.to_string())),
        };
        match outcome {
            Round::Stop => break,
            Round::Changed => {}
            Round::Done { full } => {
                if state.trouble.take().is_some() {
                    log!("sqs_ingest worker {index}: source \"{}\" ingesting again", source.name);
                }
                state.backlog = full;
                state.pause = Duration::ZERO;
                state.retry_at = None;
            }
            Round::Failed(problem) => {
                state.backlog = false;
                back_off(index, Some(&source.name), state, problem);
                state.retry_at = Some(Instant::now() + state.pause);
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

/// The enabled sources worker `index` serves, as the catalog says now.
fn assigned(index: usize) -> Result<Vec<Source>, SourceError> {
    let sources = Source::enabled()?;
    let asked: Vec<(&str, usize)> = sources.iter().map(|s| (s.name.as_str(), workers_asked(s))).collect();
    let mine = assignment::assigned(index, settings::worker_count(), &asked);
    Ok(sources.iter().filter(|s| mine.contains(&s.name.as_str())).cloned().collect())
}

/// How many workers a source asks for: its own setting, else 1, and the whole pool for the
/// login source (as sqs_ingest.workers meant before sources).
fn workers_asked(source: &Source) -> usize {
    match source.workers {
        Some(n) => n.max(0) as usize,
        None if source.is_login() => settings::worker_count(),
        None => 1,
    }
}

/// Logs `problem` once while it lasts, shows it, and doubles the pause before the next try.
fn back_off(index: usize, source: Option<&str>, state: &mut Served, problem: Problem) {
    let about = source.map(|s| format!(" source \"{s}\":")).unwrap_or_default();
    if state.trouble.as_deref() != Some(problem.what.as_str()) {
        log!("sqs_ingest worker {index}:{about} {}; retrying with backoff", problem.text);
    }
    status::update(index, |s| {
        s.state = State::BackingOff;
        s.source.set(source);
        s.error.set(Some(&problem.text));
    });
    if let Some(source) = source {
        stats::set_error(source, Some(&problem.text));
    }
    state.trouble = Some(problem.what);
    let cap = Duration::from_secs(WORKER_MAX_BACKOFF.get() as u64);
    state.pause = (state.pause * 2).clamp(Duration::from_secs(1), cap);
}

/// One poll of `source`'s queue and, when it brings messages, one transaction storing them.
/// `mine`: the sources this worker serves in turn, whose number divides its long-poll wait; a
/// committed change of the catalog that changes them (or this one) gives the poll up.
fn round(index: usize, source: &Source, sink: &Sink, mine: &[Source], backlog: bool, generation: u64) -> Round {
    let sharing = mine.len();
    let name = source.name.as_str();
    let settings = match settings::fetch_settings(&source.overrides) {
        Ok(s) => s,
        Err(e) => return Round::Failed(Problem::new(e.to_string())),
    };
    status::update(index, |s| {
        s.state = State::Polling;
        s.source.set(Some(name));
        s.last_poll = Some(status::now());
    });
    // An idle queue costs one long poll per wait. A full round means a backlog: the next
    // round sends requests_in_flight polls at once, all into one transaction. They wait up to
    // a second, not 0: a short poll asks only some of SQS's servers and may come back with
    // fewer than ten, or none, while more are queued; a poll that waits asks them all and still
    // answers as soon as it has messages (docs/performance.md).
    let (max, in_flight, wait_seconds) = if backlog {
        (sqs::BATCH * settings.in_flight, settings.in_flight, BACKLOG_WAIT)
    } else {
        (sqs::BATCH, 1, (settings.worker_wait / sharing.max(1) as i32).max(1))
    };
    let mut changed = false;
    let mut seen = generation;
    let keep_waiting = || {
        wait(Duration::ZERO);
        let now = catalog::generation();
        if now != seen {
            seen = now;
            // Given up only when this worker's sources changed: a poll given up may have taken
            // messages on the server's side, which then wait out their visibility timeout.
            changed = !matches!(in_transaction(|| assigned(index)), Ok(Ok(ref m)) if m == mine);
        }
        !shutdown_requested() && !changed
    };
    let receipt = match settings.queue.receive_blocking(max, in_flight, wait_seconds, keep_waiting) {
        None if changed => return Round::Changed,
        None => return Round::Stop,
        Some(Err(e)) => return Round::Failed(Problem::from(e)),
        Some(Ok(receipt)) => receipt,
    };
    stats::received(name, &receipt);
    let full = receipt.messages.len() == max;
    if receipt.messages.is_empty() {
        succeeded(index, name, None);
        return Round::Done { full: false };
    }
    status::update(index, |s| s.state = State::Ingesting);
    let started = Instant::now();
    let stored = in_transaction(AssertUnwindSafe(|| {
        ingest::prune_ledger(settings.ledger_retention_seconds);
        let mut taken = receipt.messages.len();
        let mut stored = ingest::ingest(name, sink, &settings, receipt.messages);
        let mut full = full;
        // A backlog round that brought all it asked for: more of the backlog, into this
        // transaction. A receive that fails or is interrupted ends it; what is stored commits,
        // and the next round meets the failure again.
        while backlog && full && taken < BACKLOG_MESSAGES && started.elapsed() < BACKLOG_TIME {
            let between = || {
                wait(Duration::ZERO);
                !shutdown_requested()
            };
            // Short polls here: an open transaction never waits for an empty queue.
            let Some(Ok(more)) = settings.queue.receive_blocking(max, in_flight, 0, between) else {
                full = false;
                break;
            };
            stats::received(name, &more);
            full = more.messages.len() == max;
            taken += more.messages.len();
            if !more.messages.is_empty() {
                stored += ingest::ingest(name, sink, &settings, more.messages);
            }
        }
        (stored, full)
    }));
    match stored {
        Ok((stored, full)) => {
            succeeded(index, name, Some(stored));
            Round::Done { full }
        }
        Err(e) => Round::Failed(Problem::new(e)),
    }
}

fn succeeded(index: usize, source: &str, stored: Option<ingest::Stored>) {
    if let Some(deferred) = stored.map(|s| s.deferred).filter(|&d| d > 0) {
        log!(
            "sqs_ingest worker {index}: source \"{source}\": {deferred} messages left in the queue: another transaction was entering some of them in the ledger"
        );
    }
    status::update(index, |s| {
        s.state = State::Idle;
        s.last_success = Some(status::now());
        if let Some(stored) = stored {
            s.ingested += stored.rows as i64;
            s.dead_letters += stored.dead_letters as i64;
            s.duplicates += stored.duplicates as i64;
        }
        s.error.set(None);
    });
    stats::set_error(source, None);
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

/// Waits up to `timeout`, in steps of a second, until the catalog changes from `generation`,
/// a reload or a shutdown is asked for.
fn wait_for_change(timeout: Duration, generation: u64) {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || shutdown_requested() || catalog::generation() != generation {
            return;
        }
        // SAFETY: a sig_atomic_t flag set by the SIGHUP handler.
        if unsafe { pg_sys::ConfigReloadPending != 0 } {
            return;
        }
        wait(left.min(Duration::from_secs(1)));
    }
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
