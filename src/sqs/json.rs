//! The SQS JSON protocol on the wire, what SQS and LocalStack 3 and later speak: JSON POSTs
//! through the signed client; the documents themselves are core::json's. An endpoint that
//! answers in the Query protocol's XML speaks only that (SqsError::QueryOnly).
use super::signed::{Answer, Client};
use super::{Queue, Received, SqsError};
use sqs_ingest_core::received::Receive;
use sqs_ingest_core::redact::redact;
use sqs_ingest_core::{json, query};

const CONTENT_TYPE: (&str, &str) = ("content-type", "application/x-amz-json-1.0");

/// One ReceiveMessage.
pub async fn receive(client: &Client, request: &Receive<'_>) -> Result<Vec<Received>, SqsError> {
    let body = accepted(client, post(client, "ReceiveMessage", json::receive_request(request)).await?)?;
    json::receive_answer(&body).map_err(|e| client.unreadable(e))
}

/// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
pub async fn delete_batch(client: &Client, queue: &Queue, handles: &[String]) -> Result<usize, SqsError> {
    let answer = post(client, "DeleteMessageBatch", json::delete_batch_request(&queue.url, handles)).await?;
    json::delete_batch_answer(&accepted(client, answer)?).map_err(|e| client.unreadable(e))
}

async fn post(client: &Client, action: &str, body: String) -> Result<Answer, SqsError> {
    client.post(&[CONTENT_TYPE, ("x-amz-target", &json::target(action))], body).await
}

/// The answer's body when SQS accepted the request, its error otherwise.
fn accepted(client: &Client, answer: Answer) -> Result<String, SqsError> {
    // The Query protocol's XML, whatever the status: the endpoint does not speak JSON at all.
    if answer.body.trim_start().starts_with('<') {
        let (code, message) = match query::error_answer(&answer.body) {
            Some(e) => (e.code, redact(&e.message)),
            None => (format!("HTTP {}", answer.status), "an XML document".to_owned()),
        };
        return Err(SqsError::QueryOnly { target: client.target.clone(), code, message });
    }
    if answer.is_success() {
        return Ok(answer.body);
    }
    Err(answer.error(&client.target, json::error_answer(&answer.body)))
}
