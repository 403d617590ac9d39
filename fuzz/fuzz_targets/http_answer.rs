//! Any bytes an endpoint may send on a connection: reading an answer never panics; a complete
//! answer depends only on the bytes it took; and a body sent chunked reads back as it was sent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_ingest_core::http::answer;

fuzz_target!(|data: &[u8]| {
    for closed in [false, true] {
        if let Ok(Some(a)) = answer(data, closed) {
            assert!(a.used <= data.len() && a.body.len() <= a.used);
            if !closed {
                assert_eq!(answer(&data[..a.used], false), Ok(Some(a)));
            }
        }
    }
    // The same bytes as the body of a chunked answer, cut into chunks of 1 to 8 bytes.
    let size = data.first().map_or(1, |b| usize::from(b % 8) + 1);
    let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in data.chunks(size) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let a = answer(&wire, false).unwrap().expect("a complete chunked answer");
    assert_eq!((a.body.as_slice(), a.used, a.keep_alive), (data, wire.len(), true));
});
