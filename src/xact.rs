//! Deletes received messages from SQS only once their transaction commits: savepoints that
//! roll back keep their messages in the queue, and PREPARE TRANSACTION is refused.
use crate::errors::{raise, report};
use crate::source::stats::{self, Counts};
use crate::sqs::{self, Queue};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;

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

/// Deletes each entry's messages, several requests at once. What is not deleted comes back
/// after the visibility timeout, and the ledger turns it into a no-op.
fn delete_all(pending: Vec<Pending>) {
    for Pending { source, queue, handles, in_flight, counts, .. } in pending {
        let queue_url = sqs_ingest_core::redact::url(&queue.url);
        let limit = queue.delete_many_limit(handles.len(), in_flight);
        let done = sqs::run_with_deadline(queue.delete_many(&handles, in_flight), limit);
        let total = handles.len();
        let requests = done.as_ref().map_or(0, |d| d.requests) as i64;
        stats::add(&source, |c| {
            c.add(&counts);
            c.delete_requests += requests;
        });
        let deleted = match done {
            Some(deleted) => deleted,
            None => {
                warning!("sqs_ingest: could not confirm the deletion of {total} committed messages from {queue_url} within {} ms; they will be redelivered and skipped", limit.as_millis());
                continue;
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
