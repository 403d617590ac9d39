//! A hand-written fault injector in front of the emulator, for faults no emulator stages on
//! demand: an endpoint that is down (every connection closed at once), DeleteMessageBatch
//! answered with a 500 InternalError or with every entry failed; the rest is relayed unchanged. One request per connection (moto closes each too).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// What happens to DeleteMessageBatch requests.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(u8)]
pub enum Deletes {
    #[default]
    Relayed,
    /// HTTP 500: the whole request fails.
    Error,
    /// HTTP 200 with every entry in `Failed`: SQS's partial-failure shape.
    EntriesFailed,
}

pub struct FaultProxy {
    pub port: u16,
    deletes: Arc<AtomicU8>,
    refused: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

const INJECTED: &str = r#"{"__type":"com.amazonaws.sqs#InternalError","message":"injected by the test proxy"}"#;

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let proxy = FaultProxy { port, deletes: Arc::default(), refused: Arc::default(), down: Arc::default() };
        let (fail, refused, down) = (proxy.deletes.clone(), proxy.refused.clone(), proxy.down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed before any answer
                }
                let (fail, refused) = (fail.clone(), refused.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, upstream, &fail, &refused);
                });
            }
        });
        proxy
    }

    /// While down, every connection is closed as soon as it is accepted.
    pub fn down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn deletes(&self, mode: Deletes) {
        self.deletes.store(mode as u8, Ordering::SeqCst);
    }

    /// How many DeleteMessageBatch requests were refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// `queue_url` with its origin replaced by this proxy's.
    pub fn url_for(&self, queue_url: &str) -> String {
        let path = &queue_url[queue_url.find("://").unwrap() + 3..];
        format!("http://127.0.0.1:{}{}", self.port, &path[path.find('/').unwrap()..])
    }
}

fn relay(client: TcpStream, upstream: u16, mode: &AtomicU8, refused: &AtomicUsize) -> std::io::Result<()> {
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
    let mut client = client;
    let mode = mode.load(Ordering::SeqCst);
    if mode != Deletes::Relayed as u8 && head.contains("AmazonSQS.DeleteMessageBatch") {
        refused.fetch_add(1, Ordering::SeqCst);
        let (status, answer) = if mode == Deletes::Error as u8 {
            ("500 Internal Server Error", INJECTED.to_owned())
        } else {
            // Our entries' ids are "0", "1", ...: one per "Id" key in the request.
            let entries = String::from_utf8_lossy(&body).matches("\"Id\"").count();
            let failed: Vec<String> = (0..entries)
                .map(|i| {
                    format!(r#"{{"Id":"{i}","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"injected"}}"#)
                })
                .collect();
            ("200 OK", format!(r#"{{"Successful":[],"Failed":[{}]}}"#, failed.join(",")))
        };
        return write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
    }
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    std::io::copy(&mut server, &mut client)?;
    Ok(())
}
