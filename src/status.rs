//! Shared-memory status of the background workers, shown by the view sqs_ingest.worker_status:
//! in which database each works, what it is doing, and for which source. The launcher hands out
//! the slots, one per worker.
use crate::shmem::FixedText;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest error kept, in bytes.
pub const ERROR_LEN: usize = 240;
/// Longest source name (a catalog CHECK allows 63 bytes).
pub const NAME_LEN: usize = 64;
/// Workers of all databases together: sqs_ingest.workers per database served.
pub const MAX_SLOTS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum State {
    Starting,
    Idle,
    Polling,
    Ingesting,
    BackingOff,
    Disabled,
    Stopped,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Polling => "polling",
            State::Ingesting => "ingesting",
            State::BackingOff => "backing off",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Copy)]
pub struct Slot {
    /// The database served; InvalidOid: a free slot.
    pub database: pg_sys::Oid,
    /// The worker's number among its database's workers.
    pub index: usize,
    pub pid: i32,
    pub state: State,
    pub last_poll: Option<pg_sys::TimestampTz>,
    pub last_success: Option<pg_sys::TimestampTz>,
    pub ingested: i64,
    pub dead_letters: i64,
    pub duplicates: i64,
    /// The last round's error; empty once a round succeeds.
    pub error: FixedText<ERROR_LEN>,
    /// The source being served, or served last.
    pub source: FixedText<NAME_LEN>,
    /// Set by a worker that found no extension in its database, before it exits: the catalog
    /// generation read before it looked, so that a CREATE EXTENSION committed after that
    /// look, even before the launcher sees the exit, has it started again.
    pub without_extension: Option<u64>,
}

impl Slot {
    pub const EMPTY: Slot = Slot {
        database: pg_sys::Oid::INVALID,
        index: 0,
        pid: 0,
        state: State::Stopped,
        last_poll: None,
        last_success: None,
        ingested: 0,
        dead_letters: 0,
        duplicates: 0,
        error: FixedText::EMPTY,
        source: FixedText::EMPTY,
        without_extension: None,
    };
}

#[derive(Clone, Copy)]
pub struct Slots([Slot; MAX_SLOTS]);

impl Default for Slots {
    fn default() -> Self {
        Slots([Slot::EMPTY; MAX_SLOTS])
    }
}

// SAFETY: plain Copy data with no pointers.
unsafe impl PGRXSharedMemory for Slots {}

// SAFETY: the only lock of this name.
static SLOTS: PgLwLock<Slots> = unsafe { PgLwLock::new(c"sqs_ingest_worker_status") };
/// Set in the postmaster while preloading, and so inherited by every process it forks.
static ALLOCATED: AtomicBool = AtomicBool::new(false);

/// Asks for the shared memory; only possible while shared_preload_libraries load.
pub fn allocate() {
    pg_shmem_init!(SLOTS);
    ALLOCATED.store(true, Ordering::Relaxed);
}

/// Reads slot `slot`.
pub fn read<R>(slot: usize, look: impl FnOnce(&Slot) -> R) -> R {
    look(&SLOTS.share().0[slot])
}

/// Changes slot `slot`.
pub fn update(slot: usize, change: impl FnOnce(&mut Slot)) {
    change(&mut SLOTS.exclusive().0[slot]);
}

/// Takes a free slot for worker `index` of `database`; None when all are taken.
pub fn take(database: pg_sys::Oid, index: usize) -> Option<usize> {
    let mut slots = SLOTS.exclusive();
    let free = slots.0.iter().position(|s| s.database == pg_sys::Oid::INVALID)?;
    slots.0[free] = Slot { database, index, state: State::Starting, ..Slot::EMPTY };
    Some(free)
}

/// The pids of the workers serving `database`.
pub fn pids(database: pg_sys::Oid) -> Vec<i32> {
    if !ALLOCATED.load(Ordering::Relaxed) {
        return Vec::new();
    }
    SLOTS.share().0.iter().filter(|s| s.database == database && s.pid != 0).map(|s| s.pid).collect()
}

/// A database's name, read in the current transaction; None once it is dropped.
pub fn database_name(oid: pg_sys::Oid) -> Option<String> {
    // SAFETY: reads pg_database in the current transaction; the name is palloc'd or NULL.
    let name = unsafe { pg_sys::get_database_name(oid) };
    // SAFETY: a NUL-terminated string when not NULL.
    (!name.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// In the schema sqs_ingest, beside the view over it.
#[pg_schema]
mod sqs_ingest {
    use super::{database_name, ALLOCATED, SLOTS};
    use crate::errors::report;
    use crate::shmem::timestamp;
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::pg_sys::panic::ErrorReport;
    use pgrx::prelude::*;
    use pgrx::PgSqlErrorCode;
    use std::sync::atomic::Ordering;

    /// 0.3.0 to 0.6.0's worker_status_rows, which their SQL calls until ALTER EXTENSION UPDATE
    /// (the library is installed and the server restarted first): their columns, without
    /// `database`. A C function is bound to its symbol by name and its rows are formed with the
    /// columns the SQL declares, so a row of another shape would put one column's value in
    /// another's type: 0.1.0 and 0.2.0's, which lack `source` too, get an ERROR naming the update.
    #[pg_extern(sql = false)]
    fn worker_status_rows(
        fcinfo: pg_sys::FunctionCallInfo,
    ) -> Result<
        TableIterator<
            'static,
            (
                name!(worker, i32),
                name!(pid, Option<i32>),
                name!(source, Option<String>),
                name!(state, String),
                name!(last_poll, Option<TimestampWithTimeZone>),
                name!(last_success, Option<TimestampWithTimeZone>),
                name!(ingested, i64),
                name!(dead_lettered, i64),
                name!(duplicates_skipped, i64),
                name!(last_error, Option<String>),
            ),
        >,
        ErrorReport,
    > {
        let (mut type_oid, mut declared) = (pg_sys::Oid::INVALID, std::ptr::null_mut());
        // SAFETY: the call's own fcinfo; the descriptor is read only when one was found.
        let columns = unsafe {
            pg_sys::get_call_result_type(fcinfo, &mut type_oid, &mut declared);
            declared.as_ref().map_or(0, |d| d.natts)
        };
        if columns != 10 {
            return Err(report(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "this database's sqs_ingest is older than its library".to_owned(),
                "Update it: ALTER EXTENSION sqs_ingest UPDATE;",
            ));
        }
        let rows: Vec<_> = worker_status_rows_by_database()
            .map(|(_, worker, pid, source, state, poll, success, ingested, dead, duplicates, error)| {
                (worker, pid, source, state, poll, success, ingested, dead, duplicates, error)
            })
            .collect();
        Ok(TableIterator::new(rows))
    }

    /// One row per worker of every database; none when sqs_ingest is not preloaded.
    #[pg_extern(volatile, name = "worker_status_rows")]
    fn worker_status_rows_by_database() -> TableIterator<
        'static,
        (
            name!(database, Option<String>),
            name!(worker, i32),
            name!(pid, Option<i32>),
            name!(source, Option<String>),
            name!(state, String),
            name!(last_poll, Option<TimestampWithTimeZone>),
            name!(last_success, Option<TimestampWithTimeZone>),
            name!(ingested, i64),
            name!(dead_lettered, i64),
            name!(duplicates_skipped, i64),
            name!(last_error, Option<String>),
        ),
    > {
        let rows: Vec<_> = if ALLOCATED.load(Ordering::Relaxed) {
            let mut slots: Vec<_> =
                SLOTS.share().0.into_iter().filter(|s| s.database != pg_sys::Oid::INVALID).collect();
            slots.sort_by_key(|s| (s.database.to_u32(), s.index));
            slots
                .iter()
                .map(|s| {
                    (
                        database_name(s.database),
                        s.index as i32,
                        (s.pid != 0).then_some(s.pid),
                        s.source.get(),
                        s.state.name().to_owned(),
                        timestamp(s.last_poll),
                        timestamp(s.last_success),
                        s.ingested,
                        s.dead_letters,
                        s.duplicates,
                        s.error.get(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        TableIterator::new(rows)
    }
}

extension_sql!(
    "CREATE VIEW sqs_ingest.worker_status AS SELECT * FROM sqs_ingest.worker_status_rows();",
    name = "worker_status_view",
    requires = [sqs_ingest::worker_status_rows_by_database]
);
