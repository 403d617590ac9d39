//! The SQS JSON protocol, through the AWS SDK: what SQS and LocalStack 3 and later speak.
use super::error::causes;
use super::{ClientConfig, Queue, Received, SqsError};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use sqs_ingest_core::query::error_answer;
use sqs_ingest_core::received::{attributes_json, Attribute};
use sqs_ingest_core::redact::redact;
use std::time::Duration;

pub async fn client(config: &ClientConfig, credentials: SharedCredentialsProvider) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .timeout_config(TimeoutConfig::builder().connect_timeout(config.connect_timeout).build())
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(50)));
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// One ReceiveMessage of up to `max` (1..=10) messages; `attempt`: a FIFO queue's
/// ReceiveRequestAttemptId, which also asks for the group and sequence number. The SDK's own
/// retries send the same request, and so the same attempt id.
pub async fn receive(
    client: &Client,
    queue: &Queue,
    max: i32,
    wait_seconds: i32,
    attempt: Option<&str>,
) -> Result<Vec<Received>, SqsError> {
    let mut request = client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(queue.visibility_timeout)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
    if let Some(attempt) = attempt {
        request = request
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SequenceNumber)
            .receive_request_attempt_id(attempt);
    }
    if queue.message_attributes {
        request = request.message_attribute_names("All");
    }
    let output = request.send().await.map_err(|e| request_error(&queue.config, e))?;
    Ok(output
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let text = |name| m.attributes.as_ref().and_then(|a| a.get(&name));
            let attribute = |name| text(name).and_then(|v| v.parse().ok());
            let values: Vec<(&str, &str, String)> = (m.message_attributes.iter().flatten())
                .filter_map(|(name, v)| {
                    let value = match (v.string_value(), v.binary_value()) {
                        (Some(s), _) => s.to_owned(),
                        (None, Some(b)) => aws_smithy_types::base64::encode(b.as_ref()),
                        (None, None) => return None,
                    };
                    Some((name.as_str(), v.data_type(), value))
                })
                .collect();
            let attributes =
                attributes_json(values.iter().map(|(name, data_type, value)| Attribute { name, data_type, value }));
            Some(Received {
                sent_millis: attribute(MessageSystemAttributeName::SentTimestamp),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c: i64| i32::try_from(c).ok()),
                group_id: text(MessageSystemAttributeName::MessageGroupId).cloned(),
                sequence_number: text(MessageSystemAttributeName::SequenceNumber).cloned(),
                attributes,
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
            })
        })
        .collect())
}

/// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
pub async fn delete_batch(client: &Client, queue: &Queue, handles: &[String]) -> Result<usize, SqsError> {
    let entries = handles
        .iter()
        .enumerate()
        .map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    let output = client
        .delete_message_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| request_error(&queue.config, e))?;
    Ok(output.failed.len())
}

fn request_error<E>(config: &ClientConfig, err: SdkError<E, HttpResponse>) -> SqsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let target = config.target();
    // An answer in the Query protocol's XML: the endpoint does not speak JSON at all.
    let raw = match &err {
        SdkError::ServiceError(e) => Some(e.raw()),
        SdkError::ResponseError(e) => Some(e.raw()),
        _ => None,
    };
    let xml = raw.and_then(|r| r.body().bytes()).and_then(|b| std::str::from_utf8(b).ok()).and_then(error_answer);
    if let Some(e) = xml {
        return SqsError::QueryOnly { target, code: e.code, message: redact(&e.message) };
    }
    match &err {
        SdkError::ServiceError(service) => SqsError::Service {
            target,
            code: service.err().code().unwrap_or("an error").to_owned(),
            message: redact(service.err().message().unwrap_or_default()),
        },
        _ => SqsError::Unreachable { target, detail: causes(&err) },
    }
}
