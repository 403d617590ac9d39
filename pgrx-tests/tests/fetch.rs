//! fetch_login_queue end to end: a real cluster, a real emulator, real commits.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::{field, take_home_like, with_field};
use sqs_ingest_it::{count, fetch_all, point_at, shared_cluster, wait_until, Cluster, Emulator, Queue};
use std::time::Duration;

/// A database of its own and a queue of its own for one test, the session pointed at it.
fn setup(name: &str) -> (Client, Queue<'static>) {
    let queue = Emulator::shared().queue(name);
    let mut db = shared_cluster().database(name);
    point_at(&mut db, &queue.url);
    (db, queue)
}

#[test]
fn take_home_queue_gives_99_rows_1_dead_letter_and_an_empty_queue() {
    let (mut db, queue) = setup("take_home");
    let bodies = take_home_like(100, 7);
    queue.send(&bodies);

    assert_eq!(fetch_all(&mut db, 1000, 100), 99);

    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 99);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins WHERE locale IS NULL"), 29);
    let reason: String = db.query_one("SELECT reason FROM sqs_ingest.dead_letters", &[]).unwrap().get(0);
    assert_eq!(reason, "field \"user_id\" is missing");
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), 100);
    // create_date is the UTC date SQS sent the message on (the messages were sent within the
    // minute around the dead letter's), whatever the session's time zone.
    db.batch_execute("SET TimeZone = 'Pacific/Kiritimati'").unwrap();
    let dated = "SELECT count(*) FROM user_logins, sqs_ingest.dead_letters d
                 WHERE create_date BETWEEN ((d.sent_at - interval '1 minute') AT TIME ZONE 'UTC')::date
                                       AND ((d.sent_at + interval '1 minute') AT TIME ZONE 'UTC')::date";
    assert_eq!(count(&mut db, dated), 99);
    assert_eq!(queue.counts(), (0, 0), "everything committed is deleted from the queue");

    // The documented lookup: a known IP finds its row through the same masking.
    let ip = field(&bodies[0], "ip");
    let found = count(&mut db, &format!("SELECT count(*) FROM user_logins WHERE masked_ip = mask_pii('{ip}')"));
    assert_eq!(found, 1);
    let raw = count(&mut db, &format!("SELECT count(*) FROM user_logins WHERE masked_ip = '{ip}' OR user_id = '{ip}'"));
    assert_eq!(raw, 0, "no raw IP is stored");
}

#[test]
fn rollback_leaves_messages_which_come_back_and_are_ingested_once() {
    let (mut db, queue) = setup("rollback");
    queue.send(&take_home_like(10, 11));
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();

    db.batch_execute("BEGIN").unwrap();
    assert_eq!(fetch_all(&mut db, 10, 10), 10);
    db.batch_execute("ROLLBACK").unwrap();

    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 0);
    let (visible, in_flight) = queue.counts();
    assert_eq!(visible + in_flight, 10, "a rollback deletes nothing");

    wait_until("the rolled-back messages to be visible again", Duration::from_secs(30), || queue.counts() == (10, 0));
    assert_eq!(fetch_all(&mut db, 100, 10), 10);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 10);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn rows_are_invisible_to_other_sessions_until_commit() {
    let (mut db, queue) = setup("visibility");
    queue.send(&take_home_like(5, 13));
    let mut other = shared_cluster().connect("visibility");

    db.batch_execute("BEGIN").unwrap();
    assert_eq!(fetch_all(&mut db, 10, 5), 5);
    assert_eq!(count(&mut other, "SELECT count(*) FROM user_logins"), 0);
    assert_eq!(queue.counts(), (0, 5), "nothing is deleted before COMMIT");
    db.batch_execute("COMMIT").unwrap();

    assert_eq!(count(&mut other, "SELECT count(*) FROM user_logins"), 5);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn rolled_back_savepoint_keeps_its_messages_in_the_queue() {
    let (mut db, queue) = setup("savepoint");
    queue.send(&take_home_like(4, 19));
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();
    db.batch_execute("BEGIN; SAVEPOINT s; SELECT fetch_login_queue(2); ROLLBACK TO SAVEPOINT s").unwrap();
    db.batch_execute("SAVEPOINT t; SELECT fetch_login_queue(2); RELEASE SAVEPOINT t; COMMIT").unwrap();

    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 2, "only the released savepoint's rows");
    wait_until("the rolled-back pair to be visible again", Duration::from_secs(30), || queue.counts() == (2, 0));
    assert_eq!(fetch_all(&mut db, 10, 2), 2);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn plpgsql_exception_block_forgets_the_messages_it_received() {
    let (mut db, queue) = setup("exception_block");
    queue.send(&take_home_like(3, 23));
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();
    db.batch_execute(
        "DO $$ BEGIN
             BEGIN
                 PERFORM fetch_login_queue(10);
                 RAISE EXCEPTION 'changed my mind';
             EXCEPTION WHEN raise_exception THEN NULL;
             END;
         END $$",
    )
    .unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 0);
    wait_until("the messages to be visible again", Duration::from_secs(30), || queue.counts() == (3, 0));
}

#[test]
fn prepare_transaction_after_a_fetch_is_refused() {
    let (mut db, queue) = setup("prepare");
    queue.send(&take_home_like(2, 29));
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();
    db.batch_execute("BEGIN; SELECT fetch_login_queue(10)").unwrap();
    let err = db.batch_execute("PREPARE TRANSACTION 'p1'").unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code(), &SqlState::FEATURE_NOT_SUPPORTED, "{db_err:?}");
    assert!(db_err.hint().is_some());
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 0);
    wait_until("the messages to be visible again", Duration::from_secs(30), || queue.counts() == (2, 0));
}

#[test]
fn take_home_table_with_integer_app_version_works_unchanged() {
    let queue = Emulator::shared().queue("integer_version");
    let mut admin = shared_cluster().connect("postgres");
    admin.batch_execute("CREATE DATABASE integer_version").unwrap();
    let mut db = shared_cluster().connect("integer_version");
    // The take-home's own DDL, created before the extension.
    db.batch_execute(
        "CREATE TABLE user_logins(user_id varchar(128), device_type varchar(32),
             masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32),
             app_version integer, create_date date);
         CREATE EXTENSION sqs_ingest",
    )
    .unwrap();
    point_at(&mut db, &queue.url);
    let login = take_home_like(1, 31).remove(0);
    let version = |v: &str| with_field(&login, "app_version", v);
    queue.send(&[version("2.3.0"), version("0.96"), version("1.100")]);
    assert_eq!(fetch_all(&mut db, 10, 3), 2);
    let mut versions: Vec<i32> =
        db.query("SELECT app_version FROM user_logins", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    versions.sort();
    assert_eq!(versions, vec![9600, 20300]);
    let reason: String = db.query_one("SELECT reason FROM sqs_ingest.dead_letters", &[]).unwrap().get(0);
    assert!(reason.contains("over 99"), "{reason}");
}

#[test]
fn drop_extension_keeps_user_logins() {
    let (mut db, queue) = setup("drop_extension");
    queue.send(&take_home_like(3, 37));
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
    db.batch_execute("DROP EXTENSION sqs_ingest").unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 3);
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 3, "kept, and used again");
}

#[test]
fn missing_column_is_an_error_before_anything_is_received() {
    let (mut db, queue) = setup("missing_column");
    queue.send(&take_home_like(1, 41));
    db.batch_execute("ALTER TABLE user_logins DROP COLUMN locale").unwrap();
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code(), &SqlState::UNDEFINED_COLUMN);
    assert!(db_err.message().contains("\"locale\""), "{}", db_err.message());
    assert_eq!(queue.counts(), (1, 0), "nothing was received");
}

#[test]
fn max_outside_1_to_10000_or_null_is_invalid_parameter_value() {
    let (mut db, _queue) = setup("bad_max");
    for max in ["0", "-1", "10001", "NULL"] {
        let err = db.query_one(&format!("SELECT fetch_login_queue({max})"), &[]).unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "max = {max}: {err}");
        let db_err = err.as_db_error().unwrap();
        assert!(db_err.hint().is_some(), "max = {max} has a HINT");
    }
}

#[test]
fn unreachable_endpoint_is_a_clear_error_and_loses_nothing() {
    let (mut db, queue) = setup("unreachable");
    queue.send(&take_home_like(3, 17));
    let closed = sqs_ingest_it::free_port();
    point_at(&mut db, &format!("http://127.0.0.1:{closed}/000000000000/unreachable"));

    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let db_err = err.as_db_error().expect("an ERROR from the server");
    assert_eq!(db_err.code(), &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION);
    assert!(db_err.message().contains(&format!("127.0.0.1:{closed}")), "{}", db_err.message());
    assert!(db_err.hint().is_some());

    point_at(&mut db, &queue.url);
    assert_eq!(fetch_all(&mut db, 10, 3), 3, "the real queue still has every message");
}

/// A server that does not preload sqs_ingest: CREATE EXTENSION loads the library in the session
/// (it used to end the session with FATAL: PostgreSQL refuses settings read at server start once
/// it runs), fetch_login_queue ingests, and the settings only workers read do not exist.
#[test]
fn without_the_preload_create_extension_and_fetch_work() {
    let queue = Emulator::shared().queue("no_preload");
    let c = Cluster::start("no_preload", &["shared_preload_libraries = ''".to_owned()], &AWS_ENV);
    let mut db = c.with_extension("postgres");
    point_at(&mut db, &queue.url);
    queue.send(&take_home_like(10, 13));
    assert_eq!(fetch_all(&mut db, 100, 10), 10);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status"), 0);
    let error = db.simple_query("SHOW sqs_ingest.workers").expect_err("no such setting without the preload");
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_OBJECT), "{error}");
    assert!(c.is_up() && c.log_lines("FATAL") == 0, "no session ended");
}
