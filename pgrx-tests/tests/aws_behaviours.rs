//! Real SQS's behaviours that no emulator plays, each as AWS answers it (the fault endpoint's
//! canned answers and clock, a CONNECT proxy, a container-credentials endpoint), through
//! fetch_login_queue: the cases where 0.6.0's own client differed from the SDK. JSON requests
//! now go through aws-sdk-sqs. Run against 0.6.0's packaged library (SQS_INGEST_PG_BIN naming a
//! copy of PostgreSQL 15 with it), every test here fails but the chunked answer's, which 0.6.0
//! read correctly, only slowly (it decoded the whole body again for each chunk).
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::fault::{Canned, CredentialsEndpoint, FaultEndpoint, Proxy};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{fetch_all, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A queue `name` on moto holding `messages` logins, a fault endpoint in front of it, and a
/// session of the shared cluster reading the queue through it in the JSON protocol (so that
/// nothing passes for a Query-only endpoint).
fn played(name: &str, messages: usize, seed: u64) -> (Queue<'static>, FaultEndpoint, Client) {
    let emulator = Emulator::shared();
    let queue = emulator.queue(name);
    if messages > 0 {
        queue.send(&valid(messages, seed));
    }
    let fault = FaultEndpoint::start(emulator.port);
    let mut db = shared_cluster().database(name);
    let url = fault.url_for(&queue.url);
    db.batch_execute(&format!("SET sqs_ingest.queue_url = '{url}'; SET sqs_ingest.protocol = 'json'")).unwrap();
    (queue, fault, db)
}

/// The ERROR a fetch ends with.
fn fetch_error(db: &mut Client) -> postgres::error::DbError {
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    err.as_db_error().expect("an ERROR from the server").clone()
}

#[test]
fn a_503_with_a_json_body_is_retried() {
    let (_queue, fault, mut db) = played("aws_503", 3, 501);
    fault.answer_next([Canned::json_error("503 Service Unavailable", "ServiceUnavailableException", None)]);
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
    assert_eq!(fault.canned_left(), 0, "the 503 was answered");
}

#[test]
fn throttling_is_retried_with_backoff() {
    let (_queue, fault, mut db) = played("aws_throttled", 3, 502);
    let throttled = Canned::json_error("400 Bad Request", "TooManyRequestsException", None);
    fault.answer_next([throttled.clone(), throttled]);
    // The first call meets both throttles and still receives: the SDK's standard mode retries.
    let rows: i32 = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap().get(0);
    assert_eq!(fault.canned_left(), 0);
    assert_eq!(rows + fetch_all(&mut db, 10, 3 - i64::from(rows)), 3);
}

#[test]
fn throttling_that_lasts_is_its_own_sqlstate() {
    let (_queue, fault, mut db) = played("aws_throttled_long", 0, 0);
    let throttled =
        Canned::json_error("400 Bad Request", "ThrottlingException", Some("AWS.SimpleQueueService.RequestThrottled"));
    fault.answer_next(vec![throttled; 3]);
    let e = fetch_error(&mut db);
    assert_eq!(e.code(), &SqlState::CONFIGURATION_LIMIT_EXCEEDED, "{e:?}");
    assert!(e.message().contains("AWS.SimpleQueueService.RequestThrottled"), "{}", e.message());
    assert!(e.hint().unwrap().contains("requests_in_flight"), "{:?}", e.hint());
}

#[test]
fn legacy_codes_come_from_x_amzn_query_error() {
    let (_queue, fault, mut db) = played("aws_legacy", 0, 0);
    fault.answer_next([Canned::json_error(
        "400 Bad Request",
        "QueueDoesNotExist",
        Some("AWS.SimpleQueueService.NonExistentQueue"),
    )]);
    let e = fetch_error(&mut db);
    assert_eq!(e.code(), &SqlState::UNDEFINED_OBJECT, "{e:?}");
    assert!(e.message().contains("answered AWS.SimpleQueueService.NonExistentQueue: "), "{}", e.message());
    assert!(e.hint().unwrap().contains("region"), "{:?}", e.hint());
}

#[test]
fn each_kind_of_failure_has_its_sqlstate_and_hint() {
    let (_queue, fault, mut db) = played("aws_kinds", 0, 0);
    let kms = Canned::json_error("400 Bad Request", "KmsAccessDenied", Some("KMS.AccessDeniedException"));
    let unavailable = Canned::json_error("503 Service Unavailable", "ServiceUnavailable", None);
    let signature = Canned::json_error("400 Bad Request", "InvalidSignatureException", None);
    // (answers to play, SQLSTATE, what the message names, what the HINT says)
    let kinds: [(Vec<Canned>, SqlState, &str, &str); 5] = [
        (
            vec![kms],
            SqlState::EXTERNAL_ROUTINE_INVOCATION_EXCEPTION,
            "answered KMS.AccessDeniedException",
            "kms:Decrypt",
        ),
        (
            vec![Canned::json_error("403 Forbidden", "ExpiredToken", None)],
            SqlState::INVALID_PASSWORD,
            "answered ExpiredToken",
            "renew them",
        ),
        (
            vec![Canned::json_error("400 Bad Request", "AccessDenied", None)],
            SqlState::INSUFFICIENT_PRIVILEGE,
            "answered AccessDenied",
            "sqs:ReceiveMessage",
        ),
        // Every attempt the SDK makes meets it.
        (vec![unavailable; 3], SqlState::SYSTEM_ERROR, "answered ServiceUnavailable", "AWS's side"),
        // With the answers' Date on time, no skew to correct: not retried.
        (vec![signature], SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "answered InvalidSignatureException", "chrony"),
    ];
    for (answers, code, message, hint) in kinds {
        fault.answer_next(answers);
        let e = fetch_error(&mut db);
        assert_eq!(e.code(), &code, "{e:?}");
        assert!(e.message().contains(message), "{}", e.message());
        assert!(e.hint().unwrap().contains(hint), "{:?}", e.hint());
        assert_eq!(fault.canned_left(), 0, "{message}");
    }
}

#[test]
fn a_proxys_html_502_is_retried_not_taken_for_the_query_protocol() {
    let (_queue, fault, mut db) = played("aws_html_502", 3, 503);
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>".to_owned();
    fault.answer_next([Canned {
        status: "502 Bad Gateway",
        headers: vec![("Content-Type", "text/html".to_owned())],
        body: page,
    }]);
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
    assert_eq!(fault.canned_left(), 0);
}

#[test]
fn a_clock_20_minutes_off_is_corrected_from_the_answers_date() {
    let (_queue, fault, mut db) = played("aws_skew", 3, 504);
    fault.clock_ahead(20 * 60);
    // The first request is refused for its time; the SDK reads SQS's time from the answer's
    // Date and signs the next at it.
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
}

/// A cluster of its own whose postmaster has `env` besides the emulators' credentials, and a
/// session of it reading an AWS queue URL (no endpoint set: the SDK resolves it).
fn aws_cluster(name: &str, env: &[(&str, &str)]) -> (Cluster, Client) {
    let mut all: Vec<(&str, &str)> = AWS_ENV.to_vec();
    all.extend_from_slice(env);
    let cluster = Cluster::start(name, &[], &all);
    let mut db = cluster.database(name);
    db.batch_execute(
        "SET sqs_ingest.queue_url = 'https://sqs.eu-west-1.amazonaws.com/123456789012/orders'; \
         SET sqs_ingest.connect_timeout = 500; SET sqs_ingest.request_timeout = 3000",
    )
    .unwrap();
    (cluster, db)
}

#[test]
fn endpoints_come_from_the_region_fips_and_dual_stack_and_go_through_the_proxy() {
    let proxy = Proxy::start();
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let config = std::env::temp_dir().join(format!("aws_fips_profile_{}", std::process::id()));
    std::fs::write(&config, "[default]\nuse_fips_endpoint = true\n").unwrap();
    let cases: [(&str, Vec<(&str, &str)>, &str); 4] = [
        ("aws_plain", vec![], "CONNECT sqs.eu-west-1.amazonaws.com:443"),
        ("aws_fips_env", vec![("AWS_USE_FIPS_ENDPOINT", "true")], "CONNECT sqs-fips.eu-west-1.amazonaws.com:443"),
        (
            "aws_fips_profile",
            vec![("AWS_CONFIG_FILE", config.to_str().unwrap())],
            "CONNECT sqs-fips.eu-west-1.amazonaws.com:443",
        ),
        ("aws_dual_stack", vec![("AWS_USE_DUALSTACK_ENDPOINT", "true")], "CONNECT sqs.eu-west-1.api.aws:443"),
    ];
    for (name, mut env, expected) in cases {
        env.push(("HTTPS_PROXY", &url));
        let before = proxy.asked().len();
        let (cluster, mut db) = aws_cluster(name, &env);
        let e = fetch_error(&mut db);
        assert_eq!(e.code(), &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, "{name}: {e:?}");
        let asked = proxy.asked()[before..].to_vec();
        assert!(!asked.is_empty() && asked.iter().all(|a| a.starts_with(expected)), "{name}: {asked:?}");
        cluster.stop();
    }
    // NO_PROXY: the proxy is not asked. The request goes straight to SQS, and fails: unreachable
    // on a machine with no way out, refused (the emulators' keys) on one with it.
    let before = proxy.asked().len();
    let (cluster, mut db) = aws_cluster("aws_no_proxy", &[("HTTPS_PROXY", &url), ("NO_PROXY", "amazonaws.com")]);
    let e = fetch_error(&mut db);
    assert!(e.message().contains("SQS in eu-west-1"), "{e:?}");
    assert_eq!(proxy.asked().len(), before, "{:?}", proxy.asked());
    cluster.stop();
    let _ = std::fs::remove_file(config);
}

/// A file the postgres OS user may read (and run, with `mode` 0o755).
fn shared_file(name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("aws_behaviours_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_credential_process_profile_signs_the_requests() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("aws_process");
    queue.send(&valid(2, 505));
    let fault = FaultEndpoint::start(emulator.port);
    let script = shared_file(
        "credentials.sh",
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIDFROMPROCESS\", \"SecretAccessKey\": \"secret\"}'\n",
        0o755,
    );
    let config = shared_file("config", &format!("[default]\ncredential_process = {}\n", script.display()), 0o644);
    // No keys in the environment: only the profile's process can give them.
    let cluster = Cluster::start(
        "aws_process",
        &[],
        &[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let mut db = cluster.database("aws_process");
    db.batch_execute(&format!("SET sqs_ingest.queue_url = '{}'", fault.url_for(&queue.url))).unwrap();
    assert_eq!(fetch_all(&mut db, 10, 2), 2);
    let heads: Vec<String> = fault.requests().into_iter().map(|(head, _)| head).collect();
    assert!(heads.iter().all(|h| h.contains("Credential=AKIDFROMPROCESS/")), "{heads:?}");
    wait_until("the queue to be empty", WAIT, || queue.counts() == (0, 0));
    cluster.stop();
}

#[test]
fn a_fifo_receive_that_fails_costs_only_its_own_answer() {
    let emulator = Emulator::shared_localstack();
    let queue = emulator.fifo_queue("aws_sibling.fifo");
    let bodies = valid(30, 506);
    let grouped: Vec<(String, String)> =
        bodies.into_iter().enumerate().map(|(i, body)| (format!("g{}", i % 3), body)).collect();
    queue.send_grouped(&grouped);
    let fault = FaultEndpoint::start(emulator.port);
    let mut db = shared_cluster().database("aws_sibling");
    let url = fault.url_for(&queue.url);
    db.batch_execute(&format!("SET sqs_ingest.queue_url = '{url}'; SET sqs_ingest.visibility_timeout = 600")).unwrap();
    // The first of a call's 4 receives is refused; the 3 others take a group each. What they
    // took is stored now, not dropped to wait out the 600 s visibility timeout.
    fault.answer_next([Canned::json_error("400 Bad Request", "AccessDenied", None)]);
    assert_eq!(fetch_all(&mut db, 40, 30), 30);
    assert_eq!(fault.canned_left(), 0);
    wait_until("the queue to be empty", WAIT, || queue.counts() == (0, 0));
}

#[test]
fn expiring_credentials_are_fetched_once_per_refresh_not_per_request() {
    let emulator = Emulator::shared();
    let queue = emulator.queue("aws_container");
    let fault = FaultEndpoint::start(emulator.port);
    // Credentials good for 20 s: the SDK's cache refreshes them 5 to 10 s before they expire.
    let credentials = CredentialsEndpoint::start(Duration::from_secs(20));
    let uri = format!("http://127.0.0.1:{}/credentials", credentials.port);
    let env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    // No worker: its own cache would fetch for itself (one cache per process).
    let cluster = Cluster::start("aws_container", &["sqs_ingest.worker_enabled = off".to_owned()], &env);
    let mut db = cluster.database("aws_container");
    let url = fault.url_for(&queue.url);
    db.batch_execute(&format!(
        "SET sqs_ingest.queue_url = '{url}'; SET sqs_ingest.fetch_wait = 0; SET sqs_ingest.requests_in_flight = 8"
    ))
    .unwrap();
    // Rounds of 8 receives in flight at once, for 25 s: the credentials expire mid-run.
    let (started, mut rounds) = (Instant::now(), 0);
    while started.elapsed() < Duration::from_secs(25) {
        let _: i32 = db.query_one("SELECT fetch_login_queue(80)", &[]).unwrap().get(0);
        rounds += 1;
    }
    let times = credentials.fetches();
    let fetches = times.len();
    let keys: BTreeSet<String> = fault
        .requests()
        .iter()
        .filter_map(|(head, _)| head.split("Credential=").nth(1).and_then(|c| c.split('/').next()).map(str::to_owned))
        .collect();
    eprintln!("{rounds} rounds of 8 receives in 25 s: credentials fetched at {times:?}, requests signed with {keys:?}");
    // Refreshed before they expired, and signing went on with the new ones...
    assert!(fetches >= 2 && keys.len() >= 2, "{fetches} fetches, {keys:?}");
    // ...one fetch per refresh for all the requests in flight: a refresh is due 10 s after a
    // fetch at the soonest.
    assert!(fetches <= 1 + 25 / 10, "{fetches} fetches in {rounds} rounds");
    cluster.stop();
}

#[test]
fn a_chunked_10_mib_answer_is_read() {
    let (_queue, fault, mut db) = played("aws_chunked", 0, 0);
    let body = "x".repeat(1 << 20);
    let messages: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({
                "MessageId": format!("chunked-{i}"),
                "ReceiptHandle": format!("handle-{i}"),
                "Body": body,
                "Attributes": {"SentTimestamp": "1764842100000", "ApproximateReceiveCount": "1"},
            })
        })
        .collect();
    let answer = serde_json::json!({ "Messages": messages }).to_string();
    assert!(answer.len() > 10 << 20);
    let headers =
        vec![("Content-Type", "application/x-amz-json-1.0".to_owned()), ("Transfer-Encoding", "chunked".to_owned())];
    fault.answer_next([Canned { status: "200 OK", headers, body: answer }]);
    // Ten bodies of 1 MiB, in chunks of 8 KiB: each in the ledger once (not logins: dead letters).
    assert_eq!(fetch_all(&mut db, 10, 10), 0);
    let stored: i64 =
        db.query_one("SELECT count(*) FROM sqs_ingest.dead_letters WHERE length(body) = 1048576", &[]).unwrap().get(0);
    assert_eq!(stored, 10);
}

/// A request's headers by lowercase name.
fn headers(head: &str) -> BTreeMap<String, String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_extension_sends_what_the_sdk_alone_sends() {
    let (queue, fault, mut db) = played("aws_differential", 3, 507);
    assert_eq!(fetch_all(&mut db, 10, 3), 3);
    wait_until("the deletes", WAIT, || queue.counts() == (0, 0));
    let ours = fault.requests();
    let find = |requests: &[(String, String)], operation: &str| {
        requests.iter().find(|(head, _)| head.contains(&format!("AmazonSQS.{operation}"))).cloned().unwrap()
    };
    let (receive, delete) = (find(&ours, "ReceiveMessage"), find(&ours, "DeleteMessageBatch"));

    // The same two calls from the SDK alone, with its defaults, to the same endpoint.
    let receive_body: serde_json::Value = serde_json::from_str(&receive.1).unwrap();
    let delete_body: serde_json::Value = serde_json::from_str(&delete.1).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", fault.port);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
            .load()
            .await;
        let client = aws_sdk_sqs::Client::new(&config);
        let names = receive_body["MessageSystemAttributeNames"].as_array().unwrap();
        let mut call = client
            .receive_message()
            .queue_url(receive_body["QueueUrl"].as_str().unwrap())
            .max_number_of_messages(receive_body["MaxNumberOfMessages"].as_i64().unwrap() as i32)
            .wait_time_seconds(receive_body["WaitTimeSeconds"].as_i64().unwrap() as i32);
        for name in names {
            call = call.message_system_attribute_names(MessageSystemAttributeName::from(name.as_str().unwrap()));
        }
        call.send().await.unwrap();
        let entries = delete_body["Entries"].as_array().unwrap().iter().map(|e| {
            DeleteMessageBatchRequestEntry::builder()
                .id(e["Id"].as_str().unwrap())
                .receipt_handle(e["ReceiptHandle"].as_str().unwrap())
                .build()
                .unwrap()
        });
        let queue_url = delete_body["QueueUrl"].as_str().unwrap();
        client.delete_message_batch().queue_url(queue_url).set_entries(Some(entries.collect())).send().await.unwrap();
    });
    let all = fault.requests();
    let sdk = &all[ours.len()..];
    // Each time, each signature and each invocation differ; the user agents differ by the
    // extension's app name (sqs_ingest-<version>) alone.
    let varying = ["x-amz-date", "authorization", "amz-sdk-invocation-id", "user-agent", "x-amz-user-agent"];
    for (operation, (our_head, our_body)) in [("ReceiveMessage", receive), ("DeleteMessageBatch", delete)] {
        let (sdk_head, sdk_body) = find(sdk, operation);
        assert_eq!(our_head.lines().next(), sdk_head.lines().next(), "{operation}: request line");
        let (mut ours, mut theirs) = (headers(&our_head), headers(&sdk_head));
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{operation}: header names");
        assert!(ours["user-agent"].contains("app/sqs_ingest-"), "{:?}", ours["user-agent"]);
        for name in varying {
            ours.remove(name);
            theirs.remove(name);
        }
        assert_eq!(ours, theirs, "{operation}: headers");
        let parse = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
        assert_eq!(parse(&our_body), parse(&sdk_body), "{operation}: body");
        eprintln!("{operation}: the same request line, headers and body as the SDK's alone");
    }
}
