//! L1-L3 and RT1: the extension past LocalStack, against the bench's own fast SQS (fast_sqs.rs).
//! L1: login rows a second through one worker with no delay, against the same rows and ledger
//! entries written by COPY in transactions of 1,000 (the database's own limit here). L2: 2 and
//! 4 workers on the login source. L3: a generic source of the same rows, one worker. RT1: one
//! worker with 10 ms and 25 ms added to every answer, against what requests_in_flight allows
//! (in flight x 10 messages a round trip). L1-L3 alternate round by round.
use crate::drains::GENERIC;
use crate::fast_sqs::FastSqs;
use crate::stats::median;
use crate::{Bench, Row};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, wait_until};
use std::io::Write;
use std::time::{Duration, Instant};

const QUEUE: &str = "ceiling";
const GENERIC_QUEUE: &str = "ceiling-generic";
/// sqs_ingest.requests_in_flight's default.
const IN_FLIGHT: f64 = 8.0;

pub fn run(b: &Bench) -> Vec<Row> {
    // Four times a drain's messages (20,000 for the default 5,000): one worker takes 5,000 in
    // about 0.15 s, where the 20 ms of polling for its rows and the first idle poll moved a
    // round's rate by a fifth.
    let n = b.args.messages * 4;
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
    db.batch_execute("DROP TABLE IF EXISTS ceiling_generic; CREATE TABLE ceiling_generic (LIKE user_logins)").unwrap();
    db.execute(
        "SELECT sqs_ingest.create_source('ceiling_generic', $1, 'ceiling_generic', $2::text::jsonb)",
        &[&fast.queue_url(GENERIC_QUEUE), &GENERIC],
    )
    .unwrap();
    enable(&mut db, "ceiling_generic", false);
    b.workers(true);
    // Per round: COPY, then the login source through 1, 2 and 4 workers, then the generic source.
    let mut rates: Vec<[f64; 5]> = Vec::new();
    let mut rows_text = None;
    for round in 0..b.args.rounds {
        let mut this = [0.0; 5];
        for (i, workers) in [1, 2, 4].into_iter().enumerate() {
            set_workers(b, workers);
            let mut db = b.cluster.connect("postgres");
            b.reset();
            this[i + 1] = n as f64 / drain(&fast, &mut db, QUEUE, "user_logins", n, round as u64);
            // The rows and ledger entries the worker wrote are what COPY writes.
            rows_text.get_or_insert_with(|| copy_out(&mut db));
        }
        let mut db = b.cluster.connect("postgres");
        b.reset();
        this[0] = n as f64 / copy_in(&mut db, rows_text.as_ref().expect("drained"));
        b.reset();
        db.batch_execute("TRUNCATE ceiling_generic").unwrap();
        enable(&mut db, "login", false);
        enable(&mut db, "ceiling_generic", true);
        this[4] = n as f64 / drain(&fast, &mut db, GENERIC_QUEUE, "ceiling_generic", n, 50 + round as u64);
        enable(&mut db, "ceiling_generic", false);
        enable(&mut db, "login", true);
        println!(
            "round {}: COPY {:.0} rows/s; login source, 1 worker {:.0}, 2 workers {:.0}, 4 workers {:.0} msg/s; generic source {:.0} msg/s",
            round + 1,
            this[0],
            this[1],
            this[2],
            this[3],
            this[4]
        );
        rates.push(this);
    }
    let column = |i: usize| median(rates.iter().map(|r| r[i]).collect());
    let ratio = |i: usize, of: usize| median(rates.iter().map(|r| r[i] / r[of]).collect());
    let l1 = ratio(1, 0);
    rows.push(Row {
        id: "L1",
        what: format!(
            "one worker from the fast SQS vs COPY of the same rows and ledger entries, {n} messages, median of {}",
            b.args.rounds
        ),
        figure: format!("{:.0} vs {:.0} rows/s = {l1:.2}x", column(1), column(0)),
        goal: ">= 0.5x",
        met: Some(l1 >= 0.5),
    });
    for (i, workers) in [(2, 2), (3, 4)] {
        rows.push(Row {
            id: "L2",
            what: format!("{workers} workers on the login source vs one, {n} messages"),
            figure: format!("{:.0} msg/s = {:.2}x one worker, {:.2}x COPY", column(i), ratio(i, 1), ratio(i, 0)),
            goal: "",
            met: None,
        });
    }
    let l3 = ratio(4, 1);
    rows.push(Row {
        id: "L3",
        what: "generic source (the login bodies mapped by expressions) vs the login source, one worker each".to_owned(),
        figure: format!("{:.0} vs {:.0} msg/s = {l3:.2}x", column(4), column(1)),
        goal: "",
        met: None,
    });
    set_workers(b, 1);
    let mut db = b.cluster.connect("postgres");
    for delay_ms in [10u64, 25] {
        // The bound of each round is that of the delay the fast SQS measured itself adding.
        let (mut rates, mut ratios, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..b.args.rounds {
            b.reset();
            fast.delay(Duration::from_millis(delay_ms));
            rates.push(n as f64 / drain(&fast, &mut db, QUEUE, "user_logins", n, 100 + round as u64));
            added.push(fast.delay_added().as_secs_f64());
            ratios.push(rates[round] / (IN_FLIGHT * 10.0 / added[round]));
            println!(
                "round {}: RT1 {delay_ms} ms (measured {:.2} ms): {:.0} msg/s = {:.2}x",
                round + 1,
                added[round] * 1000.0,
                rates[round],
                ratios[round]
            );
        }
        let added = median(added);
        let x = median(ratios);
        rows.push(Row {
            id: "RT1",
            what: format!(
                "one worker, {delay_ms} ms added to every answer (the fast SQS measured {:.2} ms), vs in flight x 10 / round trip ({:.0} msg/s)",
                added * 1000.0,
                IN_FLIGHT * 10.0 / added
            ),
            figure: format!("{:.0} msg/s = {x:.2}x", median(rates)),
            goal: ">= 0.8x",
            met: Some(x >= 0.8),
        });
    }
    fast.delay(Duration::ZERO);
    b.workers(false);
    let mut db = b.cluster.connect("postgres");
    db.batch_execute("SELECT sqs_ingest.drop_source('ceiling_generic'); DROP TABLE ceiling_generic").unwrap();
    point(&mut db, &b.queue.url);
    rows
}

/// Restarts the cluster with `n` workers, unless it has them, and waits until they poll.
pub fn set_workers(b: &Bench, n: usize) {
    let mut db = b.cluster.connect("postgres");
    let now: String = db.query_one("SELECT current_setting('sqs_ingest.workers')", &[]).unwrap().get(0);
    if now == n.to_string() {
        return;
    }
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.workers = {n}")).unwrap();
    drop(db);
    b.cluster.restart(&AWS_ENV);
    b.workers(true);
    wait_until("the workers to start", Duration::from_secs(60), || b.cluster.worker_pids().len() == n);
}

/// Enables or disables source `name`.
pub fn enable(db: &mut postgres::Client, name: &str, on: bool) {
    db.execute("UPDATE sqs_ingest.sources SET enabled = $2 WHERE name = $1", &[&name, &on]).unwrap();
}

/// Points the login source at `url`, and waits until this session sees it.
fn point(db: &mut postgres::Client, url: &str) {
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.queue_url = '{url}'")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", Duration::from_secs(30), || {
        db.query_one("SELECT current_setting('sqs_ingest.queue_url')", &[]).unwrap().get::<_, String>(0) == url
    });
}

/// Seconds from filling `queue` with `n` logins to their `n` rows in `table`, the worker running.
fn drain(fast: &FastSqs, db: &mut postgres::Client, queue: &str, table: &str, n: usize, seed: u64) -> f64 {
    let bodies = valid(n, 9000 + seed);
    let start = Instant::now();
    fast.fill(queue, bodies);
    wait_until("the worker's rows", Duration::from_secs(600), || {
        count(db, "SELECT count(*) FROM sqs_ingest.processed_messages") == n as i64
    });
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(count(db, &format!("SELECT count(*) FROM {table}")), n as i64);
    // The last round's deletes follow its commit.
    wait_until("the deletes", Duration::from_secs(60), || fast.counts(queue) == (0, 0));
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
