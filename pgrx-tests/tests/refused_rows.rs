//! Tables as users change them: a row the table refuses (a check constraint, a unique index, a
//! foreign key, a trigger that raises, a partitioned table without a partition for the row)
//! becomes one dead letter with the table's error, the rest of its batch is stored, and nothing
//! stalls; errors that are not about a row (permission, a read-only transaction, a lock held too
//! long) are raised, dead-letter nothing and lose nothing.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::logins::{field, valid, with_field};
use sqs_ingest_it::{
    count, fetch_all, holds_for, point_at, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT,
};
use std::time::Duration;

/// A database whose user_logins is altered by `alter` after CREATE EXTENSION, a queue holding
/// `good` valid logins and `bad`, and a session pointed at it.
fn setup(name: &str, alter: &str, good: usize, bad: &[String]) -> (Client, Queue<'static>) {
    let queue = Emulator::shared().queue(name);
    let mut db = shared_cluster().database(name);
    db.batch_execute(alter).unwrap();
    point_at(&mut db, &queue.url);
    let mut bodies = valid(good, name.len() as u64 * 7919);
    // Spread the refused ones among the good, so that each rides in a batch with good ones.
    for (i, b) in bad.iter().enumerate() {
        bodies.insert((i * 7 + 3).min(bodies.len()), b.clone());
    }
    queue.send(&bodies);
    (db, queue)
}

/// The dead letters' (sqlstate, constraint_name, table_name), sorted.
fn refusals(db: &mut Client) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    db.query("SELECT sqlstate, constraint_name, table_name FROM sqs_ingest.dead_letters ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn with_device(n: usize, device: &str, seed: u64) -> Vec<String> {
    valid(n, seed).iter().map(|b| with_field(b, "device_type", device)).collect()
}

#[test]
fn a_check_constraint_dead_letters_only_the_rows_it_refuses() {
    let bad = with_device(3, "windows", 11);
    let (mut db, queue) = setup(
        "refused_check",
        "ALTER TABLE user_logins ADD CONSTRAINT known_device CHECK (device_type IN ('android', 'ios'))",
        30,
        &bad,
    );
    assert_eq!(fetch_all(&mut db, 100, 33), 30);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 30);
    let expected = (Some("23514".to_owned()), Some("known_device".to_owned()), Some("user_logins".to_owned()));
    assert_eq!(refusals(&mut db), vec![expected; 3]);
    let (reason, message, body): (String, String, String) = db
        .query_one("SELECT reason, error_message, body FROM sqs_ingest.dead_letters LIMIT 1", &[])
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!(reason.starts_with("refused by "), "{reason}");
    assert!(message.contains("violates check constraint \"known_device\""), "{message}");
    // The kept body is masked like every dead letter's: no raw ip or device_id.
    let raw_ips: Vec<&str> = bad.iter().map(|b| field(b, "ip")).collect();
    assert!(!raw_ips.iter().any(|ip| body.contains(ip)), "{body}");
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), 33);
    assert_eq!(queue.counts(), (0, 0), "nothing waits in the queue");
}

#[test]
fn a_unique_index_refuses_the_second_login_of_a_user() {
    let first = valid(1, 13).remove(0);
    let again = with_field(&first, "ip", "10.0.0.1");
    let (mut db, queue) =
        setup("refused_unique", "CREATE UNIQUE INDEX one_login_per_user ON user_logins (user_id)", 20, &[first, again]);
    assert_eq!(fetch_all(&mut db, 100, 22), 21);
    let expected = (Some("23505".to_owned()), Some("one_login_per_user".to_owned()), Some("user_logins".to_owned()));
    assert_eq!(refusals(&mut db), vec![expected]);
    let detail: Option<String> = db.query_one("SELECT error_detail FROM sqs_ingest.dead_letters", &[]).unwrap().get(0);
    assert!(detail.is_some_and(|d| d.contains("already exists") && !d.contains("10.0.0.1")));
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn a_foreign_key_refuses_unknown_users() {
    let known = valid(10, 17);
    let users: Vec<String> = known.iter().map(|b| format!("('{}')", field(b, "user_id"))).collect();
    let alter = format!(
        "CREATE TABLE users (user_id varchar(128) PRIMARY KEY); INSERT INTO users VALUES {};
         ALTER TABLE user_logins ADD CONSTRAINT login_user FOREIGN KEY (user_id) REFERENCES users",
        users.join(", ")
    );
    let queue = Emulator::shared().queue("refused_fk");
    let mut db = shared_cluster().database("refused_fk");
    db.batch_execute(&alter).unwrap();
    point_at(&mut db, &queue.url);
    let mut bodies = known;
    bodies.extend(valid(4, 19));
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut db, 100, 14), 10);
    let expected = (Some("23503".to_owned()), Some("login_user".to_owned()), Some("user_logins".to_owned()));
    assert_eq!(refusals(&mut db), vec![expected; 4]);
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn a_trigger_that_raises_refuses_its_rows() {
    let (mut db, queue) = setup(
        "refused_trigger",
        "CREATE FUNCTION no_windows() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.device_type = 'windows' THEN RAISE EXCEPTION 'no windows logins'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER no_windows BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION no_windows()",
        25,
        &with_device(2, "windows", 23),
    );
    assert_eq!(fetch_all(&mut db, 100, 27), 25);
    assert_eq!(refusals(&mut db), vec![(Some("P0001".to_owned()), None, Some("user_logins".to_owned())); 2]);
    let message: String =
        db.query_one("SELECT error_message FROM sqs_ingest.dead_letters LIMIT 1", &[]).unwrap().get(0);
    assert_eq!(message, "no windows logins");
    assert_eq!(queue.counts(), (0, 0));
}

#[test]
fn a_partitioned_table_without_a_partition_for_the_day_refuses_its_rows() {
    let queue = Emulator::shared().queue("refused_partition");
    let name = "refused_partition";
    let mut admin = shared_cluster().connect("postgres");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let mut db = shared_cluster().connect(name);
    // The user's own table, partitioned by day and created before the extension, which uses it.
    db.batch_execute(
        "CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
                                   masked_device_id varchar(256), locale varchar(32), app_version integer,
                                   create_date date) PARTITION BY RANGE (create_date);
         CREATE TABLE user_logins_2000 PARTITION OF user_logins FOR VALUES FROM ('2000-01-01') TO ('2001-01-01');
         CREATE EXTENSION sqs_ingest",
    )
    .unwrap();
    point_at(&mut db, &queue.url);
    queue.send(&valid(12, 29));
    assert_eq!(fetch_all(&mut db, 100, 12), 0);
    let expected = (Some("23514".to_owned()), None, Some("user_logins".to_owned()));
    assert_eq!(refusals(&mut db), vec![expected; 12]);
    assert_eq!(queue.counts(), (0, 0), "no message waits for a partition that may never come");
}

#[test]
fn errors_about_the_table_or_session_are_raised_and_lose_nothing() {
    let (mut db, queue) = setup("refused_not_rows", "SELECT 1", 10, &[]);
    db.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();
    let raised = |db: &mut Client, sql: &str| -> SqlState {
        db.batch_execute(sql).expect_err(sql).code().cloned().unwrap_or_else(|| panic!("{sql}: no SQLSTATE"))
    };
    let back = |queue: &Queue| wait_until("the messages to come back", WAIT, || queue.counts() == (10, 0));

    // A read-only transaction.
    assert_eq!(raised(&mut db, "BEGIN READ ONLY; SELECT fetch_login_queue(100)"), SqlState::READ_ONLY_SQL_TRANSACTION);
    db.batch_execute("ROLLBACK").unwrap();
    assert_eq!(queue.counts(), (10, 0), "refused before receiving: nothing in flight");

    // Permission denied: an operator whose INSERT on the table was revoked.
    db.batch_execute(
        "DROP ROLE IF EXISTS refused_operator; CREATE ROLE refused_operator LOGIN IN ROLE sqs_ingest_operator;
         REVOKE INSERT ON user_logins FROM sqs_ingest_operator",
    )
    .unwrap();
    db.batch_execute(&format!("ALTER ROLE refused_operator SET sqs_ingest.queue_url = '{}'", queue.url)).unwrap();
    let mut operator = shared_cluster().connect_as("refused_not_rows", "refused_operator");
    operator.batch_execute("SET sqs_ingest.visibility_timeout = 1").unwrap();
    assert_eq!(raised(&mut operator, "SELECT fetch_login_queue(100)"), SqlState::INSUFFICIENT_PRIVILEGE);
    back(&queue);

    // A lock held longer than the caller's lock_timeout.
    let mut holder = shared_cluster().connect("refused_not_rows");
    holder.batch_execute("BEGIN; LOCK TABLE user_logins").unwrap();
    assert_eq!(
        raised(&mut db, "SET lock_timeout = '200ms'; SELECT fetch_login_queue(100)"),
        SqlState::LOCK_NOT_AVAILABLE
    );
    holder.batch_execute("ROLLBACK").unwrap();
    back(&queue);

    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0, "no dead letter for any of them");
    assert_eq!(fetch_all(&mut db, 100, 10), 10, "nothing lost");
}

#[test]
fn the_worker_stores_the_rest_dead_letters_the_refused_and_waits_out_a_lock() {
    let queue = Emulator::shared().queue("refused_worker");
    let c = Cluster::with_workers("refused_worker", &queue.url, &["sqs_ingest.worker_lock_timeout = 300"]);
    let mut db = c.with_extension("postgres");
    db.batch_execute("ALTER TABLE user_logins ADD CONSTRAINT known_device CHECK (device_type IN ('android', 'ios'))")
        .unwrap();
    let mut bodies = valid(300, 31);
    for (i, b) in with_device(5, "windows", 37).into_iter().enumerate() {
        bodies.insert(i * 60, b);
    }
    queue.send(&bodies);
    let stored = |db: &mut Client| {
        (count(db, "SELECT count(*) FROM user_logins"), count(db, "SELECT count(*) FROM sqs_ingest.dead_letters"))
    };
    wait_until("300 rows and 5 dead letters", WAIT, || stored(&mut db) == (300, 5));
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE sqlstate = '23514'"), 5);

    // A user holds the table past the worker's lock timeout: the worker backs off and says so
    // once, then catches up when the lock is gone.
    let mut holder = c.connect("postgres");
    holder.batch_execute("BEGIN; LOCK TABLE user_logins").unwrap();
    queue.send(&valid(20, 41));
    wait_until("the worker to report the lock timeout", WAIT, || c.log_lines("lock timeout") >= 1);
    // Several backoff rounds (1 s cap) pass while the lock is held: it is logged once.
    holds_for("one log line for the lock", Duration::from_secs(3), || c.log_lines("lock timeout") == 1);
    holder.batch_execute("COMMIT").unwrap();
    wait_until("the 20 to arrive", WAIT, || stored(&mut db) == (320, 5));
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
}

#[test]
fn retry_dead_letters_stores_what_the_table_accepts_once_the_cause_is_fixed() {
    let windows = with_device(3, "windows", 43);
    let mut bad = windows.clone();
    bad.push("not json".to_owned());
    let (mut db, _queue) = setup(
        "refused_retry",
        "ALTER TABLE user_logins ADD CONSTRAINT known_device CHECK (device_type IN ('android', 'ios'))",
        10,
        &bad,
    );
    assert_eq!(fetch_all(&mut db, 100, 14), 10);
    let retry = |db: &mut Client, ids: Option<Vec<i64>>| -> i32 {
        db.query_one("SELECT sqs_ingest.retry_dead_letters($1)", &[&ids]).unwrap().get(0)
    };
    assert_eq!(retry(&mut db, None), 0, "still refused");
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE sqlstate = '23514'"), 3);

    // Only operators (and superusers) may retry.
    db.batch_execute("DROP ROLE IF EXISTS retry_nobody; CREATE ROLE retry_nobody LOGIN").unwrap();
    let mut nobody = shared_cluster().connect_as("refused_retry", "retry_nobody");
    for name in ["sqs_ingest.retry_dead_letters", "retry_dead_letters"] {
        let denied = nobody.query_one(&format!("SELECT {name}()"), &[]).unwrap_err();
        assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{name}");
    }

    db.batch_execute("ALTER TABLE user_logins DROP CONSTRAINT known_device").unwrap();
    let first: i64 =
        db.query_one("SELECT min(id) FROM sqs_ingest.dead_letters WHERE sqlstate IS NOT NULL", &[]).unwrap().get(0);
    assert_eq!(retry(&mut db, Some(vec![first])), 1, "only the one named");
    assert_eq!(retry(&mut db, None), 2);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 13);
    let left: Vec<String> =
        db.query("SELECT reason FROM sqs_ingest.dead_letters", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left.len(), 1, "the body that is not JSON stays: {left:?}");
    assert!(left[0].starts_with("body is not valid JSON"), "{left:?}");
    // The rows equal what a first ingest would have stored: masked once, dated by SentTimestamp.
    for body in &windows {
        let same = format!(
            "SELECT count(*) FROM user_logins WHERE user_id = '{}' AND masked_ip = mask_pii('{}')
               AND masked_device_id = mask_pii('{}') AND create_date = (SELECT max(create_date) FROM user_logins)",
            field(body, "user_id"),
            field(body, "ip"),
            field(body, "device_id")
        );
        assert_eq!(count(&mut db, &same), 1, "{body}");
    }
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), 14);
}

#[test]
fn a_worker_transaction_past_its_statement_timeout_rolls_back_and_catches_up() {
    let queue = Emulator::shared().queue("worker_statement_timeout");
    let c =
        Cluster::with_workers("worker_statement_timeout", &queue.url, &["sqs_ingest.worker_statement_timeout = 1000"]);
    let mut db = c.with_extension("postgres");
    // A user's slow trigger: every batch now runs past the worker's statement timeout.
    db.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON user_logins FOR EACH STATEMENT EXECUTE FUNCTION slow()",
    )
    .unwrap();
    queue.send(&valid(15, 47));
    wait_until("the worker to report the timeout", WAIT, || c.log_lines("statement timeout") >= 1);
    holds_for("nothing stored, logged once", Duration::from_secs(3), || {
        count(&mut db, "SELECT count(*) FROM user_logins") == 0 && c.log_lines("statement timeout") == 1
    });
    db.batch_execute("DROP TRIGGER slow ON user_logins").unwrap();
    wait_until("the 15 to arrive", WAIT, || count(&mut db, "SELECT count(*) FROM user_logins") == 15);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0, "a timeout is not a refusal");
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
}
