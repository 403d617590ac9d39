//! A fast SQS of the bench's own: an in-memory server of the JSON protocol's ReceiveMessage,
//! DeleteMessageBatch and SendMessageBatch, with visibility timeouts, receipt handles, long
//! polls and a delay added to every answer (the network's round trip), so that the extension's
//! own ceiling and real SQS's round trips can be measured past LocalStack's limit. Queues are
//! filled and counted in process; only the extension talks HTTP to it.
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use md5::Digest;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// SQS's default visibility timeout, for receives that name none.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

struct Message {
    id: String,
    body: Arc<str>,
    sent_millis: u64,
    receives: u32,
}

#[derive(Default)]
struct Queue {
    visible: VecDeque<Message>,
    /// By receipt handle: the message and when it becomes visible again.
    in_flight: HashMap<u64, (Message, Instant)>,
    /// Receipt handles by the time they expire, soonest first (some may be deleted already).
    expiries: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Queue {
    /// Messages whose visibility timeout ended go back to the front, as SQS redelivers them.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, handle))) = self.expiries.peek().copied() {
            if at > now {
                break;
            }
            self.expiries.pop();
            if let Some((message, _)) = self.in_flight.remove(&handle) {
                self.visible.push_front(message);
            }
        }
    }
}

#[derive(Default)]
struct State {
    queues: Mutex<HashMap<String, Queue>>,
    /// Added before every answer, in microseconds.
    delay_micros: AtomicU64,
    /// Answers delayed, and the microseconds they were delayed.
    delayed: AtomicU64,
    delayed_micros: AtomicU64,
    next_id: AtomicU64,
    receives: AtomicU64,
    sent: Notify,
}

/// The server; it runs until the bench exits.
pub struct FastSqs {
    pub port: u16,
    state: Arc<State>,
}

impl FastSqs {
    /// Starts it on a port of its own, answering on `threads` threads.
    pub fn start(threads: usize) -> FastSqs {
        let state = Arc::new(State::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build();
            runtime.unwrap().block_on(async move {
                // Made a tokio listener inside the runtime, whose reactor it registers with.
                serve(tokio::net::TcpListener::from_std(listener).unwrap(), shared).await
            });
        });
        FastSqs { port, state }
    }

    /// A queue URL on this server.
    pub fn queue_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/000000000000/{name}", self.port)
    }

    /// Adds `delay` before every answer.
    pub fn delay(&self, delay: Duration) {
        self.state.delay_micros.store(delay.as_micros() as u64, Ordering::SeqCst);
        self.state.delayed.store(0, Ordering::SeqCst);
        self.state.delayed_micros.store(0, Ordering::SeqCst);
    }

    /// The mean delay actually added to the answers since the last [`FastSqs::delay`].
    pub fn delay_added(&self) -> Duration {
        let n = self.state.delayed.load(Ordering::SeqCst).max(1);
        Duration::from_micros(self.state.delayed_micros.load(Ordering::SeqCst) / n)
    }

    /// Puts `bodies` in queue `name` directly, as if sent now.
    pub fn fill(&self, name: &str, bodies: impl IntoIterator<Item = String>) {
        let sent_millis = now_millis();
        let mut queues = self.state.queues.lock().unwrap();
        let queue = queues.entry(url_name(&self.queue_url(name)).to_owned()).or_default();
        for body in bodies {
            let id = format!("m-{}", self.state.next_id.fetch_add(1, Ordering::Relaxed));
            queue.visible.push_back(Message { id, body: body.into(), sent_millis, receives: 0 });
        }
        drop(queues);
        self.state.sent.notify_waiters();
    }

    /// (visible, in flight) messages of queue `name`.
    pub fn counts(&self, name: &str) -> (usize, usize) {
        let mut queues = self.state.queues.lock().unwrap();
        let queue = queues.entry(name.to_owned()).or_default();
        queue.expire(Instant::now());
        (queue.visible.len(), queue.in_flight.len())
    }

    /// ReceiveMessage requests answered so far.
    pub fn receives(&self) -> u64 {
        self.state.receives.load(Ordering::Relaxed)
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A queue's name: the last part of its URL.
fn url_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        stream.set_nodelay(true).ok();
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, state.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

async fn answer(request: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = request.headers().get("x-amz-target").and_then(|t| t.to_str().ok()).unwrap_or_default().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let output = match target.strip_prefix("AmazonSQS.") {
        Some("ReceiveMessage") => receive(&state, &input).await,
        Some("DeleteMessageBatch") => delete_batch(&state, &input),
        Some("SendMessageBatch") => send_batch(&state, &input),
        _ => Err(json!({"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": target})),
    };
    let delay = state.delay_micros.load(Ordering::Relaxed);
    if delay > 0 {
        // The network's round trip, on top of the answer's own time (a long poll's wait).
        let ready = Instant::now();
        sleep_until(ready + Duration::from_micros(delay)).await;
        state.delayed.fetch_add(1, Ordering::Relaxed);
        state.delayed_micros.fetch_add(ready.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    let (status, value) = match output {
        Ok(value) => (200, value),
        Err(error) => (400, error),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap())
}

/// Waits until `deadline`, to a few tens of microseconds: tokio's timer rounds up to the next
/// millisecond, which made a 10 ms delay 10.5 to 11 ms; the last millisecond is slept by a
/// thread of the blocking pool instead.
async fn sleep_until(deadline: Instant) {
    const TICK: Duration = Duration::from_millis(1);
    if let Some(early) = deadline.checked_sub(TICK).filter(|&at| at > Instant::now()) {
        tokio::time::sleep_until(early.into()).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await.expect("a sleep");
    }
}

fn queue_of(input: &Value) -> Result<String, Value> {
    match input["QueueUrl"].as_str() {
        Some(url) => Ok(url_name(url).to_owned()),
        None => Err(json!({"__type": "com.amazonaws.sqs#MissingParameter", "message": "QueueUrl"})),
    }
}

async fn receive(state: &State, input: &Value) -> Result<Value, Value> {
    let name = queue_of(input)?;
    let max = input["MaxNumberOfMessages"].as_u64().unwrap_or(1).clamp(1, 10) as usize;
    let visibility = input["VisibilityTimeout"].as_u64().map_or(DEFAULT_VISIBILITY, Duration::from_secs);
    let wait = Duration::from_secs(input["WaitTimeSeconds"].as_u64().unwrap_or(0));
    let until = Instant::now() + wait;
    state.receives.fetch_add(1, Ordering::Relaxed);
    loop {
        // Registered before looking, so that a fill between the look and the wait wakes it.
        let sent = state.sent.notified();
        let messages = take(state, &name, max, visibility);
        if !messages.is_empty() || Instant::now() >= until {
            return Ok(json!({ "Messages": messages }));
        }
        let _ = tokio::time::timeout_at(until.into(), sent).await;
    }
}

/// Up to `max` visible messages of `name`, made invisible for `visibility`, as SQS answers them.
fn take(state: &State, name: &str, max: usize, visibility: Duration) -> Vec<Value> {
    let now = Instant::now();
    let mut queues = state.queues.lock().unwrap();
    let queue = queues.entry(name.to_owned()).or_default();
    queue.expire(now);
    let mut out = Vec::with_capacity(max);
    while out.len() < max {
        let Some(mut message) = queue.visible.pop_front() else { break };
        message.receives += 1;
        let handle = state.next_id.fetch_add(1, Ordering::Relaxed);
        out.push(json!({
            "MessageId": message.id,
            "ReceiptHandle": handle.to_string(),
            "Body": &*message.body,
            "Attributes": {
                "SentTimestamp": message.sent_millis.to_string(),
                "ApproximateReceiveCount": message.receives.to_string(),
            },
        }));
        queue.expiries.push(Reverse((now + visibility, handle)));
        queue.in_flight.insert(handle, (message, now + visibility));
    }
    out
}

fn delete_batch(state: &State, input: &Value) -> Result<Value, Value> {
    let name = queue_of(input)?;
    let mut queues = state.queues.lock().unwrap();
    let queue = queues.entry(name).or_default();
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in input["Entries"].as_array().into_iter().flatten() {
        let id = entry["Id"].clone();
        let handle = entry["ReceiptHandle"].as_str().and_then(|h| h.parse::<u64>().ok());
        // A handle of a message redelivered since is stale, as SQS's would be.
        match handle.and_then(|h| queue.in_flight.remove(&h)) {
            Some(_) => successful.push(json!({ "Id": id })),
            None => failed
                .push(json!({"Id": id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "stale"})),
        }
    }
    Ok(json!({ "Successful": successful, "Failed": failed }))
}

fn send_batch(state: &State, input: &Value) -> Result<Value, Value> {
    let name = queue_of(input)?;
    let sent_millis = now_millis();
    let mut successful = Vec::new();
    let mut queues = state.queues.lock().unwrap();
    let queue = queues.entry(name).or_default();
    for entry in input["Entries"].as_array().into_iter().flatten() {
        let id = format!("m-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
        let body: Arc<str> = entry["MessageBody"].as_str().unwrap_or_default().into();
        let md5: String = md5::Md5::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        successful.push(json!({"Id": entry["Id"].clone(), "MessageId": id, "MD5OfMessageBody": md5}));
        queue.visible.push_back(Message { id, body, sent_millis, receives: 0 });
    }
    drop(queues);
    state.sent.notify_waiters();
    Ok(json!({ "Successful": successful, "Failed": [] }))
}
