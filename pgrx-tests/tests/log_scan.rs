//! Runs after the whole suite (scripts/test.sh): every server log the suite's clusters wrote
//! must be free of the secrets they were given, receipt handles and raw PII from messages.
use sqs_ingest_it::secrets;

/// Dotted quads other than the loopback and wildcard addresses the tests connect to.
fn ipv4_addresses(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_matches('.'))
        .filter(|t| {
            let parts: Vec<&str> = t.split('.').collect();
            parts.len() == 4
                && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|n| n < 256))
        })
        .filter(|t| !matches!(*t, "127.0.0.1" | "0.0.0.0"))
        .collect()
}

/// Device ids are shaped like US social security numbers: ddd-dd-dddd.
fn device_ids(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|t| {
            let parts: Vec<&str> = t.split('-').collect();
            parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [3, 2, 4]
        })
        .collect()
}

/// Receipt handles (and other tokens) are long runs of base64 characters.
fn long_tokens(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-')))
        .filter(|t| t.len() >= 100)
        .collect()
}

#[test]
fn server_logs_hold_no_secret_receipt_handle_or_raw_pii() {
    let logs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sqs_ingest-"))
        .map(|e| e.path().join("server.log"))
        .filter(|p| p.exists())
        .collect();
    let mut lines = 0;
    let mut findings = Vec::new();
    for log in &logs {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            lines += 1;
            let mut found: Vec<&str> = secrets::ALL.into_iter().filter(|s| line.contains(s)).collect();
            found.extend(ipv4_addresses(line));
            found.extend(device_ids(line));
            found.extend(long_tokens(line));
            if !found.is_empty() {
                findings.push(format!("{}: {found:?} in {line}", log.display()));
            }
        }
    }
    println!("log scan: {} logs, {lines} lines, {} findings", logs.len(), findings.len());
    // The suite starts over a dozen clusters; fewer logs means the scan looked in the wrong place.
    assert!(
        logs.len() >= 10 && lines >= 200,
        "only {} logs, {lines} lines under {:?}",
        logs.len(),
        std::env::temp_dir()
    );
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

#[test]
fn the_scanners_find_what_they_look_for() {
    let line = "ERROR: bad 199.172.111.135 and 593-47-5928 at 2026-11-22 19:29:57.477 from 127.0.0.1:5432 v2.3.0";
    assert_eq!(ipv4_addresses(line), ["199.172.111.135"]);
    assert_eq!(device_ids(line), ["593-47-5928"]);
    assert_eq!(long_tokens(&format!("handle {}", "a".repeat(120))).len(), 1);
    assert!(long_tokens(line).is_empty());
}
