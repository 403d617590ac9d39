//! L1 and RT1: the extension past LocalStack, against the bench's own fast SQS (fast_sqs.rs).
//! L1: login rows a second through one worker with no delay, against the same rows and ledger
//! entries written by COPY in transactions of 1,000 (the database's own limit here). RT1: one
//! worker with 10 ms and 25 ms added to every answer, against what requests_in_flight allows
//! (in flight x 10 messages a round trip). Each pair alternates round by round.
use crate::fast_sqs::FastSqs;
use crate::stats::median;
use crate::{Bench, Row};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, wait_until};
use std::io::Write;
use std::time::{Duration, Instant};

const QUEUE: &str = "ceiling";
/// sqs_ingest.requests_in_flight's default.
const IN_FLIGHT: f64 = 8.0;

pub fn run(b: &Bench) -> Vec<Row> {
    let n = b.args.messages;
    let fast = FastSqs::start(1);
    let own = own_rate(&fast);
    let mut rows = vec![Row {
        id: "FS",
        what: "the fast SQS alone: ReceiveMessage answers a second (10 messages each, 1 server thread, 4 keep-alive clients)".to_owned(),
        figure: format!("{own:.0}/s"),
        goal: ">= 20,000/s",
        met: Some(own >= 20_000.0),
    }];
    let mut db = b.cluster.connect("postgres");
    point(&mut db, &fast.queue_url(QUEUE));
    b.workers(true);
    let (mut worker_rates, mut copy_rates) = (Vec::new(), Vec::new());
    let mut rows_text = None;
    for round in 0..b.args.rounds {
        b.reset();
        let seconds = drain(&fast, &mut db, n, round as u64);
        worker_rates.push(n as f64 / seconds);
        // The rows and ledger entries the worker wrote are what COPY writes.
        let text = rows_text.get_or_insert_with(|| copy_out(&mut db));
        b.reset();
        let seconds = copy_in(&mut db, text);
        copy_rates.push(n as f64 / seconds);
        println!(
            "round {}: L1 worker {:.0} msg/s, COPY {:.0} rows/s",
            round + 1,
            worker_rates[round],
            copy_rates[round]
        );
    }
    let ratios: Vec<f64> = worker_rates.iter().zip(&copy_rates).map(|(w, c)| w / c).collect();
    let l1 = median(ratios);
    rows.push(Row {
        id: "L1",
        what: format!(
            "one worker from the fast SQS vs COPY of the same rows and ledger entries, {n} messages, median of {}",
            b.args.rounds
        ),
        figure: format!("{:.0} vs {:.0} rows/s = {l1:.2}x", median(worker_rates), median(copy_rates)),
        goal: ">= 0.5x",
        met: Some(l1 >= 0.5),
    });
    for delay_ms in [10u64, 25] {
        fast.delay(Duration::from_millis(delay_ms));
        let bound = IN_FLIGHT * 10.0 / (delay_ms as f64 / 1000.0);
        let mut rates = Vec::new();
        for round in 0..b.args.rounds {
            b.reset();
            rates.push(n as f64 / drain(&fast, &mut db, n, 100 + round as u64));
            println!("round {}: RT1 {delay_ms} ms: {:.0} msg/s", round + 1, rates[round]);
        }
        let x = median(rates.clone()) / bound;
        rows.push(Row {
            id: "RT1",
            what: format!(
                "one worker, {delay_ms} ms added to every answer, vs in flight x 10 / round trip ({bound:.0} msg/s)"
            ),
            figure: format!("{:.0} msg/s = {x:.2}x", median(rates)),
            goal: ">= 0.8x",
            met: Some(x >= 0.8),
        });
    }
    fast.delay(Duration::ZERO);
    b.workers(false);
    point(&mut db, &b.queue.url);
    rows
}

/// Points the login source at `url`, and waits until this session sees it.
fn point(db: &mut postgres::Client, url: &str) {
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.queue_url = '{url}'")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", Duration::from_secs(30), || {
        db.query_one("SELECT current_setting('sqs_ingest.queue_url')", &[]).unwrap().get::<_, String>(0) == url
    });
}

/// Seconds from filling the queue with `n` logins to their `n` rows, the worker running.
fn drain(fast: &FastSqs, db: &mut postgres::Client, n: usize, seed: u64) -> f64 {
    let bodies = valid(n, 9000 + seed);
    let start = Instant::now();
    fast.fill(QUEUE, bodies);
    wait_until("the worker's rows", Duration::from_secs(600), || {
        count(db, "SELECT count(*) FROM sqs_ingest.processed_messages") == n as i64
    });
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(count(db, "SELECT count(*) FROM user_logins"), n as i64);
    // The last round's deletes follow its commit.
    wait_until("the deletes", Duration::from_secs(60), || fast.counts(QUEUE) == (0, 0));
    seconds
}

/// The rows and the ledger's ids, as COPY's text format.
fn copy_out(db: &mut postgres::Client) -> (Vec<String>, Vec<String>) {
    let lines = |db: &mut postgres::Client, sql: &str| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut db.copy_out(sql).unwrap(), &mut text).unwrap();
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    (lines(db, "COPY user_logins TO STDOUT"), lines(db, "COPY sqs_ingest.processed_messages (message_id) TO STDOUT"))
}

/// Seconds to write `rows` and their ledger entries with COPY, 1,000 to a transaction.
fn copy_in(db: &mut postgres::Client, (rows, ids): &(Vec<String>, Vec<String>)) -> f64 {
    let start = Instant::now();
    for (rows, ids) in rows.chunks(1000).zip(ids.chunks(1000)) {
        let mut tx = db.transaction().unwrap();
        for (sql, lines) in
            [("COPY user_logins FROM STDIN", rows), ("COPY sqs_ingest.processed_messages (message_id) FROM STDIN", ids)]
        {
            let mut writer = tx.copy_in(sql).unwrap();
            for line in lines {
                writer.write_all(line.as_bytes()).unwrap();
                writer.write_all(b"\n").unwrap();
            }
            writer.finish().unwrap();
        }
        tx.commit().unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// ReceiveMessage answers a second the fast SQS gives 4 clients on kept-alive connections, each
/// sending its next request as soon as the last is answered, for 2 s.
fn own_rate(fast: &FastSqs) -> f64 {
    use std::io::{BufRead, BufReader, Read};
    const CLIENTS: usize = 4;
    fast.fill("own_rate", (0..1_000_000).map(|i| format!(r#"{{"n": {i}}}"#)));
    let body =
        format!(r#"{{"QueueUrl":"{}","MaxNumberOfMessages":10,"VisibilityTimeout":600}}"#, fast.queue_url("own_rate"));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let before = fast.receives();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let stream = std::net::TcpStream::connect(("127.0.0.1", fast.port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while start.elapsed() < Duration::from_secs(2) {
                    writer.write_all(request.as_bytes()).unwrap();
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut answer = vec![0; length];
                    reader.read_exact(&mut answer).unwrap();
                }
            });
        }
    });
    (fast.receives() - before) as f64 / start.elapsed().as_secs_f64()
}
