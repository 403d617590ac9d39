//! A server without AWS credentials fails at once with a clear error, not after probing.
use postgres::error::SqlState;
use sqs_ingest_it::{point_at, Cluster, Emulator};
use std::time::{Duration, Instant};

#[test]
fn missing_credentials_are_a_fast_clear_error_with_a_hint() {
    let queue = Emulator::shared().queue("no_credentials");
    // No keys, no profile, and no instance metadata service to fall back on.
    let cluster = Cluster::start("no_credentials", &[], &[("AWS_EC2_METADATA_DISABLED", "true")]);
    let mut db = cluster.database("no_credentials");
    point_at(&mut db, &queue.url);

    let start = Instant::now();
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let took = start.elapsed();
    eprintln!("missing credentials reported after {} ms", took.as_millis());

    let db_err = err.as_db_error().expect("an ERROR from the server");
    assert_eq!(db_err.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{db_err:?}");
    assert!(db_err.message().contains("no AWS credentials"), "{}", db_err.message());
    assert!(db_err.hint().unwrap().contains("AWS_ACCESS_KEY_ID"));
    assert!(took < Duration::from_millis(500), "took {took:?}");
}
