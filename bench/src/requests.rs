//! C2 and C3: what the worker costs in SQS requests where a drain does not show it: idle, its
//! long polls on an empty queue, over a minute; and a queue that fills slowly, as a steady
//! producer fills it, where batches stay small. Counted from sqs_ingest.source_status.
use crate::{Bench, Row};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, wait_until};
use std::time::{Duration, Instant};

/// Idle long polls timed, and the longest that may take (20-second polls).
const IDLE_POLLS: i64 = 3;
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// The slow producer: batches of 10, one every 100 ms (100 messages a second), 1,000 in all.
const SLOW_MESSAGES: usize = 1000;
const SLOW_EVERY: Duration = Duration::from_millis(100);

/// Receives and deletes, for [`requests`].
pub const RECEIVES_AND_DELETES: &str = "receive_requests + delete_requests";

/// The sum of `kind` (a column or sum of columns of sqs_ingest.source_status) over the sources.
pub fn requests(db: &mut postgres::Client, kind: &str) -> i64 {
    count(db, &format!("SELECT coalesce(sum({kind}), 0)::int8 FROM sqs_ingest.source_status"))
}

pub fn run(b: &Bench) -> Vec<Row> {
    b.reset();
    let mut db = b.cluster.connect("postgres");
    b.workers(true);
    let workers = count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE pid <> 0");
    // From the end of one long poll to the end of the IDLE_POLLS-th after it.
    let mut seen = requests(&mut db, "receive_requests");
    wait_until("a long poll to end", IDLE_LIMIT, || requests(&mut db, "receive_requests") > seen);
    seen = requests(&mut db, "receive_requests");
    let start = Instant::now();
    wait_until("the idle polls", IDLE_LIMIT, || requests(&mut db, "receive_requests") >= seen + IDLE_POLLS);
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    let per_minute = IDLE_POLLS as f64 / workers.max(1) as f64 / minutes;

    let before = requests(&mut db, RECEIVES_AND_DELETES);
    let bodies = valid(SLOW_MESSAGES, 977);
    let start = Instant::now();
    for (i, batch) in bodies.chunks(10).enumerate() {
        // The producer's pace: the next batch is due at i x 100 ms.
        if let Some(due) = (SLOW_EVERY * i as u32).checked_sub(start.elapsed()) {
            std::thread::sleep(due);
        }
        b.queue.send(batch);
    }
    wait_until("the slow queue's rows", Duration::from_secs(120), || {
        count(&mut db, "SELECT count(*) FROM user_logins") as usize >= SLOW_MESSAGES
    });
    wait_until("the deletes", Duration::from_secs(60), || b.queue.counts() == (0, 0));
    let slow = requests(&mut db, RECEIVES_AND_DELETES) - before;
    b.workers(false);
    vec![
        Row {
            id: "C2",
            what: format!(
                "idle SQS requests per minute per worker (empty queue, worker_wait 20; {IDLE_POLLS} receives by {workers} worker(s) in {:.1} s)",
                minutes * 60.0
            ),
            figure: format!("{per_minute:.1}"),
            goal: "",
            met: None,
        },
        Row {
            id: "C3",
            what: format!("SQS requests per 1,000 messages, worker, a queue filled at 100 msg/s ({SLOW_MESSAGES} messages)"),
            figure: format!("{:.0}", slow as f64 * 1000.0 / SLOW_MESSAGES as f64),
            goal: "",
            met: None,
        },
    ]
}
