//! Drains a queue as fast as the emulator allows (receive and delete only, many requests in
//! flight), to measure its limit.
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use sqs_ingest_it::Emulator;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Requests in flight when filling or draining at the limit.
pub const IN_FLIGHT: usize = 16;

/// Receives and deletes `n` messages with IN_FLIGHT loops at once, doing nothing else with
/// them: how fast the emulator itself can hand messages out. Returns the time to the n-th.
pub fn drain_at_the_limit(emulator: &Emulator, url: &str, n: usize) -> Duration {
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let finishing = finished.clone();
    emulator.run(|client| async move {
        let mut set = JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (client, url, done, finished) = (client.clone(), url.to_owned(), done.clone(), finishing.clone());
            set.spawn(async move {
                while done.load(Ordering::SeqCst) < n {
                    let received = client.receive_message().queue_url(&url).max_number_of_messages(10).send().await;
                    let messages = received.expect("receive_message").messages.unwrap_or_default();
                    if messages.is_empty() {
                        continue;
                    }
                    let entries = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            let handle = m.receipt_handle.clone().expect("a receipt handle");
                            DeleteMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(handle)
                                .build()
                                .unwrap()
                        })
                        .collect();
                    client
                        .delete_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .expect("delete");
                    if done.fetch_add(messages.len(), Ordering::SeqCst) + messages.len() >= n {
                        finished.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                }
            });
        }
        while let Some(task) = set.join_next().await {
            task.unwrap();
        }
    });
    let end = finished.lock().unwrap().expect("the n-th message");
    end - start
}
