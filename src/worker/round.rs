//! One source's answer stored: its messages in a transaction of the worker's own, with more of
//! a backlog received into the same transaction, then the worker's and the source's counters.
use super::latch::{shutdown_requested, wait};
use super::polls::Poll;
use super::transaction::in_transaction;
use super::Me;
use crate::ingest;
use crate::source::stats;
use crate::sqs::{self, Receipt, SqsError};
use crate::status::{self, State};
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// A backlog is stored this many messages, or this long, per transaction: rounds follow one
/// another into one transaction, so that its fixed cost (commit, catalog, ledger pruning) is
/// shared as a fetch_login_queue(1000) shares it, while rows still become visible every second.
const BACKLOG_MESSAGES: usize = 1000;
const BACKLOG_TIME: Duration = Duration::from_secs(1);
/// ... or this many bytes of bodies: what a transaction stores stays in its memory until it
/// commits, so large messages end it sooner.
const BACKLOG_BYTES: usize = 16 << 20;
/// An answer holding more bodies than this is stored before the next receive is sent: a round
/// of large messages holds one answer at a time, not two.
const SEND_AHEAD_BYTES: usize = 4 << 20;

/// What storing an answer came to.
pub enum Round {
    /// Stored and committed, or nothing came. `backlog`: the FIFO groups it found (or 0 for a
    /// standard queue) when more are likely waiting, so that the next receive asks for a backlog.
    Done {
        backlog: Option<usize>,
    },
    Failed(Problem),
}

/// A problem as logged: `what` says which problem it is, so that it is logged once however
/// its details vary from one attempt to the next (connection refused, then reset, ...).
pub struct Problem {
    pub what: String,
    pub text: String,
}

impl Problem {
    pub fn new(text: String) -> Problem {
        Problem { what: text.clone(), text }
    }
}

impl From<SqsError> for Problem {
    fn from(e: SqsError) -> Problem {
        Problem { what: e.what(), text: e.to_string() }
    }
}

/// Stores what `poll` brought.
pub fn store(me: Me, poll: Poll, answer: Result<Receipt, SqsError>) -> Round {
    let name = poll.source.name.as_str();
    let receipt = match answer {
        Ok(receipt) => receipt,
        Err(e) => return Round::Failed(Problem::from(e)),
    };
    stats::received(name, &receipt);
    if receipt.messages.is_empty() {
        succeeded(me, name, None);
        return Round::Done { backlog: None };
    }
    status::update(me.slot, |s| {
        s.state = State::Ingesting;
        s.source.set(Some(name));
    });
    let (settings, sink) = (&poll.settings, &poll.sink);
    let fifo = settings.queue.is_fifo();
    let started = Instant::now();
    let stored = in_transaction(AssertUnwindSafe(|| {
        ingest::prune_ledger(settings.ledger_retention_seconds);
        let mut taken = receipt.messages.len();
        let mut bytes = receipt.body_bytes();
        let mut groups = receipt.groups();
        let mut backlog = receipt.backlog(poll.asked, fifo);
        let mut more = poll.backlog && poll.looked_further && receipt.more_now(poll.asked, fifo);
        let mut answer = receipt;
        let mut stored = ingest::Stored::default();
        // A backlog round that brought all it asked for: more of the backlog, into this
        // transaction. Each receive is sent before the answer before it is stored, so that it
        // travels meanwhile, unless that answer is large: then one answer at a time is in
        // memory. A receive that fails or is interrupted ends it; what is stored commits, and
        // the next round meets the failure again. (If storing fails instead, what the receive on
        // its way brings waits out its visibility timeout.)
        let further = |more: bool, taken: usize, bytes: usize| {
            let room = taken < BACKLOG_MESSAGES && bytes < BACKLOG_BYTES && started.elapsed() < BACKLOG_TIME;
            (more && room).then(|| {
                // Short polls here: an open transaction never waits for an empty queue.
                let queue = settings.queue.clone();
                sqs::send_ahead(queue.receive(poll.asked, poll.asked / sqs::BATCH, 0))
            })
        };
        loop {
            let ahead = (answer.body_bytes() <= SEND_AHEAD_BYTES).then(|| further(more, taken, bytes)).flatten();
            if !answer.messages.is_empty() {
                stored += ingest::ingest(name, sink, settings, answer.messages);
            }
            let Some(receiving) = ahead.or_else(|| further(more, taken, bytes)) else {
                break;
            };
            let between = || {
                wait(Duration::ZERO);
                !shutdown_requested()
            };
            let Some(Ok(next)) = sqs::run(receiving, between) else {
                break;
            };
            stats::received(name, &next);
            backlog = next.backlog(poll.asked, fifo);
            more = next.more_now(poll.asked, fifo);
            taken += next.messages.len();
            bytes += next.body_bytes();
            groups += next.groups();
            answer = next;
        }
        (stored, backlog.then_some(groups))
    }));
    match stored {
        Ok((stored, backlog)) => {
            succeeded(me, name, Some(stored));
            Round::Done { backlog }
        }
        Err(e) => Round::Failed(Problem::new(e)),
    }
}

fn succeeded(me: Me, source: &str, stored: Option<ingest::Stored>) {
    if let Some(deferred) = stored.map(|s| s.deferred).filter(|&d| d > 0) {
        log!(
            "sqs_ingest worker {}: source \"{source}\": {deferred} messages left in the queue: another transaction was entering some of them in the ledger",
            me.index
        );
    }
    status::update(me.slot, |s| {
        s.state = State::Polling;
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
