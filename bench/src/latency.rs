//! P5 and P6: how long a message takes from SendMessage to a row with the worker long-polling,
//! and what the first fetch_login_queue of a new session costs (every pg_cron run pays it).
use crate::stats::{median, ms, percentile};
use crate::{Bench, Row};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, fetch};
use std::time::{Duration, Instant};

const SENDS: usize = 100;
const SESSIONS: usize = 20;

pub fn send_to_row(b: &Bench) -> Vec<Row> {
    b.reset();
    let mut db = b.cluster.connect("postgres");
    b.workers(true);
    let mut latencies = Vec::new();
    for (i, body) in valid(SENDS, 113).into_iter().enumerate() {
        let sent = Instant::now();
        b.queue.send(&[body]);
        // Polls every millisecond: a figure includes up to 1 ms of polling.
        while count(&mut db, "SELECT count(*) FROM user_logins") as usize <= i {
            assert!(sent.elapsed() < Duration::from_secs(30), "message {i} never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(sent.elapsed());
    }
    b.workers(false);
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    vec![
        Row {
            id: "P5",
            what: format!("send-to-row latency p50, worker, {SENDS} single sends"),
            figure: format!("{:.1} ms", ms(p50)),
            goal: "<= 50 ms",
            met: Some(p50 <= Duration::from_millis(50)),
        },
        Row {
            id: "P5",
            what: "send-to-row latency p99".to_owned(),
            figure: format!("{:.1} ms", ms(p99)),
            goal: "<= 250 ms",
            met: Some(p99 <= Duration::from_millis(250)),
        },
    ]
}

/// The first call in a new session minus the second, on an empty queue, median over sessions.
pub fn first_call(b: &Bench) -> Vec<Row> {
    let timed = |db: &mut postgres::Client| {
        let start = Instant::now();
        fetch(db, 10);
        ms(start.elapsed())
    };
    let (mut first, mut extra) = (Vec::new(), Vec::new());
    for _ in 0..SESSIONS {
        let mut db = b.cluster.connect("postgres");
        let cold = timed(&mut db);
        let warm = timed(&mut db);
        first.push(cold);
        extra.push(cold - warm);
    }
    let cost = median(extra);
    vec![Row {
        id: "P6",
        what: format!("first fetch_login_queue in a new session minus a warm call, median of {SESSIONS} (first call itself: {:.1} ms)", median(first)),
        figure: format!("{cost:.1} ms"),
        goal: "<= 30 ms",
        met: Some(cost <= 30.0),
    }]
}
