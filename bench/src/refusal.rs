//! R1: what isolating a refused row costs: fetch_login_queue(80) of 80 messages of which a CHECK
//! constraint refuses one, against 80 the table takes, alternated round by round.
use crate::stats::{median, ms};
use crate::{Bench, Row};
use sqs_ingest_it::fetch;
use sqs_ingest_it::logins::{valid, with_field};
use std::time::Instant;

const BATCH: usize = 80;

pub fn run(b: &Bench) -> Vec<Row> {
    let mut db = b.cluster.connect("postgres");
    db.batch_execute("ALTER TABLE user_logins ADD CONSTRAINT bench_no_windows CHECK (device_type <> 'windows')")
        .unwrap();
    // The first fetch of a session builds its client: paid before any clock starts.
    fetch(&mut db, 1);
    let (mut clean, mut refused) = (Vec::new(), Vec::new());
    for round in 0..b.args.rounds {
        for one_refused in [false, true] {
            b.reset();
            let mut bodies = valid(BATCH, 900 + round as u64);
            if one_refused {
                bodies[BATCH / 2] = with_field(&bodies[BATCH / 2], "device_type", "windows");
            }
            b.queue.send(&bodies);
            sqs_ingest_it::wait_until("the queue to show the batch", std::time::Duration::from_secs(60), || {
                b.queue.counts().0 as usize >= BATCH
            });
            let started = Instant::now();
            // Short polls may bring fewer than asked: fetch until the batch is in (bounded).
            let mut rows = 0;
            for _ in 0..100 {
                if rows + (one_refused as usize) >= BATCH {
                    break;
                }
                rows += fetch(&mut db, BATCH as i32) as usize;
            }
            assert_eq!(rows + one_refused as usize, BATCH, "every message a row or a dead letter");
            let took = ms(started.elapsed());
            if one_refused { &mut refused } else { &mut clean }.push(took);
        }
    }
    db.batch_execute("ALTER TABLE user_logins DROP CONSTRAINT bench_no_windows; TRUNCATE sqs_ingest.dead_letters")
        .unwrap();
    let (clean, refused) = (median(clean), median(refused));
    vec![Row {
        id: "R1",
        what: format!(
            "fetch_login_queue({BATCH}): one row refused by a CHECK constraint vs none, median of {} rounds",
            b.args.rounds
        ),
        figure: format!("{refused:.1} ms vs {clean:.1} ms: isolating it costs {:.1} ms", refused - clean),
        goal: "",
        met: None,
    }]
}
