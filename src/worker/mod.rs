//! The background workers: a pool of `sqs_ingest.workers` processes serving the enabled
//! sources of sqs_ingest.sources. Each keeps a receive of every source assigned to it in flight
//! at once and stores each answer in a transaction of its own, through the same code as
//! fetch_source.
mod assignment;
mod latch;
mod polls;
mod round;
mod transaction;

use crate::ingest::{IngestError, Sink};
use crate::settings::{self, WORKER_ENABLED, WORKER_MAX_BACKOFF, WORKER_RESTART_INTERVAL};
use crate::source::{catalog, stats, Source, SourceError};
use crate::status::{self, State};
use assignment::assigned;
use latch::{reload_if_asked, reload_pending, shutdown_requested, wait, wait_for_change};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};
use polls::Polls;
use round::{Problem, Round};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use transaction::in_transaction;

/// How often a worker with nothing to do looks at its settings again (a reload, and a change
/// of the catalog, wake it sooner).
const IDLE_RECHECK: Duration = Duration::from_secs(10);
/// The longest pause before trying again to connect to a database that was not there.
const MAX_CONNECT_PAUSE: Duration = Duration::from_secs(60);

/// Registers the pool; called from _PG_init while shared_preload_libraries load. None in
/// binary-upgrade mode: pg_upgrade drops and re-creates every database, which a connected
/// worker would make fail ("database ... is being accessed by other users").
pub fn register() {
    // SAFETY: a flag the postmaster sets from its options before loading preloaded libraries.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
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

/// How a worker is doing with one of its sources.
#[derive(Default)]
struct Served {
    /// Its last round brought all it asked for: the next receive asks for a backlog. The FIFO
    /// groups that round found (0 for a standard queue).
    backlog: Option<usize>,
    /// Backoff after errors: doubles from 1 s up to sqs_ingest.worker_max_backoff.
    pause: Duration,
    retry_at: Option<Instant>,
    /// The problem last logged, until a round succeeds.
    trouble: Option<String>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_worker_main(arg: pg_sys::Datum) {
    // SAFETY: the argument is the int4 Datum set at registration.
    let index = unsafe { i32::from_datum(arg, false) }.unwrap_or(0) as usize;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    connect(index);
    serve(index);
    status::update(index, |s| {
        s.state = State::Stopped;
        s.pid = 0;
    });
    // Exit code 1: the postmaster restarts the worker after the restart interval, unless it is
    // shutting down; exit code 0 would unregister it for good.
    // SAFETY: ends this process the way Postgres expects.
    unsafe { pg_sys::proc_exit(1) }
}

/// Connects to sqs_ingest.database. A start that did not get through connecting (the database
/// missing, dropped WITH (FORCE), or not accepting connections) is followed by longer and
/// longer pauses, up to a minute: Postgres logs a FATAL for each try, which would otherwise
/// come every restart interval.
fn connect(index: usize) {
    let database = settings::worker_database();
    // SAFETY: reads this process's pid.
    let pid = unsafe { pg_sys::MyProcPid };
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
}

/// The worker's loop, until shutdown: the catalog read when it changed, a receive sent for each
/// source that has none in flight and is not backing off, and the first answer stored.
fn serve(index: usize) {
    let mut served: HashMap<String, Served> = HashMap::new();
    let mut polls = Polls::default();
    // This worker's sources, as of the catalog generation they were read at.
    let mut mine: Vec<Source> = Vec::new();
    let mut read_at = None;
    // The catalog's trouble (no extension yet, an unreadable catalog), like a source's.
    let mut catalog_trouble = Served::default();
    while !shutdown_requested() {
        reload_if_asked();
        let generation = catalog::generation();
        let enabled = WORKER_ENABLED.get();
        let now = Instant::now();
        let ready = |s: &Source, served: &HashMap<String, Served>| {
            served.get(&s.name).and_then(|s| s.retry_at).is_none_or(|at| at <= now)
        };
        let due = enabled && mine.iter().any(|s| !polls.polling(&s.name) && ready(s, &served));
        // The catalog when it changed, and the tables of the sources about to be polled, in one
        // transaction: a source whose table is missing or does not fit backs off unpolled.
        if enabled && (read_at != Some(generation) || due) {
            type Read = (Vec<Source>, Vec<(Source, Result<Sink, IngestError>)>);
            let reread = read_at != Some(generation);
            let read = in_transaction(AssertUnwindSafe(|| -> Result<Read, SourceError> {
                let now_mine = if reread { assigned(index)? } else { mine.clone() };
                let sinks = now_mine
                    .iter()
                    .filter(|s| !polls.polling(&s.name) && ready(s, &served))
                    .map(|s| (s.clone(), Sink::resolve(s)))
                    .collect();
                Ok((now_mine, sinks))
            }));
            let (now_mine, sinks) =
                match read.map_err(Problem::new).and_then(|r| r.map_err(|e| Problem::new(e.to_string()))) {
                    Ok(read) => read,
                    Err(problem) => {
                        back_off(index, None, &mut catalog_trouble, problem);
                        wait_for_change(catalog_trouble.pause, generation);
                        continue;
                    }
                };
            // Receives of sources no longer served, or changed, are given up.
            polls.retain(|s| now_mine.contains(s));
            served.retain(|name, _| now_mine.iter().any(|s| &s.name == name));
            mine = now_mine;
            read_at = Some(generation);
            // worker_status names the source served last only while it is still this worker's.
            status::update(index, |s| {
                if !mine.iter().any(|m| s.source.is(&m.name)) {
                    s.source.set(None);
                }
            });
            for (source, sink) in sinks {
                let state = served.entry(source.name.clone()).or_default();
                // The catalog's trouble is over; its recovery is logged with this source's first
                // good round, once, as any other trouble's.
                if let Some(trouble) = std::mem::take(&mut catalog_trouble).trouble {
                    state.trouble.get_or_insert(trouble);
                }
                match sink.map_err(|e| Problem::new(e.to_string())).and_then(|sink| {
                    let settings =
                        settings::fetch_settings(&source.overrides).map_err(|e| Problem::new(e.to_string()))?;
                    Ok((sink, settings))
                }) {
                    Ok((sink, settings)) => polls.start(source, sink, settings, state.backlog),
                    Err(problem) => failed(index, &source.name, state, problem),
                }
            }
        }
        let soonest = served.values().filter_map(|s| s.retry_at).min();
        if polls.is_empty() {
            // Nothing assigned, every source backing off, or the worker disabled.
            let pause = soonest.map_or(IDLE_RECHECK, |at| at.saturating_duration_since(now)).min(IDLE_RECHECK);
            if !enabled {
                status::update(index, |s| s.state = State::Disabled);
            } else if soonest.is_none() {
                status::update(index, |s| {
                    s.state = State::Idle;
                    s.source.set(None);
                });
            }
            wait_for_change(pause, generation);
            continue;
        }
        status::update(index, |s| {
            s.state = State::Polling;
            s.last_poll = Some(status::now());
        });
        // Every receive driven until one answers; the loop goes round sooner for a change of
        // the catalog or the settings, or a source whose backoff ends. A receive in flight when
        // the worker is disabled is answered and stored; none is sent after.
        let answered = polls.next(|| {
            wait(Duration::ZERO);
            !shutdown_requested()
                && !reload_pending()
                && catalog::generation() == generation
                && soonest.is_none_or(|at| Instant::now() < at)
        });
        let Some((poll, answer)) = answered else { continue };
        let name = poll.source.name.clone();
        let outcome = round::store(index, poll, answer);
        let state = served.entry(name.clone()).or_default();
        match outcome {
            Round::Done { backlog } => {
                if state.trouble.take().is_some() {
                    log!("sqs_ingest worker {index}: source \"{name}\" ingesting again");
                }
                state.backlog = backlog;
                state.pause = Duration::ZERO;
                state.retry_at = None;
            }
            Round::Failed(problem) => failed(index, &name, state, problem),
        }
    }
}

/// A source's round failed: it backs off.
fn failed(index: usize, source: &str, state: &mut Served, problem: Problem) {
    state.backlog = None;
    back_off(index, Some(source), state, problem);
    state.retry_at = Some(Instant::now() + state.pause);
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
