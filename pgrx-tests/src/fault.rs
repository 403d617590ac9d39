//! A hand-written fault endpoint, for the faults no emulator stages on demand: an endpoint that
//! hangs (accepts connections, never answers), one that is down (closes every connection at
//! once), DeleteMessageBatch answered with HTTP 500 or with every entry failed, and
//! ReceiveMessage answers lost on the way back (the emulator received, the client never hears),
//! in the JSON and the Query protocol alike. It keeps the ReceiveMessage requests it saw, for
//! tests of what is sent. Everything else is relayed unchanged to the emulator behind it. One
//! request per connection (moto closes each too).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    let body_text = String::from_utf8_lossy(&body);
    let receive = head.contains("AmazonSQS.ReceiveMessage") || body_text.contains("Action=ReceiveMessage");
    if receive {
        state.receives.lock().unwrap().push(body_text.clone().into_owned());
    }
    let json = head.contains("AmazonSQS.DeleteMessageBatch");
    let query = body_text.contains("Action=DeleteMessageBatch");
    let deletes = state.deletes.load(Ordering::SeqCst);
    let mut client = client;
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
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    if receive && state.lose_receives.load(Ordering::SeqCst) {
        // The emulator has taken the messages; its answer goes nowhere.
        std::io::copy(&mut server, &mut std::io::sink())?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}
