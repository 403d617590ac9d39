//! The SQL function mask_pii, which masks exactly as ingestion does.
use crate::settings;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use sqs_ingest_core::masking::MASKED_LEN;

/// Lowercase hex of SHA-256, or HMAC-SHA256 keyed by `sqs_ingest.pii_key` when set. STABLE,
/// not IMMUTABLE: its result depends on a setting. STRICT: NULL in, NULL out.
#[pg_extern(stable, strict, parallel_safe)]
fn mask_pii(value: &str) -> Result<&str, ErrorReport> {
    // The digits go straight into memory of the call's context, which Postgres frees with the
    // row; the text returned is made from them. A Rust String would cost an allocation and a
    // free per row on top of that.
    // SAFETY: palloc raises an ERROR rather than return NULL, and its MASKED_LEN bytes, aligned
    // for any type, stay valid until the current memory context is reset, after the result has
    // been copied into the text datum.
    let out = unsafe { &mut *pg_sys::palloc(MASKED_LEN).cast::<[u8; MASKED_LEN]>() };
    Ok(settings::with_masker(|masker| masker.mask_into(value, out).unwrap_or(value))?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn mask_pii_is_sha256_hex_and_null_safe() {
        assert_eq!(
            Spi::get_one::<String>("SELECT mask_pii('abc')").unwrap().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let same_as_builtin = "SELECT bool_and(mask_pii(v) = encode(sha256(convert_to(v, 'UTF8')), 'hex')) \
             FROM (VALUES ('1.2.3.4'), (''), ('ünïcode'), ('593-47-5928')) AS t(v)";
        assert_eq!(Spi::get_one::<bool>(same_as_builtin).unwrap(), Some(true));
        assert_eq!(Spi::get_one::<String>("SELECT mask_pii(NULL)").unwrap(), None);
    }

    #[pg_test]
    fn mask_pii_is_keyed_by_pii_key() {
        Spi::run("SET sqs_ingest.pii_key = 'Jefe'").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT mask_pii('what do ya want for nothing?')").unwrap().unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
