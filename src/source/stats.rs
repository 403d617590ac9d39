//! Shared-memory counters per source since the server started, shown by the view
//! sqs_ingest.source_status: what workers and committed fetch_source calls did.
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, FromDatum, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Sources counted at once; more are served, but not counted until the server restarts.
pub const MAX_COUNTED: usize = 64;
const NAME_LEN: usize = 64;
const ERROR_LEN: usize = 240;

/// What one source did.
#[derive(Clone, Copy, Default)]
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
    name_len: usize,
    name: [u8; NAME_LEN],
    counts: Counts,
    error_len: usize,
    error: [u8; ERROR_LEN],
}

impl Entry {
    const EMPTY: Entry =
        Entry { name_len: 0, name: [0; NAME_LEN], counts: Counts::ZERO, error_len: 0, error: [0; ERROR_LEN] };

    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }
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

    const ZERO: Counts = Counts {
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

/// Records `source`'s last error; None: it works again.
pub fn set_error(source: &str, error: Option<&str>) {
    let error = error.unwrap_or_default();
    entry(source, |e| {
        let mut len = error.len().min(ERROR_LEN);
        while !error.is_char_boundary(len) {
            len -= 1;
        }
        e.error[..len].copy_from_slice(&error.as_bytes()[..len]);
        e.error_len = len;
    });
}

fn entry(source: &str, change: impl FnOnce(&mut Entry)) {
    if !ALLOCATED.load(Ordering::Relaxed) || source.len() > NAME_LEN {
        return;
    }
    let mut entries = ENTRIES.exclusive();
    let found = entries.0.iter().position(|e| e.name() == source.as_bytes());
    let index = match found.or_else(|| entries.0.iter().position(|e| e.name_len == 0)) {
        Some(i) => i,
        None => return,
    };
    let e = &mut entries.0[index];
    if e.name_len == 0 {
        e.name[..source.len()].copy_from_slice(source.as_bytes());
        e.name_len = source.len();
    }
    change(e);
}

fn timestamp(ts: Option<pg_sys::TimestampTz>) -> Option<TimestampWithTimeZone> {
    // SAFETY: a TimestampTz is a timestamptz Datum by value.
    ts.and_then(|t| unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(t), false) })
}

#[pg_schema]
mod sqs_ingest {
    use super::{timestamp, ALLOCATED, ENTRIES};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::sync::atomic::Ordering;

    /// One row per source counted since the server started; none when not preloaded.
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
                .filter(|e| e.name_len > 0)
                .map(|e| {
                    let c = e.counts;
                    (
                        String::from_utf8_lossy(e.name()).into_owned(),
                        c.received,
                        c.rows,
                        c.dead_letters,
                        c.duplicates,
                        c.receive_requests,
                        c.empty_receives,
                        c.delete_requests,
                        timestamp(c.newest_sent),
                        (e.error_len > 0).then(|| String::from_utf8_lossy(&e.error[..e.error_len]).into_owned()),
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
            coalesce(c.delete_requests, 0) AS delete_requests, c.newest_sent_at, c.last_error
     FROM sqs_ingest.sources s LEFT JOIN sqs_ingest.source_counts() c ON c.source = s.name;",
    name = "source_status_view",
    requires = ["bootstrap", sqs_ingest::source_counts]
);
