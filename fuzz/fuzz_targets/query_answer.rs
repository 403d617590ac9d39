//! Any answer a Query-protocol endpoint may send (the JSON protocol's are the SDK's): reading it never
//! panics, and a message read from it always has the id and receipt handle it needs to be
//! stored and deleted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_ingest_core::query;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(messages) = query::receive_answer(&text) {
        assert!(messages.len() <= text.len());
        for m in messages {
            assert!(text.contains("MessageId") && text.contains("ReceiptHandle"), "{m:?}");
        }
    }
    let _ = query::delete_batch_answer(&text);
    if let Some(e) = query::error_answer(&text) {
        assert!(e.code.len() <= text.len() && e.message.len() <= text.len());
    }
});
