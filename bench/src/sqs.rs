//! The benchmark's own SQS client: fills queues fast, and drains them as fast as the emulator
//! allows (receive and delete only, many requests in flight) to measure its limit.
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Requests in flight when filling or draining at the limit.
const IN_FLIGHT: usize = 16;

pub struct Sqs {
    runtime: Runtime,
    client: Client,
}

impl Sqs {
    pub fn new(endpoint: &str) -> Sqs {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(async {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "bench"))
                .load()
                .await;
            Client::new(&config)
        });
        Sqs { runtime, client }
    }

    /// Sends `bodies` in batches of ten, IN_FLIGHT batches at a time.
    pub fn fill(&self, url: &str, bodies: &[String]) {
        self.runtime.block_on(async {
            let mut set = JoinSet::new();
            for chunk in bodies.chunks(10) {
                if set.len() >= IN_FLIGHT {
                    set.join_next().await.unwrap().unwrap();
                }
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, b)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build().unwrap())
                    .collect();
                let request = self.client.send_message_batch().queue_url(url).set_entries(Some(entries));
                set.spawn(async move {
                    let out = request.send().await.expect("send_message_batch");
                    assert!(out.failed.is_empty(), "the emulator refused messages: {:?}", out.failed);
                });
            }
            while let Some(done) = set.join_next().await {
                done.unwrap();
            }
        });
    }

    /// Receives and deletes `n` messages with IN_FLIGHT loops at once, doing nothing else with
    /// them: how fast the emulator itself can hand messages out. Returns the time to the n-th.
    pub fn drain_at_the_limit(&self, url: &str, n: usize) -> Duration {
        let done = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(Mutex::new(None));
        let start = Instant::now();
        self.runtime.block_on(async {
            let mut set = JoinSet::new();
            for _ in 0..IN_FLIGHT {
                let (client, url, done, finished) = (self.client.clone(), url.to_owned(), done.clone(), finished.clone());
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
                                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build().unwrap()
                            })
                            .collect();
                        client.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.expect("delete");
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
}
