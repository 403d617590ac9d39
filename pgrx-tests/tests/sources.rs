//! Sources: any queue into any table through SQL expressions, with fetch_source and the
//! workers, checked when created, run with their owner's rights, kept by pg_dump.
use postgres::Client;
use sqs_ingest_it::cluster::bin;
use sqs_ingest_it::{count, holds_for, ingest, refused, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT};
use std::process::Command;
use std::time::{Duration, Instant};

const ORDERS: &str = r#"{"order_id": "body->>'id'", "total": "(body->>'total')::numeric", "email_hash": "mask_pii(body->>'email')", "ordered_at": "sent_at"}"#;

fn orders_table(db: &mut Client, table: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE {table} (order_id text PRIMARY KEY, total numeric(10,2) CHECK (total >= 0),
                               email_hash text, ordered_at timestamptz NOT NULL)"
    ))
    .unwrap();
}

fn order(i: usize) -> String {
    format!(r#"{{"id": "o-{i}", "total": "{}.{:02}", "email": "buyer{i}@example.com"}}"#, i * 3, i % 100)
}

fn create_source(db: &mut Client, name: &str, queue: &Queue, table: &str, columns: Option<&str>) {
    db.execute(
        "SELECT sqs_ingest.create_source($1, $2, $3::text::regclass, $4::text::jsonb)",
        &[&name, &queue.url, &table, &columns],
    )
    .unwrap_or_else(|e| panic!("create_source {name}: {e:?}"));
}

/// `sqs_ingest.fetch_source(name, max)` until `messages` more are in the ledger: the rows.
fn fetch_all(db: &mut Client, name: &str, max: i32, messages: i64) -> i32 {
    ingest(db, &format!("SELECT sqs_ingest.fetch_source('{name}', {max})"), messages)
}

#[test]
fn an_orders_queue_becomes_rows_through_expressions_and_bad_messages_become_dead_letters() {
    let c = shared_cluster();
    let mut db = c.database("sources_orders");
    orders_table(&mut db, "orders");
    let queue = Emulator::shared().queue("sources_orders");
    create_source(&mut db, "orders", &queue, "orders", Some(ORDERS));
    let mut bodies: Vec<String> = (1..=25).map(order).collect();
    bodies.push("not json".to_owned());
    bodies.push("[1, 2]".to_owned());
    bodies.push(r#"{"id": "o-bad-cast", "total": "abc", "email": "x@example.com"}"#.to_owned());
    bodies.push(r#"{"id": "o-negative", "total": "-1", "email": "y@example.com"}"#.to_owned());
    queue.send(&bodies);

    assert_eq!(fetch_all(&mut db, "orders", 100, 29), 25);
    assert_eq!(count(&mut db, "SELECT count(*) FROM orders"), 25);
    let row = db.query_one("SELECT total::text, email_hash = mask_pii('buyer7@example.com'), ordered_at > now() - interval '5 minutes' FROM orders WHERE order_id = 'o-7'", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "21.07");
    assert!(row.get::<_, bool>(1), "email masked by mask_pii");
    assert!(row.get::<_, bool>(2), "ordered_at is the message's SentTimestamp");
    let reasons: Vec<(String, Option<String>)> = db
        .query("SELECT reason, sqlstate FROM sqs_ingest.dead_letters WHERE source = 'orders' ORDER BY reason", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(r, s)| r.contains("invalid input syntax for type numeric") && s.as_deref() == Some("22P02")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(r, s)| r.contains("orders_total_check") && s.as_deref() == Some("23514")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(r, _)| r.contains("not valid JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|(r, _)| r.contains("an array")), "{reasons:?}");
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), 29);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    let status = db
        .query_one("SELECT received - duplicates_skipped, rows, dead_letters, receive_requests > 0, delete_requests > 0, newest_sent_at IS NOT NULL FROM sqs_ingest.source_status WHERE source = 'orders'", &[])
        .unwrap();
    // A message received again (its delete too slow on a busy machine) counts as received and
    // as a duplicate skipped, never as a second row.
    assert_eq!((status.get::<_, i64>(0), status.get::<_, i64>(1), status.get::<_, i64>(2)), (29, 25, 4));
    assert!(status.get::<_, bool>(3) && status.get::<_, bool>(4) && status.get::<_, bool>(5));

    // The cause fixed, the refused row is retried from its dead letter.
    db.batch_execute("ALTER TABLE orders DROP CONSTRAINT orders_total_check").unwrap();
    let retried: i32 = db.query_one("SELECT sqs_ingest.retry_dead_letters()", &[]).unwrap().get(0);
    assert_eq!(retried, 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM orders WHERE order_id = 'o-negative'"), 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE source = 'orders'"), 3);

    // The same orders sent again (new message ids): the table's primary key refuses them.
    queue.send(&bodies[..5]);
    assert_eq!(fetch_all(&mut db, "orders", 100, 5), 0);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE source = 'orders' AND constraint_name = 'orders_pkey' AND table_name = 'orders'"),
        5
    );
}

#[test]
fn without_columns_the_body_keys_fill_columns_of_the_same_names_and_defaults_stay() {
    let c = shared_cluster();
    let mut db = c.database("sources_keys");
    db.batch_execute(
        "CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, amount integer,
                              at timestamptz NOT NULL DEFAULT now(), doubled integer GENERATED ALWAYS AS (amount * 2) STORED)",
    )
    .unwrap();
    let queue = Emulator::shared().queue("sources_keys");
    create_source(&mut db, "events", &queue, "events", None);
    queue.send(&[
        r#"{"kind": "click", "amount": 3, "extra": true}"#.to_owned(),
        r#"{"kind": "view"}"#.to_owned(),
        r#"{"kind": "view", "amount": "many"}"#.to_owned(),
    ]);
    assert_eq!(fetch_all(&mut db, "events", 10, 3), 2);
    let rows: Vec<(String, Option<i32>, Option<i32>, bool)> = db
        .query("SELECT kind, amount, doubled, at IS NOT NULL AND id > 0 FROM events ORDER BY kind", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(rows, vec![("click".into(), Some(3), Some(6), true), ("view".into(), None, None, true)]);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE source = 'events' AND sqlstate = '22P02'"),
        1
    );
}

#[test]
fn bad_sources_are_refused_when_created_or_altered_with_a_hint() {
    let c = shared_cluster();
    let mut db = c.database("sources_refused");
    orders_table(&mut db, "orders");
    db.batch_execute("CREATE VIEW orders_view AS SELECT * FROM orders").unwrap();
    let url = "http://127.0.0.1:9/000000000000/q";
    let create = |columns: &str, table: &str| {
        format!("SELECT sqs_ingest.create_source('o', '{url}', '{table}', '{}')", columns.replace('\'', "''"))
    };
    let cases = [
        (create(r#"{"no_such": "body->>'id'"}"#, "orders"), "42703", "has no column \"no_such\""),
        (create(r#"{"order_id": "body->>'id' AS id"}"#, "orders"), "42601", "syntax error"),
        (create(r#"{"order_id": "body->>'id'", "total": "body->>'total'"}"#, "orders"), "42804", "is of type numeric"),
        (create(r#"{"order_id": "no_such_function(body)"}"#, "orders"), "42883", "does not exist"),
        (create(r#"{"order_id": 5}"#, "orders"), "22023", "something else than an SQL expression"),
        (create(r#"{"order_id": "body->>'id'"}"#, "orders_view"), "42809", "is not a table"),
        (
            "SELECT sqs_ingest.create_source('bad name', 'http://127.0.0.1:9/q', 'orders')".to_owned(),
            "42602",
            "invalid source name",
        ),
        (
            "SELECT sqs_ingest.create_source('o', 'ftp://x/q', 'orders')".to_owned(),
            "22023",
            "not an http:// or https:// URL",
        ),
        (
            "SELECT sqs_ingest.create_source(NULL, 'http://127.0.0.1:9/q', 'orders')".to_owned(),
            "22004",
            "name must not be NULL",
        ),
        (
            "SELECT sqs_ingest.create_source('login', 'http://127.0.0.1:9/q', 'orders')".to_owned(),
            "42710",
            "already exists",
        ),
        (
            "SELECT sqs_ingest.alter_source('login', queue_url => 'http://127.0.0.1:9/q')".to_owned(),
            "0A000",
            "built-in source login",
        ),
        ("SELECT sqs_ingest.drop_source('login')".to_owned(), "0A000", "cannot be dropped"),
        ("SELECT sqs_ingest.drop_source('nope')".to_owned(), "42704", "does not exist"),
        ("SELECT sqs_ingest.fetch_source('nope')".to_owned(), "42704", "does not exist"),
    ];
    for (sql, code, text) in &cases {
        let (got_code, message, _) = refused(&mut db, sql);
        assert_eq!((got_code.as_str(), message.contains(text)), (*code, true), "{sql}: {message}");
    }
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.sources"), 1, "only login");

    // A good source, then an alteration that would break it: refused, the source unchanged.
    db.batch_execute(&format!(
        "SELECT sqs_ingest.create_source('o', '{url}', 'orders', '{ORDERS}')",
        ORDERS = ORDERS.replace('\'', "''")
    ))
    .unwrap();
    let (code, _, _) =
        refused(&mut db, r#"SELECT sqs_ingest.alter_source('o', columns => '{"order_id": "sent_at + 1"}')"#);
    assert_eq!(code, "42883");
    db.batch_execute("SELECT sqs_ingest.alter_source('o', enabled => false)").unwrap();
    let (code, message, _) = refused(&mut db, "SELECT sqs_ingest.fetch_source('o')");
    assert_eq!((code.as_str(), message.contains("is disabled")), ("55000", true), "{message}");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM sqs_ingest.sources WHERE name = 'o' AND columns ? 'total' AND NOT enabled"
        ),
        1
    );
    db.batch_execute("SELECT sqs_ingest.drop_source('o')").unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.sources"), 1);
}

#[test]
fn pg_dump_and_restore_keep_the_sources_and_drop_extension_keeps_the_tables() {
    let c = shared_cluster();
    let mut db = c.database("sources_dump");
    orders_table(&mut db, "orders");
    let queue = Emulator::shared().queue("sources_dump");
    create_source(&mut db, "orders", &queue, "orders", Some(ORDERS));
    let dump = c.dir.join("sources_dump.sql");
    let out = Command::new(format!("{}/pg_dump", bin()))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &c.port.to_string(),
            "-f",
            dump.to_str().unwrap(),
            "sources_dump",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut admin = c.connect("postgres");
    admin.batch_execute("DROP DATABASE IF EXISTS sources_restored").unwrap();
    admin.batch_execute("CREATE DATABASE sources_restored").unwrap();
    let out = Command::new(format!("{}/psql", bin()))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-h", "127.0.0.1", "-U", "postgres", "-p", &c.port.to_string()])
        .args(["-f", dump.to_str().unwrap(), "sources_restored"])
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let mut restored = c.connect("sources_restored");
    let sources = "SELECT string_agg(format('%s %s %s %s', name, queue_url, target, columns), '; ' ORDER BY name) FROM sqs_ingest.sources";
    let before: String = db.query_one(sources, &[]).unwrap().get(0);
    let after: String = restored.query_one(sources, &[]).unwrap().get(0);
    assert_eq!(after, before);
    queue.send(&[order(1)]);
    assert_eq!(fetch_all(&mut restored, "orders", 10, 1), 1, "the restored source ingests");

    db.batch_execute("DROP EXTENSION sqs_ingest").unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'user_logins')"), 2);
}

/// The source's enabled flag and target, as the catalog shows them.
fn source_state(db: &mut Client, name: &str) -> (bool, String) {
    let row = db.query_one("SELECT enabled, target::text FROM sqs_ingest.sources WHERE name = $1", &[&name]).unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn dropping_a_sources_table_or_a_column_it_fills_disables_it_with_a_warning_and_loses_nothing() {
    let c = shared_cluster();
    c.database("sources_dropped");
    let (mut db, notices) = c.connect_collecting_notices("sources_dropped");
    let warnings = || -> Vec<String> {
        let mut said = notices.lock().unwrap();
        let warned = said.iter().filter(|n| n.starts_with("WARNING") && !n.contains("pii_key")).cloned().collect();
        said.clear();
        warned
    };
    db.batch_execute("CREATE SCHEMA shop").unwrap();
    orders_table(&mut db, "shop.orders");
    db.batch_execute("ALTER TABLE shop.orders ADD COLUMN note text").unwrap();
    let queue = Emulator::shared().queue("sources_dropped");
    create_source(&mut db, "orders", &queue, "shop.orders", Some(ORDERS));
    queue.send(&[order(1)]);
    assert_eq!(fetch_all(&mut db, "orders", 10, 1), 1);

    // A column the mapping does not fill: nothing to say.
    db.batch_execute("ALTER TABLE shop.orders DROP COLUMN note").unwrap();
    assert_eq!(warnings(), Vec::<String>::new());
    assert_eq!(source_state(&mut db, "orders"), (true, "shop.orders".to_owned()));

    // A column it fills: disabled, said so, and its messages wait in the queue.
    db.batch_execute("ALTER TABLE shop.orders DROP COLUMN email_hash").unwrap();
    let said = warnings();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with(
            "WARNING: sqs_ingest: source \"orders\" is disabled: column \"email_hash\" of shop.orders, which its mapping fills, was dropped\nHINT: Add the column again, or map without it"
        ),
        "{said:?}"
    );
    assert_eq!(source_state(&mut db, "orders"), (false, "shop.orders".to_owned()));
    queue.send(&[order(2)]);
    let (code, message, _) = refused(&mut db, "SELECT sqs_ingest.fetch_source('orders')");
    assert_eq!((code.as_str(), message.contains("is disabled")), ("55000", true), "{message}");
    assert_eq!(queue.counts(), (1, 0));
    db.batch_execute(
        "ALTER TABLE shop.orders ADD COLUMN email_hash text; SELECT sqs_ingest.alter_source('orders', enabled => true)",
    )
    .unwrap();
    assert_eq!(fetch_all(&mut db, "orders", 10, 1), 1);

    // Its table dropped and made again: disabled until pointed at the new table.
    db.batch_execute("DROP TABLE shop.orders").unwrap();
    let said = warnings();
    assert_eq!(
        said,
        ["WARNING: sqs_ingest: source \"orders\" is disabled: its table shop.orders was dropped\nHINT: Once the table exists again: SELECT sqs_ingest.alter_source('orders', target => 'shop.orders', enabled => true); or SELECT sqs_ingest.drop_source('orders'). Its messages wait in the queue."]
    );
    assert!(!source_state(&mut db, "orders").0);
    orders_table(&mut db, "shop.orders");
    queue.send(&[order(3)]);
    let (code, message, _) = refused(&mut db, "SELECT sqs_ingest.alter_source('orders', enabled => true)");
    assert_eq!((code.as_str(), message.contains("not a table")), ("42809", true), "{message}");
    db.batch_execute("SELECT sqs_ingest.alter_source('orders', target => 'shop.orders', enabled => true)").unwrap();
    assert_eq!(fetch_all(&mut db, "orders", 10, 1), 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM shop.orders WHERE order_id = 'o-3'"), 1);

    // A schema dropped with everything in it, as pg_restore --clean and teardown scripts do:
    // never refused.
    db.batch_execute("DROP SCHEMA shop CASCADE").unwrap();
    assert_eq!(warnings().len(), 1);
    assert!(!source_state(&mut db, "orders").0);
    db.batch_execute("SELECT sqs_ingest.drop_source('orders')").unwrap();
    assert_eq!(queue.counts(), (0, 0));

    // A table's owner without any right on the catalog drops it: the source is disabled all the
    // same (the trigger's function runs with the extension owner's rights).
    db.batch_execute(
        "DROP ROLE IF EXISTS dropping_owner; CREATE ROLE dropping_owner LOGIN;
         CREATE TABLE owned_orders (order_id text); ALTER TABLE owned_orders OWNER TO dropping_owner",
    )
    .unwrap();
    create_source(&mut db, "owned", &queue, "owned_orders", Some(r#"{"order_id": "body->>'id'"}"#));
    c.connect_as("sources_dropped", "dropping_owner").batch_execute("DROP TABLE owned_orders").unwrap();
    assert!(!source_state(&mut db, "owned").0);
    db.batch_execute("SELECT sqs_ingest.drop_source('owned'); DROP ROLE dropping_owner").unwrap();

    // Dropping the extension, which drops the catalog with the trigger, says nothing of sources.
    db.batch_execute("DROP EXTENSION sqs_ingest").unwrap();
    assert_eq!(warnings(), Vec::<String>::new());
}

#[test]
fn workers_serve_a_source_within_10_seconds_of_create_alter_and_drop() {
    let emulator = Emulator::shared();
    let logins = emulator.queue("sources_worker_logins");
    let queue = emulator.queue("sources_worker_orders");
    let c = Cluster::with_workers(
        "sources_worker",
        &logins.url,
        &["sqs_ingest.worker_wait = 20", "sqs_ingest.workers = 2"],
    );
    let mut db = c.with_extension("postgres");
    orders_table(&mut db, "orders");
    queue.send(&(1..=5).map(order).collect::<Vec<_>>());
    // Every worker is in a 20-second long poll of the login queue when the source is created.
    wait_until("the workers polling", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE state = 'polling'") == 2
    });
    let created = Instant::now();
    create_source(&mut db, "orders", &queue, "orders", Some(ORDERS));
    wait_until("the first rows", Duration::from_secs(10), || count(&mut db, "SELECT count(*) FROM orders") == 5);
    eprintln!("create_source to 5 rows with the worker on: {} ms", created.elapsed().as_millis());
    // The worker serving orders takes it and the login source in turn, and says which.
    wait_until("a worker naming orders", WAIT, || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE source = 'orders'") == 1
    });

    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    db.batch_execute("SELECT sqs_ingest.alter_source('orders', enabled => false)").unwrap();
    wait_until("no worker on orders", Duration::from_secs(10), || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE source = 'orders'") == 0
    });
    // A poll given up when the source was disabled may still take these on the server's side
    // (they come back after the visibility timeout): what counts is that no row is written.
    queue.send(&(6..=8).map(order).collect::<Vec<_>>());
    holds_for("a disabled source writing nothing", Duration::from_secs(3), || {
        count(&mut db, "SELECT count(*) FROM orders") == 5
    });
    db.batch_execute("SELECT sqs_ingest.alter_source('orders', enabled => true)").unwrap();
    wait_until("the rows sent while disabled", WAIT, || count(&mut db, "SELECT count(*) FROM orders") == 8);

    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    db.batch_execute("SELECT sqs_ingest.drop_source('orders')").unwrap();
    wait_until("no worker on orders", Duration::from_secs(10), || {
        count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE source = 'orders'") == 0
    });
    queue.send(&[order(9)]);
    holds_for("a dropped source writing nothing", Duration::from_secs(3), || {
        count(&mut db, "SELECT count(*) FROM orders") == 8
    });
    // The login source went on meanwhile.
    logins.send(&sqs_ingest_it::logins::valid(3, 5));
    wait_until("logins", WAIT, || count(&mut db, "SELECT count(*) FROM user_logins") == 3);
}

#[test]
fn a_source_runs_with_its_owners_rights_never_the_workers() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("sources_owner");
    let endpoint = queue.url.rsplitn(3, '/').nth(2).unwrap().to_owned();
    let c = Cluster::with_workers(
        "sources_owner",
        "http://127.0.0.1:9/000000000000/unused",
        &["sqs_ingest.workers = 1", &format!("sqs_ingest.endpoint_url = '{endpoint}'")],
    );
    let mut db = c.with_extension("postgres");
    orders_table(&mut db, "orders");
    db.batch_execute(
        "CREATE ROLE alice LOGIN IN ROLE sqs_ingest_operator;
         GRANT EXECUTE ON FUNCTION sqs_ingest.create_source,
                                   sqs_ingest.alter_source TO alice;
         CREATE FUNCTION secret(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
         REVOKE ALL ON FUNCTION secret(text) FROM PUBLIC;
         SELECT sqs_ingest.alter_source('login', enabled => false);",
    )
    .unwrap();
    let mut alice = c.connect_as("postgres", "alice");
    let create = |columns: &str| {
        format!(
            "SELECT sqs_ingest.create_source('orders', '{}', 'orders', '{}')",
            queue.url,
            columns.replace('\'', "''")
        )
    };
    // No INSERT on the table: refused when created.
    let (code, message, _) = refused(&mut alice, &create(ORDERS));
    assert_eq!((code.as_str(), message.contains("permission denied for table orders")), ("42501", true), "{message}");
    // A function she may not execute: refused, and said so.
    db.batch_execute("GRANT SELECT, INSERT ON orders TO alice").unwrap();
    let (code, message, _) = refused(&mut alice, &create(&ORDERS.replace("mask_pii(", "secret(")));
    assert_eq!(
        (code.as_str(), message.contains("permission denied for function secret")),
        ("42501", true),
        "{message}"
    );
    // Outside AWS, only where the superuser configured the endpoint.
    db.batch_execute("ALTER SYSTEM SET sqs_ingest.endpoint_url = ''").unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", WAIT, || {
        c.connect("postgres").query_one("SHOW sqs_ingest.endpoint_url", &[]).unwrap().get::<_, String>(0).is_empty()
    });
    let (code, message, _) = refused(&mut c.connect_as("postgres", "alice"), &create(ORDERS));
    assert_eq!((code.as_str(), message.contains("only a superuser")), ("42501", true), "{message}");
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.endpoint_url = '{endpoint}'")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", WAIT, || {
        !c.connect("postgres").query_one("SHOW sqs_ingest.endpoint_url", &[]).unwrap().get::<_, String>(0).is_empty()
    });
    let mut alice = c.connect_as("postgres", "alice");
    alice.batch_execute(&create(ORDERS)).unwrap();
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM sqs_ingest.sources WHERE name = 'orders' AND owner = 'alice'::regrole"),
        1
    );

    // Her right revoked, the superuser's worker does not write for her: the batch waits.
    db.batch_execute("REVOKE INSERT ON orders FROM alice").unwrap();
    queue.send(&(1..=4).map(order).collect::<Vec<_>>());
    wait_until("the refusal shown", WAIT, || {
        count(
            &mut db,
            "SELECT count(*) FROM sqs_ingest.source_status WHERE source = 'orders' AND last_error LIKE '%permission denied for table orders%'",
        ) == 1
    });
    assert_eq!(count(&mut db, "SELECT count(*) FROM orders"), 0);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"),
        0,
        "nothing dead-lettered: the table's rights are not the row's fault"
    );
    // She may switch it off meanwhile, although its mapping no longer passes the check.
    alice.batch_execute("SELECT sqs_ingest.alter_source('orders', enabled => false)").unwrap();
    db.batch_execute("GRANT INSERT ON orders TO alice").unwrap();
    alice.batch_execute("SELECT sqs_ingest.alter_source('orders', enabled => true)").unwrap();
    wait_until("the rows once granted", WAIT, || count(&mut db, "SELECT count(*) FROM orders") == 4);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));

    // Her role dropped the way Postgres tells one to: the source does not pass to anyone, and
    // says why it stopped.
    drop(alice);
    db.batch_execute("REASSIGN OWNED BY alice TO postgres; DROP OWNED BY alice; DROP ROLE alice").unwrap();
    queue.send(&[order(5)]);
    wait_until("the lost owner shown", WAIT, || {
        count(
            &mut db,
            "SELECT count(*) FROM sqs_ingest.source_status WHERE source = 'orders' AND last_error LIKE '%owner of source \"orders\" (role %) no longer exists%'",
        ) == 1
    });
    let (code, message, hint) = refused(&mut db, "SELECT sqs_ingest.fetch_source('orders')");
    assert_eq!(code, "42704", "{message}");
    assert!(hint.contains("UPDATE sqs_ingest.sources SET owner = 'role' WHERE name = 'orders'"), "{hint}");
    assert_eq!(count(&mut db, "SELECT count(*) FROM orders"), 4);
    db.batch_execute("UPDATE sqs_ingest.sources SET owner = 'postgres' WHERE name = 'orders'").unwrap();
    wait_until("the row once owned again", WAIT, || count(&mut db, "SELECT count(*) FROM orders") == 5);
}
