//! HTTP/1.1 as SQS needs it, without I/O: a POST's bytes, and an answer read from a buffer as
//! it fills (the head, then a body framed by Content-Length, chunked coding, or the close).
use std::fmt;

/// The longest head an answer may have before it is refused: SQS's are a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// The largest body accepted: ten messages of SQS's largest size (1 MiB) with their
/// attributes fit many times over; anything larger is not an SQS answer.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Headers in one head, at most: SQS sends about ten.
const MAX_HEADERS: usize = 64;

/// Why bytes are not an HTTP/1.1 answer, or a header not sendable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

fn malformed(what: impl fmt::Display) -> HttpError {
    HttpError(format!("malformed HTTP answer: {what}"))
}

/// A POST of `body` to `path`, with `headers` (Host among them) and its Content-Length.
pub fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // A line break in a value would end the head early and smuggle the rest in as headers.
        if value.bytes().chain(name.bytes()).any(|b| b == b'\r' || b == b'\n') {
            return Err(HttpError(format!("the value of the header {name} contains a line break")));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

/// A complete answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// Bytes of the buffer this answer took.
    pub used: usize,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The answer at the start of `buf`, once all of it is there; `None` while more is to come.
/// `closed`: the peer closed the connection after the last byte of `buf`.
pub fn answer(buf: &[u8], closed: bool) -> Result<Option<Answer>, HttpError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&buf[start..]).map_err(malformed)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if buf.len() - start > MAX_HEAD => {
                return Err(malformed(format_args!("a head longer than {MAX_HEAD} bytes")))
            }
            httparse::Status::Partial if closed => return Err(cut_short()),
            httparse::Status::Partial => return Ok(None),
        };
        let status = head.code.expect("a complete head has a status");
        let body_start = start + head_len;
        // An interim answer (100 Continue, 103 Early Hints) precedes the real one.
        if (100..200).contains(&status) && status != 101 {
            start = body_start;
            continue;
        }
        let mut keep_alive = head.version == Some(1);
        let mut framing = Framing::UntilClose;
        for header in head.headers.iter() {
            let value = std::str::from_utf8(header.value).map_err(malformed)?.trim();
            if header.name.eq_ignore_ascii_case("connection") {
                keep_alive &= !value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if !last.eq_ignore_ascii_case("chunked") {
                    return Err(malformed(format_args!("transfer coding {value}")));
                }
                framing = Framing::Chunked;
            } else if header.name.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
                let length: usize = value.parse().map_err(|_| malformed(format_args!("Content-Length {value}")))?;
                if matches!(framing, Framing::Length(l) if l != length) {
                    return Err(malformed("two different Content-Length headers"));
                }
                framing = Framing::Length(length);
            }
        }
        if status == 204 || status == 304 || status == 101 {
            framing = Framing::Length(0);
        }
        let rest = &buf[body_start..];
        let (body, used) = match framing {
            Framing::Length(n) if n > MAX_BODY => return Err(too_large()),
            Framing::Length(n) if rest.len() >= n => (rest[..n].to_vec(), n),
            Framing::Length(_) if closed => return Err(cut_short()),
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match chunked(rest)? {
                Some(done) => done,
                None if closed => return Err(cut_short()),
                None => return Ok(None),
            },
            Framing::UntilClose if rest.len() > MAX_BODY => return Err(too_large()),
            Framing::UntilClose if closed => {
                keep_alive = false;
                (rest.to_vec(), rest.len())
            }
            Framing::UntilClose => return Ok(None),
        };
        return Ok(Some(Answer { status, body, keep_alive, used: body_start + used }));
    }
}

fn cut_short() -> HttpError {
    HttpError("the connection closed before the answer was complete".to_owned())
}

fn too_large() -> HttpError {
    malformed(format_args!("a body larger than {MAX_BODY} bytes"))
}

/// A chunked body at the start of `buf`, decoded, and the bytes it took; `None` while
/// incomplete.
fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line) = line_at(buf, at) else { return Ok(None) };
        // The size, then optional extensions after ';', which nothing here uses.
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size).ok().map(str::trim).filter(|s| !s.is_empty() && s.len() <= 15);
        let size = size
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| malformed(format_args!("chunk size {:?}", String::from_utf8_lossy(line))))?;
        at += line.len() + 2;
        if size == 0 {
            // Trailers, each a line, up to an empty one.
            loop {
                let Some(trailer) = line_at(buf, at) else { return Ok(None) };
                at += trailer.len() + 2;
                if trailer.is_empty() {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(too_large());
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(malformed("a chunk not followed by CRLF"));
        }
        at += size + 2;
    }
}

/// The line starting at `at`, without its CRLF; `None` until the CRLF is in `buf`.
fn line_at(buf: &[u8], at: usize) -> Option<&[u8]> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Answer {
        answer(buf, false).unwrap().expect("complete")
    }

    #[test]
    fn a_post_carries_its_headers_and_length() {
        let bytes =
            post("/", &[("host", "localhost:4566"), ("x-amz-target", "AmazonSQS.ReceiveMessage")], b"{}").unwrap();
        assert_eq!(
            bytes,
            b"POST / HTTP/1.1\r\nhost: localhost:4566\r\nx-amz-target: AmazonSQS.ReceiveMessage\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_line_break_in_a_header_is_refused() {
        let e = post("/", &[("x-amz-security-token", "abc\r\nx-evil: 1")], b"").unwrap_err();
        assert_eq!(e.0, "the value of the header x-amz-security-token contains a line break");
    }

    #[test]
    fn a_sized_answer_is_complete_once_its_body_is_there() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..wire.len() {
            assert_eq!(answer(&wire[..cut], false).unwrap(), None, "cut at {cut}");
        }
        let a = complete(wire);
        assert_eq!((a.status, a.body.as_slice(), a.keep_alive, a.used), (200, &b"hello"[..], true, wire.len()));
    }

    #[test]
    fn the_next_answer_on_the_connection_is_left_in_the_buffer() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        assert_eq!(complete(wire).used, wire.len() - "HTTP/1.1 200 OK\r\n".len());
    }

    #[test]
    fn a_chunked_answer_is_decoded() {
        let wire = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..wire.len() {
            assert_eq!(answer(&wire[..cut], false).unwrap(), None, "cut at {cut}");
        }
        let a = complete(wire);
        assert_eq!((a.status, a.body.as_slice(), a.used), (400, &b"Wikipedia in \r\n\r\nchunks."[..], wire.len()));
    }

    #[test]
    fn an_answer_without_length_ends_with_the_connection() {
        let wire = b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n<a/>";
        assert_eq!(answer(wire, false).unwrap(), None);
        let a = answer(wire, true).unwrap().unwrap();
        assert_eq!((a.body.as_slice(), a.keep_alive), (&b"<a/>"[..], false));
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(complete(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn interim_answers_are_skipped() {
        let a = complete(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    }

    #[test]
    fn a_close_before_the_end_is_an_error() {
        assert_eq!(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true), Err(cut_short()));
        assert_eq!(answer(b"HTTP/1.1 200 OK\r\nContent-Le", true), Err(cut_short()));
        assert_eq!(answer(b"", true), Err(cut_short()));
    }

    #[test]
    fn malformed_answers_are_errors() {
        for wire in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            let e = answer(wire, false).unwrap_err();
            assert!(e.0.starts_with("malformed HTTP answer"), "{e} for {:?}", String::from_utf8_lossy(wire));
        }
    }
}
