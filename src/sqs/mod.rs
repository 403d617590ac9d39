//! The backend's SQS client: a queue value whose requests go out in the protocol its endpoint
//! speaks (JSON through aws-sdk-sqs, or the older Query protocol for emulators that speak only
//! that), on one leaked current-thread runtime, driven in short slices so that Postgres
//! interrupts are honoured while waiting.
mod attempt;
mod error;
mod http;
mod json;
mod query;
mod signed;

pub use error::SqsError;
use sqs_ingest_core::received::Receive;
pub use sqs_ingest_core::received::Received;

use pgrx::PostgresGucEnum;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll as Ready;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// How long a request runs between two interrupt checks.
const SLICE: Duration = Duration::from_millis(50);
/// Most messages one ReceiveMessage or DeleteMessageBatch takes.
pub const BATCH: usize = 10;
/// Query protocol: attempts of a request that fails transiently, and the pause after the first
/// (doubled after each). The JSON protocol's are the SDK's standard retry mode.
const ATTEMPTS: usize = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The wire protocol, `sqs_ingest.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum Protocol {
    /// JSON until the endpoint answers in the Query protocol, then Query for good.
    #[name = c"auto"]
    Auto,
    #[name = c"json"]
    Json,
    #[name = c"query"]
    Query,
}

impl Protocol {
    /// The protocol a source names (sqs_ingest.sources.protocol).
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "auto" => Some(Protocol::Auto),
            "json" => Some(Protocol::Json),
            "query" => Some(Protocol::Query),
            _ => None,
        }
    }
}

/// Everything a connection is built from; a change of any of it builds a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub endpoint: Option<String>,
    pub region: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub protocol: Protocol,
    /// The role a source's identity assumes; None: the server's own credentials.
    pub assume: Option<AssumeRole>,
}

/// An IAM role assumed through STS with the server's credentials (a source's identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The identity's name, as errors name it.
    pub identity: String,
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    /// STS's region; None: the queue's.
    pub region: Option<String>,
}

impl ClientConfig {
    /// Where requests are posted: the endpoint's root (the body names the queue).
    pub fn url(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{}/", endpoint.trim_end_matches('/')),
            None if self.region.starts_with("cn-") => format!("https://sqs.{}.amazonaws.com.cn/", self.region),
            None => format!("https://sqs.{}.amazonaws.com/", self.region),
        }
    }

    /// Where requests go, for error messages: without credentials a URL may carry.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Some(e) => sqs_ingest_core::redact::url(e),
            None => format!("SQS in {}", self.region),
        }
    }
}

/// A queue and how to ask it for messages: all that a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub config: ClientConfig,
    pub url: String,
    /// The visibility timeout asked for received messages; None: the queue's own.
    pub visibility_timeout: Option<i32>,
    /// Whether receives ask for the messages' attributes (a source's expressions use them).
    pub message_attributes: bool,
}

impl Queue {
    /// A FIFO queue, as SQS names them.
    pub fn is_fifo(&self) -> bool {
        self.url.ends_with(".fifo")
    }

    /// Receives up to `max` messages, `in_flight` requests of ten at once, calling `between`
    /// every slice while it waits (see [`run`]). `None`: stopped by `between`.
    pub fn receive_blocking(
        &self,
        max: usize,
        in_flight: usize,
        wait_seconds: i32,
        between: impl FnMut() -> bool,
    ) -> Option<Result<Receipt, SqsError>> {
        run(self.receive_many(max, in_flight, wait_seconds), between)
    }

    /// The receive of [`Queue::receive_blocking`] as a future that owns its queue, for a caller
    /// that drives several at once through [`run`].
    pub async fn receive(self, max: usize, in_flight: usize, wait_seconds: i32) -> Result<Receipt, SqsError> {
        self.receive_many(max, in_flight, wait_seconds).await
    }

    /// ReceiveMessage requests for `max` messages in all, ten per request and at most
    /// `in_flight` of them at once: what they bring together. A request that fails (after the
    /// SDK's retries) costs only its own answer: what the others brought is kept, and from a
    /// FIFO queue the next receive sends the failed one's attempt id again (attempt.rs), so its
    /// group is not held for a visibility timeout. Only when every request fails is it an error.
    async fn receive_many(&self, max: usize, in_flight: usize, wait_seconds: i32) -> Result<Receipt, SqsError> {
        let connection = connection(&self.config).await?;
        let requests = max.div_ceil(BATCH).clamp(1, in_flight.max(1));
        let sizes = (0..requests).map(|i| (max - i * BATCH).min(BATCH) as i32);
        let limit = self.config.request_timeout + Duration::from_secs(wait_seconds as u64);
        let answers = futures_util::future::join_all(sizes.map(|n| {
            let connection = &connection;
            let attempt = self.is_fifo().then(|| attempt::Attempt::next(&self.url));
            async move {
                let request = Receive {
                    queue_url: &self.url,
                    max: n,
                    wait_seconds,
                    visibility_timeout: self.visibility_timeout,
                    fifo_attempt: attempt.as_ref().map(|a| a.id.as_str()),
                    message_attributes: self.message_attributes,
                };
                let received = self
                    .request(connection, limit, |query| async move {
                        match &connection.query {
                            Some(signed) if query => query::receive(signed, &request).await,
                            _ => json::receive(&connection.sdk, &request).await,
                        }
                    })
                    .await?;
                if let Some(attempt) = attempt {
                    attempt.answered();
                }
                Ok::<_, SqsError>(received)
            }
        }))
        .await;
        let mut batches = Vec::with_capacity(answers.len());
        let mut failure = None;
        for answer in answers {
            match answer {
                Ok(batch) => batches.push(batch),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let (true, Some(e)) = (batches.is_empty(), failure) {
            return Err(e);
        }
        // A group's messages come in order within one answer, and never in two answers at once
        // (SQS holds a group while any of its messages is in flight): concatenated, each group
        // stays in SequenceNumber order.
        Ok(Receipt {
            requests: batches.len(),
            empty: batches.iter().filter(|b| b.is_empty()).count(),
            messages: batches.concat(),
        })
    }

    /// Deletes `handles` in DeleteMessageBatch requests of ten, `in_flight` at once; stops
    /// sending at the first request that fails, since the rest would only wait for the same fault.
    pub async fn delete_many(&self, handles: &[String], in_flight: usize) -> Deleted {
        use futures_util::stream::{self, StreamExt};
        let connection = match connection(&self.config).await {
            Ok(c) => c,
            Err(e) => return Deleted { refused: 0, unconfirmed: handles.len(), error: Some(e), requests: 0 },
        };
        let limit = self.config.request_timeout;
        let connection = &connection;
        // Owned batches: over borrowed ones the compiler cannot show the future Send, as a spawned
        // delete (xact.rs) must be.
        let mut requests = stream::iter(handles.chunks(BATCH).map(<[String]>::to_vec))
            .map(|batch| async move {
                let batch = &batch;
                let sent = self.request(connection, limit, move |query| async move {
                    match &connection.query {
                        Some(signed) if query => query::delete_batch(signed, self, batch).await,
                        _ => json::delete_batch(&connection.sdk, self, batch).await,
                    }
                });
                (batch.len(), sent.await)
            })
            .buffer_unordered(in_flight.max(1));
        let mut out = Deleted::default();
        let mut answered = 0;
        while let Some((sent, result)) = requests.next().await {
            out.requests += 1;
            match result {
                Ok(refused) => {
                    answered += sent;
                    out.refused += refused;
                }
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        out.unconfirmed = handles.len() - answered;
        out
    }

    /// The longest delete_many can take: each request is bounded by the request timeout, and
    /// `in_flight` of them run at once.
    pub fn delete_many_limit(&self, handles: usize, in_flight: usize) -> Duration {
        let waves = handles.div_ceil(BATCH).div_ceil(in_flight.max(1)).max(1) as u32;
        self.config.request_timeout * waves + Duration::from_secs(1)
    }

    /// Sends one request, built by `send(query)`, in the protocol the endpoint speaks, within
    /// `limit`. The SDK retries a JSON request itself; a Query request is sent again here after
    /// a transient failure (at most [`ATTEMPTS`] in all). Under `auto`, an endpoint that answers
    /// JSON in the Query protocol is switched to Query for the life of the connection and the
    /// request is sent again.
    async fn request<T, F, Fut>(&self, connection: &Connection, limit: Duration, send: F) -> Result<T, SqsError>
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = Result<T, SqsError>>,
    {
        let attempts = |query: bool| {
            let send = &send;
            async move {
                let mut backoff = FIRST_BACKOFF;
                let attempts = if query { ATTEMPTS } else { 1 };
                for _ in 1..attempts {
                    match send(query).await {
                        Err(e) if e.is_transient() => tokio::time::sleep(backoff).await,
                        done => return done,
                    }
                    backoff *= 2;
                }
                send(query).await
            }
        };
        let within = |attempts| async move {
            waited(limit, attempts).await.unwrap_or_else(|| {
                Err(SqsError::Unreachable {
                    target: self.config.target(),
                    detail: format!("no answer within {} ms", limit.as_millis()),
                })
            })
        };
        let answer = match within(attempts(connection.speaks_query.load(Ordering::Relaxed))).await {
            Err(SqsError::QueryOnly { .. }) if self.config.protocol == Protocol::Auto => {
                if !connection.speaks_query.swap(true, Ordering::Relaxed) {
                    *DETECTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.config.target());
                }
                within(attempts(true)).await
            }
            other => other,
        };
        answer.map_err(|e| e.under(self.config.assume.as_ref()))
    }
}

/// An endpoint found to speak only Query, not yet logged.
static DETECTED: Mutex<Option<String>> = Mutex::new(None);

/// What a set of ReceiveMessage requests brought.
#[derive(Debug, Default)]
pub struct Receipt {
    pub messages: Vec<Received>,
    pub requests: usize,
    /// Requests answered with no message.
    pub empty: usize,
}

impl Receipt {
    /// Whether a further receive now, in the same transaction, is likely to find more: every
    /// request brought all it asked for (`asked` in all); from a FIFO queue, every request
    /// brought a group, since SQS holds a group while its messages are in flight (until they
    /// are deleted after the commit) and an empty answer means every free group was taken.
    pub fn more_now(&self, asked: usize, fifo: bool) -> bool {
        if fifo {
            self.empty == 0 && !self.messages.is_empty()
        } else {
            self.messages.len() == asked
        }
    }

    /// Whether a backlog is likely once this receipt's messages are deleted: as [`more_now`],
    /// or, from a FIFO queue, a group that filled an answer.
    ///
    /// [`more_now`]: Receipt::more_now
    pub fn backlog(&self, asked: usize, fifo: bool) -> bool {
        self.more_now(asked, fifo) || (fifo && self.messages.len() >= BATCH)
    }

    /// The bytes of its messages' bodies.
    pub fn body_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.body.len()).sum()
    }

    /// The FIFO groups its messages belong to.
    pub fn groups(&self) -> usize {
        let mut groups: Vec<&str> = self.messages.iter().filter_map(|m| m.group_id.as_deref()).collect();
        groups.sort_unstable();
        groups.dedup();
        groups.len()
    }
}

/// What deleting a set of messages came to.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Entries SQS answered for but refused (a stale receipt handle).
    pub refused: usize,
    /// Entries never answered for, because a request failed and the rest were not sent.
    pub unconfirmed: usize,
    /// The failure that stopped it.
    pub error: Option<SqsError>,
    /// DeleteMessageBatch requests sent.
    pub requests: usize,
}

/// The backend's connection to one endpoint: the SDK's client, and unless the protocol is
/// `json`, a signed client of its own for the Query protocol, on the same credentials.
struct Connection {
    sdk: json::Sdk,
    query: Option<signed::Client>,
    config: ClientConfig,
    speaks_query: AtomicBool,
}

/// Connections a process keeps at most: one per endpoint and identity it serves.
const CONNECTIONS: usize = 32;

/// The backend's connection for `config`, built (and its credentials resolved) on first use
/// and kept, so that each identity's credentials are fetched once per refresh, not per round.
/// A static, not a thread-local, so that nothing of it is dropped at backend exit.
async fn connection(config: &ClientConfig) -> Result<Arc<Connection>, SqsError> {
    static KEPT: Mutex<Vec<Arc<Connection>>> = Mutex::new(Vec::new());
    if let Some(connection) = KEPT.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|c| c.config == *config) {
        return Ok(connection.clone());
    }
    // A server without CA certificates is told so before any request.
    let certificates = http::ca_certificates(config)?;
    let trusted = certificates.len();
    let sdk_config = json::sdk_config(config).await;
    let query = match config.protocol {
        Protocol::Json => None,
        Protocol::Auto | Protocol::Query => {
            let credentials = sdk_config.credentials_provider().ok_or_else(|| SqsError::Credentials {
                detail: "the AWS configuration has no credentials provider".to_owned(),
            })?;
            Some(signed::Client::new(config, http::Endpoint::new(config, certificates)?, credentials))
        }
    };
    let connection = Arc::new(Connection {
        sdk: json::Sdk::new(&sdk_config, config.target(), trusted),
        query,
        config: config.clone(),
        speaks_query: AtomicBool::new(config.protocol == Protocol::Query),
    });
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    // A changed setting leaves connections no source asks for: the oldest goes first.
    if kept.len() >= CONNECTIONS {
        kept.remove(0);
    }
    kept.push(connection.clone());
    Ok(connection)
}

/// Leaked on purpose: a runtime in a TLS slot would be dropped by a FATAL exit and panic.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let rt = with_signals_blocked(|| tokio::runtime::Builder::new_current_thread().enable_all().build())
            .expect("a current-thread tokio runtime can always be built");
        Box::leak(Box::new(rt))
    })
}

/// Runs `f` with every signal blocked in the calling thread, so that threads the runtime
/// creates meanwhile (the DNS pool) inherit a full mask and never take a Postgres signal.
/// Signals that arrive meanwhile stay pending and are handled once the mask is restored.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain libc signal-mask calls on sigset_t values owned by this frame.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

thread_local! {
    /// How long this process has driven the runtime, the slice under way included: the clock
    /// of [`waited`].
    static DRIVEN: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static DRIVING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f`, which drives the runtime, with every signal blocked, counting its time as driven.
fn driving<T>(f: impl FnOnce() -> T) -> T {
    DRIVING_SINCE.set(Some(Instant::now()));
    let out = with_signals_blocked(f);
    let since = DRIVING_SINCE.take().expect("set above");
    DRIVEN.set(DRIVEN.get() + since.elapsed());
    out
}

fn driven() -> Duration {
    DRIVEN.get() + DRIVING_SINCE.get().map_or(Duration::ZERO, |since| since.elapsed())
}

/// `fut`'s output, or None once it has been driven for `limit` without ending. Only time spent
/// driving the runtime counts: a receive sent ahead (see [`send_ahead`]) whose answer waits
/// unread while the process stores the last one has not timed out for that, as a wall clock
/// would say, and then made its messages wait out their visibility timeout.
async fn waited<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let deadline = driven() + limit;
    let mut fut = std::pin::pin!(fut);
    loop {
        let left = deadline.saturating_sub(driven());
        if left.is_zero() {
            return None;
        }
        // The timer fires late after time spent elsewhere; the loop then measures again.
        if let Ok(out) = tokio::time::timeout(left, fut.as_mut()).await {
            return Some(out);
        }
    }
}

/// Drives `fut` to completion, calling `between` every [`SLICE`] while it waits. `between`
/// is where the caller checks for interrupts: it leaves by unwinding (ereport) or by returning
/// false; either drops the future and with it the request. `None`: stopped by `between`.
pub fn run<F: Future>(fut: F, mut between: impl FnMut() -> bool) -> Option<F::Output> {
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        let slice = driving(|| rt.block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await }));
        // Logged here, on the main thread: no Postgres call may run inside a future.
        if let Some(target) = DETECTED.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pgrx::log!("sqs_ingest: {target} speaks only the SQS Query protocol; using it from now on (sqs_ingest.protocol = auto)");
        }
        match slice {
            Ok(out) => return Some(out),
            Err(_) if between() => {}
            Err(_) => return None,
        }
    }
}

/// Drives `fut` for at most `limit` without checking interrupts: for callbacks that run
/// after commit, where an ERROR is not allowed.
pub fn run_with_deadline<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let rt = runtime();
    driving(|| rt.block_on(waited(limit, fut)))
}

/// A future already on its way: what [`send_ahead`] gives, for [`run`] to finish.
pub type Ahead<T> = Pin<Box<dyn Future<Output = T>>>;

/// How often [`send_ahead`] lets the runtime's other tasks (the connections' own) run: enough
/// for a request on a kept-alive connection to be written, never a wait for its answer.
const SEND_AHEAD_TURNS: usize = 8;

/// Drives `fut` until its requests are written and it waits for answers, without waiting for
/// them: the caller does other work (stores the last answer) while they travel, then finishes
/// it with [`run`].
pub fn send_ahead<F: Future + 'static>(fut: F) -> Ahead<F::Output> {
    let mut fut: Ahead<F::Output> = Box::pin(fut);
    let rt = runtime();
    let done = driving(|| {
        rt.block_on(async {
            for _ in 0..SEND_AHEAD_TURNS {
                if let Ready::Ready(out) = std::future::poll_fn(|cx| Ready::Ready(fut.as_mut().poll(cx))).await {
                    return Some(out);
                }
                tokio::task::yield_now().await;
            }
            None
        })
    });
    match done {
        Some(out) => Box::pin(std::future::ready(out)),
        None => fut,
    }
}

/// Starts `fut` on the runtime, bounded by `limit`: it goes on whenever this process drives
/// another request (every [`run`]), and [`finish`] or [`finished`] collects it.
pub fn spawn<F>(fut: F, limit: Duration) -> JoinHandle<Option<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(waited(limit, fut))
}

/// What a spawned future came to once it ends (at most its limit from its start).
pub fn finish<T>(handle: JoinHandle<Option<T>>) -> Option<T> {
    let rt = runtime();
    driving(|| rt.block_on(handle)).ok().flatten()
}

/// What a spawned future came to, if it has ended; the handle back if not.
pub fn finished<T>(handle: JoinHandle<Option<T>>) -> Result<Option<T>, JoinHandle<Option<T>>> {
    if handle.is_finished() {
        Ok(finish(handle))
    } else {
        Err(handle)
    }
}
