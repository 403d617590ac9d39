//! Least privilege, secrets, keyed masking and audited PII recovery, as roles without superuser
//! see them.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::{field, valid};
use sqs_ingest_it::secrets::{AWS_SECRET, PII_KEY, RECOVERY_KEY};
use sqs_ingest_it::{count, fetch_all, Cluster, Emulator, Queue};
use std::process::{Command, Stdio};

fn cluster() -> &'static Cluster {
    let env: Vec<(&str, &str)> =
        AWS_ENV.iter().map(|&(k, v)| if k == "AWS_SECRET_ACCESS_KEY" { (k, AWS_SECRET) } else { (k, v) }).collect();
    Cluster::shared(
        &[&format!("sqs_ingest.pii_key = '{PII_KEY}'"), &format!("sqs_ingest.recovery_key = '{RECOVERY_KEY}'")],
        &env,
    )
}

/// A database and queue of their own, and a login role `name` holding `roles`; returns the
/// superuser's session and the role's.
fn setup(name: &str, roles: &[&str]) -> (Client, Client, Queue<'static>) {
    let queue = Emulator::shared().queue(name);
    let mut admin = cluster().database(name);
    // Only a superuser can point sessions at a queue; the role's sessions inherit this.
    admin.batch_execute(&format!("ALTER DATABASE {name} SET sqs_ingest.queue_url = '{}'", queue.url)).unwrap();
    admin.batch_execute(&format!("SET sqs_ingest.queue_url = '{}'", queue.url)).unwrap();
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN")).unwrap();
    for role in roles {
        admin.batch_execute(&format!("GRANT {role} TO {name}")).unwrap();
    }
    let user = cluster().connect_as(name, name);
    (admin, user, queue)
}

/// The SQLSTATE and message of the error `sql` raises.
fn error_of(db: &mut Client, sql: &str) -> (SqlState, String) {
    let e = db.batch_execute(sql).expect_err(sql);
    let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (db_error.code().clone(), db_error.message().to_owned())
}

fn denied(db: &mut Client, sql: &str) -> String {
    let (code, message) = error_of(db, sql);
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "{sql}: {message}");
    message
}

fn text(db: &mut Client, sql: &str) -> Option<String> {
    db.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// HMAC-SHA256 as openssl computes it, independently of our code.
fn openssl_hmac(key: &str, value: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), value.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim().rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn a_role_without_grants_masks_but_cannot_fetch_read_redirect_or_see_keys() {
    let (_admin, mut user, _queue) = setup("nobody", &[]);
    assert!(denied(&mut user, "SELECT fetch_login_queue(1)").contains("function fetch_login_queue"));
    for table in ["dead_letters", "processed_messages", "pii_vault", "pii_reveals", "worker_status"] {
        denied(&mut user, &format!("SELECT * FROM sqs_ingest.{table}"));
    }
    for setting in ["queue_url", "endpoint_url", "pii_key", "recovery_key", "region"] {
        denied(&mut user, &format!("SET sqs_ingest.{setting} = 'http://attacker.example/q'"));
        denied(&mut user, &format!("SELECT set_config('sqs_ingest.{setting}', 'http://attacker.example/q', false)"));
        denied(&mut user, &format!("ALTER ROLE nobody SET sqs_ingest.{setting} = 'http://attacker.example/q'"));
    }
    for secret in ["pii_key", "recovery_key"] {
        for sql in [format!("SHOW sqs_ingest.{secret}"), format!("SELECT current_setting('sqs_ingest.{secret}')")] {
            let message = denied(&mut user, &sql);
            assert!(!message.contains(PII_KEY) && !message.contains(RECOVERY_KEY), "{message}");
        }
    }
    let listed = count(
        &mut user,
        "SELECT count(*) FROM pg_settings WHERE name IN ('sqs_ingest.pii_key', 'sqs_ingest.recovery_key')",
    );
    assert_eq!(listed, 0, "pg_settings hides the keys");
    let all = user.simple_query("SHOW ALL").unwrap();
    assert!(!format!("{all:?}").contains(PII_KEY) && !format!("{all:?}").contains(RECOVERY_KEY));

    let masked = text(&mut user, "SELECT mask_pii('199.172.111.135')").unwrap();
    assert_eq!(masked, openssl_hmac(PII_KEY, "199.172.111.135"), "mask_pii is HMAC-SHA256 under pii_key");
    assert!(denied(&mut user, &format!("SELECT reveal_pii('{masked}')")).contains("function reveal_pii"));
}

#[test]
fn an_operator_fetches_and_reads_dead_letters_but_cannot_reveal_or_redirect() {
    let (_admin, mut op, queue) = setup("operator", &["sqs_ingest_operator"]);
    let mut bodies = valid(10, 301);
    bodies.push("not json".to_owned());
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut op, 100, 11), 10);
    assert_eq!(queue.counts(), (0, 0));
    assert_eq!(count(&mut op, "SELECT count(*) FROM sqs_ingest.dead_letters"), 1);
    assert_eq!(count(&mut op, "SELECT count(*) FROM user_logins"), 10);
    denied(&mut op, "SET sqs_ingest.endpoint_url = 'http://attacker.example'");
    denied(&mut op, "SELECT * FROM sqs_ingest.pii_vault");
    let masked = text(&mut op, "SELECT masked_ip FROM user_logins LIMIT 1").unwrap();
    denied(&mut op, &format!("SELECT reveal_pii('{masked}')"));
}

#[test]
fn the_operator_has_exactly_the_rights_ingesting_needs() {
    let (mut admin, mut op, queue) = setup("narrow_operator", &["sqs_ingest_operator"]);
    // What it may: ingest (rows, ledger entries, dead letters; with recovery on, the vault is
    // written for it), prune the ledger, retry dead letters, read the extension's state.
    admin.batch_execute("ALTER TABLE user_logins ADD CONSTRAINT no_windows CHECK (device_type <> 'windows')").unwrap();
    let mut bodies = valid(5, 311);
    bodies[4] = sqs_ingest_it::logins::with_field(&bodies[4], "device_type", "windows");
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut op, 10, 5), 4);
    assert_eq!(count(&mut admin, "SELECT count(*) FROM sqs_ingest.pii_vault"), 10, "the vault, written for it");
    assert_eq!(count(&mut op, "SELECT count(*) FROM sqs_ingest.dead_letters"), 1);
    admin.batch_execute("UPDATE sqs_ingest.processed_messages SET ingested_at = now() - interval '365 days'").unwrap();
    queue.send(&valid(1, 313));
    assert_eq!(fetch_all(&mut op, 10, 1), 1);
    assert_eq!(count(&mut op, "SELECT count(*) FROM sqs_ingest.processed_messages"), 1, "the old entries pruned");
    admin.batch_execute("ALTER TABLE user_logins DROP CONSTRAINT no_windows").unwrap();
    assert_eq!(text(&mut op, "SELECT retry_dead_letters()::text").as_deref(), Some("1"));
    assert_eq!(count(&mut op, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0);
    for view in ["processed_messages", "dead_letters", "sources", "source_status", "worker_status"] {
        count(&mut op, &format!("SELECT count(*) FROM sqs_ingest.{view}"));
    }
    // What it may not: undo exactly-once, drop evidence, forge the vault, change sources.
    for sql in [
        "UPDATE sqs_ingest.processed_messages SET ingested_at = now()",
        "DELETE FROM sqs_ingest.processed_messages",
        "TRUNCATE sqs_ingest.processed_messages",
        "UPDATE sqs_ingest.dead_letters SET reason = 'x'",
        "DELETE FROM sqs_ingest.dead_letters",
        "INSERT INTO sqs_ingest.pii_vault (masked, sealed) VALUES ('x', '\\x00')",
        "SELECT * FROM sqs_ingest.pii_vault",
        "UPDATE sqs_ingest.sources SET enabled = false",
        "SELECT sqs_ingest.create_source('x', 'https://sqs.us-east-1.amazonaws.com/1/q', 'user_logins')",
        "SELECT sqs_ingest.drop_source('login')",
    ] {
        denied(&mut op, sql);
    }
}

#[test]
fn a_pii_reader_reveals_originals_and_every_reveal_is_audited() {
    let (mut admin, mut reader, queue) = setup("reader", &["sqs_ingest_pii_reader"]);
    let bodies = valid(5, 307);
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut admin, 10, 5), 5);
    let (ip, device_id) = (field(&bodies[2], "ip"), field(&bodies[2], "device_id"));
    let sealed_in_clear = count(
        &mut admin,
        &format!("SELECT count(*) FROM sqs_ingest.pii_vault WHERE position(convert_to('{ip}', 'UTF8') IN sealed) > 0"),
    );
    assert_eq!(sealed_in_clear, 0, "the vault holds no original in clear");

    let masked_ip = openssl_hmac(PII_KEY, ip);
    let masked_device = openssl_hmac(PII_KEY, device_id);
    assert_eq!(text(&mut reader, &format!("SELECT reveal_pii('{masked_ip}')")).as_deref(), Some(ip));
    assert_eq!(text(&mut reader, &format!("SELECT reveal_pii('{masked_device}')")).as_deref(), Some(device_id));
    // A reveal whose transaction rolls back is audited all the same.
    reader.batch_execute("BEGIN").unwrap();
    assert_eq!(text(&mut reader, &format!("SELECT reveal_pii('{masked_ip}')")).as_deref(), Some(ip));
    reader.batch_execute("ROLLBACK").unwrap();
    let never = openssl_hmac(PII_KEY, "10.0.0.1");
    assert_eq!(text(&mut reader, &format!("SELECT reveal_pii('{never}')")), None);
    let (code, _) = error_of(&mut reader, "SELECT reveal_pii('not-a-masked-value')");
    assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);

    let audit = reader
        .query(
            "SELECT revealed_by::text, session_role::text, masked, found FROM sqs_ingest.pii_reveals ORDER BY id",
            &[],
        )
        .unwrap();
    let audit: Vec<(String, String, String, bool)> =
        audit.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let who = || ("reader".to_owned(), "reader".to_owned());
    assert_eq!(
        audit,
        vec![
            (who().0, who().1, masked_ip.clone(), true),
            (who().0, who().1, masked_device, true),
            (who().0, who().1, masked_ip, true),
            (who().0, who().1, never, false),
        ]
    );
    for sql in [
        "DELETE FROM sqs_ingest.pii_reveals",
        "UPDATE sqs_ingest.pii_reveals SET revealed_by = 'someone'",
        "INSERT INTO sqs_ingest.pii_reveals (revealed_by, session_role, masked, found, token) VALUES ('x', 'x', 'x', true, 1)",
        "TRUNCATE sqs_ingest.pii_reveals",
        "UPDATE sqs_ingest.pii_vault SET sealed = ''",
    ] {
        denied(&mut reader, sql);
    }
}

#[test]
fn reveal_refuses_without_the_key_it_was_sealed_under() {
    let (mut admin, _reader, queue) = setup("rekeyed", &[]);
    let bodies = valid(1, 311);
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut admin, 10, 1), 1);
    let masked = openssl_hmac(PII_KEY, field(&bodies[0], "ip"));
    admin.batch_execute(&format!("SET sqs_ingest.recovery_key = '{}'", "ab".repeat(32))).unwrap();
    let (code, message) = error_of(&mut admin, &format!("SELECT reveal_pii('{masked}')"));
    assert_eq!(code, SqlState::DATA_CORRUPTED, "{message}");
    admin.batch_execute("SET sqs_ingest.recovery_key = ''").unwrap();
    let (code, _) = error_of(&mut admin, &format!("SELECT reveal_pii('{masked}')"));
    assert_eq!(code, SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    admin.batch_execute("SET sqs_ingest.recovery_key = 'not-a-key'").unwrap();
    let (code, message) = error_of(&mut admin, "SELECT fetch_login_queue(1)");
    assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);
    assert!(!message.contains("not-a-key"), "{message}");
}

#[test]
fn ingesting_without_a_pii_key_warns_once_per_server() {
    let (mut first, _, queue) = setup("unkeyed", &[]);
    queue.send(&valid(4, 313));
    let mut sessions: Vec<_> = (0..2)
        .map(|_| {
            let (mut db, notices) = cluster().connect_collecting_notices("unkeyed");
            db.batch_execute(&format!("SET sqs_ingest.queue_url = '{}'; SET sqs_ingest.pii_key = ''", queue.url))
                .unwrap();
            (db, notices)
        })
        .collect();
    for (db, _) in sessions.iter_mut() {
        assert_eq!(fetch_all(db, 2, 2), 2);
    }
    let warnings: Vec<usize> = sessions
        .iter()
        .map(|(_, n)| n.lock().unwrap().iter().filter(|m| m.contains("pii_key is not set")).count())
        .collect();
    assert_eq!(warnings, vec![1, 0], "the first unkeyed ingest warns, the second does not");
    assert_eq!(cluster().log_lines("pii_key is not set"), 1);
    // Keyed masking meanwhile, in the session that kept the key.
    assert_eq!(text(&mut first, "SELECT mask_pii('x')").unwrap(), openssl_hmac(PII_KEY, "x"));
}
