//! The SQS Query protocol (form-encoded POST, XML answers), which endpoints older than SQS's JSON
//! protocol speak: the forms the extension sends and the answers it reads.
use crate::received::{attributes_json, Attribute, Receive, Received};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::fmt;

/// The SQS API version every Query request names.
const VERSION: &str = "2012-11-05";
/// SQS answers nest a few levels deep; anything deeper is not an SQS answer.
const MAX_DEPTH: usize = 16;

/// The form of a ReceiveMessage request.
pub fn receive_form(r: &Receive) -> String {
    let mut form = form("ReceiveMessage", r.queue_url);
    form.append_pair("MaxNumberOfMessages", &r.max.to_string());
    form.append_pair("WaitTimeSeconds", &r.wait_seconds.to_string());
    if let Some(v) = r.visibility_timeout {
        form.append_pair("VisibilityTimeout", &v.to_string());
    }
    // AttributeName.N, not MessageSystemAttributeName.N: the only form old endpoints know.
    form.append_pair("AttributeName.1", "SentTimestamp");
    form.append_pair("AttributeName.2", "ApproximateReceiveCount");
    if let Some(attempt) = r.fifo_attempt {
        form.append_pair("AttributeName.3", "MessageGroupId");
        form.append_pair("AttributeName.4", "SequenceNumber");
        form.append_pair("ReceiveRequestAttemptId", attempt);
    }
    if r.message_attributes {
        form.append_pair("MessageAttributeName.1", "All");
    }
    form.finish()
}

/// The form of a DeleteMessageBatch request; entry ids are the handles' positions.
pub fn delete_batch_form(queue_url: &str, handles: &[String]) -> String {
    let mut form = form("DeleteMessageBatch", queue_url);
    for (i, handle) in handles.iter().enumerate() {
        let n = i + 1;
        form.append_pair(&format!("DeleteMessageBatchRequestEntry.{n}.Id"), &i.to_string());
        form.append_pair(&format!("DeleteMessageBatchRequestEntry.{n}.ReceiptHandle"), handle);
    }
    form.finish()
}

fn form(action: &str, queue_url: &str) -> form_urlencoded::Serializer<'static, String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action);
    form.append_pair("Version", VERSION);
    form.append_pair("QueueUrl", queue_url);
    form
}

/// An answer that is not the document it should be (XML here, JSON in the JSON protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError(pub(crate) String);

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable answer: {}", self.0)
    }
}

/// The messages of a ReceiveMessageResponse. A message without an id or a receipt handle
/// cannot be stored or deleted and is left out, as on the JSON path.
pub fn receive_answer(xml: &str) -> Result<Vec<Received>, AnswerError> {
    let root = parse(xml)?;
    Ok(root
        .descendants("Message")
        .filter_map(|m| {
            let text = |name: &str| {
                m.children("Attribute").find(|a| a.child_text("Name") == Some(name)).and_then(|a| a.child_text("Value"))
            };
            let attribute = |name: &str| text(name).and_then(|v| v.trim().parse().ok());
            let attributes = attributes_json(m.children("MessageAttribute").filter_map(|a| {
                let value = a.children("Value").next()?;
                Some(Attribute {
                    name: a.child_text("Name")?,
                    data_type: value.child_text("DataType").unwrap_or("String"),
                    value: value.child_text("StringValue").or_else(|| value.child_text("BinaryValue"))?,
                })
            }));
            Some(Received {
                message_id: m.child_text("MessageId")?.to_owned(),
                receipt_handle: m.child_text("ReceiptHandle")?.to_owned(),
                body: m.child_text("Body").unwrap_or_default().to_owned(),
                sent_millis: attribute("SentTimestamp"),
                receive_count: attribute("ApproximateReceiveCount").and_then(|c: i64| i32::try_from(c).ok()),
                attributes,
                group_id: text("MessageGroupId").map(str::to_owned),
                sequence_number: text("SequenceNumber").map(|s| s.trim().to_owned()),
            })
        })
        .collect())
}

/// How many entries a DeleteMessageBatchResponse refused (its BatchResultErrorEntry elements).
pub fn delete_batch_answer(xml: &str) -> Result<usize, AnswerError> {
    let root = parse(xml)?;
    if root.name != "DeleteMessageBatchResponse" {
        return Err(AnswerError(format!("a {} where a DeleteMessageBatchResponse belongs", root.name)));
    }
    Ok(root.descendants("BatchResultErrorEntry").count())
}

/// The code and message of an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: String,
    pub message: String,
}

/// The error an ErrorResponse document describes; `None` for anything else (an HTML page from
/// a proxy, an empty body).
pub fn error_answer(xml: &str) -> Option<ServiceError> {
    let root = parse(xml).ok()?;
    if root.name != "ErrorResponse" {
        return None;
    }
    let error = root.descendants("Error").next()?;
    Some(ServiceError {
        code: error.child_text("Code").unwrap_or_default().trim().to_owned(),
        message: error.child_text("Message").unwrap_or_default().trim().to_owned(),
    })
}

/// One element: its local name (namespace prefix dropped), its text, its child elements.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn children<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a Element> + use<'a, 'n> {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn child_text(&self, name: &str) -> Option<&str> {
        self.children.iter().find(|c| c.name == name).map(|c| c.text.as_str())
    }

    /// Elements named `name` below this one, in document order, not looking inside a match.
    fn descendants<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        let mut stack: Vec<&Element> = self.children.iter().rev().collect();
        std::iter::from_fn(move || {
            while let Some(e) = stack.pop() {
                if e.name == name {
                    return Some(e);
                }
                stack.extend(e.children.iter().rev());
            }
            None
        })
    }
}

/// The document's root element, built without recursion and at most [`MAX_DEPTH`] deep.
fn parse(xml: &str) -> Result<Element, AnswerError> {
    let bad = |e: &dyn fmt::Display| AnswerError(e.to_string());
    let mut reader = Reader::from_str(xml);
    let mut open: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|e| bad(&e))?;
        if root.is_some() && !matches!(event, Event::Eof | Event::Comment(_) | Event::PI(_) | Event::Text(_)) {
            return Err(AnswerError("content after the root element".into()));
        }
        match event {
            Event::Start(start) | Event::Empty(start) if open.len() >= MAX_DEPTH => {
                return Err(AnswerError(format!(
                    "nested deeper than {MAX_DEPTH} at <{}>",
                    start.local_name().as_ref().to_owned()
                )));
            }
            Event::Start(start) => {
                open.push(Element { name: start.local_name().as_ref().to_owned(), ..Element::default() })
            }
            Event::Empty(start) => {
                let element = Element { name: start.local_name().as_ref().to_owned(), ..Element::default() };
                close(&mut open, &mut root, element);
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let element = open.pop().ok_or_else(|| AnswerError("an end tag without a start".into()))?;
                close(&mut open, &mut root, element);
            }
            Event::Text(text) => {
                if let Some(e) = open.last_mut() {
                    e.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(e) = open.last_mut() {
                    e.text.push_str(&data.into_inner());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| bad(&e))? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_xml_entity(&reference)
                        .ok_or_else(|| AnswerError(format!("unknown entity &{};", &*reference)))?
                        .to_owned(),
                };
                if let Some(e) = open.last_mut() {
                    e.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err(AnswerError("a DOCTYPE, which SQS never sends".into())),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(AnswerError(format!("<{}> is not closed", open[open.len() - 1].name)));
    }
    root.ok_or_else(|| AnswerError("no element".into()))
}

fn close(open: &mut [Element], root: &mut Option<Element>, element: Element) {
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As moto 4.1's server answers, namespace and all.
    const RECEIVED: &str = r#"<?xml version="1.0"?>
<ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">
  <ReceiveMessageResult>
    <Message>
      <MessageId>5fea7756-0ea4-451a-a703-a558b933e274</MessageId>
      <ReceiptHandle>MbZj6wDWli+JvwwJaBV+3dcjk2YW2vA3+STFFljTM8tJJg6HRG6PYSasuWXPJB+Cw</ReceiptHandle>
      <MD5OfBody>fafb00f5732ab283681e124bf8747ed1</MD5OfBody>
      <Body>{&quot;user_id&quot;: &quot;a&amp;b&quot;, &quot;ip&quot;: &quot;&lt;1&gt;&#233;&#x263A;&quot;}</Body>
      <Attribute><Name>SentTimestamp</Name><Value>1700000000123</Value></Attribute>
      <Attribute><Name>ApproximateReceiveCount</Name><Value>3</Value></Attribute>
    </Message>
    <Message>
      <MessageId>m2</MessageId>
      <ReceiptHandle>h2</ReceiptHandle>
      <Body><![CDATA[not <xml> & raw]]></Body>
      <Attribute><Name>MessageGroupId</Name><Value>g1</Value></Attribute>
      <Attribute><Name>SequenceNumber</Name><Value>18851174588113920000</Value></Attribute>
      <MessageAttribute><Name>price</Name><Value><StringValue>12.50</StringValue><DataType>Number</DataType></Value></MessageAttribute>
      <MessageAttribute><Name>blob</Name><Value><BinaryValue>AAEC/w==</BinaryValue><DataType>Binary</DataType></Value></MessageAttribute>
    </Message>
    <Message><MessageId>no handle</MessageId></Message>
  </ReceiveMessageResult>
  <ResponseMetadata><RequestId>b6633655-283d-45b4-aee4-4e84e0ae6afa</RequestId></ResponseMetadata>
</ReceiveMessageResponse>"#;

    #[test]
    fn receive_answer_reads_messages_attributes_entities_and_cdata() {
        let got = receive_answer(RECEIVED).unwrap();
        assert_eq!(got.len(), 2, "the message without a handle is left out");
        assert_eq!(got[0].message_id, "5fea7756-0ea4-451a-a703-a558b933e274");
        assert_eq!(got[0].receipt_handle, "MbZj6wDWli+JvwwJaBV+3dcjk2YW2vA3+STFFljTM8tJJg6HRG6PYSasuWXPJB+Cw");
        assert_eq!(got[0].body, r#"{"user_id": "a&b", "ip": "<1>é☺"}"#);
        assert_eq!(got[0].sent_millis, Some(1_700_000_000_123));
        assert_eq!(got[0].receive_count, Some(3));
        assert_eq!(got[1].body, "not <xml> & raw");
        assert_eq!((got[1].sent_millis, got[1].receive_count), (None, None));
        assert_eq!((got[0].group_id.as_deref(), got[0].attributes.as_deref()), (None, None));
        crate::received::assert_fifo_message_with_attributes(&got[1]);
    }

    #[test]
    fn an_empty_receive_is_no_messages() {
        let xml = "<ReceiveMessageResponse><ReceiveMessageResult/><ResponseMetadata/></ReceiveMessageResponse>";
        assert!(receive_answer(xml).unwrap().is_empty());
    }

    #[test]
    fn delete_batch_answer_counts_refused_entries() {
        let xml = r#"<DeleteMessageBatchResponse><DeleteMessageBatchResult>
            <DeleteMessageBatchResultEntry><Id>0</Id></DeleteMessageBatchResultEntry>
            <BatchResultErrorEntry><Id>1</Id><SenderFault>true</SenderFault><Code>ReceiptHandleIsInvalid</Code><Message>x</Message></BatchResultErrorEntry>
            </DeleteMessageBatchResult></DeleteMessageBatchResponse>"#;
        assert_eq!(delete_batch_answer(xml), Ok(1));
        assert!(delete_batch_answer(RECEIVED).is_err(), "another operation's answer");
    }

    #[test]
    fn error_answer_gives_code_and_message() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse>
    <Error>
        <Type>Sender</Type>
        <Code>AWS.SimpleQueueService.NonExistentQueue</Code>
        <Message>The specified queue does not exist for this wsdl version.</Message>
        <RequestId>ki9bALg7GFOAmqYkdSZtFhDZwwNBVOsQsVQKEBGy2YzvA3srqF2f</RequestId>
    </Error>
</ErrorResponse>"#;
        let e = error_answer(xml).unwrap();
        assert_eq!(e.code, "AWS.SimpleQueueService.NonExistentQueue");
        assert_eq!(e.message, "The specified queue does not exist for this wsdl version.");
        assert_eq!(error_answer("<html><body>502 Bad Gateway</body></html>"), None);
        assert_eq!(error_answer(""), None);
        assert_eq!(error_answer(r#"{"__type": "x"}"#), None);
    }

    #[test]
    fn malformed_and_hostile_documents_are_errors_not_panics() {
        for xml in [
            "",
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            "<a>&bogus;</a>",
            "<a>&#xD800;</a>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            &"<a>".repeat(1000),
        ] {
            assert!(receive_answer(xml).is_err(), "{xml:.40}");
        }
    }

    #[test]
    fn forms_encode_every_parameter() {
        let plain = Receive {
            queue_url: "http://h:1/000000000000/login-queue",
            max: 10,
            wait_seconds: 20,
            visibility_timeout: Some(30),
            fifo_attempt: None,
            message_attributes: false,
        };
        let form = receive_form(&plain);
        assert_eq!(
            form,
            "Action=ReceiveMessage&Version=2012-11-05&QueueUrl=http%3A%2F%2Fh%3A1%2F000000000000%2Flogin-queue\
             &MaxNumberOfMessages=10&WaitTimeSeconds=20&VisibilityTimeout=30\
             &AttributeName.1=SentTimestamp&AttributeName.2=ApproximateReceiveCount"
        );
        assert!(!receive_form(&Receive { visibility_timeout: None, ..plain }).contains("VisibilityTimeout"));
        let fifo = Receive { fifo_attempt: Some("a-1"), message_attributes: true, ..plain };
        assert!(receive_form(&fifo).ends_with(
            "&AttributeName.3=MessageGroupId&AttributeName.4=SequenceNumber\
             &ReceiveRequestAttemptId=a-1&MessageAttributeName.1=All"
        ));
        let form = delete_batch_form("q", &["a+b/c=".to_owned(), "d e".to_owned()]);
        assert_eq!(
            form,
            "Action=DeleteMessageBatch&Version=2012-11-05&QueueUrl=q\
             &DeleteMessageBatchRequestEntry.1.Id=0&DeleteMessageBatchRequestEntry.1.ReceiptHandle=a%2Bb%2Fc%3D\
             &DeleteMessageBatchRequestEntry.2.Id=1&DeleteMessageBatchRequestEntry.2.ReceiptHandle=d+e"
        );
    }
}
