//! The background worker: continuous ingestion, reload, restart, shutdown, idling, recovery.
use postgres::Client;
use sqs_ingest_it::fault::{FaultEndpoint, Mode};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, fetch, holds_for, wait_until, Cluster, Emulator, WAIT};
use std::time::{Duration, Instant};

fn rows(db: &mut Client) -> i64 {
    count(db, "SELECT count(*) FROM user_logins")
}

fn wait_for_rows(db: &mut Client, n: i64) {
    wait_until(&format!("{n} rows in user_logins"), WAIT, || rows(db) == n);
}

fn reload(db: &mut Client, setting: &str, value: &str) {
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.{setting} = '{value}'")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
}

#[test]
fn worker_drains_a_queue_of_300_and_reports_its_status() {
    let queue = Emulator::shared().queue("worker_drain");
    let c = Cluster::with_workers("worker_drain", &queue.url, &[]);
    let mut db = c.with_extension("postgres");
    queue.send(&valid(300, 71));

    wait_for_rows(&mut db, 300);
    assert_eq!(count(&mut db, "SELECT count(DISTINCT user_id) FROM user_logins"), 300);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    let status = db
        .query_one("SELECT pid, state, ingested, last_poll IS NOT NULL, last_error FROM sqs_ingest.worker_status", &[])
        .unwrap();
    assert_eq!(status.get::<_, i64>(2), 300);
    assert!(status.get::<_, bool>(3));
    assert_eq!(status.get::<_, Option<String>>(4), None);
    assert_eq!(c.worker_pids(), vec![status.get::<_, i32>(0)], "one worker, shown in pg_stat_activity");
}

#[test]
fn reload_switches_the_queue_and_worker_enabled_off_stops_polling() {
    let emulator = Emulator::shared();
    let (first, second) = (emulator.queue("reload_a"), emulator.queue("reload_b"));
    let c = Cluster::with_workers("reload", &first.url, &[]);
    let mut db = c.with_extension("postgres");
    first.send(&valid(5, 73));
    wait_for_rows(&mut db, 5);

    reload(&mut db, "queue_url", &second.url);
    second.send(&valid(5, 79));
    wait_for_rows(&mut db, 10);

    reload(&mut db, "worker_enabled", "off");
    wait_until("the worker to say it is disabled", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'disabled'") == 1
    });
    second.send(&valid(3, 83));
    holds_for("a disabled worker receiving nothing", Duration::from_secs(3), || second.counts() == (3, 0));
    reload(&mut db, "worker_enabled", "on");
    wait_for_rows(&mut db, 13);
}

#[test]
fn terminated_worker_is_restarted_and_fast_shutdown_is_quick() {
    let queue = Emulator::shared().queue("restart");
    let c = Cluster::with_workers("restart", &queue.url, &["sqs_ingest.worker_wait = 20"]);
    let mut db = c.with_extension("postgres");
    wait_until("the worker to long-poll", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'polling'") == 1
    });
    let old = c.worker_pids();
    let asked = Instant::now();
    db.query_one("SELECT pg_terminate_backend($1)", &[&old[0]]).unwrap();
    wait_until("the worker to exit", WAIT, || !c.worker_pids().contains(&old[0]));
    eprintln!("worker gone {} ms after pg_terminate_backend, mid long poll", asked.elapsed().as_millis());
    wait_until("the worker to be restarted", WAIT, || c.worker_pids().len() == 1);
    queue.send(&valid(4, 89));
    wait_for_rows(&mut db, 4);

    wait_until("the new worker to long-poll", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'polling'") == 1
    });
    drop(db);
    let started = Instant::now();
    c.stop();
    let took = started.elapsed();
    eprintln!("pg_ctl stop -m fast during a 20 s long poll: {} ms", took.as_millis());
    assert!(took < Duration::from_millis(500), "fast shutdown took {took:?}");
}

#[test]
fn worker_idles_quietly_without_the_extension_then_starts() {
    let queue = Emulator::shared().queue("no_extension");
    let c = Cluster::with_workers("no_extension", &queue.url, &[]);
    queue.send(&valid(5, 97));
    wait_until("the worker to notice the missing extension", WAIT, || c.log_lines("is not created") == 1);
    let mut db = c.connect("postgres");
    // Several backoff rounds (1 s cap) pass; the log says it once and nothing is received.
    holds_for("nothing received and one log line", Duration::from_secs(3), || {
        queue.counts() == (5, 0) && c.log_lines("is not created") == 1
    });
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    wait_for_rows(&mut db, 5);
    assert_eq!(c.log_lines("is not created"), 1, "said once");
}

/// sqs_ingest.database names one database, before it exists: no worker starts (and no FATAL is
/// logged) until it and the extension exist; then it alone is served, and a plain DROP
/// DATABASE of it succeeds while its worker polls.
#[test]
fn sqs_ingest_database_limits_the_workers_to_one_database_even_before_it_exists() {
    let queue = Emulator::shared().queue("worker_missing_db");
    let c = Cluster::with_workers("worker_missing_db", &queue.url, &["sqs_ingest.database = 'later'"]);
    let mut admin = c.with_extension("postgres");
    holds_for("no worker and no FATAL", Duration::from_secs(3), || {
        c.worker_pids().is_empty() && c.log_lines("FATAL") == 0
    });

    admin.batch_execute("CREATE DATABASE later").unwrap();
    let mut db = c.with_extension("later");
    queue.send(&valid(5, 97));
    wait_for_rows(&mut db, 5);
    assert_eq!(rows(&mut admin), 0, "the database postgres is not served");
    let served: Vec<Option<String>> =
        admin.query("SELECT database FROM sqs_ingest.worker_status", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(served, vec![Some("later".to_owned())]);

    drop(db);
    let started = Instant::now();
    admin.batch_execute("DROP DATABASE later").unwrap();
    eprintln!("DROP DATABASE of the served database: {} ms", started.elapsed().as_millis());
    admin.batch_execute("CREATE DATABASE later").unwrap();
    let mut db = c.with_extension("later");
    queue.send(&valid(5, 101));
    wait_for_rows(&mut db, 5);
    assert_eq!(c.log_lines("FATAL"), 0);
}

/// Every database where the extension is created is served, with no setting: two databases
/// with sources, both served; a plain DROP DATABASE of one while its worker polls, and CREATE
/// DATABASE ... TEMPLATE of the other, succeed (the workers step aside); the extension created
/// in a third is served without a restart.
#[test]
fn every_database_with_the_extension_is_served_and_its_workers_step_aside() {
    let emulator = Emulator::shared();
    let logins = emulator.queue("every_db_logins");
    let queues: Vec<_> = ["alpha", "beta", "gamma"].iter().map(|d| emulator.queue(&format!("every_db_{d}"))).collect();
    let c = Cluster::with_workers("every_db", &logins.url, &["sqs_ingest.worker_wait = 20"]);
    let mut admin = c.connect("postgres");
    let events = |db: &mut Client, queue: &str| {
        db.batch_execute("CREATE TABLE events (body jsonb); SELECT sqs_ingest.alter_source('login', enabled => false)")
            .unwrap();
        db.execute("SELECT sqs_ingest.create_source('events', $1, 'events', '{\"body\": \"body\"}')", &[&queue])
            .unwrap();
    };
    let mut alpha = c.database("alpha");
    let mut beta = c.database("beta");
    events(&mut alpha, &queues[0].url);
    events(&mut beta, &queues[1].url);
    queues[0].send(&valid(5, 401));
    queues[1].send(&valid(5, 409));
    for db in [&mut alpha, &mut beta] {
        wait_until("each database's rows", WAIT, || count(db, "SELECT count(*) FROM events") == 5);
    }
    let served = |db: &mut Client| -> Vec<String> {
        db.query("SELECT database FROM sqs_ingest.worker_status WHERE pid IS NOT NULL ORDER BY 1", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    wait_until("a worker per database, named", WAIT, || served(&mut alpha) == ["alpha", "beta"]);

    // Both workers in a 20-second long poll; no FORCE.
    drop(beta);
    admin.batch_execute("SET statement_timeout = '10s'").unwrap();
    let started = Instant::now();
    admin.batch_execute("DROP DATABASE beta").unwrap();
    eprintln!("DROP DATABASE of a served database, its worker mid long poll: {} ms", started.elapsed().as_millis());
    drop(alpha);
    let started = Instant::now();
    admin.batch_execute("CREATE DATABASE alpha_copy TEMPLATE alpha").unwrap();
    eprintln!("CREATE DATABASE ... TEMPLATE of a served database: {} ms", started.elapsed().as_millis());
    let mut copy = c.connect("alpha_copy");
    copy.batch_execute("SELECT sqs_ingest.alter_source('events', enabled => false)").unwrap();
    let mut alpha = c.connect("alpha");
    queues[0].send(&valid(5, 419));
    wait_until("alpha served again", WAIT, || count(&mut alpha, "SELECT count(*) FROM events") == 10);

    let mut gamma = c.database("gamma");
    events(&mut gamma, &queues[2].url);
    queues[2].send(&valid(5, 421));
    wait_until("the third database served without a restart", WAIT, || {
        count(&mut gamma, "SELECT count(*) FROM events") == 5
    });
    wait_until("the workers named", WAIT, || served(&mut gamma) == ["alpha", "alpha_copy", "gamma"]);
    assert_eq!(c.log_lines("FATAL"), 0);
}

#[test]
fn endpoint_down_then_back_loses_nothing() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("endpoint_down");
    let proxy = FaultEndpoint::start(emulator.port);
    proxy.set(Mode::Down);
    let c = Cluster::with_workers("endpoint_down", &proxy.url_for(&queue.url), &[]);
    let mut db = c.with_extension("postgres");
    queue.send(&valid(10, 101));
    wait_until("the worker to back off", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'backing off' AND last_error LIKE 'could not reach%'") == 1
    });
    // Several backoff rounds (1 s cap) pass: the outage is logged once.
    holds_for("one log line for the outage", Duration::from_secs(3), || c.log_lines("could not reach") == 1);

    proxy.set(Mode::Relay);
    wait_for_rows(&mut db, 10);
    wait_until("the recovery to be logged", WAIT, || c.log_lines("ingesting again") == 1);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
}

#[test]
fn two_workers_and_a_caller_give_one_row_per_message() {
    let queue = Emulator::shared().queue("three_consumers");
    let c = Cluster::with_workers("three_consumers", &queue.url, &["sqs_ingest.workers = 2"]);
    let mut db = c.with_extension("postgres");
    wait_until("two workers", WAIT, || c.worker_pids().len() == 2);
    queue.send(&valid(300, 103));
    let mut caller = c.connect("postgres");
    let mut by_caller = 0;
    wait_until("300 rows", WAIT, || {
        by_caller += fetch(&mut caller, 10);
        rows(&mut db) >= 300
    });
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    assert_eq!(rows(&mut db), 300);
    assert_eq!(count(&mut db, "SELECT count(DISTINCT user_id) FROM user_logins"), 300);
    let by_workers = count(&mut db, "SELECT sum(ingested)::bigint FROM sqs_ingest.worker_status");
    eprintln!("rows by the caller: {by_caller}, by the workers: {by_workers}");
    assert_eq!(by_caller as i64 + by_workers, 300);
}

#[test]
fn pg_cron_schedule_ingests() {
    let queue = Emulator::shared().queue("pg_cron");
    let c = Cluster::with_pg_cron("pg_cron", &queue.url);
    let mut db = c.with_extension("postgres");
    db.batch_execute("CREATE EXTENSION pg_cron").unwrap();
    db.batch_execute("SELECT cron.schedule('login-ingest', '* * * * *', 'SELECT fetch_login_queue(100)')").unwrap();
    queue.send(&valid(10, 107));
    // pg_cron 1.4 runs minute schedules: the first run comes within a minute.
    wait_until("the scheduled run", Duration::from_secs(90), || rows(&mut db) == 10);
    wait_until("pg_cron to record the run as succeeded", WAIT, || {
        count(&mut db, "SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'") >= 1
    });
    assert_eq!(count(&mut db, "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'"), 0);
}

/// DROP DATABASE waits until every process has absorbed a ProcSignalBarrier: the worker must
/// absorb it in every state, not only when it next starts a transaction.
#[test]
fn drop_database_is_not_blocked_by_the_worker_in_any_state() {
    let queue = Emulator::shared().queue("drop_database");
    let c = Cluster::with_workers(
        "drop_database",
        &queue.url,
        &["sqs_ingest.worker_wait = 20", "sqs_ingest.worker_max_backoff = 30"],
    );
    let mut db = c.connect("postgres");
    wait_until("the worker to back off without the extension", WAIT, || c.log_lines("is not created") == 1);
    drop_another_database(&mut db, "backing off");

    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    wait_until("the worker to long-poll", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'polling'") == 1
    });
    drop_another_database(&mut db, "mid long poll");

    reload(&mut db, "worker_enabled", "off");
    wait_until("the worker to say it is disabled", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'disabled'") == 1
    });
    drop_another_database(&mut db, "disabled");
    assert_eq!(c.worker_pids().len(), 1, "the worker is still there");
}

fn drop_another_database(db: &mut Client, worker_state: &str) {
    // A blocked DROP DATABASE waits forever: let it fail instead.
    db.batch_execute("SET statement_timeout = '10s'").unwrap();
    db.batch_execute("CREATE DATABASE scratch").unwrap();
    let started = Instant::now();
    db.batch_execute("DROP DATABASE scratch").unwrap();
    let took = started.elapsed();
    eprintln!("DROP DATABASE with the worker {worker_state}: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "DROP DATABASE with the worker {worker_state} took {took:?}");
}

/// No source waits for another: one worker keeps a receive of each of its sources in flight at
/// once, so a busy source's messages arrive while three idle ones long-poll for 20 s (before,
/// the sources were polled in turn, each idle one holding the others for 20 / 4 = 5 s).
#[test]
fn idle_sources_do_not_hold_a_busy_ones_messages() {
    let emulator = Emulator::shared();
    let busy = emulator.queue("pool_busy");
    let idle: Vec<_> = (0..3).map(|i| emulator.queue(&format!("pool_idle_{i}"))).collect();
    let c = Cluster::with_workers("pool_idle", &busy.url, &["sqs_ingest.worker_wait = 20"]);
    let mut db = c.with_extension("postgres");
    db.batch_execute("CREATE TABLE events (body jsonb)").unwrap();
    for (i, queue) in idle.iter().enumerate() {
        db.execute(
            "SELECT sqs_ingest.create_source($1, $2, 'events', '{\"body\": \"body\"}')",
            &[&format!("idle_{i}"), &queue.url],
        )
        .unwrap();
    }
    wait_until("every idle source's first long poll", WAIT, || {
        count(
            &mut db,
            "SELECT count(*) FROM sqs_ingest.source_status WHERE source LIKE 'idle%' AND receive_requests > 0",
        ) == 3
    });
    for round in 1..=3 {
        let sent = Instant::now();
        busy.send(&valid(10, 230 + round));
        wait_for_rows(&mut db, 10 * round as i64);
        let took = sent.elapsed();
        eprintln!("round {round}: 10 messages beside 3 idle sources stored in {} ms", took.as_millis());
        assert!(took < Duration::from_secs(5), "round {round} took {took:?}: the idle sources held it");
    }
    assert_eq!(count(&mut db, "SELECT count(*) FROM events"), 0);
}

/// Idle means idle: an idle worker reads the catalog without a transaction id, so its polls
/// commit nothing and write no WAL (with archive_timeout set, each write would archive a
/// segment). wal_level minimal: the bgwriter's standby snapshots after the setup's writes
/// would otherwise come and go while the worker is watched.
#[test]
fn an_idle_worker_writes_no_wal() {
    let queue = Emulator::shared().queue("idle_wal");
    let c = Cluster::with_workers(
        "idle_wal",
        &queue.url,
        &["sqs_ingest.worker_wait = 1", "wal_level = minimal", "max_wal_senders = 0", "autovacuum = off"],
    );
    let mut db = c.with_extension("postgres");
    queue.send(&valid(3, 239));
    wait_for_rows(&mut db, 3);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    let polls =
        |db: &mut Client| count(db, "SELECT empty_receives FROM sqs_ingest.source_status WHERE source = 'login'");
    let lsn = |db: &mut Client| db.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get::<_, String>(0);
    // Reads prune what the setup left dead in the pages they visit (once, by whichever process
    // comes first): the WAL has settled when five polls in a row wrote none.
    let (mut start, mut since) = (lsn(&mut db), polls(&mut db));
    wait_until("five polls in a row without WAL", WAIT, || {
        let (now, polled) = (lsn(&mut db), polls(&mut db));
        if now != start {
            (start, since) = (now, polled);
        }
        polled >= since + 5
    });
    let polled = polls(&mut db);
    holds_for("no WAL written by the idle worker", Duration::from_secs(60), || lsn(&mut db) == start);
    let during = polls(&mut db) - polled;
    eprintln!("60 s idle: {during} empty polls, WAL at {start} throughout");
    assert!(during >= 30, "the worker kept polling: {during} empty polls in 60 s");
}
