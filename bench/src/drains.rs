//! P2-P4 and S1: the same N-message queue drained five ways, alternated round by round: the
//! emulator's limit, the Python pipeline, fetch_login_queue in a loop, the worker, and a generic
//! source mapping the same bodies by SQL expressions; with the CPU time each spends inside
//! Postgres (and in Python) per 1,000 messages.
use crate::requests::{requests, RECEIVES_AND_DELETES};
use crate::stats::{cpu_seconds, median};
use crate::{Bench, Row, PII_KEY};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::{count, fetch, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Messages per second, CPU seconds per 1,000 messages where there is a pipeline to charge, and
/// the SQS requests it sent per 1,000 messages where it is ours.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    cpu_per_1000: f64,
    requests_per_1000: f64,
}

const MODES: [&str; 5] = ["limit", "python", "fetch", "worker", "generic"];

/// The login bodies mapped by expressions, as a user would write the login pipeline as a source.
pub const GENERIC: &str = r#"{"user_id": "body->>'user_id'", "device_type": "body->>'device_type'",
    "masked_ip": "mask_pii(body->>'ip')", "masked_device_id": "mask_pii(body->>'device_id')",
    "locale": "body->>'locale'", "app_version": "body->>'app_version'",
    "create_date": "(sent_at AT TIME ZONE 'UTC')::date"}"#;

pub fn run(b: &Bench) -> Vec<Row> {
    let n = b.args.messages;
    let mut setup = b.cluster.connect("postgres");
    setup.batch_execute("DROP TABLE IF EXISTS generic_logins; CREATE TABLE generic_logins (LIKE user_logins)").unwrap();
    setup
        .execute(
            "SELECT sqs_ingest.create_source('generic', $1, 'generic_logins', $2::text::jsonb)",
            &[&b.queue.url, &GENERIC],
        )
        .unwrap();
    // Served by fetch_source only: the workers take the login source alone.
    setup.batch_execute("UPDATE sqs_ingest.sources SET workers = 0 WHERE name = 'generic'").unwrap();
    let mut runs: Vec<[Run; 5]> = Vec::new();
    for round in 0..b.args.rounds {
        let mut this = [Run { rate: 0.0, cpu_per_1000: 0.0, requests_per_1000: 0.0 }; 5];
        for (m, mode) in MODES.iter().enumerate() {
            b.reset();
            // The first fetch of a session builds its client: paid before the clock starts,
            // as Python's imports and connections are.
            let mut db = b.cluster.connect("postgres");
            db.batch_execute("TRUNCATE generic_logins").unwrap();
            fetch(&mut db, 1);
            db.query_one("SELECT sqs_ingest.fetch_source('generic', 1)", &[]).unwrap();
            b.load(n, (round * 10 + m + 1) as u64);
            let requests_before = requests(&mut db, RECEIVES_AND_DELETES);
            let (seconds, cpu) = match *mode {
                "limit" => (crate::sqs::drain_at_the_limit(b.emulator, &b.queue.url, n).as_secs_f64(), 0.0),
                "python" => python(b, n),
                "fetch" => fetch_loop(&mut db, n, "SELECT fetch_login_queue(1000)"),
                "generic" => fetch_loop(&mut db, n, "SELECT sqs_ingest.fetch_source('generic', 1000)"),
                _ => worker(b, &mut db, n),
            };
            let table = if *mode == "generic" { "generic_logins" } else { "user_logins" };
            if *mode != "limit" {
                let rows = count(&mut db, &format!("SELECT count(*) FROM {table}"));
                assert_eq!(rows, n as i64, "{mode}: every message a row");
            }
            // The deletes of the last batch follow its commit: counted once the queue is empty.
            wait_until("the deletes", Duration::from_secs(60), || b.queue.counts() == (0, 0));
            let sent = (requests(&mut db, RECEIVES_AND_DELETES) - requests_before) as f64;
            this[m] = Run {
                rate: n as f64 / seconds,
                cpu_per_1000: cpu * 1000.0 / n as f64,
                requests_per_1000: sent * 1000.0 / n as f64,
            };
            println!(
                "round {}: {mode:>6}: {n} messages in {seconds:.2} s, {:.0}/s, CPU {:.3} s and {:.0} SQS requests per 1,000",
                round + 1,
                this[m].rate,
                this[m].cpu_per_1000,
                this[m].requests_per_1000
            );
        }
        runs.push(this);
    }
    let rate = |m: usize| median(runs.iter().map(|r| r[m].rate).collect());
    let per_1000 = |m: usize| median(runs.iter().map(|r| r[m].requests_per_1000).collect());
    let cpu = |m: usize| median(runs.iter().map(|r| r[m].cpu_per_1000).collect());
    let ratios =
        |a: usize, over: usize, f: fn(&Run) -> f64| runs.iter().map(|r| f(&r[a]) / f(&r[over])).collect::<Vec<_>>();
    let ratio = |a: usize, over: usize, f: fn(&Run) -> f64| median(ratios(a, over, f));
    let by_rate = |r: &Run| r.rate;
    let by_cpu = |r: &Run| r.cpu_per_1000;
    let (limit, py, fe, wo, generic) = (0, 1, 2, 3, 4);
    let mut rows = vec![Row {
        id: "P2",
        what: format!("drain rate, {n} messages, median of {} (limit / Python / fetch loop / worker)", b.args.rounds),
        figure: format!("{:.0} / {:.0} / {:.0} / {:.0} msg/s", rate(limit), rate(py), rate(fe), rate(wo)),
        goal: "",
        met: None,
    }];
    // Reported, not a goal: on this machine the emulator bounds both (see P3).
    for (m, name) in [(fe, "fetch_login_queue loop"), (wo, "worker")] {
        rows.push(Row {
            id: "P2",
            what: format!("{name} vs the Python pipeline"),
            figure: format!("{:.2}x", ratio(m, py, by_rate)),
            goal: "",
            met: None,
        });
    }
    for (m, name) in [(fe, "fetch_login_queue loop"), (wo, "worker")] {
        let each = ratios(m, limit, by_rate);
        let lowest = each.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = each.iter().copied().fold(0.0, f64::max);
        rows.push(Row {
            id: "P3",
            what: format!("{name} vs the emulator's limit: median (rounds from lowest to highest)"),
            figure: format!("{:.2}x ({lowest:.2} to {highest:.2})", median(each)),
            goal: ">= 0.9x every round",
            met: Some(lowest >= 0.9),
        });
    }
    rows.push(Row {
        id: "P3",
        what: "the Python pipeline vs the emulator's limit".to_owned(),
        figure: format!("{:.2}x", ratio(py, limit, by_rate)),
        goal: "",
        met: None,
    });
    for (m, name) in [(fe, "fetch_login_queue backend"), (wo, "worker")] {
        let x = ratio(m, py, by_cpu);
        let figure = format!("{:.3} s vs {:.3} s per 1,000 = {x:.2}x", cpu(m), cpu(py));
        rows.push(Row {
            id: "P4",
            what: format!("CPU, {name} vs Python + its backend"),
            figure,
            goal: "<= 0.1x",
            met: Some(x <= 0.1),
        });
    }
    rows.push(Row {
        id: "C1",
        what: "SQS requests per 1,000 messages, receives and deletes, as source_status counts them (fetch loop / worker / generic source)".to_owned(),
        figure: format!("{:.0} / {:.0} / {:.0}", per_1000(fe), per_1000(wo), per_1000(generic)),
        goal: "",
        met: None,
    });
    let (x, y) = (ratio(generic, fe, by_rate), ratio(generic, fe, by_cpu));
    rows.push(Row {
        id: "S1",
        what: "generic source (the login bodies mapped by expressions) vs the login source, fetch loops".to_owned(),
        figure: format!(
            "{:.0} vs {:.0} msg/s = {x:.2}x; CPU {:.3} vs {:.3} s per 1,000 = {y:.2}x",
            rate(generic),
            rate(fe),
            cpu(generic),
            cpu(fe)
        ),
        goal: ">= 0.8x rate",
        met: Some(x >= 0.8),
    });
    rows
}

/// bench/reference_pipeline.py, timed and charged by itself from after its imports.
fn python(b: &Bench, n: usize) -> (f64, f64) {
    let venv = PathBuf::from(std::env::var("SQS_INGEST_BENCH_VENV").expect("run bench/run.sh"));
    // From the checkout bench/run.sh runs in (its working directory), not the one whose path
    // was compiled in: a cached binary may have been built from another clone.
    let script = std::env::current_dir().expect("a working directory").join("bench/reference_pipeline.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .args([&b.queue.url, &b.cluster.url("postgres"), &n.to_string()])
        .envs(AWS_ENV)
        .env("PII_KEY", PII_KEY)
        .output()
        .expect("the reference pipeline");
    assert!(out.status.success(), "reference pipeline: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its JSON line");
    let get = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("{k} in {report}"));
    (get("seconds"), get("cpu") + get("backend_cpu"))
}

fn backend_pid(db: &mut postgres::Client) -> i32 {
    db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
}

/// `fetch` (a fetch of up to 1000 returning the rows inserted) until n rows, in one session.
fn fetch_loop(db: &mut postgres::Client, n: usize, fetch: &str) -> (f64, f64) {
    let pid = backend_pid(db);
    let (cpu0, start) = (cpu_seconds(pid), Instant::now());
    let mut rows = 0;
    while rows < n {
        rows += db.query_one(fetch, &[]).unwrap().get::<_, i32>(0) as usize;
        assert!(start.elapsed() < Duration::from_secs(900), "fetch loop stalled at {rows}");
    }
    (start.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu0)
}

/// The worker(s) switched on until n rows are there: seconds, and their CPU seconds.
pub fn worker(b: &Bench, db: &mut postgres::Client, n: usize) -> (f64, f64) {
    let pids = b.cluster.worker_pids();
    let cpu = |pids: &[i32]| pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let (cpu0, start) = (cpu(&pids), Instant::now());
    b.workers(true);
    wait_until("the worker's rows", Duration::from_secs(900), || {
        count(db, "SELECT count(*) FROM user_logins") as usize >= n
    });
    let seconds = start.elapsed().as_secs_f64();
    let spent = cpu(&pids) - cpu0;
    b.workers(false);
    (seconds, spent)
}
