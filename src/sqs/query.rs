//! The SQS Query protocol on the wire, for endpoints that predate JSON (the take-home's
//! LocalStack image): form POSTs through the signed client; the forms and XML answers
//! themselves are core::query's.
use super::signed::{Answer, Client};
use super::{Queue, Received, SqsError};
use sqs_ingest_core::query;
use sqs_ingest_core::received::Receive;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded; charset=utf-8");

/// One ReceiveMessage.
pub async fn receive(client: &Client, request: &Receive<'_>) -> Result<Vec<Received>, SqsError> {
    let xml = accepted(client, client.post(&[FORM], query::receive_form(request)).await?)?;
    query::receive_answer(&xml).map_err(|e| client.unreadable(e))
}

/// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
pub async fn delete_batch(client: &Client, queue: &Queue, handles: &[String]) -> Result<usize, SqsError> {
    let xml = accepted(client, client.post(&[FORM], query::delete_batch_form(&queue.url, handles)).await?)?;
    query::delete_batch_answer(&xml).map_err(|e| client.unreadable(e))
}

/// The answer's body when SQS accepted the request, its error otherwise.
fn accepted(client: &Client, answer: Answer) -> Result<String, SqsError> {
    if answer.is_success() {
        return Ok(answer.body);
    }
    Err(answer.error(&client.target, query::error_answer(&answer.body)))
}
