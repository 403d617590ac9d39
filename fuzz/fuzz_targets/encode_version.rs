//! Any app_version text: encoding never panics, and an encoded value is in range and equal to
//! the formula over its components.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sqs_ingest_core::version::encode;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = encode(text) {
        assert!((0..=999_999).contains(&v));
        let parts: Vec<u64> = text.split('.').map(|p| p.parse().unwrap()).collect();
        let expected = parts.iter().zip([10_000, 100, 1]).map(|(p, w)| p * w).sum::<u64>();
        assert_eq!(v as u64, expected);
    }
});
