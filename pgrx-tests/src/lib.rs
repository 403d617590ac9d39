//! Harness for sqs_ingest's integration tests and demo: a throwaway PostgreSQL 15 cluster with
//! the installed extension preloaded, a moto SQS server, and generated login messages.
pub mod cluster;
pub mod emulator;
pub mod fault;
pub mod logins;

/// Secrets that the security tests configure and the log scan looks for afterwards.
pub mod secrets {
    pub const PII_KEY: &str = "pii-key-7f3a9c1e44";
    pub const RECOVERY_KEY: &str = "5f0c2a9e81d34b67a0e1f2c3d4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f6071";
    pub const AWS_SECRET: &str = "aws-secret-5e8d2b7c91";
    /// Keys the key-file tests write into files, set by reloads, and rotate.
    pub const FILE_PII_KEY: &str = "file-pii-key-4d7b19e2c6";
    pub const ROTATED_PII_KEY: &str = "rotated-pii-key-8a3f60d5b1";
    pub const FILE_RECOVERY_KEY: &str = "9c1e5a7b3d2f4e6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6";
    /// Keys set in the deprecated settings themselves, by ALTER SYSTEM and a reload.
    pub const DEPRECATED_PII_KEY: &str = "deprecated-pii-key-3e9a1c7b55";
    pub const DEPRECATED_RECOVERY_KEY: &str = "7a1e3c5b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a3c";
    /// Every secret above, for the scans.
    pub const ALL: [&str; 8] = [
        PII_KEY,
        RECOVERY_KEY,
        AWS_SECRET,
        FILE_PII_KEY,
        ROTATED_PII_KEY,
        FILE_RECOVERY_KEY,
        DEPRECATED_PII_KEY,
        DEPRECATED_RECOVERY_KEY,
    ];
}

pub use cluster::Cluster;
pub use emulator::{Emulator, Queue};

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen (rows to arrive, a worker to start).
pub const WAIT: Duration = Duration::from_secs(60);

/// The test binary's one cluster (see [`Cluster::shared`]) with the emulators' credentials.
pub fn shared_cluster() -> &'static Cluster {
    Cluster::shared(&[], &emulator::AWS_ENV)
}

/// Points a session at a queue (`sqs_ingest.queue_url` for this session).
pub fn point_at(db: &mut postgres::Client, queue_url: &str) {
    db.batch_execute(&format!("SET sqs_ingest.queue_url = '{queue_url}'")).unwrap();
}

/// The single bigint a query returns, e.g. a count.
pub fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// `SELECT fetch_login_queue(max)`: the rows it inserted.
pub fn fetch(db: &mut postgres::Client, max: i32) -> i32 {
    db.query_one("SELECT fetch_login_queue($1)", &[&max]).unwrap().get(0)
}

/// Runs `call` (one SELECT of an int: `fetch_login_queue(n)`, `sqs_ingest.fetch_source(...)`)
/// until `messages` more messages are in the ledger (rows, dead letters and refused rows alike),
/// and returns the rows the calls reported. One call may receive fewer than the queue holds (a
/// short poll samples, a busy machine's emulator answers late): a test waits for the messages,
/// never for one call to drain the queue. Entries counted are those ingested since the start, so
/// the pruning of older ones does not hide them.
pub fn ingest(db: &mut postgres::Client, call: &str, messages: i64) -> i32 {
    let since: std::time::SystemTime = db.query_one("SELECT now()", &[]).unwrap().get(0);
    let ledger = "SELECT count(*) FROM sqs_ingest.processed_messages WHERE ingested_at >= $1";
    let mut rows = 0;
    wait_until(&format!("{messages} messages in the ledger"), WAIT, || {
        rows += db.query_one(call, &[]).unwrap_or_else(|e| panic!("{call}: {:?}", e.as_db_error())).get::<_, i32>(0);
        db.query_one(ledger, &[&since]).unwrap().get::<_, i64>(0) >= messages
    });
    rows
}

/// [`ingest`] through `fetch_login_queue(max)`.
pub fn fetch_all(db: &mut postgres::Client, max: i32, messages: i64) -> i32 {
    ingest(db, &format!("SELECT fetch_login_queue({max})"), messages)
}

/// A port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, limit, &mut condition, |held| *held);
}

/// Polls `observe` every 20 ms until `done` holds for what it saw, and returns that; panics
/// with `what` and what it saw last after `limit`.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut observe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let seen = observe();
        if done(&seen) {
            return seen;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}; last seen: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The SQLSTATE, message and hint (empty when none) of a statement that must fail.
pub fn refused(db: &mut postgres::Client, sql: &str) -> (String, String, String) {
    let e = db.batch_execute(sql).expect_err(sql);
    let e = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (e.code().code().to_owned(), e.message().to_owned(), e.hint().unwrap_or_default().to_owned())
}

/// Checks `condition` every 100 ms for `duration`: for things that must not happen (a disabled
/// worker receiving, a log line repeated). Panics as soon as it fails.
pub fn holds_for(what: &str, duration: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + duration;
    loop {
        assert!(condition(), "{what} stopped holding");
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `content` and a newline to `dir/name`, owned by the postgres user, with `mode`: a key
/// file as the server reads it (sqs_ingest.pii_key_file).
pub fn key_file(dir: &std::path::Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let status = std::process::Command::new("chown").arg("postgres:").arg(&path).status().unwrap();
    assert!(status.success(), "chown postgres {}", path.display());
    path
}

/// A process's memory in KiB, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now; for a backend this includes the shared buffers it has touched.
    pub rss: u64,
    /// The peak of `rss`.
    pub hwm: u64,
    /// Resident private memory (heap, stacks): what a leak would grow.
    pub anon: u64,
}

pub fn memory_kib(pid: i32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| kib_field(&status, key).unwrap_or_else(|| panic!("{key} of pid {pid}"));
    Memory { rss: get("VmRSS:"), hwm: get("VmHWM:"), anon: get("RssAnon:") }
}

/// The value of a `Key:   1234 kB` line of a /proc file such as status or meminfo.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Where scripts/setup.sh put the Python venv with moto.
pub fn venv() -> std::path::PathBuf {
    venv_at("SQS_INGEST_VENV", "venv")
}

/// Where scripts/setup.sh put the Python venv with the Query-only moto and boto3 1.26.
pub fn query_venv() -> std::path::PathBuf {
    venv_at("SQS_INGEST_QUERY_VENV", "query-venv")
}

/// Where bench/setup.sh put LocalStack's venv (scripts/env.sh names it; test.sh installs it).
pub fn localstack_venv() -> std::path::PathBuf {
    std::env::var_os("SQS_INGEST_LOCALSTACK_VENV").expect("SQS_INGEST_LOCALSTACK_VENV (scripts/env.sh)").into()
}

fn venv_at(variable: &str, default: &str) -> std::path::PathBuf {
    match std::env::var_os(variable) {
        Some(v) => v.into(),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache/sqs_ingest").join(default)
        }
    }
}
