//! The SQS Query protocol on the wire, for endpoints that predate JSON (the take-home's
//! LocalStack image): form POSTs signed with SigV4 by the SDK's own signer and sent through the
//! SDK's HTTP connector; the forms and XML answers themselves are core::query's.
use super::error::causes;
use super::{ClientConfig, Queue, Received, SqsError};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use sqs_ingest_core::query;
use sqs_ingest_core::redact::redact;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Temporary credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// The most of a non-XML error body quoted in an error message.
const QUOTED_BODY: usize = 200;

pub struct Client {
    connector: Connector,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    /// Where the forms are posted: the endpoint's root; QueueUrl names the queue.
    url: String,
    region: String,
    target: String,
}

impl Client {
    pub fn new(config: &ClientConfig, credentials: SharedCredentialsProvider) -> Client {
        let settings = HttpConnectorSettings::builder().connect_timeout(config.connect_timeout).build();
        let connector = Connector::builder()
            .connector_settings(settings)
            .sleep_impl(TokioSleep::new())
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build();
        let url = match &config.endpoint {
            Some(endpoint) => format!("{}/", endpoint.trim_end_matches('/')),
            None if config.region.starts_with("cn-") => format!("https://sqs.{}.amazonaws.com.cn/", config.region),
            None => format!("https://sqs.{}.amazonaws.com/", config.region),
        };
        Client {
            connector,
            credentials,
            cached: Mutex::new(None),
            url,
            region: config.region.clone(),
            target: config.target(),
        }
    }

    /// One ReceiveMessage of up to `max` (1..=10) messages; `attempt`: a FIFO queue's
    /// ReceiveRequestAttemptId.
    pub async fn receive(
        &self,
        queue: &Queue,
        max: i32,
        wait_seconds: i32,
        attempt: Option<&str>,
    ) -> Result<Vec<Received>, SqsError> {
        let form = query::receive_form(
            &queue.url,
            max,
            wait_seconds,
            queue.visibility_timeout,
            attempt,
            queue.message_attributes,
        );
        let xml = self.post(form).await?;
        query::receive_answer(&xml).map_err(|e| self.unreadable(e))
    }

    /// DeleteMessageBatch of up to 10 receipt handles; returns how many entries SQS refused.
    pub async fn delete_batch(&self, queue: &Queue, handles: &[String]) -> Result<usize, SqsError> {
        let xml = self.post(query::delete_batch_form(&queue.url, handles)).await?;
        query::delete_batch_answer(&xml).map_err(|e| self.unreadable(e))
    }

    /// POSTs a signed form; the answer's body when SQS accepted it, its error otherwise.
    async fn post(&self, form: String) -> Result<String, SqsError> {
        let identity: Identity = self.credentials().await?.into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .expect("identity, region, name, time and settings are set")
            .into();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(form)
            .map_err(|e| self.unreachable(&e))?;
        let headers = request.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new("POST", &self.url, headers, SignableBody::Bytes(request.body().as_bytes()))
            .map_err(|e| self.unreachable(&e))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| self.unreachable(&e))?.into_parts();
        instructions.apply_to_request_http1x(&mut request);

        let request = request.map(SdkBody::from).try_into().map_err(|e| self.unreachable(&e))?;
        let response = self.connector.call(request).await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| self.unreachable(&*e))?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            return Ok(body);
        }
        Err(match query::error_answer(&body) {
            Some(e) => SqsError::Service { target: self.target.clone(), code: e.code, message: redact(&e.message) },
            None => SqsError::Service {
                target: self.target.clone(),
                code: format!("HTTP {}", status.as_u16()),
                message: redact(&body.chars().take(QUOTED_BODY).collect::<String>()),
            },
        })
    }

    /// The chain's credentials, kept until shortly before they expire.
    async fn credentials(&self) -> Result<Credentials, SqsError> {
        let fresh = |c: &Credentials| c.expiry().is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
        if let Some(c) = self.cached.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c =
            self.credentials.provide_credentials().await.map_err(|e| SqsError::Credentials { detail: causes(&e) })?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> SqsError {
        SqsError::Unreachable { target: self.target.clone(), detail: causes(e) }
    }

    fn unreadable(&self, e: query::AnswerError) -> SqsError {
        SqsError::Unreachable { target: self.target.clone(), detail: e.to_string() }
    }
}
