//! HTTP/1.1 POSTs to one SQS endpoint over kept-alive connections, plain or TLS (rustls, the
//! system's CA certificates), for the Query protocol, which aws-sdk-sqs no longer speaks; the
//! bytes on the wire are core::http's. Also the check that a server has CA certificates at all.
use super::error::causes;
use super::{ClientConfig, SqsError};
use futures_util::FutureExt;
use sqs_ingest_core::http as wire;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

/// Room made in a connection's buffer before each read: an answer of ten small messages.
const READ_AHEAD: usize = 16 * 1024;
/// A connection idle longer than this is closed instead of used: load balancers and NAT drop
/// idle connections (AWS's by default after 60 s) without a word that could tell it is gone,
/// and a request sent on one would wait out the whole request timeout.
const MAX_IDLE: Duration = Duration::from_secs(50);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection and what it has read beyond the answers taken from it.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

pub struct Endpoint {
    /// Where connections go: the URL's host (without an IPv6 address's brackets) and port.
    host: String,
    port: u16,
    /// The Host header, as SigV4 signs it: the port only when it is not the scheme's default.
    pub authority: String,
    /// The request target: the endpoint's path.
    pub path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// CA certificates trusted, for the error that says a certificate was refused.
    trusted: usize,
    /// The endpoint, as errors name it.
    target: String,
    connect_timeout: Duration,
    /// Connections whose last answer is read, and since when, most recently used last.
    idle: Mutex<Vec<(Conn, Instant)>>,
}

/// The CA certificates requests to `config`'s endpoint are checked against (none over plain
/// HTTP), loaded as the SDK's HTTPS client loads them too: the system's store, or SSL_CERT_FILE
/// and SSL_CERT_DIR in the postmaster's environment. Over TLS without a single one every request
/// would fail the same way: an error now, before any.
pub fn ca_certificates(config: &ClientConfig) -> Result<Vec<CertificateDer<'static>>, SqsError> {
    if !config.url().starts_with("https://") {
        return Ok(Vec::new());
    }
    match rustls_native_certs::load_native_certs().certs {
        none if none.is_empty() => Err(no_ca_certificates(config.target())),
        certificates => Ok(certificates),
    }
}

fn no_ca_certificates(target: String) -> SqsError {
    SqsError::Untrusted { target, detail: "no CA certificates found on this server".to_owned(), trusted: 0 }
}

impl Endpoint {
    /// The endpoint `config` names (`http` or `https`, validated as a setting); over TLS, checked
    /// against `certificates` ([`ca_certificates`]), of which at least one must be usable.
    pub fn new(config: &ClientConfig, certificates: Vec<CertificateDer<'static>>) -> Result<Endpoint, SqsError> {
        let (url, target) = (config.url(), config.target());
        let unusable =
            |detail: String| SqsError::Unreachable { target: target.clone(), detail: format!("{url}: {detail}") };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| unusable(e.to_string()))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| unusable("no host".to_owned()))?;
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if port == default_port { host.to_owned() } else { format!("{host}:{port}") };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let (tls, trusted) = if https {
            let mut roots = RootCertStore::empty();
            let (trusted, _unparsable) = roots.add_parsable_certificates(certificates);
            if trusted == 0 {
                return Err(no_ca_certificates(target));
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| unusable(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone()).map_err(|e| unusable(e.to_string()))?;
            (Some((TlsConnector::from(Arc::new(config)), name)), trusted)
        } else {
            (None, 0)
        };
        Ok(Endpoint {
            host,
            port,
            authority,
            path: uri.path().to_owned(),
            tls,
            trusted,
            target,
            connect_timeout: config.connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `request` (core::http::post's bytes) and reads the answer, on a kept-alive
    /// connection when one is open. A kept-alive connection the server closed meanwhile fails
    /// before any byte of an answer; the request then goes once more on a new connection, as
    /// SQS requests may: a receive that was taken comes back after its visibility timeout, a
    /// delete is idempotent.
    pub async fn post(&self, request: &[u8]) -> Result<wire::Answer, SqsError> {
        self.send(request).await.map_err(|e| self.failed(e))
    }

    async fn send(&self, request: &[u8]) -> io::Result<wire::Answer> {
        if let Some(mut conn) = self.kept() {
            match exchange(&mut conn, request).await {
                Ok(answer) => return Ok(self.keep(conn, answer)),
                Err(Failure { answered: true, error }) => return Err(error),
                Err(Failure { answered: false, .. }) => {}
            }
        }
        let mut conn = self.open().await?;
        let answer = exchange(&mut conn, request).await.map_err(|f| f.error)?;
        Ok(self.keep(conn, answer))
    }

    /// The error a request that got no answer is: a certificate rustls refused in the handshake
    /// (no retry will help, and the fix is on this server, not at the endpoint), or any other.
    fn failed(&self, e: io::Error) -> SqsError {
        let (target, detail) = (self.target.clone(), causes(&e));
        let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(_)) = tls {
            return SqsError::Untrusted { target, detail, trusted: self.trusted };
        }
        SqsError::Unreachable { target, detail }
    }

    /// The most recently used idle connection the server has not closed.
    fn kept(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Oldest first: everything up to the newest stale one goes.
        if let Some(stale) = idle.iter().rposition(|(_, since)| since.elapsed() > MAX_IDLE) {
            idle.drain(..=stale);
        }
        while let Some((mut conn, _)) = idle.pop() {
            // An idle connection has nothing to read: a close (0), an error or stray bytes
            // mean it is done; only "nothing yet" leaves it usable. Polled once, never waited on.
            let mut probe = [0u8; 1];
            if conn.io.read(&mut probe).now_or_never().is_none() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns `conn` to the idle ones when the answer leaves it reusable.
    fn keep(&self, conn: Conn, answer: wire::Answer) -> wire::Answer {
        if answer.keep_alive && conn.buf.is_empty() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
        }
        answer
    }

    async fn open(&self) -> io::Result<Conn> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            // One write per request; Nagle's algorithm would hold a TLS record's tail for an ACK.
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match &self.tls {
                Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
                None => Box::new(tcp),
            };
            Ok(Conn { io, buf: Vec::with_capacity(READ_AHEAD) })
        };
        tokio::time::timeout(self.connect_timeout, connect).await.unwrap_or_else(|_| {
            let ms = self.connect_timeout.as_millis();
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {ms} ms")))
        })
    }
}

struct Failure {
    error: io::Error,
    /// Whether any byte of an answer came before it.
    answered: bool,
}

/// Sends `request` on `conn` and reads its answer, leaving in the buffer whatever follows it.
async fn exchange(conn: &mut Conn, request: &[u8]) -> Result<wire::Answer, Failure> {
    let unanswered = |error| Failure { error, answered: false };
    conn.io.write_all(request).await.map_err(unanswered)?;
    conn.io.flush().await.map_err(unanswered)?;
    let mut closed = false;
    loop {
        let answered = !conn.buf.is_empty();
        let invalid = |e: wire::HttpError| Failure { error: io::Error::new(io::ErrorKind::InvalidData, e), answered };
        if answered || closed {
            if let Some(answer) = wire::answer(&conn.buf, closed).map_err(invalid)? {
                conn.buf.drain(..answer.used);
                return Ok(answer);
            }
        }
        conn.buf.reserve(READ_AHEAD);
        closed = conn.io.read_buf(&mut conn.buf).await.map_err(|error| Failure { error, answered })? == 0;
    }
}

/// A hand-written server, for what no emulator does on demand: close a kept-alive connection
/// just as a request arrives on it, or in the middle of an answer.
#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::Endpoint;
    use crate::sqs::{ClientConfig, Protocol, SqsError};
    use pgrx::prelude::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// One request off `stream`: its head and body, by its Content-Length.
    fn request(stream: &mut TcpStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut byte = [0u8];
        while !bytes.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            bytes.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&bytes).to_lowercase();
        let length: usize =
            head.split("content-length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        bytes.extend(body);
        bytes
    }

    /// An endpoint on a server that runs `serve` on the connections it accepts, one by one.
    fn server(serve: impl FnOnce(&TcpListener) + Send + 'static) -> (Endpoint, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = ClientConfig {
            endpoint: Some(format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())),
            region: "us-east-1".to_owned(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            protocol: Protocol::Json,
            assume: None,
        };
        let thread = std::thread::spawn(move || serve(&listener));
        (Endpoint::new(&config, Vec::new()).unwrap(), thread)
    }

    fn post(endpoint: &Endpoint, body: &str) -> Result<Vec<u8>, SqsError> {
        let request =
            sqs_ingest_core::http::post(&endpoint.path, &[("host", &endpoint.authority)], body.as_bytes()).unwrap();
        let answer = crate::sqs::run(endpoint.post(&request), || true).unwrap()?;
        Ok(answer.body)
    }

    #[pg_test]
    fn a_request_a_kept_connection_loses_goes_again_on_a_new_one() {
        let (endpoint, server) = server(|listener| {
            let (mut kept, _) = listener.accept().unwrap();
            assert!(request(&mut kept).ends_with(b"first"));
            kept.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            // Closed as the second request arrives, unanswered: an idle timeout meeting it.
            assert!(request(&mut kept).ends_with(b"second"));
            drop(kept);
            let (mut new, _) = listener.accept().unwrap();
            assert!(request(&mut new).ends_with(b"second"), "the same request, sent again");
            new.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok2\r\n0\r\n\r\n").unwrap();
        });
        assert_eq!(post(&endpoint, "first").unwrap(), b"ok");
        assert_eq!(post(&endpoint, "second").unwrap(), b"ok2");
        server.join().unwrap();
    }

    #[pg_test]
    fn an_answer_cut_short_is_an_error_and_not_sent_again() {
        let (endpoint, server) = server(|listener| {
            let (mut kept, _) = listener.accept().unwrap();
            request(&mut kept);
            kept.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            request(&mut kept);
            kept.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart").unwrap();
            drop(kept);
            listener.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            assert!(listener.accept().is_err(), "no second connection");
        });
        assert_eq!(post(&endpoint, "first").unwrap(), b"ok");
        let Err(SqsError::Unreachable { detail, .. }) = post(&endpoint, "second") else { panic!("not unreachable") };
        assert_eq!(detail, "the connection closed before the answer was complete");
        server.join().unwrap();
    }

    #[pg_test]
    fn a_server_that_closes_after_each_answer_is_served() {
        let (endpoint, server) = server(|listener| {
            for answer in ["one", "two"] {
                let (mut stream, _) = listener.accept().unwrap();
                request(&mut stream);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", answer.len());
                stream.write_all(format!("{head}{answer}").as_bytes()).unwrap();
                // Closed after its answer, without Connection: close, as moto's server does.
                stream.shutdown(std::net::Shutdown::Both).unwrap();
            }
        });
        assert_eq!(post(&endpoint, "a").unwrap(), b"one");
        assert_eq!(post(&endpoint, "b").unwrap(), b"two");
        server.join().unwrap();
    }
}
