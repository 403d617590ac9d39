//! Measures send-to-row latency with the background worker: 100 messages sent one at a time,
//! each timed from SendMessage until its row is visible; prints p50/p99/max.
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{wait_until, Cluster, Emulator};
use std::time::{Duration, Instant};

fn main() {
    let emulator = Emulator::start();
    let queue = emulator.queue("latency");
    let settings = [format!("sqs_ingest.queue_url = '{}'", queue.url), "sqs_ingest.worker_wait = 20".to_owned()];
    let cluster = Cluster::start("latency", &settings, &AWS_ENV);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    wait_until("the worker to long-poll", Duration::from_secs(30), || {
        db.query_one("SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'polling'", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    let mut latencies = Vec::new();
    for (i, body) in valid(100, 113).into_iter().enumerate() {
        let sent = Instant::now();
        queue.send(&[body]);
        // Polls every millisecond: the figure includes up to 1 ms of polling.
        loop {
            let n: i64 = db.query_one("SELECT count(*) FROM user_logins", &[]).unwrap().get(0);
            if n as usize == i + 1 {
                break;
            }
            assert!(sent.elapsed() < Duration::from_secs(30), "message {i} never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "send-to-row latency over {} single sends (worker, moto): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 99 / 100]),
        ms(latencies[latencies.len() - 1])
    );
}
