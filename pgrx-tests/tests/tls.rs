//! HTTPS, as real SQS is spoken: LocalStack serves TLS on its port with a self-signed
//! certificate. A server whose CA store holds it (SSL_CERT_FILE in the postmaster's
//! environment) ingests over TLS, receives and deletes alike; a server with no CA certificates
//! at all (a slim container image without ca-certificates), or without the endpoint's issuer,
//! gets an error that says which, with the fix, and loses nothing.
use postgres::error::SqlState;
use postgres::Client;
use sqs_ingest_it::emulator::AWS_ENV;
use sqs_ingest_it::logins::valid;
use sqs_ingest_it::{count, fetch_all, key_file, localstack_venv, point_at, wait_until, Cluster, Emulator, WAIT};
use std::path::PathBuf;
use std::process::Command;

/// What a Python script printed, run by LocalStack's venv (which has `cryptography`).
fn python(script: &str) -> String {
    let out = Command::new(localstack_venv().join("bin/python")).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `pem` in a file the postgres user can read.
fn pem_file(name: &str, pem: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sqs_ingest-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    key_file(&dir, name, pem, 0o644)
}

/// The certificate LocalStack presents on `port`.
fn localstack_certificate(port: u16) -> PathBuf {
    let pem = python(&format!("import ssl; print(ssl.get_server_certificate(('127.0.0.1', {port})))"));
    pem_file("localstack.pem", &pem)
}

/// A self-signed CA of its own, which issued nothing LocalStack presents.
fn another_ca() -> PathBuf {
    let pem = python(
        "import datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'another CA')])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
print(cert.public_bytes(serialization.Encoding.PEM).decode())",
    );
    pem_file("another-ca.pem", &pem)
}

/// A cluster of its own whose postmaster has the emulators' credentials and `SSL_CERT_FILE`.
fn cluster_trusting(name: &str, ca_file: &str) -> Cluster {
    let mut env = AWS_ENV.to_vec();
    env.push(("SSL_CERT_FILE", ca_file));
    Cluster::start(name, &["sqs_ingest.worker_enabled = off".to_owned()], &env)
}

/// A database of `cluster` whose session fetches `queue_url` through LocalStack's TLS port.
fn over_tls(cluster: &Cluster, port: u16, queue_url: &str) -> Client {
    let mut db = cluster.database("tls");
    point_at(&mut db, queue_url);
    db.batch_execute(&format!("SET sqs_ingest.endpoint_url = 'https://localhost:{port}'")).unwrap();
    db
}

/// The ERROR a fetch over TLS from `cluster` ends with, SQLSTATE 08001: its message and hint.
fn refused_over_tls(cluster: &Cluster, port: u16, queue_url: &str) -> (String, String) {
    let mut db = over_tls(cluster, port, queue_url);
    let err = db.query_one("SELECT fetch_login_queue(10)", &[]).unwrap_err();
    let e = err.as_db_error().expect("an ERROR");
    assert_eq!(e.code(), &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, "{}", e.message());
    (e.message().to_owned(), e.hint().unwrap_or_default().to_owned())
}

#[test]
fn https_endpoint_is_checked_against_the_servers_ca_certificates() {
    let emulator = Emulator::shared_localstack();
    let queue = emulator.queue("tls");
    queue.send(&valid(5, 71));

    // No CA certificates at all: refused, said so with the fix, and nothing received.
    let bare = cluster_trusting("tls_bare", "/nonexistent/ca-certificates.crt");
    let (message, hint) = refused_over_tls(&bare, emulator.port, &queue.url);
    assert!(message.contains("TLS certificate of https://localhost") && message.contains("not trusted"), "{message}");
    assert!(hint.contains("no CA certificates") && hint.contains("ca-certificates"), "{hint}");
    bare.stop();

    // CA certificates, but not the one that issued the endpoint's: refused by the handshake.
    let other = cluster_trusting("tls_other", another_ca().to_str().unwrap());
    let (message, hint) = refused_over_tls(&other, emulator.port, &queue.url);
    assert!(message.contains("not trusted") && message.contains("invalid peer certificate"), "{message}");
    assert!(hint.contains("not among the CA certificates this server trusts"), "{hint}");
    other.stop();

    // LocalStack's certificate trusted: the same messages over TLS, deleted over TLS after commit.
    let trusting = cluster_trusting("tls_trusting", localstack_certificate(emulator.port).to_str().unwrap());
    let mut db = over_tls(&trusting, emulator.port, &queue.url);
    assert_eq!(fetch_all(&mut db, 10, 5), 5);
    assert_eq!(count(&mut db, "SELECT count(*) FROM user_logins"), 5);
    wait_until("the queue to be empty", WAIT, || queue.counts() == (0, 0));
}
