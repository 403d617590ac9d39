//! The background workers: in every database where the extension is created, a pool of
//! `sqs_ingest.workers` processes serving the enabled sources of its sqs_ingest.sources, started
//! by the launcher. Each keeps a receive of every source assigned to it in flight at once and
//! stores each answer in a transaction of its own, through the same code as fetch_source.
mod assignment;
mod latch;
mod launcher;
mod polls;
mod round;
mod step_aside;
mod transaction;

use crate::ingest::Sink;
use crate::settings::{self, WORKER_ENABLED, WORKER_MAX_BACKOFF};
use crate::source::{catalog, identity, stats, Source, SourceError};
use crate::sqs::AssumeRole;
use crate::status::{self, State};
use crate::xact;
use assignment::assigned;
use latch::{reload_if_asked, reload_pending, shutdown_requested, wait, wait_for_change};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::FromDatum;
use polls::{Backlog, Polls};
use round::{Problem, Round};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use transaction::in_transaction;

/// How often a worker with nothing to do looks at its settings again (a reload, and a change
/// of the catalog, wake it sooner).
const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// Registers the launcher, which starts the workers; called from _PG_init while
/// shared_preload_libraries load. None in binary-upgrade mode: pg_upgrade drops and re-creates
/// every database, which a connected worker would make fail ("database ... is being accessed
/// by other users").
pub fn register() {
    step_aside::allocate();
    // SAFETY: a flag the postmaster sets from its options before loading preloaded libraries.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    launcher::register();
}

/// Who a worker is: its status slot, and its number among its database's workers.
#[derive(Clone, Copy)]
pub struct Me {
    pub slot: usize,
    pub index: usize,
}

/// How a worker is doing with one of its sources.
#[derive(Default)]
struct Served {
    /// Its last round brought all it asked for: the next receive asks for a backlog.
    backlog: Option<Backlog>,
    /// Backoff after errors: doubles from 1 s up to sqs_ingest.worker_max_backoff.
    pause: Duration,
    retry_at: Option<Instant>,
    /// The problem last logged, until a round succeeds.
    trouble: Option<String>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_worker_main(arg: pg_sys::Datum) {
    // SAFETY: the argument is the int4 Datum the launcher set: the worker's status slot.
    let slot = unsafe { i32::from_datum(arg, false) }.unwrap_or(0) as usize;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let (database, index) = status::read(slot, |s| (s.database, s.index));
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // SAFETY: reads this process's pid and its database's name, in a transaction.
    let (pid, name) = unsafe { (pg_sys::MyProcPid, database_name()) };
    status::update(slot, |s| {
        s.pid = pid;
        s.state = State::Starting;
    });
    log!("sqs_ingest worker {index} started in database \"{name}\"");
    xact::overlap_deletes();
    let without_extension = serve(Me { slot, index }, database);
    xact::settle_deletes(true);
    if let Some(generation) = without_extension {
        log!(
            "sqs_ingest worker {index}: extension sqs_ingest is not created in database \"{name}\"; its workers start when it is"
        );
        status::update(slot, |s| s.without_extension = Some(generation));
    }
    status::update(slot, |s| {
        s.state = State::Stopped;
        s.pid = 0;
    });
    // SAFETY: ends this process the way Postgres expects; the launcher starts it again if need be.
    unsafe { pg_sys::proc_exit(0) }
}

/// This worker's database's name.
///
/// # Safety
/// The worker is connected to a database and outside a transaction.
unsafe fn database_name() -> String {
    // SAFETY: this process's database.
    in_transaction(|| status::database_name(unsafe { pg_sys::MyDatabaseId })).ok().flatten().unwrap_or_default()
}

/// The worker's loop, until shutdown or a command that needs its database alone: the catalog
/// read when it changed, a receive sent for each source that has none in flight and is not
/// backing off, and the first answer stored. Some: the extension is not created here, as of the
/// catalog generation it returns.
fn serve(me: Me, database: pg_sys::Oid) -> Option<u64> {
    let mut served: HashMap<String, Served> = HashMap::new();
    let mut polls = Polls::default();
    // This worker's sources, as of the catalog generation they were read at.
    let mut mine: Vec<Source> = Vec::new();
    let mut read_at = None;
    // The catalog's trouble (no extension yet, an unreadable catalog), like a source's.
    let mut catalog_trouble = Served::default();
    while !shutdown_requested() && !step_aside::paused(database) {
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
            type Ready = Result<(Sink, Option<AssumeRole>), Problem>;
            type Read = (Vec<Source>, Vec<(Source, Ready)>);
            let reread = read_at != Some(generation);
            let read = in_transaction(AssertUnwindSafe(|| -> Result<Read, SourceError> {
                let now_mine = if reread { assigned(me.index)? } else { mine.clone() };
                let sinks = now_mine
                    .iter()
                    .filter(|s| !polls.polling(&s.name) && ready(s, &served))
                    .map(|s| {
                        let sink = Sink::resolve(s).map_err(|e| Problem::new(e.to_string()));
                        // The owner's right to the source's identity, at every round it is served.
                        let assume = identity::assume_for(s).map_err(|e| Problem::new(e.to_string()));
                        (s.clone(), sink.and_then(|sink| Ok((sink, assume?))))
                    })
                    .collect();
                Ok((now_mine, sinks))
            }));
            if matches!(read, Ok(Err(SourceError::NoExtension))) {
                return Some(generation);
            }
            let (now_mine, sinks) =
                match read.map_err(Problem::new).and_then(|r| r.map_err(|e| Problem::new(e.to_string()))) {
                    Ok(read) => read,
                    Err(problem) => {
                        back_off(me, None, &mut catalog_trouble, problem);
                        xact::settle_deletes(true);
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
            status::update(me.slot, |s| {
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
                match sink.and_then(|(sink, assume)| {
                    let settings =
                        settings::fetch_settings(&source.overrides, assume).map_err(|e| Problem::new(e.to_string()))?;
                    Ok((sink, settings))
                }) {
                    Ok((sink, settings)) => polls.start(source, sink, settings, state.backlog),
                    Err(problem) => failed(me, &source.name, state, problem),
                }
            }
        }
        // The next backoff to end, of the sources waiting for it (not those polled again).
        let soonest = served.iter().filter(|(name, _)| !polls.polling(name)).filter_map(|(_, s)| s.retry_at).min();
        if polls.is_empty() {
            // Nothing assigned, every source backing off, or the worker disabled.
            let pause = match soonest {
                Some(at) if enabled => at.saturating_duration_since(now).min(IDLE_RECHECK),
                _ => IDLE_RECHECK,
            };
            if !enabled {
                status::update(me.slot, |s| s.state = State::Disabled);
            } else if soonest.is_none() {
                status::update(me.slot, |s| {
                    s.state = State::Idle;
                    s.source.set(None);
                });
            }
            xact::settle_deletes(true);
            wait_for_change(pause, generation);
            continue;
        }
        status::update(me.slot, |s| {
            s.state = State::Polling;
            s.last_poll = Some(status::now());
        });
        // Every receive driven until one answers; the loop goes round sooner for a change of
        // the catalog or the settings, or a source whose backoff ends. A receive in flight when
        // the worker is disabled is answered and stored; none is sent after.
        let answered = polls.next(|| {
            wait(Duration::ZERO);
            // The last rounds' deletes, counted once they end, rather than after the next answer.
            xact::settle_deletes(false);
            !shutdown_requested()
                && !step_aside::paused(database)
                && !reload_pending()
                && catalog::generation() == generation
                && soonest.is_none_or(|at| Instant::now() < at)
        });
        let Some((poll, answer)) = answered else { continue };
        let name = poll.source.name.clone();
        let outcome = round::store(me, poll, answer);
        xact::settle_deletes(false);
        let state = served.entry(name.clone()).or_default();
        match outcome {
            Round::Done { backlog } => {
                if state.trouble.take().is_some() {
                    log!("sqs_ingest worker {}: source \"{name}\" ingesting again", me.index);
                }
                let rounds = state.backlog.map_or(0, |b| b.rounds + 1);
                state.backlog = backlog.map(|groups| Backlog { groups, rounds });
                state.pause = Duration::ZERO;
                state.retry_at = None;
            }
            Round::Failed(problem) => failed(me, &name, state, problem),
        }
    }
    None
}

/// A source's round failed: it backs off.
fn failed(me: Me, source: &str, state: &mut Served, problem: Problem) {
    state.backlog = None;
    back_off(me, Some(source), state, problem);
    state.retry_at = Some(Instant::now() + state.pause);
}

/// Logs `problem` once while it lasts, shows it, and doubles the pause before the next try.
fn back_off(me: Me, source: Option<&str>, state: &mut Served, problem: Problem) {
    let about = source.map(|s| format!(" source \"{s}\":")).unwrap_or_default();
    if state.trouble.as_deref() != Some(problem.what.as_str()) {
        log!("sqs_ingest worker {}:{about} {}; retrying with backoff", me.index, problem.text);
    }
    status::update(me.slot, |s| {
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
