//! M1: 1 MiB bodies (SQS's largest) from the fast SQS through a generic source into a text
//! column, one worker at the default requests_in_flight and at 2: MiB a second against COPY of
//! the same rows, alternated round by round, and the worker's peak private memory meanwhile.
use crate::ceiling::enable;
use crate::fast_sqs::FastSqs;
use crate::stats::median;
use crate::{Bench, Row};
use sqs_ingest_it::{count, memory_kib, wait_until};
use std::io::Write;
use std::time::{Duration, Instant};

/// SQS's largest message since 2025: 1 MiB, the JSON around the payload included.
const BODY: usize = 1 << 20;
const PAYLOAD: usize = BODY - r#"{"payload":""}"#.len();
/// requests_in_flight: a lower one for large messages, and the default. The lower first: memory
/// a process has freed stays counted in it (the allocator keeps it), so a peak is its own only
/// while the larger round comes after.
const IN_FLIGHT: [i32; 2] = [2, 8];

pub fn run(b: &Bench) -> Vec<Row> {
    // A fortieth of a drain's messages, at least 100: 125 MiB for the default 5,000.
    let n = (b.args.messages / 40).max(100);
    let fast = FastSqs::start(1);
    let mut db = b.cluster.connect("postgres");
    db.batch_execute("DROP TABLE IF EXISTS large_bodies; CREATE TABLE large_bodies (payload text)").unwrap();
    // A source per requests_in_flight, set once: a source altered while its long poll waits has
    // that poll given up, and what SQS hands it meanwhile waits out its visibility timeout.
    for in_flight in IN_FLIGHT {
        db.execute(
            "SELECT sqs_ingest.create_source($1, $2, 'large_bodies', '{\"payload\": \"body->>''payload''\"}')",
            &[&format!("large_{in_flight}"), &fast.queue_url(&format!("large-{in_flight}"))],
        )
        .unwrap();
        db.execute(
            "UPDATE sqs_ingest.sources SET requests_in_flight = $1 WHERE name = $2",
            &[&in_flight, &format!("large_{in_flight}")],
        )
        .unwrap();
    }
    enable(&mut db, "login", false);
    b.workers(true);
    let pid = b.cluster.worker_pids()[0];
    // Per round: requests_in_flight 2, then the default, then COPY. A first round is not
    // counted: it creates the WAL segments that later rounds recycle, and grows the worker's
    // heap, which made it a third as fast as the next.
    let mut worker = [Vec::new(), Vec::new()];
    let mut peaks = [0u64; 2];
    let mut copy = Vec::new();
    for round in 0..=b.args.rounds {
        let name = if round == 0 { "warm-up".to_owned() } else { format!("round {round}") };
        let bodies: Vec<String> = (0..n).map(|i| body(round * n + i)).collect();
        for (i, in_flight) in IN_FLIGHT.into_iter().enumerate() {
            let queue = format!("large-{in_flight}");
            db.batch_execute("TRUNCATE large_bodies, sqs_ingest.processed_messages; CHECKPOINT").unwrap();
            let mut peak = 0;
            let start = Instant::now();
            fast.fill(&queue, bodies.iter().cloned());
            wait_until("the worker's rows", Duration::from_secs(600), || {
                peak = peak.max(memory_kib(pid).anon);
                count(&mut db, "SELECT count(*) FROM large_bodies") == n as i64
            });
            let rate = n as f64 / start.elapsed().as_secs_f64();
            peaks[i] = peaks[i].max(peak);
            wait_until("the deletes", Duration::from_secs(60), || fast.counts(&queue) == (0, 0));
            println!("{name}: M1: requests_in_flight {in_flight}: {rate:.1} MiB/s, worker's private memory at most {peak} KiB");
            if round > 0 {
                worker[i].push(rate);
            }
        }
        db.batch_execute("TRUNCATE large_bodies; CHECKPOINT").unwrap();
        let rate = n as f64 / copy_in(&mut db, &bodies);
        println!("{name}: M1: COPY {rate:.1} MiB/s");
        if round > 0 {
            copy.push(rate);
        }
    }
    assert_eq!(b.cluster.worker_pids(), vec![pid], "one worker throughout");
    b.workers(false);
    enable(&mut db, "login", true);
    db.batch_execute(
        "SELECT sqs_ingest.drop_source(name) FROM sqs_ingest.sources WHERE name LIKE 'large%'; DROP TABLE large_bodies",
    )
    .unwrap();
    IN_FLIGHT
        .into_iter()
        .enumerate()
        .map(|(i, in_flight)| {
            let ratios: Vec<f64> = worker[i].iter().zip(&copy).map(|(w, c)| w / c).collect();
            Row {
                id: "M1",
                what: format!(
                    "1 MiB bodies through a generic source into a text column, {n} messages, one worker, requests_in_flight {in_flight}, vs COPY of the same rows"
                ),
                figure: format!(
                    "{:.1} vs {:.1} MiB/s = {:.2}x; worker's private memory at most {:.0} MiB",
                    median(worker[i].clone()),
                    median(copy.clone()),
                    median(ratios),
                    peaks[i] as f64 / 1024.0
                ),
                goal: "",
                met: None,
            }
        })
        .collect()
}

/// Message `i`: a JSON object of one string that neither repeats nor compresses well, as
/// encrypted or encoded payloads do, so that TOAST's compression is not what is measured.
fn body(i: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let payload: String = (0..PAYLOAD)
        .map(|_| {
            // xorshift64: cheap, and enough to defeat pglz.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state >> 58) as usize] as char
        })
        .collect();
    format!(r#"{{"payload":"{payload}"}}"#)
}

/// Seconds to write the payloads of `bodies` with COPY, in one transaction.
fn copy_in(db: &mut postgres::Client, bodies: &[String]) -> f64 {
    let start = Instant::now();
    let mut tx = db.transaction().unwrap();
    let mut writer = tx.copy_in("COPY large_bodies FROM STDIN").unwrap();
    for body in bodies {
        // The payload's alphabet needs no escaping in COPY's text format.
        writer.write_all(&body.as_bytes()[r#"{"payload":""#.len()..body.len() - 2]).unwrap();
        writer.write_all(b"\n").unwrap();
    }
    writer.finish().unwrap();
    tx.commit().unwrap();
    start.elapsed().as_secs_f64()
}
