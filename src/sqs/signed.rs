//! Signed POSTs to an SQS endpoint in the Query protocol, which aws-sdk-sqs no longer speaks:
//! SigV4 by the SDK's own signer, sent over our HTTP/1.1 connections (http.rs), the SDK chain's
//! credentials kept until shortly before they expire.
use super::error::causes;
use super::http::Endpoint;
use super::{ClientConfig, SqsError};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use sqs_ingest_core::http as wire;
use sqs_ingest_core::query::ServiceError;
use sqs_ingest_core::redact::redact;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Temporary credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

pub struct Client {
    endpoint: Endpoint,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Identity>>,
    /// Where requests are posted, as SigV4 signs it: the endpoint's root; the body names the queue.
    url: String,
    region: String,
    /// The endpoint, as errors name it.
    pub target: String,
}

/// An answer of any status: the protocol decides what an error looks like.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The most of an unreadable error body quoted in an error message.
const QUOTED_BODY: usize = 200;

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error this answer is: `parsed` from the protocol's error document, else its status
    /// and the start of its body.
    pub fn error(&self, target: &str, parsed: Option<ServiceError>) -> SqsError {
        let target = target.to_owned();
        match parsed {
            Some(e) => SqsError::Service { target, code: e.code, message: redact(&e.message) },
            None => SqsError::Service {
                target,
                code: format!("HTTP {}", self.status),
                message: redact(&self.body.chars().take(QUOTED_BODY).collect::<String>()),
            },
        }
    }
}

impl Client {
    /// A client for `config`, posting over `endpoint` (built from the same config).
    pub fn new(config: &ClientConfig, endpoint: Endpoint, credentials: SharedCredentialsProvider) -> Client {
        Client {
            endpoint,
            credentials,
            cached: Mutex::new(None),
            url: config.url(),
            region: config.region.clone(),
            target: config.target(),
        }
    }

    /// POSTs `body`, signed, with `headers` besides the signature's: the answer, whatever its
    /// status; an error only when no answer came.
    pub async fn post(&self, headers: &[(&str, &str)], body: String) -> Result<Answer, SqsError> {
        let identity = self.identity().await?;
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .expect("identity, region, name, time and settings are set")
            .into();
        let mut all = Vec::with_capacity(headers.len() + 4);
        all.push(("host", self.endpoint.authority.as_str()));
        all.extend_from_slice(headers);
        let signable =
            SignableRequest::new("POST", &self.url, all.iter().copied(), SignableBody::Bytes(body.as_bytes()))
                .map_err(|e| self.unreachable(&e))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| self.unreachable(&e))?.into_parts();
        all.extend(instructions.headers());
        let request = wire::post(&self.endpoint.path, &all, body.as_bytes()).map_err(|e| self.unreachable(&e))?;
        let answer = self.endpoint.post(&request).await?;
        // SQS answers in UTF-8; a stray byte of an emulator's must not lose the rest.
        let body =
            String::from_utf8(answer.body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Answer { status: answer.status, body })
    }

    /// The chain's credentials as the signer's identity, kept until shortly before they expire.
    async fn identity(&self) -> Result<Identity, SqsError> {
        let fresh = |i: &Identity| i.expiration().is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
        if let Some(i) = self.cached.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|i| fresh(i)) {
            return Ok(i.clone());
        }
        let credentials =
            self.credentials.provide_credentials().await.map_err(|e| SqsError::Credentials { detail: causes(&e) })?;
        let identity = Identity::from(credentials);
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(identity.clone());
        Ok(identity)
    }

    /// A request that could not be signed or written.
    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> SqsError {
        SqsError::Unreachable { target: self.target.clone(), detail: causes(e) }
    }

    /// An answer that could not be read as the protocol's document.
    pub fn unreadable(&self, e: sqs_ingest_core::query::AnswerError) -> SqsError {
        SqsError::Unreachable { target: self.target.clone(), detail: e.to_string() }
    }
}
