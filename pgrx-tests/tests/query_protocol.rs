//! The take-home's own stack: an SQS server that speaks only the Query protocol (moto 4.1, as the
//! take-home's LocalStack image does), through fetch_login_queue and the worker, detected by
//! `sqs_ingest.protocol = auto` or named; and Query forced against a server that speaks both.
use postgres::error::SqlState;
use postgres::{Client, NoTls};
use sqs_ingest_it::logins::take_home_like;
use sqs_ingest_it::{count, fetch, fetch_all, point_at, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The take-home's data set, where shared/ lies beside the clone (CI, developers' machines).
fn take_home_records() -> Option<PathBuf> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fetch-takehome/login_messages.json");
    file.exists().then_some(file)
}

/// Fills `queue` with the take-home's 100 messages as the take-home sends them, or, without its
/// data set, with 100 generated ones of the same shape (99 logins and 1 malformed message).
fn fill_like_the_take_home(queue: &Queue) {
    match take_home_records() {
        Some(file) => queue.send_records(&file),
        None => {
            eprintln!("no shared/data/fetch-takehome beside the clone: generated messages of its shape instead");
            queue.send(&take_home_like(100, 2022));
        }
    }
}

fn point_at_in(db: &mut Client, queue_url: &str, protocol: &str) {
    point_at(db, queue_url);
    db.batch_execute(&format!("SET sqs_ingest.protocol = '{protocol}'")).unwrap();
}

#[test]
fn take_home_messages_through_fetch_login_queue_on_a_query_only_server() {
    let queue = Emulator::shared_query_only().queue("takehome_fetch");
    fill_like_the_take_home(&queue);
    let mut db = shared_cluster().database("query_fetch");
    point_at_in(&mut db, &queue.url, "auto");
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();

    // A rollback deletes nothing: the messages come back after their visibility timeout.
    db.batch_execute("BEGIN").unwrap();
    assert!(fetch(&mut db, 10) > 0);
    db.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 0);
    wait_until("the rolled-back messages to come back", WAIT, || queue.counts() == (100, 0));

    assert_eq!(fetch_all(&mut db, 200, 100), 99);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 99);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), 100);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM user_logins WHERE create_date IS NULL"),
        0,
        "SentTimestamp read from XML"
    );
    assert_eq!(queue.counts(), (0, 0), "deleted after commit, in the Query protocol");
    assert_eq!(shared_cluster().log_lines("speaks only the SQS Query protocol"), 1, "the detection is logged once");
}

#[test]
fn take_home_messages_through_the_worker_on_a_query_only_server() {
    let queue = Emulator::shared_query_only().queue("takehome_worker");
    fill_like_the_take_home(&queue);
    let c = Cluster::with_workers("query_worker", &queue.url, &[]);
    let mut db = c.with_extension("postgres");
    wait_until("99 rows and 1 dead letter", WAIT, || {
        count(&mut db, "SELECT count(*) FROM user_logins") == 99
            && count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters") == 1
    });
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE last_error IS NULL"), 1);
    assert_eq!(c.log_lines("speaks only the SQS Query protocol"), 1);
}

#[test]
fn json_named_against_a_query_only_server_says_what_it_answered_and_what_to_set() {
    let queue = Emulator::shared_query_only().queue("json_named");
    let mut db = shared_cluster().database("query_json_named");
    point_at_in(&mut db, &queue.url, "json");
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code(), &SqlState::EXTERNAL_ROUTINE_EXCEPTION);
    assert!(e.message().contains("does not speak the SQS JSON protocol"), "{}", e.message());
    assert!(e.message().contains("AWS.SimpleQueueService.NonExistentQueue: "), "code and message: {}", e.message());
    assert!(e.hint().unwrap().contains("sqs_ingest.protocol"), "{:?}", e.hint());
}

#[test]
fn query_errors_carry_the_code_and_message() {
    let emulator = Emulator::shared_query_only();
    let mut db = shared_cluster().database("query_errors");
    let missing = format!("{}/123456789012/no-such-queue", emulator.endpoint);
    point_at_in(&mut db, &missing, "query");
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code(), &SqlState::UNDEFINED_OBJECT);
    assert!(e.hint().unwrap().contains("region"), "{:?}", e.hint());
    assert!(
        e.message().ends_with("answered AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist for this wsdl version."),
        "{}",
        e.message()
    );
}

#[test]
fn query_named_against_a_server_that_speaks_both() {
    let queue = Emulator::shared().queue("query_named");
    queue.send(&take_home_like(30, 2023));
    let mut db = shared_cluster().database("query_named");
    point_at_in(&mut db, &queue.url, "query");
    assert_eq!(fetch_all(&mut db, 100, 30), 29);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 1);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn cancel_during_a_query_long_poll_returns_promptly() {
    let queue = Emulator::shared_query_only().queue("query_cancel");
    let mut db = shared_cluster().database("query_cancel");
    point_at_in(&mut db, &queue.url, "query");
    db.batch_execute("SET sqs_ingest.fetch_wait = 20").unwrap();
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let token = db.cancel_token();
    let caller = std::thread::spawn(move || {
        let result = db.query_one("SELECT fetch_login_queue(10)", &[]).map(|r| r.get::<_, i32>(0));
        (result, Instant::now())
    });
    let mut watch = shared_cluster().connect("query_cancel");
    // The backend has sent its ReceiveMessage once it is inside the call for a while; the
    // emulator then holds the long poll open for 20 s.
    wait_until("the long poll to be under way", WAIT, || {
        count(
            &mut watch,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' AND now() - query_start > interval '500 ms'"),
        ) == 1
    });
    let asked = Instant::now();
    token.cancel_query(NoTls).unwrap();
    let (result, ended) = caller.join().unwrap();
    let latency = ended - asked;
    eprintln!("cancel during a Query long poll: {} ms", latency.as_millis());
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert!(latency < Duration::from_millis(250), "cancel took {latency:?}");
}
