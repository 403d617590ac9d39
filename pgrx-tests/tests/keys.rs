//! Keys from files, set the way the README says (ALTER SYSTEM of the path, then a reload): they
//! key masking and recovery, a reload reads them again (rotation), a file others may read is
//! refused with a clear message, and no key reaches the server log, postgresql.auto.conf or a
//! base backup of the cluster. The deprecated settings that hold keys themselves still work, and
//! their keys do not reach the log either.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_core::masking::Masker;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::{field, valid};
use sqs_ingest_it::secrets::{
    self, DEPRECATED_PII_KEY, DEPRECATED_RECOVERY_KEY, FILE_PII_KEY, FILE_RECOVERY_KEY, ROTATED_PII_KEY,
};
use sqs_ingest_it::{cluster::bin, count, fetch_all, key_file, point_at, refused, wait_until, Cluster, Emulator, WAIT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn reload(db: &mut Client, sql: &str) {
    db.batch_execute(sql).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// Whether a new session masks with HMAC-SHA256 under `key` (RFC 4231-tested in core): the
/// reload has reached it.
fn masks_under(c: &Cluster, key: &str) -> bool {
    let masked: String = c.connect("postgres").query_one("SELECT mask_pii('1.2.3.4')", &[]).unwrap().get(0);
    masked == Masker::new(key.as_bytes()).mask("1.2.3.4")
}

/// Files under `dir` that hold any of the secrets.
fn holding_secrets(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let text = String::from_utf8_lossy(&bytes);
                found.extend(
                    secrets::ALL.iter().filter(|s| text.contains(*s)).map(|s| format!("{}: {s}", path.display())),
                );
            }
        }
    }
    found
}

#[test]
fn keys_come_from_files_are_read_again_on_reload_and_never_reach_a_log_or_a_configuration_file() {
    let queue = Emulator::shared().queue("keys");
    let c = Cluster::start("keys", &["sqs_ingest.worker_enabled = off".to_owned()], &AWS_ENV);
    let keys = c.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let pii = key_file(&keys, "pii_key", FILE_PII_KEY, 0o600);
    let recovery = key_file(&keys, "recovery_key", FILE_RECOVERY_KEY, 0o600);
    let mut db = c.with_extension("postgres");

    // As the README says: ALTER SYSTEM of the paths, then a reload.
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.pii_key_file = '{}'", pii.display())).unwrap();
    reload(&mut db, &format!("ALTER SYSTEM SET sqs_ingest.recovery_key_file = '{}'", recovery.display()));
    wait_until("the reload to reach new sessions", WAIT, || masks_under(&c, FILE_PII_KEY));
    let mut db = c.connect("postgres");
    point_at(&mut db, &queue.url);
    let bodies = valid(5, 71);
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut db, 10, 5), 5);
    let ip = field(&bodies[0], "ip");
    let revealed: String = db
        .query_one(&format!("SELECT reveal_pii(masked_ip) FROM user_logins WHERE masked_ip = mask_pii('{ip}')"), &[])
        .unwrap()
        .get(0);
    assert_eq!(revealed, ip, "the recovery key from its file seals and opens");
    assert_eq!(c.log_lines("pii_key is not set"), 0, "keyed: no unkeyed warning");

    // Rotation: the same path, a new key in the file; a reload reads it again.
    key_file(&keys, "pii_key", ROTATED_PII_KEY, 0o600);
    reload(&mut db, "SELECT 1");
    wait_until("the rotated key", WAIT, || masks_under(&c, ROTATED_PII_KEY));

    // A file others may read is refused: SET fails with a DETAIL, a reload keeps the last key.
    let loose = key_file(&keys, "loose_key", FILE_PII_KEY, 0o644);
    let err = db.batch_execute(&format!("SET sqs_ingest.pii_key_file = '{}'", loose.display())).unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(err.code(), &SqlState::INVALID_PARAMETER_VALUE);
    assert!(err.detail().is_some_and(|d| d.contains("mode 0644") && d.contains("chmod 600")), "{:?}", err.detail());
    std::fs::set_permissions(&pii, std::fs::Permissions::from_mode(0o640)).unwrap();
    reload(&mut db, "SELECT 1");
    wait_until("the refusal to be logged", WAIT, || c.log_lines("cannot be used: it is open to group or others") >= 1);
    assert!(masks_under(&c, ROTATED_PII_KEY), "the last good key stays");
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 5);

    // Nothing holds a key: the log, postgresql.auto.conf (the paths only), a base backup.
    let backup = c.dir.join("backup");
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{}/pg_basebackup", bin()), "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &c.port.to_string(), "-X", "fetch", "-D"])
        .arg(&backup)
        .status()
        .unwrap();
    assert!(status.success(), "pg_basebackup");
    let auto_conf = std::fs::read_to_string(c.data().join("postgresql.auto.conf")).unwrap();
    assert!(auto_conf.contains(&pii.display().to_string()), "{auto_conf}");
    let mut found = holding_secrets(&c.data());
    found.extend(holding_secrets(&backup));
    found.extend(secrets::ALL.iter().filter(|s| c.log_text().contains(*s)).map(|s| format!("server.log: {s}")));
    assert!(found.is_empty(), "{found:?}");
    let log = c.log_text();
    let changed: Vec<&str> = log.lines().filter(|l| l.contains("key_file\" changed to")).collect();
    println!("what the reload logged:\n{}", changed.join("\n"));
    assert_eq!(changed.len(), 2, "the reload logs both paths, and only paths");
}

/// A standby or a restored server started without its key files (they live outside the data
/// directory): Postgres falls back to no file, which would mask without a key and keep no
/// originals as if asked to. The server starts, and masking and ingesting wait for the keys.
#[test]
fn a_key_file_unusable_at_start_stops_masking_and_ingesting_until_it_loads() {
    let queue = Emulator::shared().queue("keys_unusable");
    let keys = std::env::temp_dir().join(format!("keys_unusable-{}", std::process::id()));
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (pii, recovery) = (keys.join("pii_key"), keys.join("recovery_key"));
    let c = Cluster::start(
        "keys_unusable",
        &[
            "sqs_ingest.worker_enabled = off".to_owned(),
            format!("sqs_ingest.pii_key_file = '{}'", pii.display()),
            format!("sqs_ingest.recovery_key_file = '{}'", recovery.display()),
        ],
        &AWS_ENV,
    );
    assert_eq!(c.log_lines("invalid value for parameter \"sqs_ingest.pii_key_file\""), 1);
    let mut db = c.with_extension("postgres");
    point_at(&mut db, &queue.url);
    queue.send(&valid(3, 73));

    // Not an address: Postgres logs a failing statement's text, literals and all.
    let (code, message, hint) = refused(&mut db, "SELECT mask_pii('not-pii')");
    assert_eq!(code, "F0000", "{message}");
    assert_eq!(
        message,
        format!(
            "sqs_ingest: sqs_ingest.pii_key_file names a key file that cannot be used: \"{}\": could not read it: No such file or directory (os error 2)",
            pii.display()
        )
    );
    assert!(hint.starts_with("Nothing is masked or ingested meanwhile"), "{hint}");
    assert_eq!(refused(&mut db, "SELECT fetch_login_queue(10)").0, "F0000");
    assert_eq!(queue.counts(), (3, 0), "refused before receiving");

    // The masking key in place: masking works; the recovery key still missing, nothing is
    // ingested without sealing the originals.
    key_file(&keys, "pii_key", FILE_PII_KEY, 0o600);
    reload(&mut db, "SELECT 1");
    let keyed = || {
        let masked =
            c.connect("postgres").query_one("SELECT mask_pii('not-pii')", &[]).ok().map(|r| r.get::<_, String>(0));
        masked == Some(Masker::new(FILE_PII_KEY.as_bytes()).mask("not-pii"))
    };
    wait_until("the masking key to load", WAIT, keyed);
    let mut db = c.connect("postgres");
    point_at(&mut db, &queue.url);
    let (code, message, _) = refused(&mut db, "SELECT fetch_login_queue(10)");
    assert_eq!((code.as_str(), message.contains("sqs_ingest.recovery_key_file names")), ("F0000", true), "{message}");
    assert_eq!(queue.counts(), (3, 0));

    key_file(&keys, "recovery_key", FILE_RECOVERY_KEY, 0o600);
    reload(&mut db, "SELECT 1");
    wait_until("the recovery key to load", WAIT, || {
        let mut db = c.connect("postgres");
        point_at(&mut db, &queue.url);
        db.query_one("SELECT fetch_login_queue(10)", &[]).is_ok_and(|r| r.get::<_, i32>(0) == 3)
    });
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.pii_vault"), 6, "every original sealed");
    assert_eq!(c.log_lines("pii_key is not set"), 0, "never masked without its key");
    std::fs::remove_dir_all(&keys).unwrap();
}

#[test]
fn keys_in_the_deprecated_settings_set_by_alter_system_and_reload_work_and_never_reach_the_log() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("deprecated_keys");
    let c = Cluster::start("deprecated_keys", &[], &AWS_ENV);
    let mut db = c.connect("postgres");
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.pii_key = '{DEPRECATED_PII_KEY}'")).unwrap();
    reload(&mut db, &format!("ALTER SYSTEM SET sqs_ingest.recovery_key = '{DEPRECATED_RECOVERY_KEY}'"));
    wait_until("the reload to reach new sessions", WAIT, || masks_under(&c, DEPRECATED_PII_KEY));
    // A changed key, reloaded: PostgreSQL logs a setting whose value changed, with the value.
    reload(&mut db, &format!("ALTER SYSTEM SET sqs_ingest.pii_key = '{DEPRECATED_PII_KEY}-2'"));
    wait_until("the changed key", WAIT, || masks_under(&c, &format!("{DEPRECATED_PII_KEY}-2")));
    let mut db = c.connect("postgres");
    point_at(&mut db, &queue.url);
    queue.send(&valid(3, 83));
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM sqs_ingest.pii_vault"),
        6,
        "originals sealed under the recovery key"
    );
    let shown: String = db.query_one("SHOW sqs_ingest.pii_key", &[]).unwrap().get(0);
    assert_eq!(shown, "", "the setting holds no key");
    db.batch_execute("ALTER SYSTEM RESET sqs_ingest.pii_key").unwrap();
    reload(&mut db, "ALTER SYSTEM RESET sqs_ingest.recovery_key");
    wait_until("the keys reset", WAIT, || {
        let masked: String = c.connect("postgres").query_one("SELECT mask_pii('1.2.3.4')", &[]).unwrap().get(0);
        masked == Masker::new(b"").mask("1.2.3.4")
    });

    let log = c.log_text();
    assert!(log.contains("sqs_ingest.pii_key holds a key in the server's configuration"), "the WARNING:\n{log}");
    let leaked: Vec<&str> =
        [DEPRECATED_PII_KEY, DEPRECATED_RECOVERY_KEY].into_iter().filter(|k| log.contains(k)).collect();
    assert!(leaked.is_empty(), "keys in the server log: {leaked:?}\n{log}");
}
