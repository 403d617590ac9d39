//! Every served source's receive in flight at once: the worker stores whichever answers first,
//! so that an idle source's long poll never holds a busy one's messages.
use crate::ingest::Sink;
use crate::settings::FetchSettings;
use crate::source::Source;
use crate::sqs::{self, Receipt, SqsError, BATCH};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll as Ready;

/// The wait of a backlog round's polls of a standard queue, in seconds: a short poll asks only
/// some of SQS's servers and may come back with fewer than ten, or none, while more are queued;
/// a poll that waits asks them all and still answers as soon as it has messages
/// (docs/performance.md).
const BACKLOG_WAIT: i32 = 1;

/// A FIFO backlog's receives look for groups beyond those the last round found one round in
/// this many. Each group is held by the messages in flight, so a receive beyond them finds a new
/// group or nothing; sent every round, it was a fourth of a 3-group queue's requests for nothing.
const FIFO_PROBE_EVERY: usize = 4;

/// A source's backlog as its last rounds found it.
#[derive(Clone, Copy, Default)]
pub struct Backlog {
    /// The FIFO groups the last round found (0 for a standard queue).
    pub groups: usize,
    /// Backlog rounds in a row before this one.
    pub rounds: usize,
}

type Receiving = Pin<Box<dyn Future<Output = Result<Receipt, SqsError>>>>;

/// One source's receive in flight, with what storing its answer needs.
pub struct Poll {
    pub source: Source,
    pub sink: Sink,
    pub settings: FetchSettings,
    /// Messages asked for, and whether as a backlog round.
    pub asked: usize,
    pub backlog: bool,
    /// Whether a FIFO round's receives looked beyond the groups already found, so that an answer
    /// with every receive full means more groups are waiting (always, for a standard queue).
    pub looked_further: bool,
    receiving: Receiving,
}

#[derive(Default)]
pub struct Polls(Vec<Poll>);

impl Polls {
    /// Sends `source`'s next receive. An idle source costs one long poll per its worker_wait. A
    /// backlog (the last round brought all it asked for) gets requests_in_flight polls at once;
    /// from a FIFO queue, one per group the last round found (each group is held by the messages
    /// in flight, so more would only wait), and one more every FIFO_PROBE_EVERY rounds.
    pub fn start(&mut self, source: Source, sink: Sink, settings: FetchSettings, backlog: Option<Backlog>) {
        let fifo = settings.queue.is_fifo();
        let (in_flight, wait_seconds, looked_further) = match backlog {
            Some(b) if fifo => {
                let further = b.groups >= settings.in_flight || b.rounds % FIFO_PROBE_EVERY == 0;
                (settings.in_flight.min(b.groups + usize::from(further)), 0, further)
            }
            Some(_) => (settings.in_flight, BACKLOG_WAIT, true),
            None => (1, settings.worker_wait.max(1), true),
        };
        let asked = BATCH * in_flight;
        let queue = settings.queue.clone();
        let receiving = Box::pin(async move { queue.receive(asked, in_flight, wait_seconds).await });
        self.0.push(Poll { source, sink, settings, asked, backlog: backlog.is_some(), looked_further, receiving });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name`'s receive is in flight.
    pub fn polling(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.source.name == name)
    }

    /// Gives up the receives of the sources `keep` refuses (gone from the catalog, or changed).
    /// What they took on the server's side waits out its visibility timeout.
    pub fn retain(&mut self, keep: impl Fn(&Source) -> bool) {
        self.0.retain(|p| keep(&p.source));
    }

    /// Drives every receive until one answers, calling `between` every slice as
    /// [`sqs::run`] does. None: stopped by `between`, every receive still in flight.
    pub fn next(&mut self, between: impl FnMut() -> bool) -> Option<(Poll, Result<Receipt, SqsError>)> {
        let polls = &mut self.0;
        let (i, answer) = sqs::run(
            std::future::poll_fn(|cx| {
                for (i, poll) in polls.iter_mut().enumerate() {
                    if let Ready::Ready(answer) = poll.receiving.as_mut().poll(cx) {
                        return Ready::Ready((i, answer));
                    }
                }
                Ready::Pending
            }),
            between,
        )?;
        Some((self.0.swap_remove(i), answer))
    }
}
