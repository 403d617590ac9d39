//! The backend's SQS client: one leaked current-thread runtime, a cached SDK client, and
//! requests driven in short slices so that Postgres interrupts are honoured while waiting.
use sqs_ingest_core::redact::redact;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;

/// How long a request runs between two interrupt checks.
const SLICE: Duration = Duration::from_millis(50);
/// Instance metadata answers in milliseconds where it exists; elsewhere, fail fast.
const IMDS_TIMEOUT: Duration = Duration::from_millis(300);

/// Everything a client is built from; a change of any of it builds a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub endpoint: Option<String>,
    pub region: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Where requests go, for error messages.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("SQS in {}", self.region),
        }
    }
}

#[derive(Debug)]
pub enum SqsError {
    /// No credentials in the AWS default chain.
    Credentials { detail: String },
    /// The request did not complete: connection refused, reset, timed out, bad response.
    Unreachable { target: String, detail: String },
    /// SQS answered with an error (no such queue, access denied, ...).
    Service { target: String, code: String, message: String },
}

impl fmt::Display for SqsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqsError::Credentials { detail } => write!(f, "no AWS credentials found: {detail}"),
            SqsError::Unreachable { target, detail } => {
                write!(f, "could not reach {target}: {detail}")
            }
            SqsError::Service { target, code, message } => {
                write!(f, "{target} answered {code}: {message}")
            }
        }
    }
}

impl SqsError {
    /// Which problem this is, without the details that vary between attempts.
    pub fn what(&self) -> String {
        match self {
            SqsError::Credentials { .. } => "no AWS credentials".to_owned(),
            SqsError::Unreachable { target, .. } => format!("could not reach {target}"),
            SqsError::Service { target, code, .. } => format!("{target} answered {code}"),
        }
    }
}

/// One received message, with only what ingestion uses.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub sent_millis: Option<i64>,
    pub receive_count: Option<i32>,
}

/// Leaked on purpose: a runtime in a TLS slot would be dropped by a FATAL exit and panic.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let rt = with_signals_blocked(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        })
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

/// Drives `fut` to completion, calling `between` every [`SLICE`] while it waits. `between`
/// is where the caller checks for interrupts: it leaves by unwinding (ereport) or by returning
/// false; either drops the future and with it the request. `None`: stopped by `between`.
pub fn run<F: Future>(fut: F, mut between: impl FnMut() -> bool) -> Option<F::Output> {
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        let slice = with_signals_blocked(|| {
            rt.block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await })
        });
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
    with_signals_blocked(|| rt.block_on(async { tokio::time::timeout(limit, fut).await.ok() }))
}

/// The backend's client for `config`, built (and its credentials resolved) on first use.
/// A static, not a thread-local, so that nothing of it is dropped at backend exit.
pub async fn client(config: &ClientConfig) -> Result<Client, SqsError> {
    static CLIENT: Mutex<Option<(ClientConfig, Client)>> = Mutex::new(None);
    if let Some((cached, client)) = CLIENT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if cached == config {
            return Ok(client.clone());
        }
    }
    let client = build(config).await?;
    *CLIENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((config.clone(), client.clone()));
    Ok(client)
}

async fn build(config: &ClientConfig) -> Result<Client, SqsError> {
    use aws_credential_types::provider::ProvideCredentials;
    let region = Region::new(config.region.clone());
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .max_attempts(1)
        .build();
    let chain = DefaultCredentialsChain::builder()
        .region(region.clone())
        .imds_client(imds)
        .build()
        .await;
    // Resolve once now, so a missing credential is one clear error, not a failure per request.
    chain
        .provide_credentials()
        .await
        .map_err(|e| SqsError::Credentials { detail: causes(&e) })?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(chain)
        .timeout_config(TimeoutConfig::builder().connect_timeout(config.connect_timeout).build())
        .retry_config(
            RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(50)),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Ok(Client::new(&loader.load().await))
}

fn request_error<E, R>(config: &ClientConfig, err: aws_sdk_sqs::error::SdkError<E, R>) -> SqsError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    use aws_sdk_sqs::error::SdkError;
    match &err {
        SdkError::ServiceError(service) => SqsError::Service {
            target: config.target(),
            code: service.err().code().unwrap_or("an error").to_owned(),
            message: redact(service.err().message().unwrap_or_default()),
        },
        _ => SqsError::Unreachable { target: config.target(), detail: causes(&err) },
    }
}

/// An error and its sources as one line: "dispatch failure: io error: ... Connection refused".
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

fn timed_out(config: &ClientConfig, limit: Duration) -> SqsError {
    SqsError::Unreachable {
        target: config.target(),
        detail: format!("no answer within {} ms", limit.as_millis()),
    }
}

/// Most messages one ReceiveMessage or DeleteMessageBatch takes.
pub const BATCH: usize = 10;

/// ReceiveMessage requests for `max` messages in all, ten per request and at most `in_flight`
/// of them at once: what they bring together. One failure fails them all; what the others
/// received then comes back after its visibility timeout.
pub async fn receive_many(
    config: &ClientConfig,
    queue_url: &str,
    max: usize,
    in_flight: usize,
    wait_seconds: i32,
    visibility_timeout: Option<i32>,
) -> Result<Vec<Received>, SqsError> {
    let requests = max.div_ceil(BATCH).clamp(1, in_flight.max(1));
    let sizes = (0..requests).map(|i| (max - i * BATCH).min(BATCH) as i32);
    let batches = futures_util::future::try_join_all(
        sizes.map(|n| receive(config, queue_url, n, wait_seconds, visibility_timeout)),
    )
    .await?;
    Ok(batches.concat())
}

/// One ReceiveMessage of up to `max` (1..=10) messages.
pub async fn receive(
    config: &ClientConfig,
    queue_url: &str,
    max: i32,
    wait_seconds: i32,
    visibility_timeout: Option<i32>,
) -> Result<Vec<Received>, SqsError> {
    let client = client(config).await?;
    let request = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(visibility_timeout)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send();
    let limit = config.request_timeout + Duration::from_secs(wait_seconds as u64);
    let output = tokio::time::timeout(limit, request)
        .await
        .map_err(|_| timed_out(config, limit))?
        .map_err(|e| request_error(config, e))?;
    Ok(output
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let attribute = |name| m.attributes.as_ref().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok());
            Some(Received {
                sent_millis: attribute(MessageSystemAttributeName::SentTimestamp),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c: i64| i32::try_from(c).ok()),
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
            })
        })
        .collect())
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
}

/// Deletes `handles` in DeleteMessageBatch requests of ten, `in_flight` at once; stops sending
/// at the first request that fails, since the rest would only wait for the same fault.
pub async fn delete_many(config: &ClientConfig, queue_url: &str, handles: &[String], in_flight: usize) -> Deleted {
    use futures_util::stream::{self, StreamExt};
    let mut requests = stream::iter(handles.chunks(BATCH))
        .map(|batch| async move { (batch.len(), delete_batch(config, queue_url, batch).await) })
        .buffer_unordered(in_flight.max(1));
    let mut out = Deleted::default();
    let mut answered = 0;
    while let Some((sent, result)) = requests.next().await {
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
pub fn delete_many_limit(config: &ClientConfig, handles: usize, in_flight: usize) -> Duration {
    let waves = handles.div_ceil(BATCH).div_ceil(in_flight.max(1)).max(1) as u32;
    config.request_timeout * waves + Duration::from_secs(1)
}

/// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
async fn delete_batch(
    config: &ClientConfig,
    queue_url: &str,
    handles: &[String],
) -> Result<usize, SqsError> {
    let client = client(config).await?;
    let entries = handles
        .iter()
        .enumerate()
        .map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    let request = client.delete_message_batch().queue_url(queue_url).set_entries(Some(entries)).send();
    let output = tokio::time::timeout(config.request_timeout, request)
        .await
        .map_err(|_| timed_out(config, config.request_timeout))?
        .map_err(|e| request_error(config, e))?;
    Ok(output.failed.len())
}
