//! The SQS JSON protocol (AWS JSON 1.0: a JSON document POSTed with an `X-Amz-Target` header),
//! which SQS and LocalStack 3 and later speak: the requests the extension sends and the answers
//! it reads, parsed in one pass into what ingestion uses.
use crate::query::{AnswerError, ServiceError};
use crate::received::{attributes_json, Attribute, Receive, Received};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The `X-Amz-Target` of an action.
pub fn target(action: &str) -> String {
    format!("AmazonSQS.{action}")
}

/// A ReceiveMessage request as SQS reads it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveRequest<'a> {
    queue_url: &'a str,
    max_number_of_messages: i32,
    wait_time_seconds: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility_timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receive_request_attempt_id: Option<&'a str>,
    message_system_attribute_names: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    message_attribute_names: Option<[&'a str; 1]>,
}

/// The body of a ReceiveMessage request.
pub fn receive_request(r: &Receive) -> String {
    const PLAIN: &[&str] = &["SentTimestamp", "ApproximateReceiveCount"];
    const FIFO: &[&str] = &["SentTimestamp", "ApproximateReceiveCount", "MessageGroupId", "SequenceNumber"];
    to_json(&ReceiveRequest {
        queue_url: r.queue_url,
        max_number_of_messages: r.max,
        wait_time_seconds: r.wait_seconds,
        visibility_timeout: r.visibility_timeout,
        receive_request_attempt_id: r.fifo_attempt,
        message_system_attribute_names: if r.fifo_attempt.is_some() { FIFO } else { PLAIN },
        message_attribute_names: r.message_attributes.then_some(["All"]),
    })
}

/// A DeleteMessageBatch request as SQS reads it. Written straight from the handles: a delete
/// carries ten receipt handles of a few hundred bytes, once per ten messages.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteBatchRequest<'a> {
    queue_url: &'a str,
    entries: Vec<DeleteEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteEntry<'a> {
    /// A string in SQS's model.
    id: String,
    receipt_handle: &'a str,
}

/// The body of a DeleteMessageBatch request; entry ids are the handles' positions.
pub fn delete_batch_request(queue_url: &str, handles: &[String]) -> String {
    let entries =
        handles.iter().enumerate().map(|(i, h)| DeleteEntry { id: i.to_string(), receipt_handle: h }).collect();
    to_json(&DeleteBatchRequest { queue_url, entries })
}

/// A request document as JSON: the fields above are strings and numbers, which always serialize.
fn to_json(request: &impl Serialize) -> String {
    serde_json::to_string(request).expect("strings and numbers serialize to JSON")
}

#[derive(Deserialize)]
struct ReceiveAnswer<'a> {
    #[serde(borrow, default, rename = "Messages")]
    messages: Vec<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, rename = "MessageId")]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "ReceiptHandle")]
    receipt_handle: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "Body")]
    body: Cow<'a, str>,
    #[serde(borrow, default, rename = "Attributes")]
    attributes: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow, default, rename = "MessageAttributes")]
    message_attributes: BTreeMap<Cow<'a, str>, AttributeValue<'a>>,
}

#[derive(Deserialize)]
struct AttributeValue<'a> {
    #[serde(borrow, default, rename = "DataType")]
    data_type: Cow<'a, str>,
    #[serde(borrow, rename = "StringValue")]
    string_value: Option<Cow<'a, str>>,
    /// Base64, as the JSON protocol carries blobs.
    #[serde(borrow, rename = "BinaryValue")]
    binary_value: Option<Cow<'a, str>>,
}

/// The messages of a ReceiveMessage answer. A message without an id or a receipt handle cannot
/// be stored or deleted and is left out.
pub fn receive_answer(body: &str) -> Result<Vec<Received>, AnswerError> {
    let answer: ReceiveAnswer = serde_json::from_str(body).map_err(|e| AnswerError(format!("JSON: {e}")))?;
    Ok(answer
        .messages
        .into_iter()
        .filter_map(|m| {
            let number = |name: &str| m.attributes.get(name).and_then(|v| v.trim().parse().ok());
            let text = |name: &str| m.attributes.get(name).map(|v| v.clone().into_owned());
            let attributes = attributes_json(m.message_attributes.iter().filter_map(|(name, v)| {
                Some(Attribute {
                    name,
                    data_type: &v.data_type,
                    value: v.string_value.as_deref().or(v.binary_value.as_deref())?,
                })
            }));
            Some(Received {
                sent_millis: number("SentTimestamp"),
                receive_count: number("ApproximateReceiveCount").and_then(|c: i64| i32::try_from(c).ok()),
                group_id: text("MessageGroupId"),
                sequence_number: text("SequenceNumber"),
                attributes,
                message_id: m.message_id?.into_owned(),
                receipt_handle: m.receipt_handle?.into_owned(),
                body: m.body.into_owned(),
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct DeleteBatchAnswer {
    #[serde(default, rename = "Failed")]
    failed: Vec<serde::de::IgnoredAny>,
}

/// How many entries a DeleteMessageBatch answer refused (its `Failed` entries).
pub fn delete_batch_answer(body: &str) -> Result<usize, AnswerError> {
    let answer: DeleteBatchAnswer = serde_json::from_str(body).map_err(|e| AnswerError(format!("JSON: {e}")))?;
    Ok(answer.failed.len())
}

#[derive(Deserialize)]
struct ErrorAnswer<'a> {
    #[serde(borrow, rename = "__type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default, alias = "Message")]
    message: Cow<'a, str>,
}

/// The error a JSON error answer describes, `{"__type": "com.amazonaws.sqs#QueueDoesNotExist",
/// "message": ...}`: its code is the part after `#`. `None` for anything else.
pub fn error_answer(body: &str) -> Option<ServiceError> {
    let answer: ErrorAnswer = serde_json::from_str(body).ok()?;
    let code = answer.kind.rsplit('#').next().unwrap_or_default().trim();
    Some(ServiceError { code: code.to_owned(), message: answer.message.trim().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As SQS answers, escapes and all.
    const RECEIVED: &str = r#"{"Messages":[
        {"MessageId":"5fea7756-0ea4-451a-a703-a558b933e274","ReceiptHandle":"MbZj6wDWli+JvwwJaBV+3dc=",
         "MD5OfBody":"fafb00f5732ab283681e124bf8747ed1",
         "Body":"{\"user_id\": \"a\\\"b\", \"ip\": \"\u00e9\u263a\"}",
         "Attributes":{"SentTimestamp":"1700000000123","ApproximateReceiveCount":"3"}},
        {"MessageId":"m2","ReceiptHandle":"h2","Body":"x",
         "Attributes":{"MessageGroupId":"g1","SequenceNumber":"18851174588113920000"},
         "MessageAttributes":{"price":{"StringValue":"12.50","DataType":"Number"},
                              "blob":{"BinaryValue":"AAEC/w==","DataType":"Binary"}}},
        {"MessageId":"no handle"}
    ]}"#;

    #[test]
    fn receive_answer_reads_messages_and_their_attributes() {
        let got = receive_answer(RECEIVED).unwrap();
        assert_eq!(got.len(), 2, "the message without a handle is left out");
        assert_eq!(got[0].body, r#"{"user_id": "a\"b", "ip": "é☺"}"#);
        assert_eq!((got[0].sent_millis, got[0].receive_count), (Some(1_700_000_000_123), Some(3)));
        assert_eq!((got[0].group_id.as_deref(), got[0].attributes.as_deref()), (None, None));
        crate::received::assert_fifo_message_with_attributes(&got[1]);
    }

    #[test]
    fn empty_answers_are_no_messages() {
        assert!(receive_answer("{}").unwrap().is_empty());
        assert!(receive_answer(r#"{"Messages":[]}"#).unwrap().is_empty());
        assert!(receive_answer("<xml/>").is_err());
    }

    #[test]
    fn delete_batch_answer_counts_failed_entries() {
        let body = r#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"ReceiptHandleIsInvalid","Message":"x"}]}"#;
        assert_eq!(delete_batch_answer(body), Ok(1));
        assert_eq!(delete_batch_answer(r#"{"Successful":[{"Id":"0"}]}"#), Ok(0));
    }

    #[test]
    fn error_answer_gives_code_and_message() {
        let e = error_answer(
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
        )
        .unwrap();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("QueueDoesNotExist", "The specified queue does not exist."));
        assert_eq!(error_answer(r#"{"__type":"AccessDenied","Message":"no"}"#).unwrap().message, "no");
        assert_eq!(error_answer("<ErrorResponse/>"), None);
        assert_eq!(error_answer(r#"{"Messages":[]}"#), None);
    }

    #[test]
    fn requests_carry_every_parameter() {
        let fifo = Receive {
            queue_url: "q.fifo",
            max: 10,
            wait_seconds: 20,
            visibility_timeout: Some(30),
            fifo_attempt: Some("a-1"),
            message_attributes: true,
        };
        let request: serde_json::Value = serde_json::from_str(&receive_request(&fifo)).unwrap();
        assert_eq!(
            request,
            json!({"QueueUrl": "q.fifo", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20, "VisibilityTimeout": 30,
                   "ReceiveRequestAttemptId": "a-1", "MessageAttributeNames": ["All"],
                   "MessageSystemAttributeNames": ["SentTimestamp", "ApproximateReceiveCount", "MessageGroupId", "SequenceNumber"]})
        );
        let plain = receive_request(&Receive {
            queue_url: "q",
            max: 1,
            wait_seconds: 0,
            visibility_timeout: None,
            fifo_attempt: None,
            message_attributes: false,
        });
        assert!(
            !plain.contains("VisibilityTimeout")
                && !plain.contains("MessageAttributeNames")
                && !plain.contains("Attempt")
        );
        let delete: serde_json::Value =
            serde_json::from_str(&delete_batch_request("q", &["a+b".into(), "c".into()])).unwrap();
        assert_eq!(
            delete,
            json!({"QueueUrl": "q", "Entries": [{"Id": "0", "ReceiptHandle": "a+b"}, {"Id": "1", "ReceiptHandle": "c"}]})
        );
    }
}
