//! One message as received from SQS, in either protocol, with only what ingestion uses.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// The SentTimestamp attribute: milliseconds since the epoch.
    pub sent_millis: Option<i64>,
    /// The ApproximateReceiveCount attribute.
    pub receive_count: Option<i32>,
    /// The message attributes as a JSON object, when they were asked for.
    pub attributes: Option<String>,
}
