//! The Docker setup's own scripts, run for real without a Docker engine: the LocalStack init hook
//! fills a moto queue through `awslocal`, the Postgres init script configures a fresh cluster that
//! preloads both libraries as the image does (as the postgres user, in the database
//! POSTGRES_DB names, as the entrypoint runs it), and after the restart the entrypoint would do,
//! the worker ingests the queue.
use sqs_ingest_core::masking::Masker;
use sqs_ingest_it::cluster::bin;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::{count, key_file, venv, wait_until, Cluster, Emulator};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs `script` with only `env` and a PATH with the venv's tools (awslocal) and PostgreSQL's.
/// Its output goes to a file, not a pipe: a server it restarts inherits that output.
fn run(script: &str, env: &[(&str, &str)], as_postgres: Option<&Cluster>) {
    let path = format!("{}:{}:/usr/bin:/bin", venv().join("bin").display(), bin());
    let (mut command, log) = match as_postgres {
        // As the entrypoint runs init scripts: as postgres, from a copy it can read.
        Some(c) => {
            let copy = c.dir.join(Path::new(script).file_name().unwrap());
            std::fs::copy(root().join(script), &copy).unwrap();
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "env", "-i", &format!("PATH={path}")]);
            command.args(env.iter().map(|(k, v)| format!("{k}={v}"))).arg("bash").arg(copy);
            command.current_dir(&c.dir);
            (command, c.dir.join("init-script.log"))
        }
        None => {
            let mut command = Command::new("bash");
            command.arg(root().join(script)).env_clear().env("PATH", &path).envs(env.iter().copied());
            (command, std::env::temp_dir().join(format!("sqs_ingest-hook-{}.log", std::process::id())))
        }
    };
    let out = std::fs::File::create(&log).unwrap();
    let status = command.stdout(out.try_clone().unwrap()).stderr(out).status().expect("bash");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{script} failed:\n{output}");
}

/// Runs the compose setup's scripts against a cluster and moto, for the database `database`
/// (POSTGRES_DB); returns the cluster once the worker has ingested the 95 valid messages and
/// dead-lettered the 5 malformed ones.
fn compose_up(name: &str, database: &str, sql_first: Option<&str>, pii_key: &str) -> Cluster {
    let emulator = Emulator::start();
    let c = Cluster::start(name, &["shared_preload_libraries = 'sqs_ingest,pg_cron'".to_owned()], &AWS_ENV);
    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL", &emulator.endpoint));
    run("docker/localstack/ready.d/10-login-queue.sh", &env, None);
    let queue = emulator.queue("login-queue");
    assert_eq!(queue.counts(), (100, 0));

    let socket_dir = c.dir.to_str().unwrap().to_owned();
    let port = c.port.to_string();
    // The entrypoint creates POSTGRES_DB before it runs the init scripts.
    if database != "postgres" {
        c.connect("postgres").batch_execute(&format!("CREATE DATABASE {database}")).unwrap();
    }
    if let Some(sql) = sql_first {
        let status = Command::new("psql")
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-U",
                "postgres",
                "-h",
                &socket_dir,
                "-p",
                &port,
                "-d",
                database,
                "-f",
            ])
            .arg(root().join(sql))
            .status()
            .unwrap();
        assert!(status.success(), "{sql}");
    }
    let data = c.data().to_str().unwrap().to_owned();
    // What docker/entrypoint.sh installs from the compose secret: a file only postgres reads.
    let key_path = if pii_key.is_empty() {
        String::new()
    } else {
        key_file(&c.dir, "sqs_ingest_pii_key", pii_key, 0o600).to_str().unwrap().to_owned()
    };
    let pg_env = [
        ("PGDATA", data.as_str()),
        ("PGHOST", socket_dir.as_str()),
        ("PGPORT", port.as_str()),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_DB", database),
        ("SQS_QUEUE_URL", queue.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("SQS_INGEST_PII_KEY_FILE", key_path.as_str()),
    ];
    run("docker/initdb.d/10-sqs-ingest.sh", &pg_env, Some(&c));
    c.restart(&AWS_ENV);

    let mut db = c.connect(database);
    wait_until("95 rows and 5 dead letters", WAIT, || {
        count(&mut db, "SELECT count(*) FROM user_logins") == 95
            && count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters") == 5
    });
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    assert_eq!(count(&mut db, "SELECT count(*) FROM pg_extension WHERE extname IN ('sqs_ingest', 'pg_cron')"), 2);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM user_logins WHERE masked_ip !~ '^[0-9a-f]{64}$'"),
        0,
        "every ip masked"
    );
    c
}

#[test]
fn compose_scripts_fill_the_queue_and_the_worker_ingests_it() {
    let c = compose_up("docker_compose", "postgres", None, "");
    let mut db = c.connect("postgres");
    // pg_cron, configured by the same script, runs a job over its Unix socket setting.
    db.batch_execute("SELECT cron.schedule('sqs-ingest-check', '* * * * *', 'SELECT 1')").unwrap();
    wait_until("pg_cron's first run", WAIT, || {
        count(&mut db, "SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'") >= 1
    });
}

#[test]
fn take_home_table_created_first_gets_integer_versions_in_a_database_of_its_own() {
    let key = "take-home's key";
    let c = compose_up("docker_takehome", "takehome", Some("docker/takehome/05-user-logins.sql"), key);
    let mut db = c.connect("takehome");
    // pg_cron lives in POSTGRES_DB too, and runs its jobs there.
    db.batch_execute("SELECT cron.schedule('sqs-ingest-check', '* * * * *', 'SELECT 1')").unwrap();
    let set: String = db.query_one("SELECT current_setting('sqs_ingest.pii_key_file')", &[]).unwrap().get(0);
    assert!(set.ends_with("/sqs_ingest_pii_key"), "the init script sets the path: {set}");
    let masked: String = db.query_one("SELECT mask_pii('1.2.3.4')", &[]).unwrap().get(0);
    assert_eq!(masked, Masker::new(key.as_bytes()).mask("1.2.3.4"), "masked under the key in the file, quote and all");
    let auto_conf = std::fs::read_to_string(c.data().join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains(key), "no key in postgresql.auto.conf");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'user_logins' AND column_name = 'app_version' AND data_type = 'integer'"),
        1
    );
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins WHERE app_version BETWEEN 0 AND 39999"), 95);
}
