//! Deletes received messages from SQS only once their transaction commits: savepoints that
//! roll back keep their messages in the queue, and PREPARE TRANSACTION is refused.
use crate::errors::{raise, report};
use crate::source::stats::{self, Counts};
use crate::sqs::{self, Deleted, Queue};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub enum XactError {
    /// PREPARE TRANSACTION after a fetch: the deletes would have no COMMIT to follow.
    Prepare,
}

impl From<XactError> for ErrorReport {
    fn from(e: XactError) -> Self {
        match e {
            XactError::Prepare => report(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot PREPARE a transaction that has fetched SQS messages".to_owned(),
                "Commit it instead: its messages are deleted from SQS only after COMMIT, which PREPARE TRANSACTION would outlive.",
            ),
        }
    }
}

struct Pending {
    subxact: pg_sys::SubTransactionId,
    source: String,
    queue: Queue,
    handles: Vec<String>,
    /// Delete requests sent at once: the source's requests_in_flight.
    in_flight: usize,
    /// What storing them did, counted for the source once it commits.
    counts: Counts,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Queues `handles`, received from `source`'s queue, for deletion `in_flight` requests at once
/// when the current (sub)transaction's top level commits, and `counts` to be added to the
/// source's then.
pub fn delete_after_commit(source: &str, queue: &Queue, in_flight: usize, handles: Vec<String>, counts: Counts) {
    if handles.is_empty() {
        return;
    }
    if !REGISTERED.replace(true) {
        // SAFETY: both callbacks are plain functions that live as long as the backend.
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        }
    }
    // SAFETY: called inside a transaction, as every SQL function is.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with_borrow_mut(|pending| match pending.last_mut() {
        // One entry per (subtransaction, queue), so that a failure is reported once per commit.
        Some(last) if last.subxact == subxact && last.source == source && last.queue == *queue => {
            last.handles.extend(handles);
            last.counts.add(&counts);
        }
        _ => pending.push(Pending {
            subxact,
            source: source.to_owned(),
            queue: queue.clone(),
            handles,
            in_flight,
            counts,
        }),
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_PREPARE if PENDING.with_borrow(|p| !p.is_empty()) => raise(XactError::Prepare),
        XACT_EVENT_COMMIT => {
            let pending = PENDING.take();
            // Nothing may escape a post-commit callback: Postgres would PANIC.
            if std::panic::catch_unwind(move || delete_all(pending)).is_err() {
                warning!("sqs_ingest: deleting messages after commit failed; they will be redelivered and skipped");
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PREPARE => drop(PENDING.take()),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    subxact: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_ABORT_SUB => PENDING.with_borrow_mut(|p| p.retain(|e| e.subxact != subxact)),
        SUBXACT_EVENT_COMMIT_SUB => {
            PENDING.with_borrow_mut(|p| p.iter_mut().filter(|e| e.subxact == subxact).for_each(|e| e.subxact = parent))
        }
        _ => {}
    }
}

/// Deletes each entry's messages, several requests at once: in a worker, from a standard queue,
/// while it receives more (see [`overlap_deletes`]); otherwise before the commit returns.
fn delete_all(pending: Vec<Pending>) {
    for Pending { source, queue, handles, in_flight, counts, .. } in pending {
        stats::add(&source, |c| c.add(&counts));
        let limit = queue.delete_many_limit(handles.len(), in_flight);
        let total = handles.len();
        let overlap = OVERLAP.get() && !queue.is_fifo();
        let deleting = Deleting { source, queue_url: sqs_ingest_core::redact::url(&queue.url), total, limit };
        let deletes = async move { queue.delete_many(&handles, in_flight).await };
        if overlap {
            let handle = sqs::spawn(deletes, limit);
            IN_FLIGHT.with_borrow_mut(|d| d.push((deleting, handle)));
        } else {
            deleting.report(sqs::run_with_deadline(deletes, limit));
        }
    }
}

/// Committed messages whose deletes are on their way.
struct Deleting {
    source: String,
    /// The queue, as logs name it.
    queue_url: String,
    total: usize,
    limit: Duration,
}

thread_local! {
    /// Whether this process lets deletes run beside its next receives.
    static OVERLAP: Cell<bool> = const { Cell::new(false) };
    static IN_FLIGHT: RefCell<Vec<(Deleting, JoinHandle<Option<Deleted>>)>> = const { RefCell::new(Vec::new()) };
}

/// From now on, a commit's deletes from a standard queue are sent at commit and go on while
/// this process receives more, rather than before its next receive: for a worker, whose next
/// round would otherwise wait a round trip for them. A FIFO queue's wait: SQS holds each group
/// until its messages in flight are deleted, so the next receive would find nothing of them.
/// The worker collects them with [`settle_deletes`].
pub fn overlap_deletes() {
    OVERLAP.set(true);
}

/// Counts and logs the deletes that have ended; with `wait`, first waits for all of them (each
/// at most its own limit), as a worker does before it sleeps or exits.
pub fn settle_deletes(wait: bool) {
    for (deleting, handle) in IN_FLIGHT.take() {
        if wait {
            deleting.report(sqs::finish(handle));
            continue;
        }
        match sqs::finished(handle) {
            Ok(done) => deleting.report(done),
            Err(handle) => IN_FLIGHT.with_borrow_mut(|d| d.push((deleting, handle))),
        }
    }
}

impl Deleting {
    /// Counts the requests for the source, and warns of what may come back: what is not deleted
    /// comes back after the visibility timeout, and the ledger turns it into a no-op.
    fn report(self, done: Option<Deleted>) {
        let Deleting { source, queue_url, total, limit } = self;
        let requests = done.as_ref().map_or(0, |d| d.requests) as i64;
        stats::add(&source, |c| c.delete_requests += requests);
        let deleted = match done {
            Some(deleted) => deleted,
            None => {
                warning!("sqs_ingest: could not confirm the deletion of {total} committed messages from {queue_url} within {} ms; they will be redelivered and skipped", limit.as_millis());
                return;
            }
        };
        if let Some(error) = deleted.error {
            warning!("sqs_ingest: could not delete {} of {total} committed messages from {queue_url}: {error}; they will be redelivered and skipped", deleted.unconfirmed);
        }
        if deleted.refused > 0 {
            warning!("sqs_ingest: SQS refused to delete {} of {total} committed messages from {queue_url}; they will be redelivered and skipped", deleted.refused);
        }
    }
}
