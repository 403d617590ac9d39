//! ReceiveRequestAttemptIds for FIFO queues: a receive that failed, timed out or was given up
//! may have taken messages on the server's side, which then lock their groups until the
//! visibility timeout; the next receive from that queue sends the same id, and SQS answers it
//! with those very messages.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// SQS keeps an attempt id for five minutes; one older is a new receive anyway.
const KEPT: Duration = Duration::from_secs(290);

/// Ids of receives that got no answer, with when each was first sent.
type Unanswered = Vec<(String, Instant)>;

/// By queue URL.
static UNANSWERED: Mutex<Option<HashMap<String, Unanswered>>> = Mutex::new(None);

/// The attempt id of one receive. Dropped before it is [`answered`](Attempt::answered), it is
/// kept for the queue's next receive: a failure, a timeout and a dropped future alike.
pub struct Attempt {
    queue_url: String,
    pub id: String,
    first_sent: Instant,
    answered: bool,
}

impl Attempt {
    /// An unanswered attempt of `queue_url` to send again, else a new one.
    pub fn next(queue_url: &str) -> Attempt {
        let mut unanswered = UNANSWERED.lock().unwrap_or_else(|e| e.into_inner());
        let kept = unanswered.get_or_insert_with(HashMap::new).get_mut(queue_url).and_then(|ids| {
            ids.retain(|(_, at)| at.elapsed() < KEPT);
            ids.pop()
        });
        let (id, first_sent) = kept.unwrap_or_else(|| (new_id(), Instant::now()));
        Attempt { queue_url: queue_url.to_owned(), id, first_sent, answered: false }
    }

    /// SQS answered: the id is spent.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.answered {
            let mut unanswered = UNANSWERED.lock().unwrap_or_else(|e| e.into_inner());
            let ids =
                unanswered.get_or_insert_with(HashMap::new).entry(std::mem::take(&mut self.queue_url)).or_default();
            ids.push((std::mem::take(&mut self.id), self.first_sent));
        }
    }
}

/// Unique across backends and restarts: the process, the time, and a counter.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("sqs_ingest-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
