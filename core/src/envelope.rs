//! Envelopes around a message's payload, opened so that a source ingests the payload and keeps
//! the envelope beside it: an SNS notification (a queue subscribed to a topic without raw
//! message delivery) and an EventBridge event (a rule that targets the queue).
use crate::message::Rejection;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How a source opens its bodies (sqs_ingest.sources.envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Envelope {
    /// Opens SNS notifications and EventBridge events; leaves anything else as it is.
    #[default]
    Auto,
    /// Every body is the payload.
    None,
    /// Every body must be an SNS notification.
    Sns,
    /// Every body must be an EventBridge event.
    EventBridge,
}

impl Envelope {
    /// The envelope a source names.
    pub fn from_name(name: &str) -> Option<Envelope> {
        match name {
            "auto" => Some(Envelope::Auto),
            "none" => Some(Envelope::None),
            "sns" => Some(Envelope::Sns),
            "eventbridge" => Some(Envelope::EventBridge),
            _ => None,
        }
    }
}

/// A body taken out of its envelope, both as JSON texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// SNS: the Message, as it is when it is JSON, else as a JSON string. EventBridge: the
    /// detail, as it was sent.
    pub payload: String,
    /// The notification or event without its Message or detail, values as they were sent.
    pub envelope: String,
}

/// Opens `body` as `kind` says; `None` when the body is its own payload.
pub fn open(body: &str, kind: Envelope) -> Result<Option<Opened>, Rejection> {
    let sought = match kind {
        Envelope::None => return Ok(None),
        // Most bodies carry no envelope: a substring search spares them a parse.
        Envelope::Auto if !body.contains("\"TopicArn\"") && !body.contains("\"detail-type\"") => return Ok(None),
        other => other,
    };
    let opened = serde_json::from_str::<BTreeMap<Cow<str>, &RawValue>>(body).ok().and_then(|mut fields| {
        // A string field as its text between the quotes, unescaped or not: only "Notification"
        // is compared, and any string will do for the rest.
        let field = |key: &str| fields.get(key).map(|v| v.get().strip_prefix('"').and_then(|t| t.strip_suffix('"')));
        if matches!(sought, Envelope::Auto | Envelope::Sns) && is_sns(field) {
            let message = fields.remove("Message")?;
            let text: String = serde_json::from_str(message.get()).ok()?;
            let payload = match serde_json::from_str::<&RawValue>(&text) {
                Ok(_) => text,
                Err(_) => serde_json::Value::String(text).to_string(),
            };
            Some(Opened { payload, envelope: serde_json::to_string(&fields).ok()? })
        } else if matches!(sought, Envelope::Auto | Envelope::EventBridge) && is_eventbridge(field) {
            let detail = fields.remove("detail")?;
            Some(Opened { payload: detail.get().to_owned(), envelope: serde_json::to_string(&fields).ok()? })
        } else {
            None
        }
    });
    // Raw values are copied without decoding their escapes: a lone surrogate (\ud800) would make
    // a payload or envelope that neither serde_json nor jsonb accepts, so such a body is no
    // envelope (and, for the login source, fails as the body it is).
    let opened = opened.filter(|o| is_json(&o.payload) && is_json(&o.envelope));
    match (opened, sought) {
        (Some(opened), _) => Ok(Some(opened)),
        (None, Envelope::Sns) => Err(Rejection::NotEnvelope("an SNS notification")),
        (None, Envelope::EventBridge) => Err(Rejection::NotEnvelope("an EventBridge event")),
        (None, _) => Ok(None),
    }
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok()
}

/// What `field(key)` says of an object's key: `None` absent, `Some(None)` a value that is not a
/// string, `Some(Some(text))` a string.
trait Fields<'a>: Fn(&str) -> Option<Option<&'a str>> {}
impl<'a, F: Fn(&str) -> Option<Option<&'a str>>> Fields<'a> for F {}

fn is_string<'a>(field: &impl Fields<'a>, key: &str) -> bool {
    matches!(field(key), Some(Some(_)))
}

/// As SNS delivers to SQS: `{"Type": "Notification", "MessageId", "TopicArn", "Message", ...}`.
fn is_sns<'a>(field: impl Fields<'a>) -> bool {
    field("Type") == Some(Some("Notification")) && is_string(&field, "TopicArn") && is_string(&field, "Message")
}

/// As EventBridge delivers to SQS: `{"version", "id", "detail-type", "source", "time", "detail", ...}`.
fn is_eventbridge<'a>(field: impl Fields<'a>) -> bool {
    is_string(&field, "detail-type") && is_string(&field, "source") && field("detail").is_some()
}

/// The key that holds the payload when `body` is an envelope: "Message" (SNS, a JSON text in a
/// string) or "detail" (EventBridge); for masking what a dead letter keeps.
pub fn payload_key(body: &serde_json::Map<String, serde_json::Value>) -> Option<&'static str> {
    let field = |key: &str| body.get(key).map(serde_json::Value::as_str);
    if is_sns(field) {
        Some("Message")
    } else if is_eventbridge(field) {
        Some("detail")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SNS notification as SQS receives it without raw message delivery, shaped as AWS
    /// documents it (SNS developer guide, "Fanout to Amazon SQS queues").
    pub const SNS: &str = r#"{
  "Type" : "Notification",
  "MessageId" : "63a3f6b6-d533-4a47-aef9-fcf5cf758c76",
  "TopicArn" : "arn:aws:sns:us-west-2:123456789012:MyTopic",
  "Subject" : "Testing publish to subscribed queues",
  "Message" : "{\"user_id\": \"u1\", \"amount\": 12345678901234567890.10}",
  "Timestamp" : "2012-03-29T05:12:16.901Z",
  "SignatureVersion" : "1",
  "Signature" : "EXAMPLEnTrFPa3...",
  "SigningCertURL" : "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
  "UnsubscribeURL" : "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c7fe3a54-ab0e-4ec2-88e0-db410a0f2bee",
  "MessageAttributes" : {"color" : {"Type" : "String", "Value" : "red"}}
}"#;

    /// An EventBridge event as a rule delivers it to SQS (EventBridge user guide, "Amazon
    /// EventBridge events").
    pub const EVENTBRIDGE: &str = r#"{
  "version": "0",
  "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2",
  "account": "111122223333",
  "time": "2017-12-22T18:43:48Z",
  "region": "us-west-1",
  "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
  "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated", "big": 123456789012345678901234567890}
}"#;

    fn value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn auto_opens_sns_keeping_the_message_exactly() {
        let opened = open(SNS, Envelope::Auto).unwrap().unwrap();
        assert_eq!(opened.payload, r#"{"user_id": "u1", "amount": 12345678901234567890.10}"#);
        let envelope = value(&opened.envelope);
        assert_eq!(envelope["TopicArn"], "arn:aws:sns:us-west-2:123456789012:MyTopic");
        assert_eq!(envelope["MessageId"], "63a3f6b6-d533-4a47-aef9-fcf5cf758c76");
        assert_eq!(envelope["Timestamp"], "2012-03-29T05:12:16.901Z");
        assert_eq!(envelope["MessageAttributes"]["color"]["Value"], "red");
        assert!(envelope.get("Message").is_none());
    }

    #[test]
    fn a_message_that_is_not_json_becomes_a_json_string() {
        let body =
            SNS.replace(r#""{\"user_id\": \"u1\", \"amount\": 12345678901234567890.10}""#, r#""plain \"text\"""#);
        let opened = open(&body, Envelope::Sns).unwrap().unwrap();
        assert_eq!(value(&opened.payload), serde_json::Value::String("plain \"text\"".into()));
    }

    #[test]
    fn auto_opens_eventbridge_keeping_numbers_exactly() {
        let opened = open(EVENTBRIDGE, Envelope::Auto).unwrap().unwrap();
        assert!(opened.payload.contains("123456789012345678901234567890"), "{}", opened.payload);
        let envelope = value(&opened.envelope);
        assert_eq!(envelope["source"], "aws.ec2");
        assert_eq!(envelope["detail-type"], "EC2 Instance State-change Notification");
        assert_eq!(envelope["time"], "2017-12-22T18:43:48Z");
        assert!(envelope.get("detail").is_none());
    }

    #[test]
    fn auto_leaves_other_bodies_alone() {
        for body in [
            r#"{"user_id": "u1"}"#,
            r#"{"TopicArn": "arn:x", "Type": "SubscriptionConfirmation", "Message": "m"}"#,
            r#"{"detail-type": "x"}"#,
            r#"not json "TopicArn""#,
            "[1, 2]",
        ] {
            assert_eq!(open(body, Envelope::Auto), Ok(None), "{body}");
        }
    }

    #[test]
    fn an_escape_no_json_reader_accepts_is_no_envelope() {
        let in_envelope = SNS.replace("MyTopic", r"MyTopic\ud800");
        let in_payload = SNS.replace(r#"\"u1\""#, r#"\"u1\\ud800\""#);
        for body in [in_envelope, in_payload] {
            assert_ne!(body, SNS);
            assert_eq!(open(&body, Envelope::Auto), Ok(None), "{body}");
            assert_eq!(open(&body, Envelope::Sns), Err(Rejection::NotEnvelope("an SNS notification")), "{body}");
        }
    }

    #[test]
    fn an_explicit_envelope_is_required() {
        assert_eq!(open(r#"{"a": 1}"#, Envelope::Sns), Err(Rejection::NotEnvelope("an SNS notification")));
        assert_eq!(open(SNS, Envelope::EventBridge), Err(Rejection::NotEnvelope("an EventBridge event")));
        assert!(open(EVENTBRIDGE, Envelope::EventBridge).unwrap().is_some());
        assert_eq!(open(SNS, Envelope::None), Ok(None));
    }

    #[test]
    fn payload_key_finds_either_envelope() {
        let map = |t: &str| match value(t) {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert_eq!(payload_key(&map(SNS)), Some("Message"));
        assert_eq!(payload_key(&map(EVENTBRIDGE)), Some("detail"));
        assert_eq!(payload_key(&map(r#"{"ip": "1"}"#)), None);
    }
}
