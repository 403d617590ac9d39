//! The benchmark: sqs_ingest against the pipeline users run today (Python) and against the
//! emulator's own limit, on one cluster and one LocalStack; every comparison is alternated round
//! by round so that machine noise cancels. Prints one table. Run it with bench/run.sh.
mod ceiling;
mod drains;
mod fast_sqs;
mod instructions;
mod large;
mod latency;
mod masking;
mod memory;
mod pool;
mod refusal;
mod requests;
mod scaling;
mod sqs;
mod stats;

use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::{localstack_venv, wait_until, Cluster, Emulator, Queue};
use std::time::Duration;

/// The key both pipelines mask with (HMAC-SHA256), as a keyed deployment would.
pub const PII_KEY: &str = "bench-key-0123456789abcdef0123456789abcdef";

pub struct Args {
    /// Messages per drain (P2-P4, scaling).
    pub messages: usize,
    /// Rounds of each alternated comparison.
    pub rounds: usize,
    /// Messages the worker ingests while its memory is watched (P7).
    pub rss: usize,
    /// The sections to run (`--only drains,pool`); all when empty.
    pub only: Vec<String>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args { messages: 5000, rounds: 5, rss: 20_000, only: Vec::new() };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--only" {
                let names = it.next().unwrap_or_else(|| usage());
                args.only = names.split(',').map(str::to_owned).collect();
                continue;
            }
            let value = it.next().and_then(|v| v.parse().ok());
            let slot = match flag.as_str() {
                "--messages" => &mut args.messages,
                "--rounds" => &mut args.rounds,
                "--rss" => &mut args.rss,
                _ => usage(),
            };
            *slot = value.unwrap_or_else(|| usage());
        }
        args
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: sqs_ingest_bench [--messages N (5000)] [--rounds R (5)] [--rss N (20000)] [--only SECTION,... ({})]",
        SECTIONS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(",")
    );
    std::process::exit(2)
}

/// One line of the table: a figure, its goal and whether it is met.
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub figure: String,
    pub goal: &'static str,
    pub met: Option<bool>,
}

impl Row {
    fn line(&self) -> String {
        let met = match self.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        format!("| {} | {} | {} | {} | {met} |", self.id, self.what, self.figure, self.goal)
    }
}

/// What every measure runs against.
pub struct Bench<'a> {
    pub args: &'a Args,
    pub queue: Queue<'a>,
    pub cluster: Cluster,
    pub emulator: &'a Emulator,
}

impl Bench<'_> {
    /// Switches the worker(s) on or off and waits until they say so.
    pub fn workers(&self, on: bool) {
        let mut db = self.cluster.connect("postgres");
        // Two statements: ALTER SYSTEM cannot run in a multi-statement batch's transaction.
        db.batch_execute(&format!("ALTER SYSTEM SET sqs_ingest.worker_enabled = {on}")).unwrap();
        db.batch_execute("SELECT pg_reload_conf()").unwrap();
        let disabled = if on { "state <> 'disabled'" } else { "state = 'disabled'" };
        wait_until("the workers to switch", Duration::from_secs(60), || {
            let sql = format!("SELECT bool_and({disabled}) FROM sqs_ingest.worker_status WHERE pid <> 0");
            db.query_one(sql.as_str(), &[]).unwrap().get::<_, Option<bool>>(0).unwrap_or(false)
        });
    }

    /// Puts `n` generated logins in the queue and waits until it shows them all, before a drain
    /// starts its clock.
    pub fn load(&self, n: usize, seed: u64) {
        self.queue.send_in_flight(&sqs_ingest_it::logins::valid(n, seed), sqs::IN_FLIGHT);
        wait_until("the queue to show every message", Duration::from_secs(60), || self.queue.counts().0 as usize >= n);
    }

    /// Empties the table and the ledger between runs, so each starts from the same state.
    pub fn reset(&self) {
        self.cluster
            .connect("postgres")
            .batch_execute("TRUNCATE user_logins, sqs_ingest.processed_messages; CHECKPOINT")
            .unwrap();
    }
}

/// The sections in the order they run, by the names `--only` takes.
const SECTIONS: [(&str, fn(&Bench) -> Vec<Row>); 12] = [
    ("masking", masking::run),
    ("first_call", latency::first_call),
    ("drains", drains::run),
    ("send_to_row", latency::send_to_row),
    ("requests", requests::run),
    ("memory", memory::run),
    ("scaling", scaling::run),
    ("refusal", refusal::run),
    ("pool", pool::run),
    ("ceiling", ceiling::run),
    ("large", large::run),
    // Last: it restarts the cluster under valgrind.
    ("instructions", instructions::run),
];

fn main() {
    let args = Args::parse();
    let log = std::env::temp_dir().join(format!("sqs_ingest-bench-localstack-{}.log", std::process::id()));
    let emulator = Emulator::localstack(&localstack_venv(), &log);
    let queue = emulator.queue("bench");
    let settings = [
        format!("sqs_ingest.queue_url = '{}'", queue.url),
        format!("sqs_ingest.pii_key = '{PII_KEY}'"),
        "sqs_ingest.worker_enabled = off".to_owned(),
        "sqs_ingest.worker_wait = 20".to_owned(),
        // As in production: the comparison must pay for durable commits.
        "fsync = on".to_owned(),
        "shared_buffers = '256MB'".to_owned(),
    ];
    let cluster = Cluster::start("bench", &settings, &AWS_ENV);
    cluster.connect("postgres").batch_execute("CREATE EXTENSION sqs_ingest").unwrap();
    let bench = Bench { args: &args, queue, cluster, emulator: &emulator };
    println!("{}", machine());

    let mut rows = Vec::new();
    for (name, section) in SECTIONS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let new = section(&bench);
        // Each section's lines as soon as they are known, then all of them in one table.
        new.iter().for_each(|r| println!("{}", r.line()));
        rows.extend(new);
    }
    println!("\n| | measure | figure | goal | met |\n|---|---|---|---|---|");
    rows.iter().for_each(|r| println!("{}", r.line()));
    println!("bench: complete");
}

/// The machine, for the record: CPU model and count, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = sqs_ingest_it::kib_field(&meminfo, "MemTotal:").unwrap_or(0);
    format!(
        "machine: {} x {}, {:.0} GiB; PostgreSQL 15, LocalStack 4.4 (SQS) on the same machine",
        cores,
        model.unwrap_or("unknown CPU"),
        mem_kib as f64 / 1048576.0
    )
}
