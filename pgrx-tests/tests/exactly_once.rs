//! Exactly-once rows from at-least-once delivery: redeliveries, races, dumps and bad bodies.
use postgres::Client;
use sqs_ingest_it::fault::{Deletes, FaultEndpoint};
use sqs_ingest_it::logins::{field, take_home_like, valid, with_field};
use sqs_ingest_it::{count, fetch, fetch_all, point_at, shared_cluster, wait_for, wait_until, Emulator, WAIT};
use std::process::Command;

fn set(db: &mut Client, setting: &str, value: &str) {
    db.batch_execute(&format!("SET sqs_ingest.{setting} = '{value}'")).unwrap();
}

#[test]
fn failed_deletes_after_commit_are_redelivered_and_skipped() {
    redelivered_after(Emulator::shared(), Deletes::Error, "failed_deletes", "could not delete");
}

#[test]
fn refused_delete_entries_are_redelivered_and_skipped() {
    redelivered_after(Emulator::shared(), Deletes::EntriesFailed, "refused_entries", "SQS refused to delete");
}

#[test]
fn failed_deletes_after_commit_are_redelivered_and_skipped_in_the_query_protocol() {
    redelivered_after(Emulator::shared_query_only(), Deletes::Error, "failed_deletes_query", "could not delete");
}

#[test]
fn refused_delete_entries_are_redelivered_and_skipped_in_the_query_protocol() {
    redelivered_after(
        Emulator::shared_query_only(),
        Deletes::EntriesFailed,
        "refused_entries_query",
        "SQS refused to delete",
    );
}

/// The number just before `words` in `text`, if there is one.
fn number_before(text: &str, words: &str) -> Option<u32> {
    let head = &text[..text.find(words)?];
    let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    head[head.len() - digits..].parse().ok()
}

/// 20 messages committed while their deletes fail in `mode`: one WARNING saying `warning` for
/// every receipt, then the redeliveries make no second row and are deleted. SQS may hand one
/// message to two concurrent receives (moto does), so receipts can outnumber messages.
fn redelivered_after(emulator: &Emulator, mode: Deletes, name: &str, warning: &str) {
    let queue = emulator.queue(name);
    let proxy = FaultEndpoint::start(emulator.port);
    shared_cluster().database(name);
    let (mut db, notices) = shared_cluster().connect_collecting_notices(name);
    point_at(&mut db, &proxy.url_for(&queue.url));
    set(&mut db, "visibility_timeout", "1");
    queue.send(&valid(20, 47));

    proxy.deletes(mode);
    assert_eq!(fetch_all(&mut db, 100, 20), 20, "COMMIT succeeds although no delete does");
    assert!(proxy.refused() >= 1);
    // The once-per-server warning about a missing pii_key comes first if this test is the
    // first to ingest in the shared cluster.
    let warned: Vec<String> = notices
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with("WARNING") && !n.contains("pii_key"))
        .cloned()
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    let failed = warned[0].strip_prefix("WARNING: sqs_ingest: ").and_then(|w| w.strip_prefix(warning));
    let receipts = failed.and_then(|w| number_before(w, " of "));
    assert!(receipts.is_some_and(|n| n >= 20), "{warned:?}");
    assert!(failed.is_some_and(|w| w.contains(&format!(" of {} committed messages", receipts.unwrap()))), "{warned:?}");
    notices.lock().unwrap().clear();

    proxy.deletes(Deletes::Relayed);
    // Back after their visibility timeout, all but those of a delete the endpoint took in while
    // failing and handled only once it had recovered, as a request in flight at the end of a
    // real outage reaches SQS (seen on a slow build): what was answered with an error comes back.
    let (back, _) = wait_for(
        "the undeleted messages to come back (visible, in flight)",
        WAIT,
        || queue.counts(),
        |&(visible, in_flight)| visible > 0 && in_flight == 0,
    );
    assert_eq!(fetch(&mut db, 100), 0, "redeliveries make no second row");
    let said = notices.lock().unwrap().clone();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(number_before(&said[0], " rows inserted"), Some(0), "{said:?}");
    assert!(number_before(&said[0], " already ingested and skipped").is_some_and(|n| n as u64 >= back), "{said:?}");
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 20);
    assert_eq!(count(&mut db, "SELECT count(DISTINCT user_id) FROM user_logins"), 20);
    assert_eq!(queue.counts(), (0, 0), "the redelivered messages are deleted this time");
}

#[test]
fn overlapping_visibility_windows_give_one_row_per_message() {
    race(Emulator::shared(), "race");
}

#[test]
fn overlapping_visibility_windows_give_one_row_per_message_in_the_query_protocol() {
    race(Emulator::shared_query_only(), "race_query");
}

/// Two sessions receive the same messages, the second once the first outlives their
/// visibility timeout: the ledger makes the second wait, then skip them.
fn race(emulator: &Emulator, name: &str) {
    let queue = emulator.queue(name);
    let mut first = shared_cluster().database(name);
    let mut second = shared_cluster().connect(name);
    for db in [&mut first, &mut second] {
        point_at(db, &queue.url);
        set(db, "visibility_timeout", "1");
    }
    queue.send(&take_home_like(5, 53));

    first.batch_execute("BEGIN").unwrap();
    assert_eq!(fetch_all(&mut first, 10, 5), 5);
    // The first transaction outlives the visibility timeout: SQS hands the messages out again.
    wait_until("the visibility timeout to expire", WAIT, || queue.counts() == (5, 0));
    let second_pid: i32 = second.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let racer = std::thread::spawn(move || fetch(&mut second, 10));
    let mut watch = shared_cluster().connect(name);
    wait_until("the second session to wait on the ledger", WAIT, || {
        count(
            &mut watch,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {second_pid} AND wait_event_type = 'Lock'"),
        ) == 1
    });
    first.batch_execute("COMMIT").unwrap();

    assert_eq!(racer.join().unwrap(), 0, "the second transaction waits, then skips");
    assert_eq!(count(&mut first, "SELECT count(*) FROM user_logins"), 5);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn dump_and_restore_keep_the_ledger_and_dead_letters() {
    let queue = Emulator::shared().queue("dump");
    let mut db = shared_cluster().database("dump_source");
    set(&mut db, "queue_url", &queue.url);
    queue.send(&take_home_like(30, 59));
    assert_eq!(fetch_all(&mut db, 100, 30), 29);

    let file = shared_cluster().dir.join("dump_source.pgdump");
    let bin = sqs_ingest_it::cluster::bin();
    let port = shared_cluster().port.to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    let dump = Command::new(format!("{bin}/pg_dump"))
        .args(conn)
        .args(["-Fc", "-f"])
        .arg(&file)
        .arg("dump_source")
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    shared_cluster().connect("postgres").batch_execute("CREATE DATABASE dump_target").unwrap();
    let restore =
        Command::new(format!("{bin}/pg_restore")).args(conn).args(["-d", "dump_target"]).arg(&file).output().unwrap();
    // CREATE EXTENSION has already made user_logins, so the dump's CREATE TABLE is the one
    // error; its rows go into the table all the same.
    let errors = String::from_utf8_lossy(&restore.stderr);
    let unexpected: Vec<&str> = errors
        .lines()
        .filter(|l| {
            l.contains("error:")
                && !l.contains("relation \"user_logins\" already exists")
                && !l.contains("errors ignored on restore: 1")
        })
        .collect();
    assert!(unexpected.is_empty(), "{errors}");

    let mut restored = shared_cluster().connect("dump_target");
    for table in ["user_logins", "sqs_ingest.processed_messages", "sqs_ingest.dead_letters"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&mut restored, &sql), count(&mut db, &sql), "{table}");
    }
    assert_eq!(count(&mut restored, "SELECT count(*) FROM user_logins"), 29);
    // The dead-letter ids go on from where they were.
    let next: i64 = restored.query_one("SELECT nextval('sqs_ingest.dead_letters_id_seq')", &[]).unwrap().get(0);
    assert!(next > count(&mut restored, "SELECT max(id) FROM sqs_ingest.dead_letters"));
}

#[test]
fn each_kind_of_bad_body_is_one_dead_letter_with_its_reason() {
    let queue = Emulator::shared().queue("bad_bodies");
    let mut db = shared_cluster().database("bad_bodies");
    set(&mut db, "queue_url", &queue.url);
    let good = valid(1, 61).remove(0);
    let ip = field(&good, "ip").to_owned();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "body is not valid JSON"),
        ("[1, 2]".into(), "valid JSON but an array"),
        ("\"text\"".into(), "valid JSON but a string"),
        (good.replace("\"user_id\"", "\"uid\""), "field \"user_id\" is missing"),
        (good.replace(&format!("\"{ip}\""), "null"), "field \"ip\" is null"),
        (good.replace(&format!("\"{ip}\""), "16909060"), "field \"ip\" is a number, not a string"),
        (with_field(&good, "device_type", &"x".repeat(33)), "field \"device_type\" has 33 characters"),
        (with_field(&good, "locale", "R\\u0000U"), "field \"locale\" contains a NUL character"),
        (good.replacen('{', &format!("{{\"ip\": \"{ip}\", "), 1), "duplicate field"),
        (format!("\u{FEFF}{good}"), "body is not valid JSON"),
        (with_field(&good, "user_id", &"u".repeat(1_048_000)), "field \"user_id\" has 1048000 characters"),
    ];
    let mut bodies: Vec<String> = cases.iter().map(|(b, _)| b.clone()).collect();
    // Unknown fields, even a near-1 MiB one, are ignored: this one is a row.
    bodies.push(good.replacen('{', &format!("{{\"padding\": \"{}\", ", "p".repeat(1_048_000)), 1));
    queue.send(&bodies);

    assert_eq!(fetch_all(&mut db, 100, bodies.len() as i64), 1);
    let reasons: Vec<String> =
        db.query("SELECT reason FROM sqs_ingest.dead_letters", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(reasons.len(), cases.len(), "{reasons:?}");
    for (_, expected) in &cases {
        assert!(reasons.iter().any(|r| r.contains(expected)), "{expected}: {reasons:?}");
    }
    let leaked = count(
        &mut db,
        &format!("SELECT count(*) FROM sqs_ingest.dead_letters WHERE body LIKE '%{ip}%' AND body LIKE '{{%'"),
    );
    assert_eq!(leaked, 0, "ip is masked in every dead letter whose body is an object");
    let complete = count(
        &mut db,
        "SELECT count(*) FROM sqs_ingest.dead_letters WHERE message_id <> '' AND sent_at IS NOT NULL \
         AND receive_count = 1 AND received_at IS NOT NULL",
    );
    assert_eq!(complete, cases.len() as i64);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), bodies.len() as i64);
}

#[test]
fn old_ledger_entries_are_pruned_by_the_next_fetch() {
    let queue = Emulator::shared().queue("prune");
    let mut db = shared_cluster().database("prune");
    set(&mut db, "queue_url", &queue.url);
    db.batch_execute(
        "INSERT INTO sqs_ingest.processed_messages VALUES
             ('expired', now() - interval '15 days'), ('kept', now() - interval '13 days')",
    )
    .unwrap();
    assert_eq!(fetch(&mut db, 10), 0, "an empty queue still prunes");
    let left: Vec<String> = db
        .query("SELECT message_id FROM sqs_ingest.processed_messages", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["kept".to_owned()]);
}
