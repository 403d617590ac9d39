//! A throwaway PostgreSQL cluster (15 unless SQS_INGEST_PG_BIN names another), run as the
//! `postgres` OS user when we are root.
use crate::{free_port, wait_until};
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

static BIN: OnceLock<String> = OnceLock::new();

/// Where the server programs of the PostgreSQL the tests run against are: `SQS_INGEST_PG_BIN`,
/// else Debian's PostgreSQL 15, unless [`use_private_copy`] made them a copy's.
pub fn bin() -> &'static str {
    BIN.get_or_init(installed_bin)
}

fn installed_bin() -> String {
    std::env::var("SQS_INGEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned())
}

/// Makes this test binary's PostgreSQL one whose extension directory also holds
/// `extension_files`, the machine's own left as it is: for Debian's PostgreSQL, a copy of its
/// programs, libraries and shared files (PostgreSQL finds them relative to its programs); a
/// `SQS_INGEST_PG_BIN` is the tests' own already (the relocatable 18 scripts/setup.sh
/// unpacks), and gets the files itself. Call it before anything else uses [`bin`].
pub fn use_private_copy(extension_files: &[PathBuf]) {
    BIN.get_or_init(|| {
        let installed = installed_bin();
        let config = |what: &str| {
            let out = Command::new(format!("{installed}/pg_config")).arg(what).output().expect("pg_config");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        };
        let (bindir, pkglibdir, sharedir) = (config("--bindir"), config("--pkglibdir"), config("--sharedir"));
        let add_files = |sharedir: &Path| {
            for file in extension_files {
                std::fs::copy(file, sharedir.join("extension").join(file.file_name().unwrap())).unwrap();
            }
        };
        if std::env::var_os("SQS_INGEST_PG_BIN").is_some() {
            add_files(&sharedir);
            return installed;
        }
        let root = std::env::temp_dir().join(format!("sqs_ingest-postgres-{}", std::process::id()));
        for dir in [&bindir, &pkglibdir, &sharedir] {
            let copy = root.join(dir.strip_prefix("/").unwrap());
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            run({
                let mut c = Command::new("cp");
                c.arg("-a").arg(dir).arg(&copy);
                c
            });
        }
        add_files(&root.join(sharedir.strip_prefix("/").unwrap()));
        run({
            let mut c = Command::new("chmod");
            c.args(["-R", "a+rX"]).arg(&root);
            c
        });
        root.join(bindir.strip_prefix("/").unwrap()).to_str().unwrap().to_owned()
    });
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

fn as_postgres(program: &str) -> Command {
    // initdb and postgres refuse to run as root.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `command` to its end; panics with its output unless it succeeded.
pub fn run(mut command: Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty directory for a cluster named `name`, owned by the user the server runs as.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sqs_ingest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        run({
            let mut c = Command::new("chown");
            c.args(["postgres:", dir.to_str().unwrap()]);
            c
        });
    }
    dir
}

impl Cluster {
    /// initdb in a fresh directory and start the server with `settings` appended to
    /// postgresql.conf and `env` as the postmaster's only environment (besides PATH and LANG).
    pub fn start(name: &str, settings: &[String], env: &[(&str, &str)]) -> Cluster {
        let cluster = Cluster::init(name, settings);
        cluster.pg_ctl_start(env, &[]);
        cluster
    }

    /// initdb in a fresh directory with `settings` appended to postgresql.conf; not started.
    fn init(name: &str, settings: &[String]) -> Cluster {
        let dir = fresh_dir(name);
        let data = dir.join("data");
        run({
            let mut c = as_postgres(&format!("{}/initdb", bin()));
            c.args(["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "-E", "UTF8"]);
            c.args(["--locale=C.UTF-8", "--no-sync"]);
            c
        });
        // A test binary's shared cluster holds a database per test, each with its workers (one
        // per database with the extension, as the launcher starts them), and reveal_pii's audit
        // needs a background worker of its own: more than the default 8.
        let mut conf = "listen_addresses = '127.0.0.1'\nshared_preload_libraries = 'sqs_ingest'\nfsync = off\n\
                        max_connections = 50\nmax_worker_processes = 32\nlog_line_prefix = '%m [%p] %q%a '\n"
            .to_owned();
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        Cluster::configure(dir, &conf)
    }

    /// Stops this cluster and upgrades it with pg_upgrade (same major, copy mode) into a new
    /// one made with `settings`, which is started with `env`; pg_upgrade's output is returned.
    /// pg_upgrade starts both servers in binary-upgrade mode and re-creates every database.
    pub fn upgrade(&self, name: &str, settings: &[String], env: &[(&str, &str)]) -> (Cluster, String) {
        self.stop();
        let new = Cluster::init(name, settings);
        let mut c = as_postgres("/usr/bin/env");
        c.args(["-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
        c.arg(format!("{}/pg_upgrade", bin()));
        c.args(["-b", bin(), "-B", bin(), "-U", "postgres", "--no-sync"]);
        c.args(["-d", self.data().to_str().unwrap(), "-D", new.data().to_str().unwrap()]);
        c.args(["-p", &self.port.to_string(), "-P", &new.port.to_string()]);
        // Its sockets and logs go to the working directory.
        c.current_dir(&new.dir);
        let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "pg_upgrade failed:\n{text}");
        new.pg_ctl_start(env, &[]);
        (new, text)
    }

    /// A streaming standby of this cluster as `pg_basebackup -R` makes one, started: its data
    /// directory a copy of this one's, postgresql.conf included (the preload and every
    /// sqs_ingest setting), with a port of its own.
    pub fn standby(&self, name: &str, env: &[(&str, &str)]) -> Cluster {
        let dir = fresh_dir(name);
        run({
            let mut c = as_postgres(&format!("{}/pg_basebackup", bin()));
            c.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"]);
            c.args(["-D", dir.join("data").to_str().unwrap(), "-R", "-X", "stream", "--no-sync"]);
            c
        });
        let cluster = Cluster::configure(dir, "");
        cluster.pg_ctl_start(env, &[]);
        cluster
    }

    /// Appends a port, the socket directory and `conf` to `dir`'s postgresql.conf.
    fn configure(dir: PathBuf, conf: &str) -> Cluster {
        let port = free_port();
        let conf = format!("port = {port}\nunix_socket_directories = '{}'\n{conf}", dir.display());
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("data").join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .unwrap();
        Cluster { dir, port }
    }

    /// Promotes a standby to a primary and waits until it is one.
    pub fn promote(&self) {
        run({
            let mut c = as_postgres(&format!("{}/pg_ctl", bin()));
            c.args(["-D", self.data().to_str().unwrap(), "-w", "promote"]);
            c
        });
    }

    /// Starts the stopped server again with every one of its processes run under `wrapper` (a
    /// program and its arguments, valgrind say): pg_ctl starts a script that runs postgres so.
    pub fn start_wrapped(&self, wrapper: &[&str], env: &[(&str, &str)]) {
        use std::os::unix::fs::PermissionsExt;
        let script = self.dir.join("postgres-wrapped");
        let words: Vec<String> = wrapper.iter().map(|w| format!("'{}'", w.replace('\'', "'\\''"))).collect();
        std::fs::write(&script, format!("#!/bin/sh\nexec {} '{}/postgres' \"$@\"\n", words.join(" "), bin())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.pg_ctl_start(env, &["-p", script.to_str().unwrap()]);
    }

    fn pg_ctl_start(&self, env: &[(&str, &str)], extra: &[&str]) {
        // A clean environment: RUST_BACKTRACE and friends in the postmaster slow every ERROR.
        let mut c = as_postgres("/usr/bin/env");
        c.args(["-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(format!("{}/pg_ctl", bin()));
        c.args(["-D", self.data().to_str().unwrap(), "-l", self.log().to_str().unwrap()]);
        c.args(extra);
        c.args(["-w", "-t", "60", "start"]);
        run(c);
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn url(&self, db: &str) -> String {
        self.url_as(db, "postgres")
    }

    fn url_as(&self, db: &str, user: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db} application_name=sqs_ingest_it", self.port)
    }

    pub fn connect(&self, db: &str) -> Client {
        self.connect_as(db, "postgres")
    }

    pub fn connect_as(&self, db: &str, user: &str) -> Client {
        Client::connect(&self.url_as(db, user), NoTls).unwrap_or_else(|e| panic!("connect to {db} as {user}: {e}"))
    }

    /// A connection whose NOTICE and WARNING messages are collected in the returned list, each
    /// as "SEVERITY: message", followed by "\nHINT: hint" when it has one.
    pub fn connect_collecting_notices(&self, db: &str) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = notices.clone();
        let client = self
            .url(db)
            .parse::<postgres::Config>()
            .unwrap()
            .notice_callback(move |n| {
                let hint = n.hint().map(|h| format!("\nHINT: {h}")).unwrap_or_default();
                sink.lock().unwrap().push(format!("{}: {}{hint}", n.severity(), n.message()))
            })
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
        (client, notices)
    }

    /// A new database with the extension created in it.
    pub fn database(&self, name: &str) -> Client {
        // CREATE DATABASE copies template1 and fails while another copy is under way.
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let mut admin = self.connect("postgres");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.with_extension(name)
    }

    /// A connection to `db` of this cluster, with the extension created there.
    pub fn with_extension(&self, db: &str) -> Client {
        let mut client = self.connect(db);
        client.batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
        client
    }

    pub fn is_up(&self) -> bool {
        Client::connect(&self.url("postgres"), NoTls).and_then(|mut c| c.simple_query("SELECT 1")).is_ok()
    }

    /// A cluster of its own whose workers ingest from `queue_url` into the database `postgres`,
    /// with short waits so that tests see restarts and backoff quickly.
    pub fn with_workers(name: &str, queue_url: &str, extra: &[&str]) -> Cluster {
        Cluster::with_workers_in(name, queue_url, extra, &crate::emulator::AWS_ENV)
    }

    /// As [`Cluster::with_workers`], with the postmaster's environment `env`.
    pub fn with_workers_in(name: &str, queue_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut settings = vec![
            format!("sqs_ingest.queue_url = '{queue_url}'"),
            "sqs_ingest.worker_wait = 2".to_owned(),
            "sqs_ingest.worker_max_backoff = 1".to_owned(),
            "sqs_ingest.worker_restart_interval = 1".to_owned(),
            "sqs_ingest.visibility_timeout = 2".to_owned(),
        ];
        settings.extend(extra.iter().map(|s| s.to_string()));
        Cluster::start(name, &settings, env)
    }

    /// A cluster of its own preloading pg_cron too, scheduling in `postgres` over TCP, the
    /// worker off: the README's pg_cron setup.
    pub fn with_pg_cron(name: &str, queue_url: &str) -> Cluster {
        Cluster::with_workers(
            name,
            queue_url,
            &[
                "shared_preload_libraries = 'sqs_ingest,pg_cron'",
                "cron.database_name = 'postgres'",
                "cron.host = '127.0.0.1'",
                "sqs_ingest.worker_enabled = off",
            ],
        )
    }

    /// Pids of the running sqs_ingest workers.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.connect("postgres")
            .query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'sqs_ingest worker' ORDER BY pid", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Stops and starts the server again with `env`, as the official image's entrypoint does
    /// after running its init scripts.
    pub fn restart(&self, env: &[(&str, &str)]) {
        self.stop();
        self.start_again(env);
    }

    pub fn start_again(&self, env: &[(&str, &str)]) {
        self.pg_ctl_start(env, &[]);
    }

    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server for good and deletes its data directory, keeping the server log beside
    /// it: a run of the suite leaves kilobytes, not a cluster of about 170 MB per cluster it
    /// started (which filled this machine's disk after a few hundred).
    fn discard(&self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.data());
    }

    /// `pg_ctl stop -m immediate`: every process quits at once, as in a power cut; the next
    /// start runs crash recovery.
    pub fn stop_immediately(&self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let mut c = as_postgres(&format!("{}/pg_ctl", bin()));
        c.args(["-D", self.data().to_str().unwrap(), "-m", mode, "-w", "stop"]);
        let _ = c.output();
    }

    /// Waits for the server to be up, e.g. after a crash restart.
    pub fn wait_up(&self) {
        wait_until("the server to accept connections", Duration::from_secs(30), || self.is_up());
    }

    /// How many lines of the server log contain `text`.
    pub fn log_lines(&self, text: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(text)).count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(c) = SHARED.get() {
        c.discard();
    }
}

impl Cluster {
    /// One cluster for all tests of a test binary, its workers off, discarded when the binary
    /// exits. The first call's `settings` and `env` are the ones it starts with.
    pub fn shared(settings: &[&str], env: &[(&str, &str)]) -> &'static Cluster {
        SHARED.get_or_init(|| {
            // SAFETY: registers a plain function; statics are never dropped, so only this stops it.
            unsafe { libc::atexit(stop_shared) };
            let mut all = vec!["sqs_ingest.worker_enabled = off".to_owned()];
            all.extend(settings.iter().map(|s| s.to_string()));
            Cluster::start("shared", &all, env)
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.discard();
    }
}
