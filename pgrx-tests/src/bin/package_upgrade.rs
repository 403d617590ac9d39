//! CI's package test, run by scripts/package_test.sh with no cargo on PATH: the previous
//! release's .deb installed with apt-get and a cluster preloading it, its worker ingesting from
//! the emulator; this release's .deb installed over it while the worker ingests (no crash, and
//! until the restart the new library refuses CREATE EXTENSION and ALTER EXTENSION UPDATE); after
//! the restart, the update; then apt-get remove, which keeps the tables and their rows.
//! Usage: package_upgrade PREVIOUS.deb NEW.deb
use postgres::Client;
use sqs_ingest_it::cluster::run;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, fetch_all, wait_until, Cluster, Emulator, WAIT};
use std::process::Command;
use std::time::Duration;

const PACKAGE: &str = "postgresql-15-sqs-ingest";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [previous, new] = args.as_slice() else { panic!("usage: package_upgrade PREVIOUS.deb NEW.deb") };
    let mut passed = 0;
    let mut ok = |what: &str| {
        passed += 1;
        println!("ok: {what}");
    };

    assert!(Command::new("cargo").arg("--version").output().is_err(), "cargo is on PATH");
    ok("no cargo on PATH");
    apt(&["install", "-y", "-q", previous]);
    let previous_version = installed_version();
    ok(&format!("apt-get install {previous}: {PACKAGE} {previous_version}"));

    let emulator = Emulator::start();
    let queue = emulator.queue("package");
    let settings = [
        format!("sqs_ingest.queue_url = '{}'", queue.url),
        "sqs_ingest.worker_wait = 1".to_owned(),
        "sqs_ingest.worker_max_backoff = 1".to_owned(),
        // The workers in this one database, in both releases: the second database below is
        // served by calls alone, from a queue of its own.
        "sqs_ingest.database = 'postgres'".to_owned(),
    ];
    let cluster = Cluster::start("package", &settings, &AWS_ENV);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    let extversion = |db: &mut Client| -> String {
        db.query_one("SELECT extversion FROM pg_extension WHERE extname = 'sqs_ingest'", &[]).unwrap().get(0)
    };
    let old = extversion(&mut db);
    queue.send(&valid(50, 1));
    wait_until("the worker to ingest 50 logins", WAIT, || rows(&mut db) == 50);
    ok(&format!("preloaded, CREATE EXTENSION ({old}), its worker ingested 50 logins from the emulator"));

    // Logins keep coming while the package is upgraded under the running server.
    let postmaster = postmaster_pid(&cluster);
    let workers = cluster.worker_pids();
    let upgrade = {
        let new = new.clone();
        std::thread::spawn(move || apt(&["install", "-y", "-q", &new]))
    };
    let mut sent = 50;
    while !upgrade.is_finished() {
        queue.send(&valid(5, sent as u64));
        sent += 5;
        std::thread::sleep(Duration::from_millis(100));
    }
    upgrade.join().expect("apt-get install of the new package");
    let new_version = installed_version();
    let before = rows(&mut db);
    queue.send(&valid(20, sent as u64));
    sent += 20;
    wait_until("the worker to go on ingesting", WAIT, || rows(&mut db) >= before + 20);
    assert_eq!(postmaster_pid(&cluster), postmaster, "the postmaster was not restarted");
    assert_eq!(cluster.worker_pids(), workers, "the worker runs on");
    assert_eq!(cluster.log_lines("terminated by signal"), 0, "no process ended by a signal");
    ok(&format!(
        "apt-get install {new} ({new_version}) under the running server: its worker went on ingesting, no process ended"
    ));

    // Until the restart, the server runs the previous library: the new one refuses to lay its
    // SQL over it, in a session that has the old one, and in a new database.
    let mut fresh = cluster.connect("postgres");
    let refusal = |db: &mut Client, sql: &str| {
        let err = db.batch_execute(sql).expect_err("refused before the restart");
        let e = err.as_db_error().expect("an ERROR");
        assert_eq!(e.code().code(), "55000", "{e:?}");
        assert!(e.message().contains("this server runs sqs_ingest"), "{}", e.message());
        assert!(e.hint().is_some_and(|h| h.contains("Restart the server")), "{:?}", e.hint());
        format!("{}\nHINT:  {}", e.message(), e.hint().unwrap_or_default())
    };
    let said = refusal(&mut fresh, "ALTER EXTENSION sqs_ingest UPDATE");
    assert_eq!(extversion(&mut fresh), old, "nothing updated");
    fresh.batch_execute("CREATE DATABASE package_other").unwrap();
    refusal(&mut cluster.connect("package_other"), "CREATE EXTENSION sqs_ingest");
    let fetched: i32 = fresh.query_one("SELECT fetch_login_queue(10)", &[]).unwrap().get(0);
    ok(&format!(
        "before the restart, ALTER EXTENSION UPDATE and CREATE EXTENSION refuse ({said:?}); fetch_login_queue still \
         serves ({fetched} rows)"
    ));

    cluster.restart(&AWS_ENV);
    let mut db = cluster.connect("postgres");
    db.batch_execute("ALTER EXTENSION sqs_ingest UPDATE").unwrap();
    let updated = extversion(&mut db);
    assert_ne!(updated, old);
    let total = sent as i64;
    wait_until("every login sent, once", WAIT, || rows(&mut db) == total);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), total);
    let database: String = db.query_one("SELECT database FROM sqs_ingest.worker_status", &[]).unwrap().get(0);
    // The package's own install script, in the database where it was refused before.
    let other_queue = emulator.queue("package_other");
    other_queue.send(&valid(10, 9000));
    let mut other = cluster.connect("package_other");
    other.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    assert_eq!(extversion(&mut other), updated);
    other.batch_execute(&format!("SET sqs_ingest.queue_url = '{}'", other_queue.url)).unwrap();
    assert_eq!(fetch_all(&mut other, 100, 10), 10);
    ok(&format!(
        "restarted: ALTER EXTENSION sqs_ingest UPDATE {old} -> {updated}, worker in {database}; {total} logins sent, \
         {total} rows, none twice; CREATE EXTENSION ({updated}) in a second database, 10 rows by fetch_login_queue"
    ));

    apt(&["remove", "-y", "-q", PACKAGE]);
    // As the README's uninstall says: sqs_ingest out of shared_preload_libraries (a last line
    // wins), then the restart.
    let conf = cluster.data().join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text + "shared_preload_libraries = ''\n").unwrap();
    cluster.restart(&[]);
    let mut db = cluster.connect("postgres");
    assert_eq!(rows(&mut db), total);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.processed_messages"), total);
    assert!(!std::path::Path::new("/usr/lib/postgresql/15/lib/sqs_ingest.so").exists());
    ok(&format!(
        "apt-get remove {PACKAGE}: the library is gone, user_logins keeps its {total} rows and the ledger its entries"
    ));
    println!("package upgrade: {passed} passed, 0 failed");
}

/// The postmaster's pid, from its pid file.
fn postmaster_pid(cluster: &Cluster) -> String {
    let pid_file = std::fs::read_to_string(cluster.data().join("postmaster.pid")).expect("postmaster.pid");
    pid_file.lines().next().unwrap_or_default().to_owned()
}

fn rows(db: &mut Client) -> i64 {
    count(db, "SELECT count(*) FROM user_logins")
}

fn apt(args: &[&str]) {
    let mut apt_get = Command::new("apt-get");
    apt_get.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    run(apt_get);
}

/// The version dpkg has installed of the package.
fn installed_version() -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f", "${Version}", PACKAGE]).output().expect("dpkg-query");
    String::from_utf8(out.stdout).unwrap()
}
