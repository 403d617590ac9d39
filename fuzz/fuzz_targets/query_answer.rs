//! Any answer an endpoint may send, in either protocol (Query's XML, JSON): reading it never
//! panics, and a message read from it always has the id and receipt handle it needs to be
//! stored and deleted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_ingest_core::{json, query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for messages in [query::receive_answer(&text), json::receive_answer(&text)].into_iter().flatten() {
        assert!(messages.len() <= text.len());
        for m in messages {
            assert!(text.contains("MessageId") && text.contains("ReceiptHandle"), "{m:?}");
        }
    }
    let _ = query::delete_batch_answer(&text);
    let _ = json::delete_batch_answer(&text);
    for e in [query::error_answer(&text), json::error_answer(&text)].into_iter().flatten() {
        assert!(e.code.len() <= text.len() && e.message.len() <= text.len());
    }
});
