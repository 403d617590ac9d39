//! P7: the worker's memory while it ingests many messages (100,000 by default), fed 10,000 at a
//! time. Private memory (RssAnon) is what a leak grows; VmRSS also counts the shared buffers the
//! worker has touched, which grow with the table up to shared_buffers.
use crate::{Bench, Row};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, memory_kib, wait_until};
use std::time::Duration;

const STEP: usize = 10_000;

pub fn run(b: &Bench) -> Vec<Row> {
    let total = b.args.rss;
    if total < 2 * STEP {
        return Vec::new();
    }
    b.reset();
    let mut db = b.cluster.connect("postgres");
    b.workers(true);
    let pid = b.cluster.worker_pids()[0];
    println!("\n| rows | worker private (RssAnon) KiB | VmRSS KiB | VmHWM KiB |\n|---|---|---|---|");
    let mut after_first_step = None;
    let mut last = memory_kib(pid);
    println!("| 0 | {} | {} | {} |", last.anon, last.rss, last.hwm);
    for (i, step) in valid(total, 509).chunks(STEP).enumerate() {
        b.queue.send_in_flight(step, crate::sqs::IN_FLIGHT);
        let rows = (i * STEP + step.len()) as i64;
        wait_until("the worker's rows", Duration::from_secs(900), || {
            count(&mut db, "SELECT count(*) FROM user_logins") == rows
        });
        last = memory_kib(pid);
        println!("| {rows} | {} | {} | {} |", last.anon, last.rss, last.hwm);
        after_first_step.get_or_insert(last);
    }
    assert_eq!(b.cluster.worker_pids(), vec![pid], "one worker throughout");
    b.workers(false);
    let first = after_first_step.expect("two steps at least");
    let growth = last.anon as f64 - first.anon as f64;
    vec![Row {
        id: "P7",
        what: format!(
            "worker private memory growth, {STEP} to {total} messages (VmRSS incl. shared buffers: {} to {} KiB)",
            first.rss, last.rss
        ),
        figure: format!("{:+.0} KiB", growth),
        goal: "<= 4 MiB",
        met: Some(growth <= 4096.0),
    }]
}
