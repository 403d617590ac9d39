//! The README's SQL examples, run as written, in order, so that the manual cannot drift from the
//! code: every ```sql block of README.md, statement by statement, in one database of a cluster
//! of its own. Two substitutions make them runnable here, and nothing else is changed: an AWS
//! queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`) becomes the URL of the
//! emulator's queue of that name, which holds messages of the example's kind; and the key file
//! path the README uses becomes a key file of the test's. The pg_cron example runs in a test of
//! its own (pg_cron is built for PostgreSQL 15 only here).
use postgres::{Client, SimpleQueryMessage};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::{valid, with_field};
use sqs_ingest_it::secrets::RECOVERY_KEY;
use sqs_ingest_it::{count, key_file, wait_until, Cluster, Emulator, WAIT};
use std::path::Path;

const KEY_FILE: &str = "/etc/postgresql/sqs_ingest_pii_key";
const PG_CRON: &str = "cron.schedule";

/// The ```sql blocks of the README, in order.
fn sql_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sql block");
    blocks
}

/// The statements of a block: split at semicolons outside quotes and comments, comments dropped.
fn statements(block: &str) -> Vec<String> {
    let (mut out, mut current) = (Vec::new(), String::new());
    let mut chars = block.chars().peekable();
    let (mut quoted, mut identifier) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !identifier => quoted = !quoted,
            '"' if !quoted => identifier = !identifier,
            '-' if !quoted && !identifier && chars.peek() == Some(&'-') => {
                // A comment to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                current.push('\n');
                continue;
            }
            ';' if !quoted && !identifier => {
                out.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    assert!(current.trim().is_empty(), "a statement without its semicolon: {current}");
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `text` with every AWS queue URL replaced by `queue_url(name)`.
fn local_queues(text: &str, mut queue_url: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("https://sqs.") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(['\'', ' ', '\n']).map_or(rest.len(), |e| start + e);
        let url = &rest[start..end];
        assert!(url.contains(".amazonaws.com/"), "an AWS queue URL: {url}");
        out.push_str(&queue_url(url.rsplit('/').next().unwrap()));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `sql` and prints what it returned, as psql would list it.
fn run(db: &mut Client, sql: &str) {
    let messages = db.simple_query(sql).unwrap_or_else(|e| panic!("README example failed:\n{sql}\n{e:?}"));
    let rows: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("")).collect::<Vec<_>>().join(" | "))
            }
            _ => None,
        })
        .collect();
    println!("{sql};\n{}\n", rows.join("\n"));
}

#[test]
fn every_sql_example_of_the_readme_runs() {
    let emulator = Emulator::shared();
    let dir = tempfile_dir();
    let key = key_file(&dir, "pii_key", "readme-example-key", 0o600);
    let c = Cluster::start(
        "readme",
        &["sqs_ingest.worker_enabled = off".to_owned(), format!("sqs_ingest.recovery_key = '{RECOVERY_KEY}'")],
        &AWS_ENV,
    );
    let mut db = c.connect("postgres");
    db.batch_execute("CREATE ROLE etl; CREATE ROLE dpo; CREATE ROLE etl_admin").unwrap();
    // What the examples' queues hold: logins (one from the README's ip, one the table refuses
    // once a constraint is added), orders, events.
    let mut logins = valid(20, 401);
    logins[0] = with_field(&logins[0], "ip", "199.172.111.135");
    let orders: Vec<String> =
        (1..=5).map(|i| format!(r#"{{"id": "o-{i}", "total": "{i}.50", "email": "buyer{i}@example.com"}}"#)).collect();
    let events = vec![r#"{"kind": "signup", "email": "a@example.com", "amount": 3}"#.to_owned()];
    let mut queues = std::collections::HashMap::new();
    for (name, bodies) in [("login-queue", logins), ("orders", orders), ("events", events)] {
        let queue = emulator.queue(name);
        queue.send(&bodies);
        queues.insert(name.to_owned(), queue.url.clone());
    }
    let blocks = sql_blocks();
    assert!(blocks.len() >= 10, "the README's SQL examples: {}", blocks.len());
    let mut ran = 0;
    for block in blocks.iter().filter(|b| !b.contains(PG_CRON)) {
        let block = local_queues(block, |name| {
            queues.get(name).cloned().unwrap_or_else(|| panic!("no emulator queue for the README's {name}"))
        })
        .replace(KEY_FILE, key.to_str().unwrap());
        for statement in statements(&block) {
            run(&mut db, &statement);
            ran += 1;
            if statement.contains("pg_reload_conf") {
                // The reload reaches this session between statements: wait until it has.
                let queue_url = queues["login-queue"].clone();
                wait_until("the reload", WAIT, || {
                    let now: String =
                        db.query_one("SELECT current_setting('sqs_ingest.queue_url')", &[]).unwrap().get(0);
                    now == queue_url
                });
            }
        }
    }
    println!("{ran} statements of the README run");
    // The last example drops the extension; the users' tables stay.
    assert_eq!(count(&mut db, "SELECT count(*) FROM pg_extension WHERE extname = 'sqs_ingest'"), 0);
    assert!(count(&mut db, "SELECT count(*) FROM user_logins") > 0);
    assert_eq!(count(&mut db, "SELECT count(*) FROM orders"), 5);
}

#[test]
fn the_readme_pg_cron_example_runs() {
    let queue = Emulator::shared().queue("readme_pg_cron");
    let c = Cluster::with_pg_cron("readme_pg_cron", &queue.url);
    let mut db = c.with_extension("postgres");
    queue.send(&valid(5, 409));
    let block = sql_blocks().into_iter().find(|b| b.contains(PG_CRON)).expect("the pg_cron example");
    for statement in statements(&block) {
        run(&mut db, &statement);
    }
    // pg_cron runs minute schedules: the first run comes within a minute.
    wait_until("the scheduled run", std::time::Duration::from_secs(90), || {
        count(&mut db, "SELECT count(*) FROM user_logins") == 5
    });
}

/// A directory of this test's, readable by the server's user.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sqs_ingest-readme-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("chown").arg("postgres:").arg(&dir).status().unwrap();
    assert!(status.success());
    dir
}
