//! I1: instructions per message, counted by callgrind in the backend of the fetch loop, of a
//! generic source's fetch loop and in the worker: unlike CPU seconds, the same on a busy machine.
//! Each is the difference of two process lives, one ingesting 3 x 1,000 messages and one
//! ingesting 1,000 after the same warm-up, so what a process pays once cancels out.
use crate::{Bench, Row};
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::{count, wait_until};
use std::path::PathBuf;
use std::time::Duration;

/// Calls of the longer life (each of `--messages` up to 1,000), and the warm-up both lives
/// begin with.
const CALL_LIMIT: usize = 1000;
const CALLS: usize = 3;
const WARM: usize = 10;
/// Under valgrind everything runs some 50 times slower.
const SLOW: Duration = Duration::from_secs(300);

pub fn run(b: &Bench) -> Vec<Row> {
    b.cluster.stop();
    let out = format!("--callgrind-out-file={}/callgrind.%p", b.cluster.dir.display());
    b.cluster.start_wrapped(&["valgrind", "--tool=callgrind", &out], &AWS_ENV);
    let call = b.args.messages.min(CALL_LIMIT);
    let fetch = per_message(call, |calls| session(b, "SELECT fetch_login_queue($1)", call, calls));
    let generic = per_message(call, |calls| session(b, "SELECT sqs_ingest.fetch_source('generic', $1)", call, calls));
    let worker = per_message(call, |calls| worker_life(b, call, calls));
    b.cluster.stop();
    b.cluster.start_again(&AWS_ENV);
    vec![Row {
        id: "I1",
        what: "instructions per message, callgrind (fetch loop / worker / generic source); valgrind hides SHA-NI, so \
               signing and masking run sha256's portable code here and weigh more than on the CPU"
            .to_owned(),
        figure: format!("{fetch:.0} / {worker:.0} / {generic:.0}"),
        goal: "",
        met: None,
    }]
}

/// Instructions per message between a life of CALLS calls of `call` messages and one of a
/// single call.
fn per_message(call: usize, life: impl Fn(usize) -> PathBuf) -> f64 {
    let one = instructions(&life(1));
    let many = instructions(&life(CALLS));
    (many - one) as f64 / ((CALLS - 1) * call) as f64
}

/// A session that warms up and then ingests `calls` x `call` messages with `sql` (a fetch of
/// up to $1); its callgrind file.
fn session(b: &Bench, sql: &str, call: usize, calls: usize) -> PathBuf {
    b.reset();
    b.load(WARM + calls * call, 77 + calls as u64);
    let mut db = b.cluster.connect("postgres");
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut rows = 0;
    for max in std::iter::once(WARM).chain(std::iter::repeat_n(call, calls)) {
        rows += db.query_one(sql, &[&(max as i32)]).unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, i32>(0) as usize;
    }
    assert_eq!(rows, WARM + calls * call, "{sql}: every message a row");
    drop(db);
    written(b, pid)
}

/// A worker that ingests WARM + `calls` x `call` messages, queued before it is switched on, and
/// is then terminated; its callgrind file.
fn worker_life(b: &Bench, call: usize, calls: usize) -> PathBuf {
    b.reset();
    let n = WARM + calls * call;
    b.load(n, 88 + calls as u64);
    b.workers(true);
    let pid = *b.cluster.worker_pids().first().expect("a worker");
    let mut db = b.cluster.connect("postgres");
    wait_until("the worker's rows", SLOW, || count(&mut db, "SELECT count(*) FROM user_logins") as usize >= n);
    b.workers(false);
    db.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    written(b, pid)
}

/// The callgrind file of `pid`, once the process has exited and callgrind has written it.
fn written(b: &Bench, pid: i32) -> PathBuf {
    let file = b.cluster.dir.join(format!("callgrind.{pid}"));
    wait_until("callgrind's file", SLOW, || std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\ntotals:")));
    file
}

/// The instructions a callgrind file counts in all.
fn instructions(file: &PathBuf) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    let totals = text.lines().find_map(|l| l.strip_prefix("totals:")).expect("a totals line");
    totals.trim().parse().unwrap_or_else(|e| panic!("{}: totals {totals:?}: {e}", file.display()))
}
