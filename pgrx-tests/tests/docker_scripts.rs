//! The Docker setup's own scripts, run for real without a Docker engine: the LocalStack init hook
//! fills a moto queue through `awslocal`, the Postgres init script configures a fresh cluster that
//! preloads both libraries as the image does, and after the restart the entrypoint would do, the
//! worker ingests the queue.
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::{count, venv, wait_until, Cluster, Emulator};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn run(script: &str, env: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = format!("{}:/usr/bin:/bin", venv().join("bin").display());
    let out = Command::new("bash")
        .arg(root.join(script))
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the compose setup's scripts against a cluster and moto; returns the cluster once the
/// worker has ingested the 95 valid messages and dead-lettered the 5 malformed ones.
fn compose_up(name: &str, sql_first: Option<&str>, pii_key: &str) -> Cluster {
    let emulator = Emulator::start();
    let c = Cluster::start(name, &["shared_preload_libraries = 'sqs_ingest,pg_cron'".to_owned()], &AWS_ENV);
    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL", &emulator.endpoint));
    run("docker/localstack/ready.d/10-login-queue.sh", &env);
    let queue = emulator.queue("login-queue");
    assert_eq!(queue.counts(), (100, 0));

    let socket_dir = c.dir.to_str().unwrap().to_owned();
    let port = c.port.to_string();
    if let Some(sql) = sql_first {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let status = Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-U", "postgres", "-h", &socket_dir, "-p", &port, "-f"])
            .arg(root.join(sql))
            .status()
            .unwrap();
        assert!(status.success(), "{sql}");
    }
    let pg_env = [
        ("PGHOST", socket_dir.as_str()),
        ("PGPORT", port.as_str()),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_DB", "postgres"),
        ("SQS_QUEUE_URL", queue.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("SQS_INGEST_PII_KEY", pii_key),
    ];
    run("docker/initdb.d/10-sqs-ingest.sh", &pg_env);
    c.restart(&AWS_ENV);

    let mut db = c.connect("postgres");
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
    let c = compose_up("docker_compose", None, "");
    let mut db = c.connect("postgres");
    // pg_cron, configured by the same script, runs a job over its Unix socket setting.
    db.batch_execute("SELECT cron.schedule('sqs-ingest-check', '* * * * *', 'SELECT 1')").unwrap();
    wait_until("pg_cron's first run", WAIT, || {
        count(&mut db, "SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'") >= 1
    });
}

#[test]
fn take_home_table_created_first_gets_integer_versions() {
    let key = "take-home's key";
    let c = compose_up("docker_takehome", Some("docker/takehome/05-user-logins.sql"), key);
    let mut db = c.connect("postgres");
    let set: String = db.query_one("SELECT current_setting('sqs_ingest.pii_key')", &[]).unwrap().get(0);
    assert_eq!(set, key, "SQS_INGEST_PII_KEY, quote and all");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'user_logins' AND column_name = 'app_version' AND data_type = 'integer'"),
        1
    );
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins WHERE app_version BETWEEN 0 AND 39999"), 95);
}
