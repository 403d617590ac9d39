//! Signed POSTs to an SQS endpoint, for both wire protocols: SigV4 by the SDK's own signer,
//! sent through the SDK's HTTP connector (hyper, rustls), credentials kept until shortly before
//! they expire. No SDK client: its per-request machinery cost more CPU than the ingestion itself.
use super::error::causes;
use super::{ClientConfig, SqsError};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use sqs_ingest_core::query::ServiceError;
use sqs_ingest_core::redact::redact;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Temporary credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

pub struct Client {
    connector: Connector,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Identity>>,
    /// Where requests are posted: the endpoint's root; the body names the queue.
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

/// How many CA certificates the connector finds to trust, as it finds them: the system's store,
/// or SSL_CERT_FILE and SSL_CERT_DIR instead when either is set in the environment.
pub fn trusted_certificates() -> usize {
    rustls_native_certs::load_native_certs().certs.len()
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
        let mut request = http::Request::builder().method("POST").uri(&self.url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(body).map_err(|e| self.unreachable(&e))?;
        let signed_headers = request.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable =
            SignableRequest::new("POST", &self.url, signed_headers, SignableBody::Bytes(request.body().as_bytes()))
                .map_err(|e| self.unreachable(&e))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| self.unreachable(&e))?.into_parts();
        instructions.apply_to_request_http1x(&mut request);

        let request = request.map(SdkBody::from).try_into().map_err(|e| self.unreachable(&e))?;
        let response = self.connector.call(request).await.map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| self.unreachable(&*e))?.to_bytes();
        // SQS answers in UTF-8; a stray byte of an emulator's must not lose the rest.
        let body =
            String::from_utf8(body.into()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Answer { status, body })
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

    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> SqsError {
        let detail = causes(e);
        // rustls says so when it refuses the endpoint's certificate: no retry will help, and the
        // fix is on this server, not at the endpoint.
        if detail.contains("invalid peer certificate") {
            return SqsError::Untrusted { target: self.target.clone(), detail, trusted: trusted_certificates() };
        }
        SqsError::Unreachable { target: self.target.clone(), detail }
    }

    /// An answer that could not be read as the protocol's document.
    pub fn unreadable(&self, e: sqs_ingest_core::query::AnswerError) -> SqsError {
        SqsError::Unreachable { target: self.target.clone(), detail: e.to_string() }
    }
}
