//! The SQS JSON protocol, what SQS and LocalStack 3 and later speak, through aws-sdk-sqs: its
//! endpoint resolution (FIPS, dual-stack, AWS_ENDPOINT_URL_SQS), standard retries, clock-skew
//! correction, error codes (the legacy ones from x-amzn-query-error), credential cache, proxies
//! and HTTPS client. An endpoint that answers in the Query protocol's XML speaks only that
//! (SqsError::QueryOnly).
use super::error::causes;
use super::{ClientConfig, Queue, Received, SqsError};
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use sqs_ingest_core::query::error_answer;
use sqs_ingest_core::received::{attributes_json, Attribute, Receive};
use sqs_ingest_core::redact::redact;

/// The SDK's client for one endpoint, and what its errors name.
pub struct Sdk {
    client: Client,
    /// The endpoint, as errors name it.
    target: String,
    /// CA certificates trusted, for the error that says a certificate was refused.
    trusted: usize,
}

impl Sdk {
    pub fn new(config: &SdkConfig, target: String, trusted: usize) -> Sdk {
        Sdk { client: Client::new(config), target, trusted }
    }
}

/// The AWS configuration of `config`: the default chain's credentials, profile and environment
/// (region, endpoint flags, proxies), with the server's own region, endpoint and timeouts. With
/// an identity, its role assumed through STS on the chain's credentials instead.
pub async fn sdk_config(config: &ClientConfig) -> SdkConfig {
    let defaults = |region: &str| {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .app_name(AppName::new(concat!("sqs_ingest-", env!("CARGO_PKG_VERSION"))).expect("a valid app name"))
            .timeout_config(TimeoutConfig::builder().connect_timeout(config.connect_timeout).build())
            .retry_config(RetryConfig::standard())
    };
    let mut loader = defaults(&config.region);
    if let Some(assume) = &config.assume {
        // STS's own endpoint (regional, or AWS_ENDPOINT_URL_STS), never sqs_ingest.endpoint_url.
        let chain = defaults(assume.region.as_deref().unwrap_or(&config.region)).load().await;
        let mut role = AssumeRoleProvider::builder(&assume.role_arn).session_name(&assume.session_name);
        if let Some(external_id) = &assume.external_id {
            role = role.external_id(external_id);
        }
        let role = role.configure(&chain).build().await;
        loader = loader.credentials_provider(role);
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// One ReceiveMessage. The SDK's retries send the same request, and so the same FIFO attempt id.
pub async fn receive(sdk: &Sdk, request: &Receive<'_>) -> Result<Vec<Received>, SqsError> {
    let mut call = sdk
        .client
        .receive_message()
        .queue_url(request.queue_url)
        .max_number_of_messages(request.max)
        .wait_time_seconds(request.wait_seconds)
        .set_visibility_timeout(request.visibility_timeout)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
    if let Some(attempt) = request.fifo_attempt {
        call = call
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SequenceNumber)
            .receive_request_attempt_id(attempt);
    }
    if request.message_attributes {
        call = call.message_attribute_names("All");
    }
    let output = call.send().await.map_err(|e| sdk.error(e))?;
    Ok(output.messages.unwrap_or_default().into_iter().filter_map(received).collect())
}

/// A message as ingestion takes it; None without an id or receipt handle (never from SQS).
fn received(m: aws_sdk_sqs::types::Message) -> Option<Received> {
    let text = |name| m.attributes.as_ref().and_then(|a| a.get(&name));
    let number = |name| text(name).and_then(|v| v.parse().ok());
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
        sent_millis: number(MessageSystemAttributeName::SentTimestamp),
        receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c: i64| i32::try_from(c).ok()),
        group_id: text(MessageSystemAttributeName::MessageGroupId).cloned(),
        sequence_number: text(MessageSystemAttributeName::SequenceNumber).cloned(),
        attributes,
        message_id: m.message_id?,
        receipt_handle: m.receipt_handle?,
        body: m.body.unwrap_or_default(),
    })
}

/// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
pub async fn delete_batch(sdk: &Sdk, queue: &Queue, handles: &[String]) -> Result<usize, SqsError> {
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
    let output = sdk
        .client
        .delete_message_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| sdk.error(e))?;
    Ok(output.failed.len())
}

impl Sdk {
    /// What the SDK's failure means here. SQS's error code is the legacy one where SQS sends it
    /// (x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue, KMS.AccessDeniedException).
    fn error<E>(&self, err: SdkError<E, HttpResponse>) -> SqsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let target = self.target.clone();
        let raw = match &err {
            SdkError::ServiceError(e) => Some(e.raw()),
            SdkError::ResponseError(e) => Some(e.raw()),
            _ => None,
        };
        // The Query protocol's error document answering a request it did not understand: the
        // endpoint speaks only that. Not any XML or HTML: a proxy's error page is a passing fault,
        // which the SDK has retried as such.
        if let Some(raw) = raw.filter(|r| r.status().as_u16() < 500) {
            if let Some(e) = raw.body().bytes().and_then(|b| std::str::from_utf8(b).ok()).and_then(error_answer) {
                return SqsError::QueryOnly { target, code: e.code, message: redact(&e.message) };
            }
        }
        if let Some(credentials) = source_of::<CredentialsError>(&err) {
            return SqsError::Credentials { detail: redact(&credentials_detail(credentials)) };
        }
        match &err {
            SdkError::ServiceError(service) => SqsError::Service {
                target,
                code: service
                    .err()
                    .code()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {}", service.raw().status().as_u16())),
                message: redact(service.err().message().unwrap_or_default()),
            },
            _ => {
                let detail = redact(&causes(&err));
                // rustls refused the endpoint's certificate: no retry will help, and the fix is on
                // this server, not at the endpoint.
                if detail.contains("invalid peer certificate") {
                    return SqsError::Untrusted { target, detail, trusted: self.trusted };
                }
                SqsError::Unreachable { target, detail }
            }
        }
    }
}

/// Why credentials could not be had: STS's own answer to an identity's AssumeRole, its code and
/// message (the SDK's display of it leaves both out), else the chain of causes.
fn credentials_detail(error: &CredentialsError) -> String {
    match source_of::<SdkError<AssumeRoleError, HttpResponse>>(error) {
        Some(SdkError::ServiceError(refused)) => format!(
            "STS answered {}: {}",
            refused.err().code().unwrap_or("an error"),
            refused.err().message().unwrap_or_default()
        ),
        _ => causes(error),
    }
}

/// The first error of type `T` in `err`'s chain of sources.
fn source_of<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}
