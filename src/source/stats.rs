//! Shared-memory counters per source of each database since the server started, shown by the
//! view sqs_ingest.source_status of that database: what workers and committed fetch_source
//! calls did.
use crate::shmem::FixedText;
use crate::sqs::Receipt;
use crate::status::{ERROR_LEN, NAME_LEN};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Sources counted at once, of all databases; more are served, but not counted until the server
/// restarts.
pub const MAX_COUNTED: usize = 64;

/// What one source did.
#[derive(Clone, Copy)]
pub struct Counts {
    pub received: i64,
    pub rows: i64,
    pub dead_letters: i64,
    pub duplicates: i64,
    pub receive_requests: i64,
    pub empty_receives: i64,
    pub delete_requests: i64,
    /// SentTimestamp of the newest message ingested, in Postgres' microseconds.
    pub newest_sent: Option<pg_sys::TimestampTz>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// The source's database; sources of different databases may share a name.
    database: pg_sys::Oid,
    /// Empty: a free entry.
    name: FixedText<NAME_LEN>,
    counts: Counts,
    error: FixedText<ERROR_LEN>,
}

impl Entry {
    const EMPTY: Entry =
        Entry { database: pg_sys::Oid::INVALID, name: FixedText::EMPTY, counts: Counts::ZERO, error: FixedText::EMPTY };
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.rows += other.rows;
        self.dead_letters += other.dead_letters;
        self.duplicates += other.duplicates;
        self.receive_requests += other.receive_requests;
        self.empty_receives += other.empty_receives;
        self.delete_requests += other.delete_requests;
        self.newest_sent = self.newest_sent.max(other.newest_sent);
    }

    pub const ZERO: Counts = Counts {
        received: 0,
        rows: 0,
        dead_letters: 0,
        duplicates: 0,
        receive_requests: 0,
        empty_receives: 0,
        delete_requests: 0,
        newest_sent: None,
    };
}

#[derive(Clone, Copy)]
pub struct Entries([Entry; MAX_COUNTED]);

impl Default for Entries {
    fn default() -> Self {
        Entries([Entry::EMPTY; MAX_COUNTED])
    }
}

// SAFETY: plain Copy data with no pointers.
unsafe impl PGRXSharedMemory for Entries {}

// SAFETY: the only lock of this name.
static ENTRIES: PgLwLock<Entries> = unsafe { PgLwLock::new(c"sqs_ingest_source_stats") };
/// Set in the postmaster while preloading, and so inherited by every process it forks.
static ALLOCATED: AtomicBool = AtomicBool::new(false);

/// Asks for the shared memory; only possible while shared_preload_libraries load.
pub fn allocate() {
    pg_shmem_init!(ENTRIES);
    ALLOCATED.store(true, Ordering::Relaxed);
}

/// Adds to `source`'s counts. Cannot raise an ERROR: also called after commit.
pub fn add(source: &str, change: impl FnOnce(&mut Counts)) {
    entry(source, |e| change(&mut e.counts));
}

/// Counts what a set of ReceiveMessage requests for `source` brought.
pub fn received(source: &str, receipt: &Receipt) {
    add(source, |c| {
        c.received += receipt.messages.len() as i64;
        c.receive_requests += receipt.requests as i64;
        c.empty_receives += receipt.empty as i64;
    });
}

/// Records `source`'s last error; None: it works again.
pub fn set_error(source: &str, error: Option<&str>) {
    entry(source, |e| e.error.set(error));
}

fn entry(source: &str, change: impl FnOnce(&mut Entry)) {
    if !ALLOCATED.load(Ordering::Relaxed) || source.len() > NAME_LEN {
        return;
    }
    // SAFETY: the database this process is connected to.
    let database = unsafe { pg_sys::MyDatabaseId };
    let mut entries = ENTRIES.exclusive();
    let found = entries.0.iter().position(|e| e.database == database && e.name.is(source));
    let index = match found.or_else(|| entries.0.iter().position(|e| e.name.is_empty())) {
        Some(i) => i,
        None => return,
    };
    let e = &mut entries.0[index];
    if e.name.is_empty() {
        e.name.set(Some(source));
        e.database = database;
    }
    change(e);
}

#[pg_schema]
mod sqs_ingest {
    use super::{ALLOCATED, ENTRIES};
    use crate::shmem::timestamp;
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::sync::atomic::Ordering;

    /// One row per source of this database counted since the server started; none when not
    /// preloaded.
    #[pg_extern(volatile)]
    fn source_counts() -> TableIterator<
        'static,
        (
            name!(source, String),
            name!(received, i64),
            name!(rows, i64),
            name!(dead_letters, i64),
            name!(duplicates_skipped, i64),
            name!(receive_requests, i64),
            name!(empty_receives, i64),
            name!(delete_requests, i64),
            name!(newest_sent_at, Option<TimestampWithTimeZone>),
            name!(last_error, Option<String>),
        ),
    > {
        let rows: Vec<_> = if ALLOCATED.load(Ordering::Relaxed) {
            ENTRIES
                .share()
                .0
                .iter()
                // SAFETY: the database this backend is connected to.
                .filter(|e| !e.name.is_empty() && e.database == unsafe { pg_sys::MyDatabaseId })
                .map(|e| {
                    let c = e.counts;
                    (
                        e.name.get().unwrap_or_default(),
                        c.received,
                        c.rows,
                        c.dead_letters,
                        c.duplicates,
                        c.receive_requests,
                        c.empty_receives,
                        c.delete_requests,
                        timestamp(c.newest_sent),
                        e.error.get(),
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
    "CREATE VIEW sqs_ingest.source_status AS
     SELECT s.name AS source, s.enabled,
            coalesce(c.received, 0) AS received, coalesce(c.rows, 0) AS rows,
            coalesce(c.dead_letters, 0) AS dead_letters, coalesce(c.duplicates_skipped, 0) AS duplicates_skipped,
            coalesce(c.receive_requests, 0) AS receive_requests, coalesce(c.empty_receives, 0) AS empty_receives,
            coalesce(c.delete_requests, 0) AS delete_requests, c.newest_sent_at, c.last_error, s.identity
     FROM sqs_ingest.sources s LEFT JOIN sqs_ingest.source_counts() c ON c.source = s.name;",
    name = "source_status_view",
    requires = ["bootstrap", sqs_ingest::source_counts]
);
