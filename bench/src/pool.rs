//! S2 and F1: the worker pool as clusters have it. S2: one busy source beside 15 idle ones on
//! one worker, against the busy one alone. F1: a FIFO queue of 3 groups against a standard
//! queue with the same messages, through fetch_source and through the worker. Each pair
//! alternates round by round.
use crate::stats::median;
use crate::{Bench, Row};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, wait_until};
use std::time::{Duration, Instant};

const IDLE_SOURCES: usize = 15;
const GROUPS: usize = 3;

pub fn run(b: &Bench) -> Vec<Row> {
    // A fifth of a drain's messages: each round drains four queues.
    let n = (b.args.messages / 5).max(GROUPS * 10);
    let mut db = b.cluster.connect("postgres");
    db.batch_execute("DROP TABLE IF EXISTS pool_idle, pool_f1; CREATE TABLE pool_idle (body jsonb); CREATE TABLE pool_f1 (body jsonb, group_id text)").unwrap();
    let idle: Vec<_> = (0..IDLE_SOURCES).map(|i| b.emulator.queue(&format!("bench-idle-{i}"))).collect();
    for (i, queue) in idle.iter().enumerate() {
        create_source(&mut db, &format!("pool_idle_{i}"), &queue.url, "pool_idle");
    }
    let standard = b.emulator.queue("bench-f1");
    let fifo = b.emulator.fifo_queue("bench-f1.fifo");
    create_source(&mut db, "pool_f1_standard", &standard.url, "pool_f1");
    create_source(&mut db, "pool_f1_fifo", &fifo.url, "pool_f1");
    let enable = |db: &mut postgres::Client, prefix: &str, on: bool| {
        db.execute("UPDATE sqs_ingest.sources SET enabled = $2 WHERE starts_with(name, $1)", &[&prefix, &on]).unwrap();
    };
    enable(&mut db, "pool", false);

    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    let (mut fetch_rates, mut worker_rates) = (Vec::new(), Vec::new());
    for round in 0..b.args.rounds {
        for beside_idle in [false, true] {
            enable(&mut db, "pool_idle", beside_idle);
            b.reset();
            b.load(n, 500 + round as u64);
            let (seconds, _) = crate::drains::worker(b, &mut db, n);
            let rate = n as f64 / seconds;
            println!(
                "round {}: S2: {n} messages {} in {seconds:.2} s, {rate:.0}/s",
                round + 1,
                if beside_idle { "beside 15 idle sources" } else { "alone" }
            );
            if beside_idle { &mut beside } else { &mut alone }.push(rate);
        }
        // The login source too: F1 compares two queues, each alone on the worker.
        enable(&mut db, "pool_idle", false);
        enable(&mut db, "login", false);
        let mut rates = [[0.0; 2]; 2];
        for (m, through_worker) in [false, true].into_iter().enumerate() {
            for (q, is_fifo) in [false, true].into_iter().enumerate() {
                db.batch_execute("TRUNCATE pool_f1, sqs_ingest.processed_messages").unwrap();
                let bodies = valid(n, 700 + round as u64 * 4 + (m * 2 + q) as u64);
                let (queue, name) = if is_fifo { (&fifo, "pool_f1_fifo") } else { (&standard, "pool_f1_standard") };
                // Only the source measured: before 0.7.0, a worker polled its sources in turn.
                enable(&mut db, "pool_f1", false);
                enable(&mut db, name, true);
                if is_fifo {
                    let grouped: Vec<(String, String)> =
                        bodies.into_iter().enumerate().map(|(i, body)| (format!("g{}", i % GROUPS), body)).collect();
                    queue.send_grouped(&grouped);
                } else {
                    queue.send_in_flight(&bodies, crate::sqs::IN_FLIGHT);
                }
                wait_until("the queue to show every message", Duration::from_secs(60), || {
                    queue.counts().0 as usize >= n
                });
                let start = Instant::now();
                if through_worker {
                    b.workers(true);
                    wait_until("the worker's rows", Duration::from_secs(600), || {
                        count(&mut db, "SELECT count(*) FROM pool_f1") as usize >= n
                    });
                } else {
                    let mut rows = 0;
                    while rows < n {
                        let fetched: i32 =
                            db.query_one("SELECT sqs_ingest.fetch_source($1, 1000)", &[&name]).unwrap().get(0);
                        rows += fetched as usize;
                        assert!(start.elapsed() < Duration::from_secs(600), "F1 fetch loop stalled at {rows}");
                    }
                }
                let rate = n as f64 / start.elapsed().as_secs_f64();
                if through_worker {
                    b.workers(false);
                }
                wait_until("the deletes", Duration::from_secs(60), || queue.counts() == (0, 0));
                println!(
                    "round {}: F1: {n} messages, {}, {} queue: {rate:.0}/s",
                    round + 1,
                    if through_worker { "worker" } else { "fetch_source loop" },
                    if is_fifo { "FIFO (3 groups)" } else { "standard" }
                );
                rates[m][q] = rate;
            }
        }
        enable(&mut db, "pool_f1", false);
        enable(&mut db, "login", true);
        fetch_rates.push(rates[0][1] / rates[0][0]);
        worker_rates.push(rates[1][1] / rates[1][0]);
    }
    db.batch_execute("SELECT sqs_ingest.drop_source(name) FROM sqs_ingest.sources WHERE name LIKE 'pool%'").unwrap();
    b.reset();

    let ratios: Vec<f64> = beside.iter().zip(&alone).map(|(b, a)| b / a).collect();
    let lowest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mut rows = vec![Row {
        id: "S2",
        what: format!(
            "one busy source beside {IDLE_SOURCES} idle ones on one worker vs alone, {n} messages: {:.0} vs {:.0} msg/s, median (lowest round)",
            median(beside.clone()),
            median(alone.clone())
        ),
        figure: format!("{:.2}x ({:.2})", median(ratios.clone()), lowest(&ratios)),
        goal: ">= 0.8x every round",
        met: Some(lowest(&ratios) >= 0.8),
    }];
    for (how, each) in [("fetch_source loop", fetch_rates), ("worker", worker_rates)] {
        rows.push(Row {
            id: "F1",
            what: format!(
                "FIFO queue of {GROUPS} groups vs a standard queue, {n} messages, {how}: median (lowest round)"
            ),
            figure: format!("{:.2}x ({:.2})", median(each.clone()), lowest(&each)),
            goal: ">= 0.5x",
            met: Some(median(each) >= 0.5),
        });
    }
    rows
}

fn create_source(db: &mut postgres::Client, name: &str, url: &str, table: &str) {
    let columns =
        if table == "pool_f1" { r#"{"body": "body", "group_id": "group_id"}"# } else { r#"{"body": "body"}"# };
    db.execute(
        "SELECT sqs_ingest.create_source($1, $2, $3::text::regclass, $4::text::jsonb)",
        &[&name, &url, &table, &columns],
    )
    .unwrap();
}
