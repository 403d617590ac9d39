//! Any body SQS could deliver: opening its envelope and parsing never panic, an opened payload
//! and envelope are JSON, an accepted login fits every column and holds no NUL, a rejection
//! never quotes the body, and the dead-letter body is masked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_ingest_core::envelope::{self, Envelope};
use sqs_ingest_core::masking::Masker;
use sqs_ingest_core::message::{self, AppVersion, AppVersionColumn, Columns};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    for kind in [Envelope::Auto, Envelope::Sns, Envelope::EventBridge] {
        if let Ok(Some(opened)) = envelope::open(body, kind) {
            serde_json::from_str::<serde_json::Value>(&opened.payload).expect("an opened payload is JSON");
            let outer = serde_json::from_str::<serde_json::Value>(&opened.envelope).expect("an envelope is JSON");
            assert!(outer.is_object());
        }
    }
    let integer = Columns { app_version: AppVersionColumn::Integer, ..Columns::CREATED };
    for columns in [Columns::CREATED, integer] {
        match message::parse(body, &columns) {
            Ok(login) => {
                for (value, limit) in [(&login.user_id, 128), (&login.device_type, 32)] {
                    assert!(value.chars().count() <= limit && !value.contains('\0'));
                }
                if let Some(locale) = &login.locale {
                    assert!(locale.chars().count() <= 32 && !locale.contains('\0'));
                }
                match login.app_version {
                    AppVersion::Text(v) => assert!(v.chars().count() <= 32),
                    AppVersion::Integer(v) => assert!((0..=999_999).contains(&v)),
                }
                assert!(!login.ip.contains('\0') && !login.device_id.contains('\0'));
            }
            Err(reason) => {
                let reason = reason.to_string();
                // A reason is fixed text plus field names and numbers, never a piece of the body.
                assert!(reason.len() < 200, "{reason}");
            }
        }
    }
    let masker = Masker::new(b"k");
    let kept = message::dead_letter_body(body, &masker);
    assert!(!kept.contains('\0'));
    if let Ok(serde_json::Value::Object(original)) = serde_json::from_str::<serde_json::Value>(body) {
        let serde_json::Value::Object(kept) = serde_json::from_str(&kept).expect("a kept object is JSON") else {
            panic!("an object body is kept as an object");
        };
        for key in ["ip", "device_id"] {
            if let Some(serde_json::Value::String(raw)) = original.get(key) {
                assert_eq!(kept[key], serde_json::Value::String(masker.mask(raw)), "{key} not masked");
            }
        }
    }
});
