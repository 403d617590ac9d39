//! What can go wrong talking to SQS, and how each failure reaches the user: SQLSTATE and HINT.
use crate::errors::report;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use std::fmt;

#[derive(Debug)]
pub enum SqsError {
    /// No credentials in the AWS default chain.
    Credentials { detail: String },
    /// STS did not let the server's credentials assume a source identity's role (refused, no
    /// trust, a wrong external id), or the chain had none to ask with.
    Identity { identity: String, role_arn: String, detail: String },
    /// The request did not complete: connection refused, reset, timed out, bad response.
    Unreachable { target: String, detail: String },
    /// The endpoint's TLS certificate was refused: its issuer is not among the CA
    /// certificates this server trusts (`trusted` of them; none when the system has no store).
    Untrusted { target: String, detail: String, trusted: usize },
    /// SQS answered with an error (no such queue, access denied, ...).
    Service { target: String, code: String, message: String },
    /// A JSON request was answered with a Query protocol error document: the endpoint speaks
    /// only the older protocol (LocalStack before 3.0, old moto).
    QueryOnly { target: String, code: String, message: String },
}

impl fmt::Display for SqsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqsError::Credentials { detail } => write!(f, "no AWS credentials found: {detail}"),
            SqsError::Identity { identity, role_arn, detail } => {
                write!(f, "identity \"{identity}\" could not assume {role_arn}: {detail}")
            }
            SqsError::Unreachable { target, detail } => write!(f, "could not reach {target}: {detail}"),
            SqsError::Untrusted { target, detail, .. } => {
                write!(f, "the TLS certificate of {target} is not trusted by this server: {detail}")
            }
            SqsError::Service { target, code, message } if message.is_empty() => write!(f, "{target} answered {code}"),
            SqsError::Service { target, code, message } => write!(f, "{target} answered {code}: {message}"),
            SqsError::QueryOnly { target, code, message } => write!(
                f,
                "{target} does not speak the SQS JSON protocol: it answered a JSON request in the Query protocol with {code}: {message}"
            ),
        }
    }
}

/// The kinds of error SQS answers, each with its SQLSTATE and HINT. Codes as SQS sends them in
/// either protocol: the legacy one (x-amzn-query-error, the Query protocol's) or the JSON one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Throttling, whatever the service calls it (the SDK's standard retry list).
    Throttled,
    /// A fault on AWS's side (HTTP 5xx).
    ServerFault,
    /// A signature refused for its time: the server's clock is off.
    ClockSkew,
    /// Credentials SQS does not accept: expired, unknown or revoked.
    CredentialsRefused,
    /// The credentials may not do this to this queue.
    AccessDenied,
    /// The queue's KMS key refused (kms:Decrypt, a disabled key) or throttled.
    Kms,
    /// No such queue where it was asked for (its URL, or its region).
    NoQueue,
    Other,
}

impl ServiceKind {
    pub fn of(code: &str) -> ServiceKind {
        let code = code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code);
        match code {
            c if c.starts_with("KMS.") || c.starts_with("Kms") => ServiceKind::Kms,
            c if c.contains("Throttl")
                || ["TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "LimitExceededException"]
                    .contains(&c) =>
            {
                ServiceKind::Throttled
            }
            c if c.starts_with("HTTP 5")
                || ["InternalError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException"]
                    .contains(&c) =>
            {
                ServiceKind::ServerFault
            }
            "RequestTimeTooSkewed" | "RequestExpired" | "InvalidSignatureException" | "SignatureDoesNotMatch" => {
                ServiceKind::ClockSkew
            }
            "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "InvalidAccessKeyId"
            | "InvalidSecurity"
            | "MissingAuthenticationToken" => ServiceKind::CredentialsRefused,
            "AccessDenied" | "AccessDeniedException" => ServiceKind::AccessDenied,
            "NonExistentQueue" | "QueueDoesNotExist" => ServiceKind::NoQueue,
            _ => ServiceKind::Other,
        }
    }
}

impl SqsError {
    /// Query protocol: a failure the same request may not meet again (no answer, a server
    /// fault, throttling). The JSON protocol's are the SDK's to retry.
    pub fn is_transient(&self) -> bool {
        match self {
            SqsError::Unreachable { .. } => true,
            SqsError::Service { code, .. } => {
                matches!(ServiceKind::of(code), ServiceKind::Throttled | ServiceKind::ServerFault)
            }
            SqsError::Credentials { .. }
            | SqsError::Identity { .. }
            | SqsError::Untrusted { .. }
            | SqsError::QueryOnly { .. } => false,
        }
    }

    /// Which problem this is, without the details that vary between attempts.
    pub fn what(&self) -> String {
        match self {
            SqsError::Credentials { .. } => "no AWS credentials".to_owned(),
            SqsError::Identity { identity, .. } => format!("identity \"{identity}\" refused"),
            SqsError::Unreachable { target, .. } => format!("could not reach {target}"),
            SqsError::Untrusted { target, .. } => format!("the TLS certificate of {target} is not trusted"),
            SqsError::Service { target, code, .. } => format!("{target} answered {code}"),
            SqsError::QueryOnly { target, .. } => format!("{target} speaks only the Query protocol"),
        }
    }
}

impl From<SqsError> for ErrorReport {
    fn from(e: SqsError) -> Self {
        let (code, hint) = match e {
            SqsError::Untrusted { trusted: 0, .. } => (
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                "This server has no CA certificates to check it against: install the system's (Debian, Ubuntu: apt-get install ca-certificates; RHEL: dnf install ca-certificates), or name a PEM bundle in SSL_CERT_FILE in the postmaster's environment; then restart PostgreSQL. Nothing was received, so nothing is lost.",
            ),
            SqsError::Untrusted { .. } => (
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                "Its issuer is not among the CA certificates this server trusts (the system's store, or SSL_CERT_FILE and SSL_CERT_DIR in the postmaster's environment): add it there and restart PostgreSQL. Nothing was received, so nothing is lost.",
            ),
            SqsError::Credentials { .. } => (
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                "Give the server AWS credentials through the standard chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the postmaster's environment, ~/.aws/credentials of the postgres OS user, web identity, or an instance/container role.",
            ),
            SqsError::Identity { .. } => (
                PgSqlErrorCode::ERRCODE_INVALID_ROLE_SPECIFICATION,
                "STS refused the identity's role to the server's credentials: the role's trust policy must allow the server's principal sts:AssumeRole with the identity's external id (README, cross-account roles), and the server's own policy must allow sts:AssumeRole on the role. Nothing was received, so nothing is lost.",
            ),
            SqsError::Unreachable { .. } => (
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                "Check that the endpoint is up and sqs_ingest.queue_url / sqs_ingest.endpoint_url point at it. Nothing was received, so nothing is lost.",
            ),
            SqsError::Service { ref code, .. } => match ServiceKind::of(code) {
                ServiceKind::Throttled => (
                    PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                    "SQS throttled the requests after the SDK's retries: lower sqs_ingest.requests_in_flight or the workers, or ask AWS for a higher quota. Nothing was received, so nothing is lost.",
                ),
                ServiceKind::ServerFault => (
                    PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                    "A fault on AWS's side, after the SDK's retries: the worker tries again with backoff; see the AWS Health Dashboard if it lasts. Nothing was received, so nothing is lost.",
                ),
                ServiceKind::ClockSkew => (
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "SQS refuses signatures more than 15 minutes from its clock, and the correction from its Date did not help: sync this server's clock (chrony or systemd-timesyncd) and check the secret key.",
                ),
                ServiceKind::CredentialsRefused => (
                    PgSqlErrorCode::ERRCODE_INVALID_PASSWORD,
                    "SQS refused the credentials (expired, unknown or revoked): renew them where the server's chain finds them (environment, ~/.aws of the postgres OS user, the instance or container role).",
                ),
                ServiceKind::AccessDenied => (
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    "The credentials may not use this queue: allow sqs:ReceiveMessage and sqs:DeleteMessage on it in the IAM policy (and the queue policy, for another account's queue).",
                ),
                ServiceKind::Kms => (
                    PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION,
                    "The queue is encrypted with a KMS key these credentials cannot use: allow kms:Decrypt on the key (its key policy too), and check that the key is enabled.",
                ),
                ServiceKind::NoQueue => (
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    "Check the queue URL: a queue is found only in its own account and region. The region comes from the URL (sqs.<region>.amazonaws.com), else from sqs_ingest.region.",
                ),
                ServiceKind::Other => (
                    PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                    "Check that the queue in sqs_ingest.queue_url exists and that the credentials may receive and delete from it.",
                ),
            },
            SqsError::QueryOnly { .. } => (
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                "Let the extension detect the protocol, or name it: ALTER SYSTEM SET sqs_ingest.protocol = 'auto'; (or 'query') SELECT pg_reload_conf();",
            ),
        };
        report(code, e.to_string(), hint)
    }
}

impl SqsError {
    /// A credentials failure under an identity is the identity's: STS refused its role, or the
    /// server's chain had nothing to ask STS with.
    pub fn under(self, assume: Option<&super::AssumeRole>) -> SqsError {
        match (self, assume) {
            (SqsError::Credentials { detail }, Some(a)) => {
                SqsError::Identity { identity: a.identity.clone(), role_arn: a.role_arn.clone(), detail }
            }
            (e, _) => e,
        }
    }
}

/// An error and its sources as one line: "dispatch failure: io error: ... Connection refused".
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
