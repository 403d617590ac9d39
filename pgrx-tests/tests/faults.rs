//! The fault suite: crashes, restarts, outages, failing deletes, races and hostile bodies. Every
//! case ends with the same check: each valid message is exactly one row, each invalid one exactly
//! one dead letter, the queue is empty and the workers are running. Each prints its line of the
//! table `fault | sent | rows | dead letters | duplicates | lost | workers alive`.
use postgres::{Client, NoTls};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::fault::{Deletes, FaultEndpoint, Mode};
use sqs_ingest_it::logins::{field, hostile, valid};
use sqs_ingest_it::{memory_kib, wait_until, Cluster, Emulator, Queue, WAIT};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Drains of thousands of messages through moto, crashes and restarts take minutes, not seconds.
const DRAIN: Duration = Duration::from_secs(WAIT.as_secs() * 5);

/// What was sent: the user ids of the valid logins, and how many bodies were invalid.
struct Sent {
    bodies: Vec<String>,
    user_ids: Vec<String>,
    invalid: usize,
}

/// `valid` logins with `invalid` hostile bodies spread evenly among them.
fn mixed(valid_count: usize, invalid_count: usize, seed: u64) -> Sent {
    let good = valid(valid_count, seed);
    let bad = hostile(invalid_count, seed + 1);
    let user_ids = good.iter().map(|b| field(b, "user_id").to_owned()).collect();
    let total = valid_count + invalid_count;
    let (mut good, mut bad) = (good.into_iter(), bad.into_iter());
    let bodies = (0..total)
        .map(|i| {
            // Bresenham-style: the i-th body is invalid when the running share says so.
            let invalid_due = (i + 1) * invalid_count / total > i * invalid_count / total;
            if invalid_due { bad.next() } else { good.next() }.or_else(|| good.next()).or_else(|| bad.next()).unwrap()
        })
        .collect();
    Sent { bodies, user_ids, invalid: invalid_count }
}

/// Rows plus dead letters, or None while the server is down or restarting.
fn stored(c: &Cluster) -> Option<usize> {
    let mut db = Client::connect(&c.url("postgres"), NoTls).ok()?;
    let row = db
        .query_one("SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM sqs_ingest.dead_letters)", &[])
        .ok()?;
    Some(row.get::<_, i64>(0) as usize)
}

fn wait_stored(c: &Cluster, at_least: usize) {
    wait_until(&format!("{at_least} messages stored"), DRAIN, || stored(c).is_some_and(|n| n >= at_least));
}

/// The check every case ends with.
fn check(fault: &str, c: &Cluster, queue: &Queue, sent: &Sent, workers: usize) {
    let total = sent.user_ids.len() + sent.invalid;
    wait_stored(c, total);
    wait_until("the queue to be empty", DRAIN, || queue.counts() == (0, 0));
    wait_until("the workers to run", DRAIN, || c.worker_pids().len() == workers);
    let mut db = c.connect("postgres");
    let mut rows: HashMap<String, usize> = HashMap::new();
    for r in db.query("SELECT user_id FROM user_logins", &[]).unwrap() {
        *rows.entry(r.get(0)).or_default() += 1;
    }
    let row_count: usize = rows.values().sum();
    let duplicates = row_count - rows.len();
    let lost = sent.user_ids.iter().filter(|u| !rows.contains_key(*u)).count();
    let dead = db.query_one("SELECT count(*), count(DISTINCT message_id) FROM sqs_ingest.dead_letters", &[]).unwrap();
    let (dead, dead_distinct) = (dead.get::<_, i64>(0) as usize, dead.get::<_, i64>(1) as usize);
    let alive = c.worker_pids().len();
    println!(
        "| {fault} | {} | {row_count} | {dead} | {duplicates} | {lost} | {alive} of {workers} |",
        sent.bodies.len()
    );
    assert_eq!((duplicates, lost), (0, 0), "{fault}: duplicates, lost");
    assert_eq!(row_count, sent.user_ids.len(), "{fault}: rows");
    assert_eq!((dead, dead_distinct), (sent.invalid, sent.invalid), "{fault}: dead letters");
    assert_eq!(alive, workers, "{fault}: workers alive");
}

fn kill(pid: i32) {
    // SAFETY: signals a server process of our own cluster.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

/// Sets its flag when dropped: at the end of a scope, or when a panic leaves it.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Calls fetch_login_queue(20) in a loop until `stop`, reconnecting after crashes; its backend's
/// pid is published in `pid`.
fn caller_loop(c: &Cluster, stop: &AtomicBool, pid: &AtomicI32) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut db) = Client::connect(&c.url("postgres"), NoTls) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let Ok(me) = db.query_one("SELECT pg_backend_pid()", &[]) else { continue };
        pid.store(me.get(0), Ordering::SeqCst);
        let _ = db.batch_execute("SET sqs_ingest.fetch_wait = 1");
        while !stop.load(Ordering::SeqCst) && db.query_one("SELECT fetch_login_queue(20)", &[]).is_ok() {}
    }
}

/// The same session's fetch_login_queue succeeds again soon after the outage ends (the
/// emulator may first work off what queued up while it was away).
fn works_again(db: &mut Client, fault: &str) {
    let back = Instant::now();
    let mut last_error = String::new();
    wait_until(&format!("fetch_login_queue to work after {fault}"), Duration::from_secs(30), || {
        match db.query_one("SELECT fetch_login_queue(10)", &[]) {
            Ok(_) => true,
            Err(e) => {
                last_error = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
                false
            }
        }
    });
    println!(
        "{fault}: fetch_login_queue worked again {:?} after it ended (last error before: {last_error:?})",
        back.elapsed()
    );
}

#[test]
fn sigkill_of_callers_and_workers_during_a_2000_message_drain() {
    let queue = Emulator::shared().queue("sigkill");
    let c = Cluster::with_workers("sigkill", &queue.url, &[]);
    c.with_extension("postgres");
    let sent = mixed(1900, 100, 401);
    let (stop, caller) = (AtomicBool::new(false), AtomicI32::new(0));
    std::thread::scope(|s| {
        // A failed wait below ends the caller too, so that the test fails instead of hanging.
        let _stop = Stop(&stop);
        s.spawn(|| queue.feed(&sent.bodies));
        s.spawn(|| caller_loop(&c, &stop, &caller));
        let mut progress = 0;
        for round in 0..6 {
            progress += 150;
            wait_stored(&c, progress);
            if round % 2 == 0 {
                wait_until("a worker", DRAIN, || !c.worker_pids().is_empty());
                kill(c.worker_pids()[0]);
            } else {
                // Mid-call: the caller's backend is inside fetch_login_queue almost all the time.
                wait_until("the caller inside fetch_login_queue", DRAIN, || {
                    let pid = caller.load(Ordering::SeqCst);
                    Client::connect(&c.url("postgres"), NoTls)
                        .and_then(|mut db| {
                            db.query_one(
                                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%fetch_login_queue%'",
                                &[&pid],
                            )
                        })
                        .is_ok_and(|r| r.get::<_, i64>(0) == 1)
                });
                kill(caller.load(Ordering::SeqCst));
            }
            c.wait_up();
        }
        wait_stored(&c, sent.bodies.len());
    });
    check("SIGKILL: 3 x worker mid-batch, 3 x backend mid-fetch_login_queue", &c, &queue, &sent, 1);
    assert!(c.log_lines("was terminated by signal 9") >= 6, "six crashes, each restarted");
}

#[test]
fn immediate_shutdown_and_restart_with_the_worker_running() {
    let queue = Emulator::shared().queue("immediate");
    let c = Cluster::with_workers("immediate", &queue.url, &[]);
    c.with_extension("postgres");
    let sent = mixed(570, 30, 409);
    std::thread::scope(|s| {
        s.spawn(|| queue.feed(&sent.bodies));
        for at in [150, 400] {
            wait_stored(&c, at);
            c.stop_immediately();
            c.start_again(&AWS_ENV);
        }
    });
    check("pg_ctl stop -m immediate twice during the drain, then start", &c, &queue, &sent, 1);
}

/// A 30 s outage while the worker runs and 400 messages wait: a call during it fails fast with
/// 08001 (within `fast`), the worker reports it, and once `end` runs everything arrives.
fn outage_of_30s(fault: &str, c: &Cluster, queue: &Queue, start: impl FnOnce(), end: impl FnOnce(), fast: Duration) {
    c.with_extension("postgres");
    let sent = mixed(380, 20, 419);
    queue.send(&sent.bodies);
    wait_stored(c, 100);

    start();
    let outage_began = Instant::now();
    let mut db = c.connect("postgres");
    let error = db.query_one("SELECT fetch_login_queue(10)", &[]).expect_err("SQS is out");
    let failed_after = outage_began.elapsed();
    let error = error.as_db_error().expect("an ERROR from the server");
    println!(
        "{fault}: fetch_login_queue failed after {failed_after:?}: {} (HINT: {:?})",
        error.message(),
        error.hint()
    );
    assert_eq!(error.code(), &postgres::error::SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION);
    assert!(error.hint().is_some(), "the ERROR says what to check");
    assert!(failed_after < fast, "fails within the timeouts, not hangs");
    wait_until("the worker to report the outage", DRAIN, || {
        c.connect("postgres")
            .query_one("SELECT last_error IS NOT NULL FROM sqs_ingest.worker_status", &[])
            .unwrap()
            .get(0)
    });
    // The outage itself lasts 30 s: that is the fault under test, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage_began.elapsed()));
    end();
    works_again(&mut db, fault);
    check(&format!("{fault} 30 s, worker running, caller meanwhile"), c, queue, &sent, 1);
}

#[test]
fn hung_endpoint_for_30s_fails_calls_fast_and_loses_nothing() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("hung");
    let endpoint = FaultEndpoint::start(emulator.port);
    let c = Cluster::with_workers(
        "hung",
        &endpoint.url_for(&queue.url),
        &["sqs_ingest.request_timeout = 2000", "sqs_ingest.connect_timeout = 1000"],
    );
    let (hang, answer) = (|| endpoint.set(Mode::Hang), || endpoint.set(Mode::Relay));
    outage_of_30s("endpoint hung (accepts, never answers)", &c, &queue, hang, answer, Duration::from_secs(5));
}

#[test]
fn unreachable_emulator_for_30s_fails_calls_fast_and_loses_nothing() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("unreachable");
    let proxy = FaultEndpoint::start(emulator.port);
    let c = Cluster::with_workers("unreachable", &proxy.url_for(&queue.url), &[]);
    let (down, up) = (|| proxy.set(Mode::Down), || proxy.set(Mode::Relay));
    outage_of_30s("emulator unreachable (connections refused)", &c, &queue, down, up, Duration::from_secs(3));
}

#[test]
fn failing_deletes_and_a_visibility_timeout_shorter_than_the_transaction() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("deletes_fail");
    let proxy = FaultEndpoint::start(emulator.port);
    // visibility_timeout = 2 s (the helper's), shorter than the 3 s transaction below.
    let c = Cluster::with_workers("deletes_fail", &proxy.url_for(&queue.url), &[]);
    c.with_extension("postgres");
    proxy.deletes(Deletes::Error);
    let sent = mixed(285, 15, 431);
    queue.send(&sent.bodies);
    let mut slow = c.connect("postgres");
    slow.batch_execute("BEGIN; SELECT fetch_login_queue(10); SELECT pg_sleep(3); COMMIT").unwrap();
    // While deletes fail, redeliveries come back every 2 s; moto hands out the oldest visible
    // messages first, so the ~50 a worker stores in 2 s crowd the rest out. Deletes recover at 40.
    wait_stored(&c, 40);
    proxy.deletes(Deletes::Relayed);
    check(
        "every delete failing (HTTP 500) for the first 40+ messages; a 3 s transaction with a 2 s visibility timeout",
        &c,
        &queue,
        &sent,
        1,
    );
}

#[test]
fn four_callers_and_two_workers_on_one_queue() {
    let queue = Emulator::shared().queue("crowd");
    let c = Cluster::with_workers("crowd", &queue.url, &["sqs_ingest.workers = 2"]);
    c.with_extension("postgres");
    let sent = mixed(950, 50, 433);
    let stop = AtomicBool::new(false);
    let pids: Vec<AtomicI32> = (0..4).map(|_| AtomicI32::new(0)).collect();
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        s.spawn(|| queue.feed(&sent.bodies));
        for pid in &pids {
            let (c, stop) = (&c, &stop);
            s.spawn(move || caller_loop(c, stop, pid));
        }
        wait_stored(&c, sent.bodies.len());
    });
    check("4 concurrent fetch_login_queue callers + 2 workers", &c, &queue, &sent, 2);
}

#[test]
fn ten_thousand_hostile_bodies_among_a_thousand_good_ones() {
    let queue = Emulator::shared().queue("hostile");
    let c = Cluster::with_workers("hostile", &queue.url, &["sqs_ingest.workers = 2"]);
    c.with_extension("postgres");
    let sent = mixed(1000, 10_000, 439);
    queue.feed(&sent.bodies);
    let workers = c.worker_pids();
    check("10,000 hostile bodies (empty, not JSON, arrays, 100k-deep nesting, ~1 MiB strings, NUL, lone surrogates, wrong types, over-long, duplicate keys, BOM) among 1,000 good", &c, &queue, &sent, 2);
    // A batch is at most 10 bodies of at most 1 MiB each, whatever they hold.
    let peaks: Vec<u64> = workers.iter().map(|&pid| memory_kib(pid).hwm).collect();
    println!("hostile bodies: worker peak RSS (VmHWM) {peaks:?} KiB");
    assert!(peaks.iter().all(|&kib| kib < 256 * 1024), "a worker's memory stays bounded: {peaks:?} KiB");
}
