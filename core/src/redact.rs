//! Scrubs what SQS may echo back in an error message (receipt handles, key ids, quoted input)
//! before the text reaches an ERROR, a log line or the worker status view.

const REDACTED: &str = "[redacted]";
/// Shorter runs are words and names; receipt handles and tokens are far longer.
const LONG_TOKEN: usize = 32;

pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(|c: char| c == '"' || is_token_char(c)) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if let Some(quoted) = rest.strip_prefix('"') {
            // Quoted text is echoed input: a handle, a queue attribute, a body.
            let end = quoted.find('"').map_or(quoted.len(), |e| e + 1);
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            rest = quoted.get(end..).unwrap_or("");
        } else {
            let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
            let token = &rest[..end];
            let key_id = token.len() >= 20 && (token.starts_with("AKIA") || token.starts_with("ASIA"));
            out.push_str(if token.len() >= LONG_TOKEN || key_id { REDACTED } else { token });
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-')
}

/// A URL as it may be shown: credentials in its authority (`http://user:secret@host`) replaced.
pub fn url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let authority_end = url[start..].find('/').map_or(url.len(), |e| start + e);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn keeps_ordinary_messages() {
        let m = "The specified queue does not exist for this wsdl version.";
        assert_eq!(redact(m), m);
        assert_eq!(redact(""), "");
    }

    #[test]
    fn hides_quoted_input_long_tokens_and_key_ids() {
        assert_eq!(
            redact(r#"The input receipt handle "AQEBzWwaftR+xyz" is not a valid receipt handle."#),
            r#"The input receipt handle "[redacted]" is not a valid receipt handle."#
        );
        let handle = "AQEBaZ+j5qUoOAoxlmrpptOk4kSLoBvRQv2GvJTKZOEgEanKvKp2nNQvF1xhYhO0RXb8q4N9lA==";
        assert_eq!(redact(&format!("bad handle {handle}.")), "bad handle [redacted].");
        assert_eq!(redact("key AKIAIOSFODNN7EXAMPLE is unknown"), "key [redacted] is unknown");
        assert_eq!(redact(r#"unterminated "quote"#), r#"unterminated "[redacted]""#);
    }

    #[test]
    fn credentials_in_urls_are_replaced() {
        assert_eq!(
            super::url("http://user:secret@host:4566/000000000000/q"),
            "http://[redacted]@host:4566/000000000000/q"
        );
        assert_eq!(
            super::url("https://sqs.us-east-1.amazonaws.com/1/q@x"),
            "https://sqs.us-east-1.amazonaws.com/1/q@x"
        );
        assert_eq!(super::url("http://host"), "http://host");
        assert_eq!(super::url("no url"), "no url");
    }
}
