//! Servers and transactions that cannot write: a streaming standby made by pg_basebackup (which
//! copies the primary's preload and sqs_ingest settings), and a server made read-only for a
//! cutover. Nothing is received from SQS there, so no message is hidden from the consumers that
//! can store it; ingestion goes on where writing is possible again.
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, holds_for, refused, wait_until, Cluster, Emulator, WAIT};
use std::time::Duration;

#[test]
fn a_standby_neither_polls_nor_takes_messages_and_ingests_once_promoted() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("read_only_standby");
    let primary = Cluster::with_workers("read_only_primary", &queue.url, &[]);
    let mut db = primary.with_extension("postgres");
    queue.send(&valid(20, 881));
    wait_until("the primary's rows", WAIT, || count(&mut db, "SELECT count(*) FROM user_logins") == 20);

    let standby = primary.standby("read_only_standby", &AWS_ENV);
    let mut replica = standby.connect("postgres");
    wait_until("the rows replicated", WAIT, || count(&mut replica, "SELECT count(*) FROM user_logins") == 20);
    // The same preload and settings, yet no worker: they start once recovery has finished.
    holds_for("no worker on the standby", Duration::from_secs(3), || standby.worker_pids().is_empty());

    // A call on the standby (a read-only pool, a load balancer) is refused before receiving.
    let other = emulator.queue("read_only_standby_other");
    other.send(&valid(5, 883));
    replica.batch_execute(&format!("SET sqs_ingest.queue_url = '{}'", other.url)).unwrap();
    let (code, message, hint) = refused(&mut replica, "SELECT fetch_login_queue(10)");
    assert_eq!(code, "25006", "{message}");
    assert_eq!(message, "sqs_ingest: cannot ingest on a server in recovery (a standby)");
    assert!(hint.starts_with("Nothing was received from SQS. Ingest on the primary"), "{hint}");
    assert_eq!(other.counts(), (5, 0), "nothing taken from the queue, nothing in flight");
    assert_eq!(refused(&mut replica, "SELECT retry_dead_letters()").0, "25006");
    // Monitoring works there as on the primary.
    assert_eq!(count(&mut replica, "SELECT count(*) FROM sqs_ingest.source_status WHERE source = 'login'"), 1);

    // Failover: the primary gone, the standby promoted; its worker takes over.
    queue.send(&valid(10, 887));
    wait_until("the primary's new rows replicated", WAIT, || {
        count(&mut replica, "SELECT count(*) FROM user_logins") == 30
    });
    primary.stop();
    standby.promote();
    wait_until("a worker on the promoted standby", WAIT, || !standby.worker_pids().is_empty());
    let mut promoted = standby.connect("postgres");
    queue.send(&valid(10, 889));
    wait_until("rows on the promoted standby", WAIT, || count(&mut promoted, "SELECT count(*) FROM user_logins") == 40);
    wait_until("the queue drained", WAIT, || queue.counts() == (0, 0));
    assert_eq!(count(&mut promoted, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0);
}

#[test]
fn a_server_made_read_only_for_a_cutover_keeps_its_messages_in_the_queue() {
    let queue = Emulator::shared().queue("read_only_cutover");
    let c = Cluster::with_workers("read_only_cutover", &queue.url, &[]);
    let mut db = c.with_extension("postgres");
    queue.send(&valid(5, 891));
    wait_until("the first rows", WAIT, || count(&mut db, "SELECT count(*) FROM user_logins") == 5);

    // ALTER SYSTEM runs outside a transaction block: a statement of its own.
    db.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on").unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the worker to say why it waits", WAIT, || {
        count(
            &mut db,
            "SELECT count(*) FROM sqs_ingest.worker_status
             WHERE state = 'backing off' AND last_error = 'cannot ingest in a read-only transaction'",
        ) == 1
    });
    queue.send(&valid(10, 893));
    // worker_wait is 2 s and the backoff at most 1 s: several rounds would have received.
    holds_for("the messages untouched in the queue", Duration::from_secs(4), || queue.counts() == (10, 0));
    let (code, _, hint) = refused(&mut db, "SELECT fetch_login_queue(10)");
    assert_eq!(code, "25006");
    assert!(hint.contains("default_transaction_read_only"), "{hint}");
    assert_eq!(queue.counts(), (10, 0));
    assert_eq!(c.log_lines("cannot ingest in a read-only transaction; retrying with backoff"), 1, "logged once");

    db.batch_execute("SET default_transaction_read_only = off").unwrap();
    db.batch_execute("ALTER SYSTEM RESET default_transaction_read_only").unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the rows after the cutover", WAIT, || count(&mut db, "SELECT count(*) FROM user_logins") == 15);
    wait_until("the queue drained", WAIT, || queue.counts() == (0, 0));
}
