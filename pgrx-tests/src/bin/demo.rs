//! The demo: a throwaway cluster with sqs_ingest, a local SQS emulator filled with generated
//! login messages (some malformed), one fetch_login_queue call and what it stored, then the
//! background worker switched on and ingesting new messages as they are sent.
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::{take_home_like, valid};
use sqs_ingest_it::{wait_until, Cluster, Emulator};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let started = Instant::now();
    let emulator = Emulator::start();
    let queue = emulator.queue("login-queue");
    let mut bodies = take_home_like(100, 2026);
    bodies.extend(["not json".to_owned(), "[1, 2, 3]".to_owned(), bodies[0].replace("\"ip\"", "\"ipv4\"")]);
    queue.send(&bodies);
    println!("emulator {} holds {} login messages ({} malformed)", emulator.endpoint, bodies.len(), 4);

    let settings = [format!("sqs_ingest.queue_url = '{}'", queue.url), "sqs_ingest.worker_enabled = off".to_owned()];
    let cluster = Cluster::start("demo", &settings, &AWS_ENV);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    let rows: i32 = db.query_one("SELECT fetch_login_queue(1000)", &[]).unwrap().get(0);
    println!(
        "SELECT fetch_login_queue(1000) -> {rows} rows; first rows {:.1} s after start\n",
        started.elapsed().as_secs_f64()
    );

    let psql = |sql: &str| {
        let status = Command::new("psql")
            .args(["-X", "-P", "pager=off", "-h", "127.0.0.1", "-p", &cluster.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .status()
            .expect("psql");
        assert!(status.success());
    };
    psql("SELECT * FROM user_logins LIMIT 5");
    psql("SELECT count(*) AS rows, count(locale) AS with_locale, min(create_date), max(create_date) FROM user_logins");
    psql("SELECT message_id, receive_count, reason, left(body, 60) AS body FROM sqs_ingest.dead_letters");
    let (visible, in_flight) = queue.counts();
    println!("queue after commit: {visible} visible, {in_flight} in flight\n");

    db.batch_execute("ALTER SYSTEM SET sqs_ingest.worker_enabled = on").unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    let sent = Instant::now();
    queue.send(&valid(20, 2027));
    wait_until("the worker to ingest", Duration::from_secs(30), || {
        db.query_one("SELECT count(*) FROM user_logins", &[]).unwrap().get::<_, i64>(0) == i64::from(rows) + 20
    });
    println!(
        "worker enabled; 20 more messages sent and ingested {:.0} ms later, no call needed:",
        sent.elapsed().as_secs_f64() * 1000.0
    );
    psql("SELECT database, worker, pid, state, ingested, dead_lettered, duplicates_skipped, last_error FROM sqs_ingest.worker_status");
}
