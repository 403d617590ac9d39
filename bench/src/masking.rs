//! P1: mask_pii over a million values against Postgres's own sha256 and pgcrypto's digest,
//! alternated, parallel workers off.
use crate::stats::median;
use crate::{Bench, Row};
use std::time::Instant;

const ROWS: i32 = 1_000_000;

pub fn run(b: &Bench) -> Vec<Row> {
    let mut db = b.cluster.connect("postgres");
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE bench_ips AS
            SELECT (1 + i % 254) || '.' || (i / 254 % 256) || '.' || (i / 65024 % 256) || '.' || (i % 7) AS ip
            FROM generate_series(1, {ROWS}) i;
         SET max_parallel_workers_per_gather = 0;"
    ))
    .unwrap();
    // Its own statement: VACUUM cannot run in the implicit transaction of a multi-statement batch.
    db.batch_execute("VACUUM ANALYZE bench_ips").unwrap();
    // Unkeyed mask_pii is SHA-256, the same work as the builtins; keyed is HMAC, two passes.
    let queries = [
        ("mask_pii, unkeyed (SHA-256)", "SET sqs_ingest.pii_key = ''", "mask_pii(ip)"),
        ("encode(sha256(convert_to(ip, 'UTF8')), 'hex')", "", "encode(sha256(convert_to(ip, 'UTF8')), 'hex')"),
        ("pgcrypto encode(digest(ip, 'sha256'), 'hex')", "", "encode(digest(ip, 'sha256'), 'hex')"),
        ("mask_pii, keyed (HMAC-SHA256)", "RESET sqs_ingest.pii_key", "mask_pii(ip)"),
    ];
    let mut seconds = vec![Vec::new(); queries.len()];
    for _ in 0..b.args.rounds.max(5) {
        for (i, (_, setup, expr)) in queries.iter().enumerate() {
            if !setup.is_empty() {
                db.batch_execute(setup).unwrap();
            }
            let start = Instant::now();
            // max() keeps every value: count() of a STRICT function could skip nothing anyway,
            // but max() makes the result depend on each one.
            db.query_one(&format!("SELECT max({expr}) FROM bench_ips"), &[]).unwrap();
            seconds[i].push(start.elapsed().as_secs_f64());
        }
    }
    db.batch_execute("DROP TABLE bench_ips").unwrap();
    let ms = |i: usize| median(seconds[i].clone()) * 1000.0;
    let ratio = |i: usize, over: usize| median(seconds[i].iter().zip(&seconds[over]).map(|(a, b)| a / b).collect());
    let mut rows = vec![Row {
        id: "P1",
        what: format!("1M values, median ms: {}", queries.iter().map(|q| q.0).collect::<Vec<_>>().join(" / ")),
        figure: format!("{:.0} / {:.0} / {:.0} / {:.0} ms", ms(0), ms(1), ms(2), ms(3)),
        goal: "",
        met: None,
    }];
    for (over, name) in [(1, "the builtin sha256"), (2, "pgcrypto")] {
        let x = ratio(0, over);
        rows.push(Row {
            id: "P1",
            what: format!("mask_pii time vs {name}"),
            figure: format!("{x:.2}x"),
            goal: "<= 0.3x",
            met: Some(x <= 0.3),
        });
    }
    rows
}
