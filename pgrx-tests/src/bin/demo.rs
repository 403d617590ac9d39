//! The demo: a throwaway cluster with sqs_ingest, a local SQS emulator filled with generated
//! login messages (some malformed), one fetch_login_queue call, and what it stored.
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::take_home_like;
use sqs_ingest_it::{Cluster, Emulator};
use std::process::Command;
use std::time::Instant;

fn main() {
    let started = Instant::now();
    let emulator = Emulator::start();
    let queue = emulator.queue("login-queue");
    let mut bodies = take_home_like(100, 2026);
    bodies.extend(["not json".to_owned(), "[1, 2, 3]".to_owned(), bodies[0].replace("\"ip\"", "\"ipv4\"")]);
    queue.send(&bodies);
    println!("emulator {} holds {} login messages ({} malformed)", emulator.endpoint, bodies.len(), 4);

    let cluster = Cluster::start("demo", &[format!("sqs_ingest.queue_url = '{}'", queue.url)], &AWS_ENV);
    let mut db = cluster.database("demo");
    let rows: i32 = db.query_one("SELECT fetch_login_queue(1000)", &[]).unwrap().get(0);
    println!(
        "SELECT fetch_login_queue(1000) -> {rows} rows; first rows {:.1} s after start\n",
        started.elapsed().as_secs_f64()
    );

    let psql = |sql: &str| {
        let status = Command::new("psql")
            .args(["-X", "-P", "pager=off", "-h", "127.0.0.1", "-p", &cluster.port.to_string()])
            .args(["-U", "postgres", "-d", "demo", "-c", sql])
            .status()
            .expect("psql");
        assert!(status.success());
    };
    psql("SELECT * FROM user_logins LIMIT 5");
    psql("SELECT count(*) AS rows, count(locale) AS with_locale, min(create_date), max(create_date) FROM user_logins");
    psql("SELECT message_id, receive_count, reason, left(body, 60) AS body FROM sqs_ingest.dead_letters");
    let (visible, in_flight) = queue.counts();
    println!("queue after commit: {visible} visible, {in_flight} in flight");
}
