//! Real SQS's behaviours that no emulator plays, each as AWS answers it (the fault endpoint's
//! canned answers and clock, a CONNECT proxy), through fetch_login_queue: the cases where
//! 0.6.0's own client differed from the SDK (issue 32's table). JSON requests now go through
//! aws-sdk-sqs.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::fault::{Canned, FaultEndpoint, Proxy};
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{fetch_all, shared_cluster, wait_until, Cluster, Emulator, Queue, WAIT};
use std::path::PathBuf;

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

    fault.answer_next([Canned::json_error("400 Bad Request", "KmsAccessDenied", Some("KMS.AccessDeniedException"))]);
    let e = fetch_error(&mut db);
    assert_eq!(e.code(), &SqlState::EXTERNAL_ROUTINE_INVOCATION_EXCEPTION, "{e:?}");
    assert!(e.message().contains("answered KMS.AccessDeniedException"), "{}", e.message());
    assert!(e.hint().unwrap().contains("kms:Decrypt"), "{:?}", e.hint());

    fault.answer_next([Canned::json_error("403 Forbidden", "ExpiredToken", None)]);
    let e = fetch_error(&mut db);
    assert_eq!(e.code(), &SqlState::INVALID_PASSWORD, "{e:?}");
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
    // NO_PROXY: the proxy is not asked (and there is no way out of this machine without it).
    let before = proxy.asked().len();
    let (cluster, mut db) = aws_cluster("aws_no_proxy", &[("HTTPS_PROXY", &url), ("NO_PROXY", "amazonaws.com")]);
    let e = fetch_error(&mut db);
    assert_eq!(e.code(), &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, "{e:?}");
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
    let heads = fault.request_heads();
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
