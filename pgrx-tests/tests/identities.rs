//! Named identities: sources that read their queues as IAM roles assumed through STS (moto's),
//! granted by superusers like foreign servers. A recording endpoint in front of SQS shows which
//! key id signed each source's requests; one in front of STS shows the AssumeRole requests, and
//! plays STS refusing a role and sessions that end within a test (see fault.rs).
use postgres::Client;
use sqs_ingest_it::fault::{Canned, FaultEndpoint};
use sqs_ingest_it::{count, holds_for, refused, wait_for, wait_until, Cluster, Emulator, Queue, WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

/// The server's own access key id, as its environment gives it.
const SERVER_KEY: &str = "AKIASERVERKEY0000001";
// In the queues' account: moto keeps an account's queues apart and takes an assumed role's
// requests as its account's, as SQS does for a role in the queue owner's account.
const TEAM_A: &str = "arn:aws:iam::123456789012:role/reader-a";
const TEAM_B: &str = "arn:aws:iam::123456789012:role/reader-b";

/// A cluster whose workers serve the database `postgres`, SQS and STS behind recording
/// endpoints, and the login source switched off.
struct Setup {
    emulator: &'static Emulator,
    sqs: FaultEndpoint,
    sts: FaultEndpoint,
    cluster: Cluster,
}

impl Setup {
    fn start(name: &str) -> Setup {
        let emulator = Emulator::shared();
        let (sqs, sts) = (FaultEndpoint::start(emulator.port), FaultEndpoint::start(emulator.port));
        let sts_url = format!("http://127.0.0.1:{}", sts.port);
        let env = [
            ("AWS_ACCESS_KEY_ID", SERVER_KEY),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // The SDK's own setting for STS's endpoint (a private one, a VPC endpoint's).
            ("AWS_ENDPOINT_URL_STS", sts_url.as_str()),
        ];
        let endpoint = format!("sqs_ingest.endpoint_url = 'http://127.0.0.1:{}'", sqs.port);
        let login = sqs.url_for(&emulator.queue(&format!("{name}_login")).url);
        let cluster = Cluster::with_workers_in(name, &login, &[&endpoint, "sqs_ingest.protocol = 'json'"], &env);
        let mut db = cluster.with_extension("postgres");
        db.batch_execute(
            "SELECT sqs_ingest.alter_source('login', enabled => false);
             CREATE ROLE alice LOGIN IN ROLE sqs_ingest_operator;
             GRANT EXECUTE ON FUNCTION sqs_ingest.create_source, sqs_ingest.alter_source TO alice;",
        )
        .unwrap();
        Setup { emulator, sqs, sts, cluster }
    }

    fn admin(&self) -> Client {
        self.cluster.connect("postgres")
    }

    fn alice(&self) -> Client {
        self.cluster.connect_as("postgres", "alice")
    }

    /// A queue, a table `name` for its ids that alice may fill, and alice's source `name` on them.
    fn source(&self, name: &str, identity: Option<&str>) -> Queue<'static> {
        let queue = self.emulator.queue(name);
        self.admin()
            .batch_execute(&format!("CREATE TABLE {name} (id text PRIMARY KEY); GRANT INSERT ON {name} TO alice"))
            .unwrap();
        self.alice()
            .execute(
                "SELECT sqs_ingest.create_source($1, $2, $3::text::regclass, '{\"id\": \"body->>''id''\"}', identity => $4)",
                &[&name, &self.sqs.url_for(&queue.url), &name, &identity],
            )
            .unwrap_or_else(|e| panic!("create_source {name}: {e:?}"));
        queue
    }

    /// The access key ids that signed each queue's ReceiveMessage requests, by queue name.
    fn keys_by_queue(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (head, body) in self.sqs.requests() {
            if !head.contains("AmazonSQS.ReceiveMessage") {
                continue;
            }
            let queue = body.split("\"QueueUrl\":\"").nth(1).and_then(|q| q.split('"').next()).unwrap_or_default();
            let name = queue.rsplit('/').next().unwrap_or_default().to_owned();
            keys.entry(name).or_default().insert(key_id(&head));
        }
        keys
    }

    /// The AssumeRole requests STS saw: each one's signing key id and its form, decoded.
    fn assume_role_requests(&self) -> Vec<(String, BTreeMap<String, String>)> {
        (self.sts.requests().into_iter())
            .filter(|(_, body)| body.contains("Action=AssumeRole"))
            .map(|(head, body)| (key_id(&head), form(&body)))
            .collect()
    }

    /// Who moto's STS says the holder of `key` is: an assumed role's ARN names its role and
    /// session.
    fn caller(&self, key: &str) -> String {
        let body = "Action=GetCallerIdentity&Version=2011-06-15";
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.emulator.port)).unwrap();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={key}/20261204/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        between(&answer, "<Arn>", "</Arn>").unwrap_or_else(|| panic!("GetCallerIdentity: {answer}")).to_owned()
    }

    /// How many ReceiveMessage requests asked `queue` so far.
    fn receives_of(&self, queue: &str) -> usize {
        let url = format!("/{queue}\"");
        self.sqs.receive_requests().iter().filter(|body| body.contains(&url)).count()
    }

    fn rows(&self, table: &str) -> i64 {
        count(&mut self.admin(), &format!("SELECT count(*) FROM {table}"))
    }

    fn last_error(&self, source: &str) -> Option<String> {
        self.admin()
            .query_one("SELECT last_error FROM sqs_ingest.source_status WHERE source = $1", &[&source])
            .unwrap()
            .get(0)
    }
}

/// The access key id of a SigV4 Authorization header in `head`.
fn key_id(head: &str) -> String {
    between(head, "Credential=", "/").unwrap_or_else(|| panic!("not signed: {head}")).to_owned()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    text[from..].find(end).map(|to| &text[from..from + to])
}

/// An application/x-www-form-urlencoded body's fields.
fn form(body: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"id": "{prefix}-{i}"}}"#)).collect()
}

/// What the default session name ends in: the cluster's name, else its system identifier.
fn cluster_tag(db: &mut Client) -> String {
    let row = db
        .query_one("SELECT current_setting('cluster_name'), system_identifier::text FROM pg_control_system()", &[])
        .unwrap();
    let (name, id): (String, String) = (row.get(0), row.get(1));
    if name.is_empty() {
        id
    } else {
        name
    }
}

#[test]
fn three_sources_sign_with_the_keys_their_identities_received() {
    let s = Setup::start("identities_three");
    let mut admin = s.admin();
    admin
        .batch_execute(&format!(
            "SELECT sqs_ingest.create_identity('team-a', '{TEAM_A}', external_id => 'ext-a-7f3c');
             SELECT sqs_ingest.create_identity('team-b', '{TEAM_B}', session_name => 'orders-b');
             SELECT sqs_ingest.grant_identity('team-a', 'alice');
             SELECT sqs_ingest.grant_identity('team-b', 'alice');"
        ))
        .unwrap();
    let queues = [s.source("own_keys", None), s.source("as_a", Some("team-a")), s.source("as_b", Some("team-b"))];
    for (queue, name) in queues.iter().zip(["own_keys", "as_a", "as_b"]) {
        queue.send(&ids(name, 5));
    }
    for name in ["own_keys", "as_a", "as_b"] {
        wait_until(&format!("{name}'s 5 rows"), WAIT, || s.rows(name) == 5);
    }

    let keys = s.keys_by_queue();
    println!("recording endpoint, key ids per source: {keys:?}");
    assert_eq!(keys["own_keys"], BTreeSet::from([SERVER_KEY.to_owned()]), "the server's own credentials");
    let (a, b) = (&keys["as_a"], &keys["as_b"]);
    assert_eq!((a.len(), b.len()), (1, 1), "one session each, kept: {keys:?}");
    let (a, b) = (a.first().unwrap(), b.first().unwrap());
    assert!(a != b && a != SERVER_KEY && b != SERVER_KEY, "{keys:?}");
    let tag = cluster_tag(&mut admin);
    assert_eq!(s.caller(a), format!("arn:aws:sts::123456789012:assumed-role/reader-a/as_a@{tag}"));
    assert_eq!(s.caller(b), "arn:aws:sts::123456789012:assumed-role/reader-b/orders-b");

    let assumed = s.assume_role_requests();
    assert_eq!(assumed.len(), 2, "one AssumeRole per identity and process: {assumed:?}");
    for (key, form) in &assumed {
        assert_eq!(key, SERVER_KEY, "STS is asked with the server's credentials");
        match form["RoleArn"].as_str() {
            TEAM_A => assert_eq!(form.get("ExternalId").map(String::as_str), Some("ext-a-7f3c")),
            TEAM_B => assert_eq!(form.get("ExternalId"), None),
            other => panic!("AssumeRole of {other}"),
        }
    }
    let shown: Vec<(String, Option<String>)> = admin
        .query("SELECT source, identity FROM sqs_ingest.source_status WHERE source <> 'login' ORDER BY source", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let named = |source: &str, identity: Option<&str>| (source.to_owned(), identity.map(str::to_owned));
    assert_eq!(shown, [named("as_a", Some("team-a")), named("as_b", Some("team-b")), named("own_keys", None)]);
}

#[test]
fn only_superusers_declare_identities_and_owners_must_hold_them_at_every_round() {
    let s = Setup::start("identities_granted");
    let mut admin = s.admin();
    let mut alice = s.alice();
    admin.batch_execute(&format!("SELECT sqs_ingest.create_identity('team-a', '{TEAM_A}')")).unwrap();

    // Declaring and granting: superusers only; bad input is refused with what STS takes.
    let (code, _, _) = refused(&mut alice, &format!("SELECT sqs_ingest.create_identity('mine', '{TEAM_A}')"));
    assert_eq!(code, "42501");
    let (code, _, _) = refused(&mut alice, "SELECT sqs_ingest.grant_identity('team-a', 'alice')");
    assert_eq!(code, "42501");
    let (code, message, hint) =
        refused(&mut admin, "SELECT sqs_ingest.create_identity('bad', 'arn:aws:iam::1234:user/someone')");
    assert_eq!(code, "22023", "{message}");
    assert!(hint.contains("arn:aws:iam::123456789012:role/name"), "{hint}");
    let (code, _, hint) = refused(
        &mut admin,
        &format!("SELECT sqs_ingest.create_identity('bad', '{TEAM_A}', session_name => 'has spaces')"),
    );
    assert_eq!(code, "22023");
    assert!(hint.contains("64"), "{hint}");
    let (code, _, _) = refused(&mut admin, "SELECT sqs_ingest.grant_identity('team-a', 'nobody_such')");
    assert_eq!(code, "42704");

    // Alice without the privilege may not name it.
    let queue = s.emulator.queue("granted");
    admin.batch_execute("CREATE TABLE granted (id text PRIMARY KEY); GRANT INSERT ON granted TO alice").unwrap();
    let create = format!(
        "SELECT sqs_ingest.create_source('granted', '{}', 'granted', '{{\"id\": \"body->>''id''\"}}', identity => 'team-a')",
        s.sqs.url_for(&queue.url)
    );
    let (code, message, hint) = refused(&mut alice, &create);
    assert_eq!(code, "42501");
    assert!(message.contains("may not use identity \"team-a\""), "{message}");
    assert!(hint.contains("sqs_ingest.grant_identity('team-a', 'alice')"), "{hint}");

    // Granted to a role alice is a member of: she holds it, as with GRANT USAGE.
    admin
        .batch_execute(
            "CREATE ROLE readers; GRANT readers TO alice; SELECT sqs_ingest.grant_identity('team-a', 'readers')",
        )
        .unwrap();
    alice.batch_execute(&create).unwrap();
    queue.send(&ids("before", 5));
    wait_until("the 5 rows before the revoke", WAIT, || s.rows("granted") == 5);

    // Revoked mid-run: the source stops at its next round, says why, and leaves the messages.
    admin.batch_execute("SELECT sqs_ingest.revoke_identity('team-a', 'readers')").unwrap();
    let error = wait_for(
        "the source to report the revoke",
        WAIT,
        || s.last_error("granted"),
        |e| e.as_deref().is_some_and(|e| e.contains("may not use identity \"team-a\"")),
    );
    println!("source_status.last_error once revoked: {error:?}");
    let before = s.receives_of("granted");
    queue.send(&ids("during", 5));
    let (code, _, _) = refused(&mut alice, "SELECT sqs_ingest.fetch_source('granted', 10)");
    assert_eq!(code, "42501");
    // Five of the worker's backoffs (at most 1 s each here) with nothing received.
    holds_for("the revoked source's messages to stay in the queue", Duration::from_secs(5), || {
        queue.counts() == (5, 0) && s.receives_of("granted") == before
    });
    assert_eq!(s.rows("granted"), 5);

    // Granted back: they arrive, once each, and the error clears.
    admin.batch_execute("SELECT sqs_ingest.grant_identity('team-a', 'alice')").unwrap();
    wait_until("the 5 messages after the grant", WAIT, || s.rows("granted") == 10);
    wait_until("the queue to empty", WAIT, || queue.counts() == (0, 0));
    wait_until("the error to clear", WAIT, || s.last_error("granted").is_none());
    assert_eq!(count(&mut admin, "SELECT count(*) FROM sqs_ingest.processed_messages"), 10);

    // Changed: an external id given, then cleared ('' clears, NULL leaves); a bad ARN refused.
    admin.batch_execute("SELECT sqs_ingest.alter_identity('team-a', external_id => 'ext-new-1')").unwrap();
    let external =
        "SELECT coalesce(external_id, '-') || ' ' || role_arn FROM sqs_ingest.identities WHERE name = 'team-a'";
    assert_eq!(admin.query_one(external, &[]).unwrap().get::<_, String>(0), format!("ext-new-1 {TEAM_A}"));
    admin.batch_execute("SELECT sqs_ingest.alter_identity('team-a', external_id => '')").unwrap();
    assert_eq!(admin.query_one(external, &[]).unwrap().get::<_, String>(0), format!("- {TEAM_A}"));
    let (code, _, _) = refused(&mut admin, "SELECT sqs_ingest.alter_identity('team-a', role_arn => 'nope')");
    assert_eq!(code, "22023");

    // An identity in use is not dropped; once its sources are moved, it is, with its grants.
    let (code, _, hint) = refused(&mut admin, "SELECT sqs_ingest.drop_identity('team-a')");
    assert_eq!(code, "2BP01");
    assert!(hint.contains("identity => ''"), "{hint}");
    alice.batch_execute("SELECT sqs_ingest.alter_source('granted', identity => '')").unwrap();
    admin.batch_execute("SELECT sqs_ingest.drop_identity('team-a')").unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM sqs_ingest.identity_usage"), 0);
}

#[test]
fn sessions_are_assumed_again_before_they_expire_not_per_request() {
    let s = Setup::start("identities_refresh");
    s.sts.session_lifetime(Duration::from_secs(20));
    s.admin()
        .batch_execute(&format!(
            "SELECT sqs_ingest.create_identity('team-a', '{TEAM_A}');
             SELECT sqs_ingest.grant_identity('team-a', 'alice');"
        ))
        .unwrap();
    let queue = s.source("refreshed", Some("team-a"));
    // The worker long-polls the empty queue (2 s a poll here) across three sessions.
    wait_until("a third AssumeRole", Duration::from_secs(120), || s.assume_role_requests().len() >= 3);
    queue.send(&ids("late", 5));
    wait_until("the 5 rows", WAIT, || s.rows("refreshed") == 5);
    let assumed = s.assume_role_requests().len();
    let keys = &s.keys_by_queue()["refreshed"];
    let receives = s.receives_of("refreshed");
    println!("20 s sessions: {assumed} AssumeRole requests, {} keys, {receives} receives", keys.len());
    assert!(keys.len() >= 3, "each session's key signs: {keys:?}");
    assert!(receives >= 2 * assumed, "{receives} receives for {assumed} AssumeRole requests");
    assert!(s.last_error("refreshed").is_none(), "no request met an expired session");
}

#[test]
fn a_role_sts_refuses_is_the_identity_s_error_and_names_no_key() {
    let s = Setup::start("identities_refused");
    let locked = "arn:aws:iam::123456789012:role/locked";
    let mut admin = s.admin();
    admin
        .batch_execute(&format!(
            "SELECT sqs_ingest.create_identity('locked', '{locked}', external_id => 'ext-locked');
             SELECT sqs_ingest.grant_identity('locked', 'alice');"
        ))
        .unwrap();
    let refusal = Canned::xml_error(
        "403 Forbidden",
        "AccessDenied",
        &format!("User: arn:aws:iam::000000000000:user/server is not authorized to perform: sts:AssumeRole on resource: {locked}"),
    );
    // Served by no worker at first: the call below is the only one to ask STS.
    let queue = s.emulator.queue("refused");
    admin.batch_execute("CREATE TABLE refused (id text PRIMARY KEY); GRANT INSERT ON refused TO alice").unwrap();
    s.alice()
        .execute(
            "SELECT sqs_ingest.create_source('refused', $1, 'refused', '{\"id\": \"body->>''id''\"}', enabled => false, identity => 'locked')",
            &[&s.sqs.url_for(&queue.url)],
        )
        .unwrap();
    admin.batch_execute("UPDATE sqs_ingest.sources SET workers = 0, enabled = true WHERE name = 'refused'").unwrap();
    queue.send(&ids("held", 3));
    s.sts.answer_next([refusal.clone()]);
    let (code, message, hint) = refused(&mut s.alice(), "SELECT sqs_ingest.fetch_source('refused', 10)");
    println!("fetch_source: {code} {message} (HINT: {hint})");
    assert_eq!(code, "0P000", "{message}");
    assert!(message.contains(&format!("identity \"locked\" could not assume {locked}")), "{message}");
    assert!(message.contains("STS answered AccessDenied: User: "), "{message}");
    assert!(hint.contains("trust policy") && hint.contains("external id"), "{hint}");
    let error = s.last_error("refused").unwrap_or_default();
    println!("source_status.last_error: {error}");
    assert!(error.contains("identity \"locked\""), "{error}");
    for text in [&error, &message, &hint] {
        assert!(!text.contains(SERVER_KEY) && !text.contains("ext-locked"), "{text}");
    }
    assert_eq!(queue.counts(), (3, 0), "nothing was received");

    // The worker meets three refusals, backs off, and ingests once STS lets it.
    s.sts.answer_next(vec![refusal; 3]);
    admin.batch_execute("UPDATE sqs_ingest.sources SET workers = NULL WHERE name = 'refused'").unwrap();
    wait_until("the 3 rows", WAIT, || s.rows("refused") == 3);
    assert_eq!(s.sts.canned_left(), 0);
    let worker_said = |l: &&str| l.contains("sqs_ingest worker") && l.contains("identity \"locked\" could not assume");
    assert!(s.cluster.log_text().lines().any(|l| worker_said(&l)), "the worker logged the refusal");
    wait_until("the error to clear", WAIT, || s.last_error("refused").is_none());
}
