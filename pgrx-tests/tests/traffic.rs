//! Real SQS traffic: FIFO queues (each group in send order, through fetch_source and several
//! workers, on LocalStack, whose FIFO queues hold a group as SQS does; a receive that got no
//! answer sent again with its attempt id), SNS notifications and EventBridge events as moto's
//! SNS and EventBridge deliver them and as AWS documents them, and message attributes of every
//! type.
use postgres::Client;
use sqs_ingest_it::fault::FaultEndpoint;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, fetch_all, point_at, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT};

const GROUPS: [&str; 3] = ["alpha", "beta", "gamma"];
const PER_GROUP: usize = 100;
/// Where a FIFO source's rows go: `id` numbers them in the order they were inserted.
const FIFO_TABLE: &str = "CREATE TABLE fifo_rows (id bigserial PRIMARY KEY, grp text NOT NULL, n integer NOT NULL,
                                                 seq numeric NOT NULL)";
const FIFO_COLUMNS: &str = r#"{"grp": "group_id", "n": "(body->>'n')::int", "seq": "sequence_number"}"#;

/// 3 groups of 100, interleaved as one producer sends them: alpha 0, beta 0, gamma 0, alpha 1, ...
fn grouped() -> Vec<(String, String)> {
    (0..PER_GROUP).flat_map(|n| GROUPS.map(|g| (g.to_owned(), format!(r#"{{"group": "{g}", "n": {n}}}"#)))).collect()
}

fn create_source(db: &mut Client, name: &str, queue_url: &str, table: &str, columns: &str) {
    db.execute(
        "SELECT sqs_ingest.create_source($1, $2, $3::text::regclass, $4::text::jsonb)",
        &[&name, &queue_url, &table, &columns],
    )
    .unwrap_or_else(|e| panic!("create_source {name}: {e:?}"));
}

/// Each group's n in the order its rows were inserted.
fn groups_in_insert_order(db: &mut Client) -> Vec<(String, Vec<i32>)> {
    db.query("SELECT grp, array_agg(n ORDER BY id) FROM fifo_rows GROUP BY grp ORDER BY grp", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn assert_send_order(db: &mut Client) {
    let expected: Vec<i32> = (0..PER_GROUP as i32).collect();
    let groups = groups_in_insert_order(db);
    assert_eq!(groups.len(), 3);
    for (group, ns) in groups {
        assert_eq!(ns, expected, "group {group} out of send order");
    }
    eprintln!("3 groups of {PER_GROUP}: every group's rows in send order");
}

#[test]
fn a_fifo_queue_through_fetch_source_keeps_each_group_in_send_order() {
    let mut db = shared_cluster().database("traffic_fifo_fetch");
    db.batch_execute(FIFO_TABLE).unwrap();
    let queue = Emulator::shared_localstack().fifo_queue("traffic_fetch.fifo");
    create_source(&mut db, "fifo", &queue.url, "fifo_rows", FIFO_COLUMNS);
    db.batch_execute("UPDATE sqs_ingest.sources SET workers = 0 WHERE name = 'fifo'").unwrap();
    queue.send_grouped(&grouped());
    let mut calls = 0;
    wait_until("300 rows through fetch_source", WAIT, || {
        calls += 1;
        db.query_one("SELECT sqs_ingest.fetch_source('fifo', 100)", &[]).unwrap();
        count(&mut db, "SELECT count(*) FROM fifo_rows") == 300
    });
    eprintln!("fetch_source: 300 rows in {calls} calls");
    assert_send_order(&mut db);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
}

#[test]
fn a_fifo_queue_through_several_workers_keeps_each_group_in_send_order() {
    let emulator = Emulator::shared_localstack();
    let logins = emulator.queue("traffic_worker_logins");
    let queue = emulator.fifo_queue("traffic_workers.fifo");
    let c = Cluster::with_workers("traffic_fifo_workers", &logins.url, &["sqs_ingest.workers = 2"]);
    let mut db = c.with_extension("postgres");
    db.batch_execute(FIFO_TABLE).unwrap();
    // A dead letter in the middle of a group does not hold back the rest of it.
    let mut messages = grouped();
    messages.insert(150, ("beta".to_owned(), r#"{"group": "beta", "n": "not a number"}"#.to_owned()));
    queue.send_grouped(&messages);
    create_source(&mut db, "fifo", &queue.url, "fifo_rows", FIFO_COLUMNS);
    db.batch_execute("UPDATE sqs_ingest.sources SET workers = 2 WHERE name = 'fifo'").unwrap();
    wait_until("300 rows through the workers", WAIT, || count(&mut db, "SELECT count(*) FROM fifo_rows") == 300);
    assert_send_order(&mut db);
    let served = count(&mut db, "SELECT count(*) FROM sqs_ingest.worker_status WHERE ingested > 0");
    eprintln!("workers that ingested: {served}");
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters WHERE source = 'fifo'"), 1);
}

#[test]
fn a_fifo_receive_that_got_no_answer_is_sent_again_with_the_same_attempt_id() {
    let emulator = Emulator::shared();
    let queue = emulator.fifo_queue("traffic_retry.fifo");
    let fault = FaultEndpoint::start(emulator.port);
    let mut db = shared_cluster().database("traffic_fifo_retry");
    db.batch_execute(FIFO_TABLE).unwrap();
    create_source(&mut db, "fifo", &fault.url_for(&queue.url), "fifo_rows", FIFO_COLUMNS);
    // Messages taken by a receive whose answer was lost come back after 1 s on the emulator,
    // which (unlike SQS) does not answer a retried attempt id with them at once.
    db.batch_execute("UPDATE sqs_ingest.sources SET workers = 0, visibility_timeout = 1 WHERE name = 'fifo'").unwrap();
    let messages: Vec<(String, String)> = grouped().into_iter().take(5).collect();
    queue.send_grouped(&messages);

    fault.lose_receives(true);
    let lost = db.query_one("SELECT sqs_ingest.fetch_source('fifo', 5)", &[]).expect_err("no answer");
    eprintln!("a receive without an answer: {}", lost.as_db_error().map_or(lost.to_string(), |e| e.message().into()));
    fault.lose_receives(false);
    let sent = fault.receive_requests();
    assert!(!sent.is_empty());
    let attempt = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON request: {body}"));
        v["ReceiveRequestAttemptId"].as_str().unwrap_or_else(|| panic!("no attempt id in {body}")).to_owned()
    };
    let first = attempt(&sent[0]);
    assert!(sent.iter().all(|b| attempt(b) == first), "the SDK's retries send the same attempt id: {sent:?}");

    wait_until("the 5 rows", WAIT, || {
        db.query_one("SELECT sqs_ingest.fetch_source('fifo', 5)", &[]).unwrap();
        count(&mut db, "SELECT count(*) FROM fifo_rows") == 5
    });
    let all = fault.receive_requests();
    let retried = &all[sent.len()];
    eprintln!("the receive sent again, as sent: {retried}");
    assert_eq!(attempt(retried), first, "the next receive sends the unanswered attempt id again");
    let ids: Vec<String> = all.iter().map(|b| attempt(b)).collect();
    let answered_at = ids.iter().rposition(|id| *id == first).unwrap();
    assert!(ids[answered_at + 1..].iter().all(|id| *id != first), "an answered attempt id is not sent again");
    assert!(
        all.iter().all(|b| !b.contains("MessageAttributeNames")),
        "a source whose expressions do not read attributes does not ask for them"
    );
    assert!(all.iter().all(|b| b.contains("MessageGroupId") && b.contains("SequenceNumber")));
    // Each message once. Their order after the redelivery is moto's, which does not hold a
    // group as SQS does: the LocalStack tests above check order.
    let mut groups = groups_in_insert_order(&mut db);
    groups.iter_mut().for_each(|(_, ns)| ns.sort());
    assert_eq!(groups, [("alpha".into(), vec![0, 1]), ("beta".into(), vec![0, 1]), ("gamma".into(), vec![0])]);
}

/// An SNS notification as SQS receives it without raw message delivery, shaped as the SNS
/// developer guide shows it, around `message`.
fn documented_sns(message: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "da41e39f-ea4d-435a-b922-c6aae3915ebe",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Subject": "test",
        "Message": message,
        "Timestamp": "2012-04-25T21:49:25.719Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLElDMXvB8r9R83tGoNn0ecwd5UjllzsvSvbItzfaMpN2nk5HVSw7XnOn/49IkxDKz8YrlH2qJXj2iZB0Zo2O71c4qQk1fMUDi3LGpij7RCW7AW9vYYsSqIKRnFS94ilu7NFhUzLiieYr4BKHpdTmdD6c0esKEYBpabxDSc=",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        "MessageAttributes": {"color": {"Type": "String", "Value": "green"}}
    })
    .to_string()
}

/// An EventBridge event as a rule delivers it to SQS, shaped as the EventBridge user guide
/// shows it, around `detail`.
fn documented_event(detail: &str) -> String {
    format!(
        r#"{{"version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "detail-type": "User Login",
            "source": "com.example.auth", "account": "111122223333", "time": "2017-12-22T18:43:48Z",
            "region": "us-west-1", "resources": [], "detail": {detail}}}"#
    )
}

/// A topic on the emulator that delivers to `queue` (raw message delivery off, the default).
fn topic_to(emulator: &Emulator, queue: &Queue, name: &str) -> String {
    let topic = emulator.aws(&["sns", "create-topic", "--name", name])["TopicArn"].as_str().unwrap().to_owned();
    let arn = queue_arn(emulator, queue);
    emulator.aws(&["sns", "subscribe", "--topic-arn", &topic, "--protocol", "sqs", "--notification-endpoint", &arn]);
    topic
}

fn queue_arn(emulator: &Emulator, queue: &Queue) -> String {
    let attributes =
        emulator.aws(&["sqs", "get-queue-attributes", "--queue-url", &queue.url, "--attribute-names", "QueueArn"]);
    attributes["Attributes"]["QueueArn"].as_str().unwrap().to_owned()
}

#[test]
fn logins_published_through_sns_and_eventbridge_become_rows() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("traffic_wrapped_logins");
    let mut db = shared_cluster().database("traffic_wrapped");
    point_at(&mut db, &queue.url);
    let logins = valid(7, 91);

    // Through the emulator's own SNS and EventBridge, as a user's producers publish.
    let topic = topic_to(emulator, &queue, "traffic-logins");
    for login in &logins[..3] {
        emulator.aws(&["sns", "publish", "--topic-arn", &topic, "--message", login]);
    }
    let arn = queue_arn(emulator, &queue);
    emulator.aws(&["events", "put-rule", "--name", "traffic-logins", "--event-pattern", r#"{"source": ["app.auth"]}"#]);
    emulator.aws(&["events", "put-targets", "--rule", "traffic-logins", "--targets", &format!("Id=1,Arn={arn}")]);
    let entries: Vec<serde_json::Value> = logins[3..5]
        .iter()
        .map(|l| serde_json::json!({"Source": "app.auth", "DetailType": "User Login", "Detail": l}))
        .collect();
    emulator.aws(&["events", "put-events", "--entries", &serde_json::Value::Array(entries).to_string()]);
    // And exactly as AWS documents them.
    queue.send(&[documented_sns(&logins[5]), documented_event(&logins[6])]);

    wait_until("7 messages", WAIT, || queue.counts().0 == 7);
    assert_eq!(fetch_all(&mut db, 100, 7), 7);
    assert_eq!(count(&mut db, "SELECT count(*) FROM sqs_ingest.dead_letters"), 0);
    for login in &logins {
        let user_id = sqs_ingest_it::logins::field(login, "user_id");
        let found = count(&mut db, &format!("SELECT count(*) FROM user_logins WHERE user_id = '{user_id}'"));
        assert_eq!(found, 1, "the login of {user_id}");
    }
    eprintln!("login source: 3 through SNS, 2 through EventBridge, 2 as documented: 7 rows");

    // A bad login inside a notification is a dead letter whose kept body masks its ip inside.
    let bad = r#"{"device_type": "android", "ip": "203.0.113.77", "device_id": "593-47-5928", "app_version": "2.3.0"}"#;
    queue.send(&[documented_sns(bad)]);
    assert_eq!(fetch_all(&mut db, 10, 1), 0);
    let (reason, raw, masked): (String, bool, bool) = {
        let r = db
            .query_one(
                "SELECT reason, strpos(body, '203.0.113.77') > 0, strpos(body, mask_pii('203.0.113.77')) > 0
                 FROM sqs_ingest.dead_letters",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(reason, r#"field "user_id" is missing"#);
    assert!(!raw && masked, "the ip inside the notification is masked in the dead letter");

    // envelope => none takes the notification itself as the login; sns requires one.
    db.batch_execute("UPDATE sqs_ingest.sources SET envelope = 'none' WHERE name = 'login'").unwrap();
    queue.send(&[documented_sns(&valid(1, 92)[0])]);
    assert_eq!(fetch_all(&mut db, 10, 1), 0);
    db.batch_execute("UPDATE sqs_ingest.sources SET envelope = 'sns' WHERE name = 'login'").unwrap();
    queue.send(&valid(1, 93));
    assert_eq!(fetch_all(&mut db, 10, 1), 0);
    let reasons: Vec<String> = db
        .query("SELECT reason FROM sqs_ingest.dead_letters ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons[1..], [r#"field "user_id" is missing"#, "body is not an SNS notification"]);
    let refused = db.batch_execute("UPDATE sqs_ingest.sources SET envelope = 'xml' WHERE name = 'login'");
    assert_eq!(refused.unwrap_err().code().unwrap().code(), "23514");
}

#[test]
fn expressions_read_the_envelope_and_string_number_and_binary_attributes() {
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::MessageAttributeValue;
    let emulator = Emulator::shared();
    let queue = emulator.queue("traffic_attributes");
    let mut db = shared_cluster().database("traffic_attributes");
    db.batch_execute(
        "CREATE TABLE events (user_id text, topic text, origin text, color text, price numeric,
                              price_type text, blob bytea)",
    )
    .unwrap();
    let columns = r#"{"user_id": "body->>'user_id'", "topic": "envelope->>'TopicArn'",
                      "origin": "envelope->>'source'",
                      "color": "coalesce(attributes, envelope->'MessageAttributes')->'color'->>'Value'",
                      "price": "(attributes->'price'->>'Value')::numeric",
                      "price_type": "attributes->'price'->>'Type'",
                      "blob": "decode(attributes->'blob'->>'Value', 'base64')"}"#;
    create_source(&mut db, "events", &queue.url, "events", columns);
    db.batch_execute("UPDATE sqs_ingest.sources SET workers = 0 WHERE name = 'events'").unwrap();

    let attribute = |data_type: &str, text: Option<&str>, binary: Option<&[u8]>| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .set_string_value(text.map(str::to_owned))
            .set_binary_value(binary.map(Blob::new))
            .build()
            .unwrap()
    };
    let url = queue.url.clone();
    emulator.run(|client| async move {
        client
            .send_message()
            .queue_url(url)
            .message_body(r#"{"user_id": "raw"}"#)
            .message_attributes("color", attribute("String", Some("red"), None))
            .message_attributes("price", attribute("Number.money", Some("12.50"), None))
            .message_attributes("blob", attribute("Binary", None, Some(&[0, 1, 255])))
            .send()
            .await
            .unwrap()
    });
    let topic = topic_to(emulator, &queue, "traffic-events");
    emulator.aws(&[
        "sns",
        "publish",
        "--topic-arn",
        &topic,
        "--message",
        r#"{"user_id": "sns"}"#,
        "--message-attributes",
        r#"{"color": {"DataType": "String", "StringValue": "blue"}}"#,
    ]);
    queue.send(&[documented_event(r#"{"user_id": "event"}"#)]);
    wait_until("3 messages", WAIT, || queue.counts().0 == 3);
    let mut fetched = 0;
    wait_until("3 rows", WAIT, || {
        fetched += db.query_one("SELECT sqs_ingest.fetch_source('events', 10)", &[]).unwrap().get::<_, i32>(0);
        fetched == 3
    });
    // Each row as text: user_id, topic, origin, color, price, its type, the blob in hex.
    let rows: Vec<Vec<Option<String>>> = db
        .query(
            "SELECT user_id, topic, origin, color, price::text, price_type, encode(blob, 'hex')
             FROM events ORDER BY user_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (0..7).map(|i| r.get(i)).collect())
        .collect();
    let text = |values: [Option<&str>; 7]| values.map(|v| v.map(str::to_owned)).to_vec();
    assert_eq!(
        rows,
        [
            text([Some("event"), None, Some("com.example.auth"), None, None, None, None]),
            text([Some("raw"), None, None, Some("red"), Some("12.50"), Some("Number.money"), Some("0001ff")]),
            text([Some("sns"), Some(&topic), None, Some("blue"), None, None, None]),
        ]
    );
}
