//! Measures the worker's memory while it ingests 100,000 messages (fed in chunks so the emulator
//! stays fast): prints it every 10,000 rows. Usage: worker_rss [messages]
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, memory_kib, wait_until, Cluster, Emulator};
use std::time::{Duration, Instant};

fn main() {
    let total: usize = std::env::args().nth(1).map_or(100_000, |n| n.parse().expect("a number of messages"));
    let emulator = Emulator::start();
    let queue = emulator.queue("rss");
    let cluster = Cluster::with_workers("rss", &queue.url, &[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    wait_until("the worker", Duration::from_secs(30), || cluster.worker_pids().len() == 1);
    let pid = cluster.worker_pids()[0];
    let start = Instant::now();
    println!("| rows | private (RssAnon) KiB | VmRSS KiB (incl. shared buffers) | VmHWM KiB | elapsed |");
    println!("|---|---|---|---|---|");
    let print = |rows: i64| {
        let m = memory_kib(pid);
        println!("| {rows} | {} | {} | {} | {:.0} s |", m.anon, m.rss, m.hwm, start.elapsed().as_secs_f64());
        m
    };
    print(0);
    let bodies = valid(total, 509);
    let mut after_first = None;
    for (i, step) in bodies.chunks(10_000).enumerate() {
        queue.feed(step);
        let done = (i * 10_000 + step.len()) as i64;
        wait_until("the rows", Duration::from_secs(1800), || count(&mut db, "SELECT count(*) FROM user_logins") == done);
        let m = print(done);
        after_first.get_or_insert(m);
    }
    assert_eq!(cluster.worker_pids(), vec![pid], "the same worker throughout");
    let (first, last) = (after_first.expect("at least one step"), memory_kib(pid));
    println!(
        "growth after the first 10,000 rows: private {} KiB, VmRSS {} KiB",
        last.anon as i64 - first.anon as i64,
        last.rss as i64 - first.rss as i64
    );
}
