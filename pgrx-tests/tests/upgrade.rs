//! Releases: a database created at an earlier release (its install script kept in
//! sql/sqs_ingest--VERSION.sql) ingests with the current library, keeps its rows, ledger, dead
//! letters, vault and grants through ALTER EXTENSION sqs_ingest UPDATE, and ends with exactly
//! the schema of a fresh install of the current version.
use postgres::Client;
use sqs_ingest_it::cluster::{bin, use_private_copy};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::secrets::RECOVERY_KEY;
use sqs_ingest_it::{count, fetch_all, point_at, Cluster, Emulator};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A cluster of a private copy of the installed PostgreSQL that also holds every earlier
/// release's install script, as a server that had them installed has them.
fn cluster() -> &'static Cluster {
    let sql = root().join("sql");
    let releases: Vec<PathBuf> = std::fs::read_dir(&sql)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().matches("--").count() == 1)
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("sqs_ingest--"))
        .collect();
    use_private_copy(&releases);
    Cluster::shared(&[&format!("sqs_ingest.recovery_key = '{RECOVERY_KEY}'")], &AWS_ENV)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The current version, as the installed control file's default_version names it.
fn current_version(db: &mut Client) -> String {
    db.query_one("SELECT default_version FROM pg_available_extensions WHERE name = 'sqs_ingest'", &[]).unwrap().get(0)
}

/// `pg_dump --schema-only --binary-upgrade` of `db`, which (unlike a plain dump) lists every
/// object of the extension, with the object ids that differ between databases left out.
fn schema(db: &str) -> String {
    let out = Command::new(format!("{}/pg_dump", bin()))
        .args(["--schema-only", "--binary-upgrade", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster().port.to_string(), db])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump {db}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // \restrict and \unrestrict carry a random key of each dump.
        .filter(|l| {
            !l.starts_with("--")
                && !l.trim().is_empty()
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .filter(|l| !l.contains("binary_upgrade_set_next_") && !l.contains("binary_upgrade_set_record_init_privs"))
        // ADD COLUMN ... DEFAULT records the default for rows that existed then (attmissingval):
        // data of the upgraded table, not schema.
        .filter(|l| !l.contains("binary_upgrade_set_missing_value"))
        // Sequence positions are data: the upgraded database has dead letters.
        .filter(|l| !l.contains("pg_catalog.setval("))
        .map(without_oids)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The line with every quoted literal of digits (object ids, transaction ids, arrays of them:
/// `'16412'`, `'{16390,16400}'`) written `'#'`: they differ between any two databases.
fn without_oids(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut parts = line.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('\'');
        let quoted = i % 2 == 0;
        let number = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit() || b"{},".contains(&b));
        out.push_str(if quoted && number { "#" } else { part });
    }
    out
}

#[test]
fn update_from_the_first_release_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.1.0");
}

#[test]
fn update_from_0_2_0_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.2.0");
}

#[test]
fn update_from_0_3_0_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.3.0");
}

#[test]
fn update_from_0_4_0_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.4.0");
}

#[test]
fn update_from_0_5_0_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.5.0");
}

#[test]
fn update_from_0_6_0_keeps_everything_and_equals_a_fresh_install() {
    update_from("0.6.0");
}

/// CREATE EXTENSION creates cluster-wide roles when missing: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn update_from(release: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = release.replace('.', "_");
    let (upgraded_db, fresh_db) = (format!("upgraded_{tag}"), format!("fresh_{tag}"));
    let queue = Emulator::shared().queue(&format!("upgrade_{tag}"));
    let mut admin = cluster().connect("postgres");
    for name in [&upgraded_db, &fresh_db] {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    }
    let mut db = cluster().connect(&upgraded_db);
    db.batch_execute(&format!("CREATE EXTENSION sqs_ingest VERSION '{release}'")).unwrap();
    let role = format!("upgrade_operator_{tag}");
    db.batch_execute(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} IN ROLE sqs_ingest_operator")).unwrap();

    // Ingest at 0.1.0 with the current library: rows, ledger entries, a dead letter, vault entries.
    point_at(&mut db, &queue.url);
    let mut bodies = valid(10, 61);
    bodies.push("not json".to_owned());
    queue.send(&bodies);
    assert_eq!(fetch_all(&mut db, 100, 11), 10);
    let members = format!(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = '{role}'"
    );
    let state = |db: &mut Client| {
        [
            "SELECT count(*) FROM user_logins",
            "SELECT count(*) FROM sqs_ingest.processed_messages",
            "SELECT count(*) FROM sqs_ingest.dead_letters",
            "SELECT count(*) FROM sqs_ingest.pii_vault",
            members.as_str(),
        ]
        .map(|sql| count(db, sql))
    };
    // The extension's roles' grants, and those a superuser gave the user's own role.
    let grants = |db: &mut Client| -> Vec<String> {
        db.query(
            "SELECT grantee || ' ' || privilege_type || ' ' || table_schema || '.' || table_name
             FROM information_schema.role_table_grants WHERE grantee LIKE 'sqs_ingest%' OR grantee = $1
             UNION ALL
             SELECT grantee || ' ' || privilege_type || ' ' || routine_name
             FROM information_schema.role_routine_grants WHERE grantee LIKE 'sqs_ingest%' OR grantee = $1",
            &[&role],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // A source of the user's own, from the release that brought sources on.
    let sources = !matches!(release, "0.1.0" | "0.2.0");
    let orders = Emulator::shared().queue(&format!("upgrade_orders_{tag}"));
    if sources {
        db.batch_execute("CREATE TABLE upgrade_orders (id text)").unwrap();
        db.execute(
            "SELECT sqs_ingest.create_source('orders', $1, 'upgrade_orders', '{\"id\": \"body->>''id''\"}')",
            &[&orders.url],
        )
        .unwrap();
        // As the README has a superuser let a role create and change sources: kept by updates
        // that give the functions new arguments.
        db.batch_execute(&format!(
            "GRANT EXECUTE ON FUNCTION sqs_ingest.create_source, sqs_ingest.alter_source TO {role}"
        ))
        .unwrap();
    }
    // The library is this version's already, the SQL still the release's (as between a package
    // upgrade and ALTER EXTENSION UPDATE): the release's worker_status reads its own columns,
    // with this cluster's workers running; before `source` existed, it says to update.
    let workers = db.query("SELECT worker, pid, state FROM sqs_ingest.worker_status", &[]);
    match release {
        "0.1.0" | "0.2.0" => {
            let e = workers.unwrap_err();
            assert_eq!(e.code(), Some(&postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE), "{e:?}");
        }
        _ => println!("{release}'s worker_status under this library: {:?}", workers.unwrap().len()),
    }
    let before = state(&mut db);
    assert_eq!(before, [10, 11, 1, 20, 1]);
    let granted = grants(&mut db);

    db.batch_execute("ALTER EXTENSION sqs_ingest UPDATE").unwrap();
    let version: String =
        db.query_one("SELECT extversion FROM pg_extension WHERE extname = 'sqs_ingest'", &[]).unwrap().get(0);
    assert_eq!(version, current_version(&mut db));
    assert_ne!(version, release);
    assert_eq!(state(&mut db), before, "rows, ledger, dead letters, vault and role memberships survive");
    // The ledger's key, rebuilt by 0.5.0, still knows every id entered before.
    let again = db.batch_execute(
        "INSERT INTO sqs_ingest.processed_messages (message_id) SELECT message_id FROM sqs_ingest.processed_messages",
    );
    assert_eq!(again.unwrap_err().code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));
    let now = grants(&mut db);
    // Taken on purpose: 0.4.0 narrowed the operator to what ingesting needs.
    let narrowed = [
        "sqs_ingest_operator UPDATE sqs_ingest.processed_messages",
        "sqs_ingest_operator DELETE sqs_ingest.processed_messages",
        "sqs_ingest_operator UPDATE sqs_ingest.dead_letters",
        "sqs_ingest_operator DELETE sqs_ingest.dead_letters",
        "sqs_ingest_operator INSERT sqs_ingest.pii_vault",
    ];
    let lost: Vec<&String> = granted.iter().filter(|g| !now.contains(g) && !narrowed.contains(&g.as_str())).collect();
    assert!(lost.is_empty(), "grants lost by the update: {lost:?}");
    // Dead letters of before are the login source's, which the catalog now lists.
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE source = 'login'"), 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.sources WHERE name = 'login' AND enabled"), 1);

    // The new version's behaviour: a row the table refuses is a dead letter with its error.
    db.batch_execute("ALTER TABLE user_logins ADD CONSTRAINT no_windows CHECK (device_type <> 'windows')").unwrap();
    let mut more = valid(3, 67);
    more[1] = sqs_ingest_it::logins::with_field(&more[1], "device_type", "windows");
    queue.send(&more);
    assert_eq!(fetch_all(&mut db, 100, 3), 2);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE constraint_name = 'no_windows'"), 1);

    if sources {
        // Kept, with the envelope every source had before, and ingesting.
        assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.sources WHERE envelope = 'auto'"), 2);
        orders.send(&[r#"{"id": "o-1"}"#.to_owned()]);
        let rows: i32 = db.query_one("SELECT sqs_ingest.fetch_source('orders', 10)", &[]).unwrap().get(0);
        assert_eq!(rows, 1);
        // 0.6.0: its table dropped, the source is disabled.
        db.batch_execute("DROP TABLE upgrade_orders").unwrap();
        assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.sources WHERE name = 'orders' AND NOT enabled"), 1);
        db.batch_execute("SELECT sqs_ingest.drop_source('orders')").unwrap();
    }
    if sources {
        // Kept (checked above); the user's own, which a fresh install has not.
        db.batch_execute(&format!(
            "REVOKE EXECUTE ON FUNCTION sqs_ingest.create_source, sqs_ingest.alter_source FROM {role}"
        ))
        .unwrap();
    }
    cluster().connect(&fresh_db).batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    db.batch_execute("ALTER TABLE user_logins DROP CONSTRAINT no_windows").unwrap();
    let (upgraded, fresh) = (schema(&upgraded_db), schema(&fresh_db));
    if upgraded != fresh {
        let diff: Vec<String> = upgraded
            .lines()
            .zip(fresh.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("upgraded: {a}\n   fresh: {b}"))
            .collect();
        panic!("the updated schema differs from a fresh install's:\n{}", diff.join("\n"));
    }
}

/// A view of the user's over the ledger's ids (a monitoring query kept as a view) stops the
/// update to 0.5.0, which changes their collation, with a hint and before anything changed;
/// without it the update goes through and the view can be created again.
#[test]
fn a_view_over_the_ledger_ids_stops_the_update_to_0_5_0_with_a_hint() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = cluster().connect("postgres");
    admin.batch_execute("DROP DATABASE IF EXISTS ledger_view").unwrap();
    admin.batch_execute("CREATE DATABASE ledger_view").unwrap();
    let mut db = cluster().connect("ledger_view");
    db.batch_execute("CREATE EXTENSION sqs_ingest VERSION '0.4.0'").unwrap();
    db.batch_execute(
        "INSERT INTO sqs_ingest.processed_messages (message_id) VALUES ('m-1');
         CREATE VIEW recent_ids AS SELECT message_id FROM sqs_ingest.processed_messages
             WHERE ingested_at > now() - interval '1 hour'",
    )
    .unwrap();

    let err = db.batch_execute("ALTER EXTENSION sqs_ingest UPDATE TO '0.5.0'").unwrap_err();
    let e = err.as_db_error().expect("an ERROR");
    assert_eq!(e.code(), &postgres::error::SqlState::DEPENDENT_OBJECTS_STILL_EXIST);
    assert!(e.message().contains("recent_ids"), "{}", e.message());
    assert!(e.hint().is_some_and(|h| h.contains("ALTER EXTENSION sqs_ingest UPDATE")), "{:?}", e.hint());
    let version: String =
        db.query_one("SELECT extversion FROM pg_extension WHERE extname = 'sqs_ingest'", &[]).unwrap().get(0);
    assert_eq!(version, "0.4.0", "nothing changed");

    db.batch_execute("DROP VIEW recent_ids; ALTER EXTENSION sqs_ingest UPDATE TO '0.5.0'").unwrap();
    db.batch_execute(
        "CREATE VIEW recent_ids AS SELECT message_id FROM sqs_ingest.processed_messages
             WHERE ingested_at > now() - interval '1 hour'",
    )
    .unwrap();
    assert_eq!(count(&mut db, "SELECT count(*) FROM recent_ids"), 1, "the ledger kept its entry");
}
