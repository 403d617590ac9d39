//! A real SQS emulator process on loopback (moto; moto 4.1, which speaks only the Query protocol;
//! LocalStack for the benchmark), and a client to fill and inspect queues.
use crate::{free_port, query_venv, venv, wait_until};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;

/// Credentials the emulator accepts; the cluster's postmaster gets the same.
pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    // No instance-metadata probe: this machine has no metadata service to ask.
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

pub struct Emulator {
    pub endpoint: String,
    pub port: u16,
    process: Mutex<Child>,
    /// The SDK's client; None for a Query-only emulator, which query_admin.py fills instead.
    client: Option<Client>,
    runtime: Runtime,
}

static SHARED: OnceLock<Emulator> = OnceLock::new();
static SHARED_QUERY_ONLY: OnceLock<Emulator> = OnceLock::new();
static SHARED_LOCALSTACK: OnceLock<Emulator> = OnceLock::new();

extern "C" fn stop_shared() {
    for e in [SHARED.get(), SHARED_QUERY_ONLY.get(), SHARED_LOCALSTACK.get()].into_iter().flatten() {
        e.stop();
    }
}

/// The emulator in `slot`, started on first use and killed when the test binary exits.
fn shared_in(slot: &'static OnceLock<Emulator>, start: fn() -> Emulator) -> &'static Emulator {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function; statics are never dropped.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_shared);
    });
    slot.get_or_init(start)
}

impl Emulator {
    /// moto's server, from the venv scripts/setup.sh makes, with its delete race mended
    /// (python/moto_server.py).
    pub fn start() -> Emulator {
        Emulator::moto(&venv(), true)
    }

    /// moto 4.1's server, which speaks only the SQS Query protocol, like the take-home's
    /// LocalStack image.
    pub fn query_only() -> Emulator {
        Emulator::moto(&query_venv(), false)
    }

    fn moto(venv: &Path, json: bool) -> Emulator {
        let port = free_port();
        let server = concat!(env!("CARGO_MANIFEST_DIR"), "/python/moto_server.py");
        let process = Command::new(venv.join("bin/python"))
            .args([server, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (run scripts/setup.sh first)");
        Emulator::listening(process, port, Duration::from_secs(30), json)
    }

    /// LocalStack's SQS, run without Docker from the Python venv at `venv` (bench/setup.sh makes
    /// it); its log goes to `log`. Queue URLs name the host they were asked on, as moto's do.
    pub fn localstack(venv: &Path, log: &Path) -> Emulator {
        let port = free_port();
        let data = std::env::temp_dir().join(format!("localstack-{}", std::process::id()));
        let log = std::fs::File::create(log).expect("LocalStack's log file");
        let process = Command::new(venv.join("bin/python"))
            .args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "sqs")
            .env("SQS_ENDPOINT_STRATEGY", "dynamic")
            .env("LOCALSTACK_VOLUME_DIR", &data)
            .env("DNS_ADDRESS", "0")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("LocalStack (run bench/setup.sh first)");
        Emulator::listening(process, port, Duration::from_secs(120), true)
    }

    fn listening(process: Child, port: u16, limit: Duration, json: bool) -> Emulator {
        wait_until("the emulator to listen", limit, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        let endpoint = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = json.then(|| {
            runtime.block_on(async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new("us-east-1"))
                    .endpoint_url(&endpoint);
                loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "test",
                    "test",
                    None,
                    None,
                    "sqs_ingest_it",
                ));
                Client::new(&loader.load().await)
            })
        });
        let emulator = Emulator { endpoint, port, process: Mutex::new(process), client, runtime };
        // Listening is not serving: LocalStack binds its port before SQS is loaded.
        wait_until("the emulator to serve SQS", limit, || match &emulator.client {
            Some(client) => emulator.runtime.block_on(client.list_queues().send()).is_ok(),
            None => emulator.query_admin(&["list"], None).is_ok(),
        });
        emulator
    }

    /// Runs query_admin.py against this emulator; its standard output.
    fn query_admin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("query_admin.py");
        let mut child = Command::new(query_venv().join("bin/python"))
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("query_admin.py {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("an emulator that speaks JSON")
    }

    /// One emulator for all tests of a test binary, killed when the binary exits.
    pub fn shared() -> &'static Emulator {
        shared_in(&SHARED, Emulator::start)
    }

    /// One Query-only emulator for all tests of a test binary, killed when the binary exits.
    pub fn shared_query_only() -> &'static Emulator {
        shared_in(&SHARED_QUERY_ONLY, Emulator::query_only)
    }

    /// One LocalStack for all tests of a test binary, killed when the binary exits: FIFO queues
    /// as SQS keeps them (a group held while any of its messages is in flight, to concurrent
    /// receives too; increasing sequence numbers), which moto's server does not.
    pub fn shared_localstack() -> &'static Emulator {
        shared_in(&SHARED_LOCALSTACK, || {
            let log = std::env::temp_dir().join(format!("sqs_ingest-it-localstack-{}.log", std::process::id()));
            Emulator::localstack(&crate::localstack_venv(), &log)
        })
    }

    pub fn stop(&self) {
        let mut p = self.process.lock().unwrap_or_else(|e| e.into_inner());
        let _ = p.kill();
        let _ = p.wait();
    }

    /// Runs `request` with a client of this emulator, for requests the harness does not make
    /// itself. On the harness's runtime: the client's pooled connections live there.
    pub fn run<F: std::future::Future>(&self, request: impl FnOnce(Client) -> F) -> F::Output {
        self.runtime.block_on(request(self.client().clone()))
    }

    /// A new, empty FIFO queue; `name` ends in `.fifo`.
    pub fn fifo_queue(&self, name: &str) -> Queue<'_> {
        let create = self.client().create_queue().queue_name(name).attributes(QueueAttributeName::FifoQueue, "true");
        let url = self.runtime.block_on(create.send()).expect("create_queue").queue_url.expect("queue url");
        Queue { emulator: self, url }
    }

    /// Runs the AWS CLI against this emulator (SNS and EventBridge, which the harness's SQS
    /// client does not speak); its JSON answer.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(venv().join("bin/aws"))
            .args(["--endpoint-url", &self.endpoint, "--region", "us-east-1", "--output", "json"])
            .args(args)
            .envs(AWS_ENV)
            .output()
            .expect("the AWS CLI (run scripts/setup.sh first)");
        assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// A new, empty standard queue that takes bodies up to SQS's maximum, 1 MiB.
    pub fn queue(&self, name: &str) -> Queue<'_> {
        if self.client.is_none() {
            let url = self.query_admin(&["create", name], None).unwrap();
            return Queue { emulator: self, url };
        }
        let create =
            self.client().create_queue().queue_name(name).attributes(QueueAttributeName::MaximumMessageSize, "1048576");
        let url = self.runtime.block_on(create.send()).expect("create_queue").queue_url.expect("queue url");
        Queue { emulator: self, url }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Queue<'a> {
    emulator: &'a Emulator,
    pub url: String,
}

impl Queue<'_> {
    /// Sends `bodies`, in order, in SendMessageBatch requests within SQS's limits: ten entries, 1 MiB.
    pub fn send(&self, bodies: &[String]) {
        self.send_in_flight(bodies, 1);
    }

    /// Sends `(group, body)` pairs to a FIFO queue, in order, ten per request, each with a
    /// deduplication id of its own, never used by an earlier call (SQS drops a message whose id
    /// it saw in the last 5 minutes).
    pub fn send_grouped(&self, messages: &[(String, String)]) {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let e = self.emulator;
        for (chunk, batch) in messages.chunks(10).enumerate() {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, (group, body))| {
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(body)
                        .message_group_id(group)
                        .message_deduplication_id(format!("d{}-{call}-{}", std::process::id(), chunk * 10 + i))
                        .build()
                        .unwrap()
                })
                .collect();
            let request = e.client().send_message_batch().queue_url(&self.url).set_entries(Some(entries));
            let out = e.runtime.block_on(request.send()).expect("send_message_batch");
            assert!(out.failed.is_empty(), "emulator refused messages: {:?}", out.failed);
        }
    }

    /// Sends `bodies` as `send` does, with `in_flight` requests at once: fills a queue fast,
    /// without keeping the bodies' order.
    pub fn send_in_flight(&self, bodies: &[String], in_flight: usize) {
        const MAX_BATCH_BYTES: usize = 1 << 20;
        let e = self.emulator;
        if e.client.is_none() {
            let json = serde_json::to_string(bodies).unwrap();
            e.query_admin(&["send", &self.url], Some(&json)).unwrap();
            return;
        }
        e.runtime.block_on(async {
            let mut requests = tokio::task::JoinSet::new();
            let mut start = 0;
            while start < bodies.len() {
                let mut end = start + 1;
                let mut bytes = bodies[start].len();
                while end < bodies.len() && end - start < 10 && bytes + bodies[end].len() <= MAX_BATCH_BYTES {
                    bytes += bodies[end].len();
                    end += 1;
                }
                if requests.len() >= in_flight.max(1) {
                    requests.join_next().await.unwrap().unwrap();
                }
                let entries = (start..end)
                    .map(|i| {
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{i}"))
                            .message_body(&bodies[i])
                            .build()
                            .unwrap()
                    })
                    .collect();
                let request = e.client().send_message_batch().queue_url(&self.url).set_entries(Some(entries));
                requests.spawn(async move {
                    let out = request.send().await.expect("send_message_batch");
                    assert!(out.failed.is_empty(), "emulator refused messages: {:?}", out.failed);
                });
                start = end;
            }
            while let Some(done) = requests.join_next().await {
                done.unwrap();
            }
        });
    }

    /// Sends the bodies 200 at a time, each chunk once fewer than 100 are left: moto's receive
    /// slows with the depth of the queue, and a shallow queue is what a consumer that keeps up sees.
    pub fn feed(&self, bodies: &[String]) {
        for chunk in bodies.chunks(200) {
            wait_until("the queue to drain below 100", Duration::from_secs(300), || {
                let (visible, in_flight) = self.counts();
                visible + in_flight < 100
            });
            self.send(chunk);
        }
    }

    /// Sends each record of a JSON array file as one message, its body Python's
    /// json.dumps(record): as the take-home fills its queue. Query-only emulators.
    pub fn send_records(&self, file: &Path) {
        self.emulator.query_admin(&["send-records", &self.url, file.to_str().unwrap()], None).unwrap();
    }

    /// (visible, in flight) messages, as SQS approximates them.
    pub fn counts(&self) -> (u64, u64) {
        let e = self.emulator;
        if e.client.is_none() {
            let out = e.query_admin(&["counts", &self.url], None).unwrap();
            let mut n = out.split(' ').map(|v| v.parse().unwrap());
            return (n.next().unwrap(), n.next().unwrap());
        }
        let out = e
            .runtime
            .block_on(
                e.client()
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .expect("get_queue_attributes");
        let attrs = out.attributes.unwrap_or_default();
        let get = |name| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }
}
