//! The launcher: one background worker, connected to no database, that starts
//! `sqs_ingest.workers` workers in every database where the extension is created, restarts
//! them, and stops them when their database goes, stops accepting connections, or is stepped
//! aside from (step_aside.rs).
use super::latch::{reload_if_asked, shutdown_requested, wait};
use super::step_aside;
use crate::settings::{self, WORKER_RESTART_INTERVAL};
use crate::source::catalog;
use crate::status;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::IntoDatum;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the launcher looks at pg_database when nothing wakes it.
const RECHECK: Duration = Duration::from_secs(1);

/// Registers the launcher; called from _PG_init while shared_preload_libraries load.
pub fn register() {
    BackgroundWorkerBuilder::new("sqs_ingest launcher")
        .set_type("sqs_ingest launcher")
        .set_library("sqs_ingest")
        .set_function("sqs_ingest_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(WORKER_RESTART_INTERVAL.get() as u64)))
        .load();
}

/// A database as pg_database lists it.
struct Database {
    oid: pg_sys::Oid,
    name: String,
    /// Accepts connections, is no template, and is not half-dropped.
    connectable: bool,
}

/// One worker the launcher started.
struct Started {
    database: pg_sys::Oid,
    index: usize,
    slot: usize,
    /// Postgres' handle, palloc'd in the launcher's top memory context.
    handle: *mut pg_sys::BackgroundWorkerHandle,
}

impl Started {
    /// Whether the worker has stopped (or was never started).
    fn stopped(&self) -> bool {
        let mut pid = 0;
        // SAFETY: a handle RegisterDynamicBackgroundWorker gave the launcher.
        let state = unsafe { pg_sys::GetBackgroundWorkerPid(self.handle, &mut pid) };
        state == pg_sys::BgwHandleStatus::BGWH_STOPPED
    }

    /// Has the postmaster send it SIGTERM.
    fn terminate(&self) {
        // SAFETY: as above.
        unsafe { pg_sys::TerminateBackgroundWorker(self.handle) }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sqs_ingest_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut started: Vec<Started> = Vec::new();
    // Databases whose worker found no extension, with the catalog generation it read before it
    // looked: tried again once a CREATE EXTENSION (or any change of a catalog) has committed.
    let mut without_extension: HashMap<pg_sys::Oid, u64> = HashMap::new();
    // When each (database, worker) may be started again after it stopped.
    let mut not_before: HashMap<(pg_sys::Oid, usize), Instant> = HashMap::new();
    let mut full_logged = false;
    while !shutdown_requested() {
        reload_if_asked();
        let generation = catalog::generation();
        let restart = Duration::from_secs(WORKER_RESTART_INTERVAL.get() as u64);
        // Workers that stopped: their slot freed, and why they stopped kept.
        started.retain(|w| {
            if !w.stopped() {
                return true;
            }
            if let Some(seen) = status::read(w.slot, |s| s.without_extension) {
                without_extension.insert(w.database, seen);
            }
            status::update(w.slot, |s| *s = status::Slot::EMPTY);
            not_before.insert((w.database, w.index), Instant::now() + restart);
            false
        });
        without_extension.retain(|_, seen| *seen == generation);
        let wanted = settings::worker_database();
        let databases = databases();
        let served = |d: &Database| {
            d.connectable
                && (wanted.is_empty() || d.name == wanted)
                && !without_extension.contains_key(&d.oid)
                && !step_aside::paused(d.oid)
        };
        // Workers whose database went or is stepped aside from are told to stop.
        for w in &started {
            if !databases.iter().any(|d| d.oid == w.database && served(d)) {
                w.terminate();
            }
        }
        for database in databases.iter().filter(|d| served(d)) {
            for index in 0..settings::worker_count() {
                let running = started.iter().any(|w| w.database == database.oid && w.index == index);
                let due = not_before.get(&(database.oid, index)).is_none_or(|at| *at <= Instant::now());
                if running || !due {
                    continue;
                }
                let Some(slot) = status::take(database.oid, index) else {
                    if !full_logged {
                        log!(
                            "sqs_ingest launcher: no worker slot left for database \"{}\" ({} in all); lower sqs_ingest.workers or serve fewer databases",
                            database.name,
                            status::MAX_SLOTS
                        );
                        full_logged = true;
                    }
                    continue;
                };
                match start(database, index, slot) {
                    Some(handle) => started.push(Started { database: database.oid, index, slot, handle }),
                    None => {
                        status::update(slot, |s| *s = status::Slot::EMPTY);
                        not_before.insert((database.oid, index), Instant::now() + restart);
                    }
                }
            }
        }
        // A worker's exit sets the latch (bgw_notify_pid), so does a reload.
        wait(RECHECK);
    }
    started.iter().for_each(Started::terminate);
    // SAFETY: ends this process the way Postgres expects; exit code 1 has it restarted.
    unsafe { pg_sys::proc_exit(1) }
}

/// Registers worker `index` of `database` in `slot`; None when Postgres has no background
/// worker slot left (max_worker_processes), which is logged.
fn start(database: &Database, index: usize, slot: usize) -> Option<*mut pg_sys::BackgroundWorkerHandle> {
    // SAFETY: reads this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let builder = BackgroundWorkerBuilder::new(&format!("sqs_ingest worker {index} of {}", database.name))
        .set_type("sqs_ingest worker")
        .set_library("sqs_ingest")
        .set_function("sqs_ingest_worker_main")
        .set_argument((slot as i32).into_datum())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_notify_pid(me);
    // Registered here rather than by pgrx's load_dynamic, whose handle cannot be asked whether
    // the worker stopped without giving it up.
    let mut worker: pg_sys::BackgroundWorker = (&builder).into();
    let mut handle = std::ptr::null_mut();
    // SAFETY: both point to values of this frame; Postgres copies the registration.
    if unsafe { pg_sys::RegisterDynamicBackgroundWorker(&mut worker, &mut handle) } {
        return Some(handle);
    }
    log!(
        "sqs_ingest launcher: could not start worker {index} of database \"{}\": no background worker slot left (max_worker_processes)",
        database.name
    );
    None
}

/// Every database of the cluster, read from the shared catalog pg_database.
fn databases() -> Vec<Database> {
    let mut found = Vec::new();
    // SAFETY: a transaction of the launcher's own around a catalog scan of a shared relation,
    // which needs no database connection; each tuple is read as pg_database's fixed part.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr()).to_string_lossy().into_owned();
            // datconnlimit -2: a DROP DATABASE interrupted half-way (DATCONNLIMIT_INVALID_DB).
            let connectable = (*form).datallowconn && !(*form).datistemplate && (*form).datconnlimit != -2;
            found.push(Database { oid: (*form).oid, name, connectable });
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    found
}
