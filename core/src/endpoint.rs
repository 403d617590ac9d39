//! Derives the SQS endpoint from a queue URL when no endpoint is configured.

/// `None` for AWS hosts (the SDK resolves them from the region); otherwise the queue URL's
/// `scheme://host[:port]`, which is where emulators such as LocalStack and moto listen.
pub fn endpoint_for_queue(queue_url: &str) -> Option<&str> {
    let rest_start = queue_url.find("://")? + 3;
    let authority_len = queue_url[rest_start..].find('/').unwrap_or(queue_url.len() - rest_start);
    let authority = &queue_url[rest_start..rest_start + authority_len];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    if host.is_empty() || host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    Some(&queue_url[..rest_start + authority_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_urls_give_their_origin() {
        assert_eq!(endpoint_for_queue("http://localhost:4566/000000000000/login-queue"), Some("http://localhost:4566"));
        assert_eq!(
            endpoint_for_queue("http://localstack:4566/000000000000/login-queue"),
            Some("http://localstack:4566")
        );
        assert_eq!(endpoint_for_queue("http://127.0.0.1:5000"), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn aws_urls_and_garbage_give_none() {
        assert_eq!(endpoint_for_queue("https://sqs.us-east-1.amazonaws.com/123456789012/q"), None);
        assert_eq!(endpoint_for_queue("login-queue"), None);
        assert_eq!(endpoint_for_queue("http:///x"), None);
    }
}
