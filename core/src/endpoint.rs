//! What a queue URL says of where to send requests: the endpoint of an emulator, the region of an AWS queue.

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

/// The region an AWS queue URL names: `sqs.<region>.amazonaws.com[.cn]`, its FIPS and
/// dual-stack forms (`sqs-fips.<region>...`, `sqs.<region>.api.aws`) and the legacy
/// `<region>.queue.amazonaws.com`. None for any other host.
pub fn region_of_queue(queue_url: &str) -> Option<&str> {
    let rest = &queue_url[queue_url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority.rsplit('@').next()?.split(':').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs" | "sqs-fips", region, "amazonaws", "com"] | ["sqs" | "sqs-fips", region, "amazonaws", "com", "cn"] => {
            region
        }
        ["sqs" | "sqs-fips", region, "api", "aws"] => region,
        [region, "queue", "amazonaws", "com"] => region,
        _ => return None,
    };
    let valid = region.len() >= 9 && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_queue_urls_name_their_region() {
        assert_eq!(region_of_queue("https://sqs.eu-west-1.amazonaws.com/123456789012/q"), Some("eu-west-1"));
        assert_eq!(
            region_of_queue("https://sqs-fips.us-gov-west-1.amazonaws.com/123456789012/q"),
            Some("us-gov-west-1")
        );
        assert_eq!(region_of_queue("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q"), Some("cn-north-1"));
        assert_eq!(region_of_queue("https://sqs.ap-south-2.api.aws/123456789012/q"), Some("ap-south-2"));
        assert_eq!(region_of_queue("https://us-east-2.queue.amazonaws.com/123456789012/q"), Some("us-east-2"));
    }

    #[test]
    fn other_hosts_name_no_region() {
        assert_eq!(region_of_queue("http://localhost:4566/000000000000/login-queue"), None);
        assert_eq!(region_of_queue("https://vpce-1a2b.sqs.us-east-1.vpce.amazonaws.com/123456789012/q"), None);
        assert_eq!(region_of_queue("https://sqs.amazonaws.com/123456789012/q"), None);
        assert_eq!(region_of_queue("login-queue"), None);
    }

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
