//! One message as received from SQS, in either protocol, with only what ingestion uses.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// The SentTimestamp attribute: milliseconds since the epoch.
    pub sent_millis: Option<i64>,
    /// The ApproximateReceiveCount attribute.
    pub receive_count: Option<i32>,
    /// The message attributes as a JSON object (see [`attributes_json`]), when asked for.
    pub attributes: Option<String>,
    /// FIFO queues: the MessageGroupId attribute.
    pub group_id: Option<String>,
    /// FIFO queues: the SequenceNumber attribute, a decimal of up to 128 bits.
    pub sequence_number: Option<String>,
}

/// One ReceiveMessage request, as either protocol writes it.
#[derive(Debug, Clone, Copy)]
pub struct Receive<'a> {
    pub queue_url: &'a str,
    /// 1..=10.
    pub max: i32,
    pub wait_seconds: i32,
    pub visibility_timeout: Option<i32>,
    /// A FIFO queue's ReceiveRequestAttemptId, which also asks for the group and sequence number.
    pub fifo_attempt: Option<&'a str>,
    /// Asks for the message attributes.
    pub message_attributes: bool,
}

/// A message attribute as SQS carries it: `value` is the StringValue, or the BinaryValue in
/// base64.
pub struct Attribute<'a> {
    pub name: &'a str,
    pub data_type: &'a str,
    pub value: &'a str,
}

/// The attributes as one JSON object in the shape SNS gives them in a notification's
/// MessageAttributes, `{"name": {"Type": "Number", "Value": "12.50"}}`, so that an expression
/// reads raw and SNS-wrapped messages alike. Values stay text: a Number keeps its digits as
/// sent, a Binary its base64. None when there are none.
pub fn attributes_json<'a>(attributes: impl IntoIterator<Item = Attribute<'a>>) -> Option<String> {
    let object: serde_json::Map<String, serde_json::Value> = attributes
        .into_iter()
        .map(|a| (a.name.to_owned(), serde_json::json!({"Type": a.data_type, "Value": a.value})))
        .collect();
    (!object.is_empty()).then(|| serde_json::Value::Object(object).to_string())
}

/// What both protocols' answer tests expect of their second message: group g1, a 20-digit
/// sequence number, a Number and a Binary attribute.
#[cfg(test)]
pub(crate) fn assert_fifo_message_with_attributes(m: &Received) {
    assert_eq!(m.group_id.as_deref(), Some("g1"));
    assert_eq!(m.sequence_number.as_deref(), Some("18851174588113920000"));
    let attributes: serde_json::Value = serde_json::from_str(m.attributes.as_deref().unwrap()).unwrap();
    assert_eq!(
        attributes,
        serde_json::json!({"price": {"Type": "Number", "Value": "12.50"}, "blob": {"Type": "Binary", "Value": "AAEC/w=="}})
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_keep_types_and_values_as_sent() {
        let json = attributes_json([
            Attribute { name: "color", data_type: "String", value: "red" },
            Attribute { name: "price", data_type: "Number.money", value: "12.50" },
            Attribute { name: "blob", data_type: "Binary", value: "AAEC/w==" },
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["price"], serde_json::json!({"Type": "Number.money", "Value": "12.50"}));
        assert_eq!(v["blob"]["Value"], "AAEC/w==");
        assert_eq!(v["color"]["Type"], "String");
        assert_eq!(attributes_json([]), None);
    }
}
