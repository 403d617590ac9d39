//! Deterministic PII masking: lowercase hex of SHA-256, or of HMAC-SHA256 when a key is set.
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of a masked value: 32 bytes as hex.
pub const MASKED_LEN: usize = 64;

/// A masker is built once per call from `sqs_ingest.pii_key` and reused for every value,
/// so the HMAC key schedule is computed once, not once per value.
#[derive(Clone)]
pub enum Masker {
    Sha256,
    Hmac(Hmac<Sha256>),
    /// For the bodies of dead letters, whose ip and device_id were masked when they were kept:
    /// they are stored as they are, not masked a second time.
    AlreadyMasked,
}

impl Masker {
    /// An empty key means unkeyed SHA-256 (the take-home's behaviour).
    pub fn new(key: &[u8]) -> Masker {
        if key.is_empty() {
            Masker::Sha256
        } else {
            // HMAC accepts keys of any length; new_from_slice cannot fail for it.
            Masker::Hmac(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"))
        }
    }

    pub fn mask(&self, value: &str) -> String {
        let mut out = [0u8; MASKED_LEN];
        self.mask_into(value, &mut out).unwrap_or(value).to_owned()
    }

    /// The masked value written into `out`, with no allocation: mask_pii runs once per row of a
    /// query, and its result is copied once more into the text Postgres returns. None for
    /// [`Masker::AlreadyMasked`]: the value is kept as it is.
    pub fn mask_into<'o>(&self, value: &str, out: &'o mut [u8; MASKED_LEN]) -> Option<&'o str> {
        let digest: [u8; 32] = match self {
            Masker::AlreadyMasked => return None,
            Masker::Sha256 => Sha256::digest(value.as_bytes()).into(),
            Masker::Hmac(keyed) => {
                let mut mac = keyed.clone();
                mac.update(value.as_bytes());
                mac.finalize().into_bytes().into()
            }
        };
        for (pair, &b) in out.chunks_exact_mut(2).zip(&digest) {
            pair.copy_from_slice(&HEX_PAIRS[b as usize]);
        }
        Some(std::str::from_utf8(out).expect("hex digits are ASCII"))
    }
}

/// Each byte's two hex digits: one lookup per byte rather than one per digit.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
        b += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unkeyed_is_plain_sha256() {
        // echo -n abc | sha256sum
        assert_eq!(Masker::new(b"").mask("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn keyed_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            Masker::new(b"Jefe").mask("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn masker_is_reusable_and_deterministic() {
        let m = Masker::new(b"k");
        assert_eq!(m.mask("1.2.3.4"), m.mask("1.2.3.4"));
        assert_ne!(m.mask("1.2.3.4"), m.mask("1.2.3.5"));
        assert_ne!(m.mask("1.2.3.4"), Masker::new(b"").mask("1.2.3.4"));
    }

    #[test]
    fn masked_values_are_not_masked_twice() {
        let masked = Masker::new(b"k").mask("1.2.3.4");
        assert_eq!(Masker::AlreadyMasked.mask(&masked), masked);
        let body =
            crate::message::dead_letter_body(r#"{"ip": "1.2.3.4", "device_id": "593-47-5928"}"#, &Masker::new(b"k"));
        assert_eq!(crate::message::dead_letter_body(&body, &Masker::AlreadyMasked), body);
    }
}
