//! A hand-written fault endpoint, for the faults no emulator stages on demand: an endpoint that
//! hangs (accepts connections, never answers), one that is down (closes every connection at
//! once), DeleteMessageBatch answered with HTTP 500 or with every entry failed, and
//! ReceiveMessage answers lost on the way back (the emulator received, the client never hears),
//! in the JSON and the Query protocol alike. It also plays answers of real SQS that no emulator
//! gives (tests/aws_behaviours.rs): canned answers for the next requests (a 503 with a JSON body,
//! throttling, a legacy code in `x-amzn-query-error`, a proxy's HTML 502; SQS's error documents
//! as https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html
//! lists them), and a clock ahead of the client's that refuses requests signed more than 15
//! minutes off, as SigV4 does ("Signature expired", https://docs.aws.amazon.com/IAM/latest/UserGuide/signing-elements.html),
//! with its time in every answer's Date; and a container-credentials endpoint that counts its
//! fetches. In front of STS (tests/identities.rs) it plays STS refusing AssumeRole (moto's STS
//! grants every role; https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
//! lists the refusals) and sessions that end within a test (STS's last at least 15 minutes).
//! It keeps the ReceiveMessage requests and every request it saw, for tests of what is sent.
//! Everything else is relayed unchanged to the emulator behind it. One request per connection
//! (moto closes each too).
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far SigV4 lets a request's time be from the service's.
const SIGNATURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// An answer given instead of relaying.
#[derive(Clone, Debug)]
pub struct Canned {
    /// Status line's code and reason, e.g. "503 Service Unavailable".
    pub status: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Canned {
    /// An error in the JSON protocol, as SQS sends it: `__type`, message, and the legacy code in
    /// x-amzn-query-error when `legacy` names one.
    pub fn json_error(status: &'static str, kind: &str, legacy: Option<&str>) -> Canned {
        let mut headers = vec![("Content-Type", "application/x-amz-json-1.0".to_owned())];
        if let Some(legacy) = legacy {
            headers.push(("x-amzn-query-error", format!("{legacy};Sender")));
        }
        let body = format!(r#"{{"__type":"com.amazonaws.sqs#{kind}","message":"played by the fault endpoint"}}"#);
        Canned { status, headers, body }
    }
}

impl Canned {
    /// An error in the Query protocol's XML, as STS sends it
    /// (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html).
    pub fn xml_error(status: &'static str, code: &str, message: &str) -> Canned {
        let body = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>{code}</Code><Message>{message}</Message></Error><RequestId>played-by-the-fault-endpoint</RequestId></ErrorResponse>"
        );
        Canned { status, headers: vec![("Content-Type", "text/xml".to_owned())], body }
    }
}

/// What happens to a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(u8)]
pub enum Mode {
    /// Its request goes to the emulator (deletes as [`Deletes`] says).
    #[default]
    Relay,
    /// Accepted and held open, never read, never answered: a hung server.
    Hang,
    /// Closed as soon as it is accepted: a server that is down.
    Down,
}

/// What happens to DeleteMessageBatch requests while relaying.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(u8)]
pub enum Deletes {
    #[default]
    Relayed,
    /// HTTP 500: the whole request fails.
    Error,
    /// HTTP 200 with every entry failed: SQS's partial-failure shape.
    EntriesFailed,
}

#[derive(Default)]
struct State {
    mode: AtomicU8,
    deletes: AtomicU8,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    lose_receives: AtomicBool,
    receives: Mutex<Vec<String>>,
    held: Mutex<Vec<TcpStream>>,
    canned: Mutex<VecDeque<Canned>>,
    /// Seconds this endpoint's clock is ahead of the machine's; 0: no signature check.
    ahead: AtomicI64,
    requests: Mutex<Vec<(String, String)>>,
    /// Seconds AssumeRole sessions last when relayed; 0: as the emulator grants them.
    session_lifetime: std::sync::atomic::AtomicU64,
}

pub struct FaultEndpoint {
    pub port: u16,
    state: Arc<State>,
}

impl FaultEndpoint {
    /// In front of the emulator listening on `upstream`, relaying until told otherwise.
    pub fn start(upstream: u16) -> FaultEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                match shared.mode.load(Ordering::SeqCst) {
                    m if m == Mode::Hang as u8 => shared.held.lock().unwrap().push(client),
                    m if m == Mode::Down as u8 => drop(client),
                    _ => {
                        let state = shared.clone();
                        std::thread::spawn(move || relay(client, upstream, &state));
                    }
                }
            }
        });
        FaultEndpoint { port, state }
    }

    /// An endpoint that hangs, with nothing behind it.
    pub fn hanging() -> FaultEndpoint {
        let endpoint = FaultEndpoint::start(0);
        endpoint.set(Mode::Hang);
        endpoint
    }

    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn deletes(&self, mode: Deletes) {
        self.state.deletes.store(mode as u8, Ordering::SeqCst);
    }

    /// Whether ReceiveMessage answers are lost: the emulator gets the request and answers, and
    /// the connection is closed before any of the answer reaches the client.
    pub fn lose_receives(&self, lose: bool) {
        self.state.lose_receives.store(lose, Ordering::SeqCst);
    }

    /// The bodies of the ReceiveMessage requests relayed so far, in order.
    pub fn receive_requests(&self) -> Vec<String> {
        self.state.receives.lock().unwrap().clone()
    }

    /// Answers the next requests with `answers`, in order, instead of relaying them.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Canned>) {
        self.state.canned.lock().unwrap().extend(answers);
    }

    /// How many canned answers are still to be given.
    pub fn canned_left(&self) -> usize {
        self.state.canned.lock().unwrap().len()
    }

    /// Runs this endpoint's clock `seconds` ahead: requests signed more than 15 minutes from it
    /// are refused as SigV4 refuses them, and every answer's Date is its time.
    pub fn clock_ahead(&self, seconds: i64) {
        self.state.ahead.store(seconds, Ordering::SeqCst);
    }

    /// Cuts the sessions of relayed AssumeRole answers to `lifetime` (their Expiration): a session
    /// that ends within the test, as one of STS's 15-minute sessions does 20 s before its end.
    pub fn session_lifetime(&self, lifetime: Duration) {
        self.state.session_lifetime.store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// Every request so far, in order: its head (request line and headers) and its body.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// How many DeleteMessageBatch requests were refused so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// `queue_url` with its origin replaced by this endpoint's.
    pub fn url_for(&self, queue_url: &str) -> String {
        let path = &queue_url[queue_url.find("://").unwrap() + 3..];
        format!("http://127.0.0.1:{}{}", self.port, &path[path.find('/').unwrap()..])
    }

    /// A queue URL on this endpoint, for an endpoint with nothing behind it.
    pub fn queue_url(&self) -> String {
        format!("http://127.0.0.1:{}/000000000000/hang", self.port)
    }
}

fn relay(client: TcpStream, upstream: u16, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    state.requests.lock().unwrap().push((head.clone(), String::from_utf8_lossy(&body).into_owned()));
    let mut client = client;
    let ahead = state.ahead.load(Ordering::SeqCst);
    let now = SystemTime::now() + Duration::from_secs(ahead.max(0) as u64);
    if ahead != 0 {
        let signed = header(&head, "x-amz-date").and_then(amz_date).unwrap_or(UNIX_EPOCH);
        let off = now.duration_since(signed).unwrap_or_else(|e| e.duration());
        if off > SIGNATURE_WINDOW {
            let answer = Canned::json_error("400 Bad Request", "InvalidSignatureException", None);
            let body = answer.body.replace(
                "played by the fault endpoint",
                "Signature expired: the request's time is more than 15 min from the service's",
            );
            return write_answer(&mut client, &Canned { body, ..answer }, now);
        }
    }
    let canned = state.canned.lock().unwrap().pop_front();
    if let Some(canned) = canned {
        return write_answer(&mut client, &canned, now);
    }
    let body_text = String::from_utf8_lossy(&body);
    let receive = head.contains("AmazonSQS.ReceiveMessage") || body_text.contains("Action=ReceiveMessage");
    if receive {
        state.receives.lock().unwrap().push(body_text.clone().into_owned());
    }
    let json = head.contains("AmazonSQS.DeleteMessageBatch");
    let query = body_text.contains("Action=DeleteMessageBatch");
    let deletes = state.deletes.load(Ordering::SeqCst);
    if deletes != Deletes::Relayed as u8 && (json || query) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        // Our entries' ids are "0", "1", ...: one per Id in the request.
        let entries = if json { body_text.matches("\"Id\"").count() } else { body_text.matches(".Id=").count() };
        let (status, content_type, answer) = match (deletes == Deletes::Error as u8, json) {
            (true, true) => (
                "500 Internal Server Error",
                "application/x-amz-json-1.0",
                r#"{"__type":"com.amazonaws.sqs#InternalError","message":"injected by the fault endpoint"}"#.to_owned(),
            ),
            (true, false) => (
                "500 Internal Server Error",
                "text/xml",
                "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalError</Code>\
                 <Message>injected by the fault endpoint</Message></Error></ErrorResponse>"
                    .to_owned(),
            ),
            (false, true) => {
                let failed: Vec<String> = (0..entries)
                    .map(|i| {
                        format!(
                            r#"{{"Id":"{i}","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"injected"}}"#
                        )
                    })
                    .collect();
                (
                    "200 OK",
                    "application/x-amz-json-1.0",
                    format!(r#"{{"Successful":[],"Failed":[{}]}}"#, failed.join(",")),
                )
            }
            (false, false) => {
                let failed: String = (0..entries)
                    .map(|i| {
                        format!(
                            "<BatchResultErrorEntry><Id>{i}</Id><SenderFault>true</SenderFault>\
                             <Code>ReceiptHandleIsInvalid</Code><Message>injected</Message></BatchResultErrorEntry>"
                        )
                    })
                    .collect();
                (
                    "200 OK",
                    "text/xml",
                    format!(
                        "<DeleteMessageBatchResponse><DeleteMessageBatchResult>{failed}</DeleteMessageBatchResult></DeleteMessageBatchResponse>"
                    ),
                )
            }
        };
        return write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    // One request per connection upstream too, whatever the client asked (LocalStack keeps
    // connections open): the answer ends where the upstream closes.
    server.write_all(format!("{}Connection: close\r\n\r\n", without_header(&head, "connection")).as_bytes())?;
    server.write_all(&body)?;
    if receive && state.lose_receives.load(Ordering::SeqCst) {
        // The emulator has taken the messages; its answer goes nowhere.
        std::io::copy(&mut server, &mut std::io::sink())?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    let lifetime = state.session_lifetime.load(Ordering::SeqCst);
    let assume = lifetime > 0 && body_text.contains("Action=AssumeRole");
    if ahead == 0 && !assume {
        std::io::copy(&mut server, &mut client)?;
        return Ok(());
    }
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 2);
    let mut head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut rest = answer[split..].to_vec();
    if ahead != 0 {
        // The answer with this endpoint's time as its Date.
        head = format!("{}Date: {}\r\n", without_header(&head, "date"), http_date(now));
    }
    if assume {
        // The session STS granted, cut to `lifetime` seconds.
        let text = String::from_utf8_lossy(&rest).into_owned();
        let expires = rfc3339(SystemTime::now() + Duration::from_secs(lifetime));
        let (start, end) = (text.find("<Expiration>"), text.find("</Expiration>"));
        if let (Some(start), Some(end)) = (start, end) {
            let text = format!("{}<Expiration>{expires}{}", &text[..start], &text[end..]);
            rest = format!("\r\n{}", text.trim_start_matches("\r\n")).into_bytes();
            head = format!("{}Content-Length: {}\r\n", without_header(&head, "content-length"), rest.len() - 2);
        }
    }
    client.write_all(head.as_bytes())?;
    client.write_all(&rest)
}

/// Writes `answer`: framed by Content-Length, or, when its headers say
/// `Transfer-Encoding: chunked`, in chunks of 8 KiB, each written on its own.
fn write_answer(client: &mut TcpStream, answer: &Canned, now: SystemTime) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {}\r\nDate: {}\r\n", answer.status, http_date(now));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = answer.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    if !chunked {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    client.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())?;
    if !chunked {
        return client.write_all(answer.body.as_bytes());
    }
    for chunk in answer.body.as_bytes().chunks(8192) {
        client.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        client.write_all(chunk)?;
        client.write_all(b"\r\n")?;
    }
    client.write_all(b"0\r\n\r\n")
}

/// A head's lines without its blank end and without the header `name` (lowercase), each line
/// ending in CRLF: for a header to be written anew after them.
fn without_header(head: &str, name: &str) -> String {
    head.split("\r\n")
        .filter(|line| {
            !line.is_empty() && !line.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .map(|line| format!("{line}\r\n"))
        .collect()
}

/// A header's value in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().filter_map(|l| l.split_once(':')).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468
}

/// SigV4's X-Amz-Date, 20261204T101500Z.
fn amz_date(text: &str) -> Option<SystemTime> {
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(4..6)?, n(6..8)?);
    let seconds = days * 86400 + n(9..11)? * 3600 + n(11..13)? * 60 + n(13..15)?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// A time as (year, month, day, hour, minute, second, days since the epoch).
fn civil(t: SystemTime) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // The inverse of days_from_civil.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rest / 3600, rest % 3600 / 60, rest % 60, days)
}

/// An HTTP Date: Fri, 04 Dec 2026 10:15:00 GMT.
fn http_date(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, days) = civil(t);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m as usize - 1];
    format!("{weekday}, {d:02} {month} {y} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// An RFC 3339 time, as credential endpoints give an Expiration: 2026-12-04T10:15:00Z.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(t);
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// A container-credentials endpoint (what ECS and EKS Pod Identity serve at
/// AWS_CONTAINER_CREDENTIALS_FULL_URI, https://docs.aws.amazon.com/sdkref/latest/guide/feature-container-credentials.html)
/// that counts its fetches. Each answer's credentials expire `lifetime` later, and their key id
/// is AKIDCONTAINER and the fetch's number.
pub struct CredentialsEndpoint {
    pub port: u16,
    /// When each fetch came, from the endpoint's start.
    fetches: Arc<Mutex<Vec<Duration>>>,
}

impl CredentialsEndpoint {
    pub fn start(lifetime: Duration) -> CredentialsEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let counted = fetches.clone();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let n = {
                    let mut fetches = counted.lock().unwrap();
                    fetches.push(started.elapsed());
                    fetches.len()
                };
                let body = format!(
                    r#"{{"AccessKeyId":"AKIDCONTAINER{n}","SecretAccessKey":"secret","Token":"token{n}","Expiration":"{}"}}"#,
                    rfc3339(SystemTime::now() + lifetime)
                );
                let canned =
                    Canned { status: "200 OK", headers: vec![("Content-Type", "application/json".to_owned())], body };
                let _ = write_answer(&mut client, &canned, SystemTime::now());
            }
        });
        CredentialsEndpoint { port, fetches }
    }

    /// When each fetch so far came, from the endpoint's start.
    pub fn fetches(&self) -> Vec<Duration> {
        self.fetches.lock().unwrap().clone()
    }
}

/// A CONNECT proxy that lets nothing through: it keeps the request line of every connection it
/// is asked for (`CONNECT host:443 HTTP/1.1`) and answers 502, as a proxy that cannot reach the
/// host does. For tests of which host a client asks for, on a machine with no way out.
pub struct Proxy {
    pub port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let shared = asked.clone();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let mut line = String::new();
                if BufReader::new(client.try_clone().unwrap()).read_line(&mut line).is_ok() {
                    shared.lock().unwrap().push(line.trim_end().to_owned());
                }
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Proxy { port, asked }
    }

    /// The request lines asked so far.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}
