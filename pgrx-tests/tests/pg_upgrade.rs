//! pg_upgrade of a cluster that preloads sqs_ingest and whose workers were ingesting: no worker
//! starts in binary-upgrade mode, and everything the extension keeps comes through.
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::fault::{Deletes, FaultEndpoint};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, key_file, wait_until, Cluster, Emulator, WAIT};

/// Everything the extension keeps, as text: the sources, the ledger, the dead letters, the
/// vault and both sources' rows.
fn kept(db: &mut Client) -> Vec<String> {
    let tables = [
        "sqs_ingest.sources",
        "sqs_ingest.processed_messages",
        "sqs_ingest.dead_letters",
        "sqs_ingest.pii_vault",
        "user_logins",
        "orders",
    ];
    tables
        .iter()
        .map(|t| {
            let sql = format!(
                "SELECT count(*) || ': ' || coalesce(string_agg(t::text, ' ' ORDER BY t::text), '') FROM {t} t"
            );
            format!("{t} {}", db.query_one(sql.as_str(), &[]).unwrap().get::<_, String>(0))
        })
        .collect()
}

#[test]
fn pg_upgrade_keeps_sources_ledger_dead_letters_and_vault_and_the_upgraded_cluster_ingests() {
    let emulator = Emulator::shared();
    let (logins, orders) = (emulator.queue("pg_upgrade_logins"), emulator.queue("pg_upgrade_orders"));
    // Deletes go through a fault endpoint: the last batch's fail, so that SQS delivers it again
    // to the upgraded cluster, whose ledger must refuse it.
    let proxy = FaultEndpoint::start(emulator.port);
    let keys = std::env::temp_dir().join(format!("pg_upgrade_keys-{}", std::process::id()));
    std::fs::create_dir_all(&keys).unwrap();
    let pii = key_file(&keys, "pii_key", "pg-upgrade-pii-key-81c3", 0o600);
    let recovery =
        key_file(&keys, "recovery_key", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0", 0o600);
    let settings = vec![
        format!("sqs_ingest.queue_url = '{}'", proxy.url_for(&logins.url)),
        "sqs_ingest.worker_wait = 2".to_owned(),
        "sqs_ingest.worker_max_backoff = 1".to_owned(),
        "sqs_ingest.worker_restart_interval = 1".to_owned(),
        "sqs_ingest.visibility_timeout = 2".to_owned(),
        format!("sqs_ingest.pii_key_file = '{}'", pii.display()),
        format!("sqs_ingest.recovery_key_file = '{}'", recovery.display()),
    ];
    let old = Cluster::start("pg_upgrade_old", &settings, &AWS_ENV);
    let mut db = old.with_extension("postgres");
    db.batch_execute("CREATE TABLE orders (order_id text PRIMARY KEY, total numeric)").unwrap();
    db.execute(
        "SELECT sqs_ingest.create_source('orders', $1, 'orders', $2::text::jsonb)",
        &[&orders.url, &r#"{"order_id": "body->>'id'", "total": "(body->>'total')::numeric"}"#],
    )
    .unwrap();
    let mut bodies = valid(10, 211);
    bodies.push("not json".to_owned());
    logins.send(&bodies);
    orders.send(&(1..=3).map(|i| format!(r#"{{"id": "o-{i}", "total": "{i}.50"}}"#)).collect::<Vec<_>>());
    wait_until("the workers' rows", WAIT, || {
        count(&mut db, "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM orders)") == 13
            && count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters") == 1
    });
    wait_until("the deletes", WAIT, || logins.counts() == (0, 0) && orders.counts() == (0, 0));
    proxy.deletes(Deletes::Error);
    logins.send(&valid(2, 223));
    wait_until("the last batch stored, its deletes failing", WAIT, || {
        count(&mut db, "SELECT count(*) FROM user_logins") == 12
    });
    assert!(count(&mut db, "SELECT count(*) FROM sqs_ingest.pii_vault") > 0, "originals sealed");
    let before = kept(&mut db);
    drop(db);

    let (new, output) = old.upgrade("pg_upgrade_new", &settings, &AWS_ENV);
    eprintln!("{output}");
    let mut db = new.connect("postgres");
    assert_eq!(kept(&mut db), before, "everything the extension keeps, after pg_upgrade");

    // The last batch comes back from SQS: the ledger refuses it, and it is deleted.
    proxy.deletes(Deletes::Relayed);
    wait_until("the redelivered batch skipped and deleted", WAIT, || {
        logins.counts() == (0, 0)
            && count(&mut db, "SELECT coalesce(sum(duplicates_skipped), 0)::bigint FROM sqs_ingest.worker_status") == 2
    });
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 12);
    logins.send(&valid(5, 227));
    orders.send(&[r#"{"id": "o-4", "total": "4.50"}"#.to_owned()]);
    wait_until("rows in the upgraded cluster", WAIT, || {
        count(&mut db, "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM orders)") == 21
    });
}
