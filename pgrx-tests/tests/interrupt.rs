//! Every network wait is interruptible: cancel, statement_timeout and terminate act within
//! 250 ms against an endpoint that accepts the connection and never answers.
use postgres::error::SqlState;
use postgres::NoTls;
use sqs_ingest_it::fault::FaultEndpoint;
use sqs_ingest_it::logins::take_home_like;
use sqs_ingest_it::{fetch_all, point_at, shared_cluster, wait_until, Cluster, Emulator};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_millis(250);

fn postmaster_start(c: &Cluster) -> String {
    c.connect("postgres").query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0)
}

/// Starts fetch_login_queue against a hanging endpoint in a thread, waits until the backend
/// is connected to it, and returns the backend's pid, the thread, and the fake endpoint.
fn hanging_fetch(
    name: &str,
) -> (
    i32,
    std::thread::JoinHandle<(Result<i32, postgres::Error>, Instant, postgres::Client)>,
    FaultEndpoint,
    postgres::CancelToken,
) {
    let hang = FaultEndpoint::hanging();
    let mut db = shared_cluster().database(name);
    point_at(&mut db, &hang.queue_url());
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let token = db.cancel_token();
    let worker = std::thread::spawn(move || {
        let result = db.query_one("SELECT fetch_login_queue(10)", &[]).map(|r| r.get(0));
        (result, Instant::now(), db)
    });
    wait_until("the backend to connect to the hanging endpoint", Duration::from_secs(10), || hang.accepted() > 0);
    (pid, worker, hang, token)
}

#[test]
fn cancel_acts_within_250ms() {
    const NAME: &str = "cancel";
    let before = postmaster_start(shared_cluster());
    let (_pid, worker, _hang, token) = hanging_fetch(NAME);
    let asked = Instant::now();
    token.cancel_query(NoTls).unwrap();
    let (result, ended, mut db) = worker.join().unwrap();
    let latency = ended - asked;
    eprintln!("cancel latency: {} ms", latency.as_millis());
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert!(latency < LIMIT, "cancel took {latency:?}");
    assert_eq!(postmaster_start(shared_cluster()), before, "no crash restart");

    // The backend's runtime and client survive the abandoned request.
    let queue = Emulator::shared().queue("after_cancel");
    queue.send(&take_home_like(2, 43));
    point_at(&mut db, &queue.url);
    assert_eq!(fetch_all(&mut db, 10, 2), 2);
}

#[test]
fn statement_timeout_latency_is_bounded() {
    let mut db = shared_cluster().database("timeout");
    let hang = FaultEndpoint::hanging();
    point_at(&mut db, &hang.queue_url());
    db.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let start = Instant::now();
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let took = start.elapsed();
    eprintln!("statement_timeout = 300ms returned after {} ms", took.as_millis());
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(took < Duration::from_millis(300) + LIMIT, "took {took:?}");
    assert_eq!(db.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1, "the session goes on");
}

#[test]
fn terminate_acts_within_250ms_and_the_server_survives() {
    const NAME: &str = "terminate";
    let before = postmaster_start(shared_cluster());
    let (pid, worker, _hang, _token) = hanging_fetch(NAME);
    let mut admin = shared_cluster().connect("postgres");
    let asked = Instant::now();
    admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    let (result, ended, _db) = worker.join().unwrap();
    let latency = ended - asked;
    eprintln!("terminate latency: {} ms", latency.as_millis());
    // The server ends the session with FATAL 57P01, or the connection closes first.
    let error = result.expect_err("a terminated backend returns no row");
    assert!(error.code() == Some(&SqlState::ADMIN_SHUTDOWN) || error.is_closed(), "{error}");
    assert!(latency < LIMIT, "terminate took {latency:?}");
    assert_eq!(postmaster_start(shared_cluster()), before, "no crash restart");
    assert!(shared_cluster().is_up());
}
