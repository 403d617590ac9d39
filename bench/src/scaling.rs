//! Scaling out: the same drain with 1, 2 and 4 workers in one instance (a restart each, since
//! sqs_ingest.workers is read at server start), each several rounds.
use crate::stats::median;
use crate::{Bench, Row};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::wait_until;
use std::time::Duration;

pub fn run(b: &Bench) -> Vec<Row> {
    let n = b.args.messages;
    let mut figures = Vec::new();
    for workers in [1, 2, 4] {
        b.cluster
            .connect("postgres")
            .batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.workers = {workers}"))
            .unwrap();
        b.cluster.restart(&AWS_ENV);
        wait_until("the workers", Duration::from_secs(60), || b.cluster.worker_pids().len() == workers);
        let mut rates = Vec::new();
        for round in 0..b.args.rounds {
            b.reset();
            b.load(n, (1000 + 10 * workers + round) as u64);
            let (seconds, _) = crate::drains::worker(b, &mut b.cluster.connect("postgres"), n);
            rates.push(n as f64 / seconds);
        }
        let rate = median(rates);
        println!("scaling: {workers} worker(s): {rate:.0} msg/s");
        figures.push(format!("{rate:.0}"));
    }
    b.cluster.connect("postgres").batch_execute("ALTER SYSTEM RESET sqs_ingest.workers").unwrap();
    vec![Row {
        id: "scaling",
        what: format!("drain rate with 1 / 2 / 4 workers, {n} messages, median of {}", b.args.rounds),
        figure: format!("{} msg/s", figures.join(" / ")),
        goal: "",
        met: None,
    }]
}
