//! Sealing of original ip and device_id values for opt-in recovery: AES-256-GCM under a key only
//! the server holds, bound to the masked value it is stored under.
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fmt;

/// Bytes of the random nonce that prefixes every sealed value.
const NONCE_LEN: usize = 12;

#[derive(Debug, PartialEq, Eq)]
pub enum VaultError {
    /// The key is not 64 hexadecimal digits (256 bits).
    BadKey,
    /// The sealed value was made under another key, for another masked value, or altered.
    CannotOpen,
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::BadKey => f.write_str("the recovery key must be 64 hexadecimal digits (256 bits)"),
            VaultError::CannotOpen => f.write_str("the stored value does not open under the current recovery key"),
        }
    }
}

#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

impl Sealer {
    pub fn from_hex(key: &str) -> Result<Sealer, VaultError> {
        let key = key.as_bytes();
        if key.len() != 64 {
            return Err(VaultError::BadKey);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(key.chunks(2)) {
            *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Ok(Sealer(Aes256Gcm::new(&bytes.into())))
    }

    /// Nonce followed by ciphertext and tag. The masked value is the associated data, so a
    /// sealed value moved to another masked value's row no longer opens.
    pub fn seal(&self, masked: &str, original: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(&nonce, Payload { msg: original.as_bytes(), aad: masked.as_bytes() })
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, masked: &str, sealed: &[u8]) -> Result<String, VaultError> {
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::CannotOpen);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: masked.as_bytes() })
            .map_err(|_| VaultError::CannotOpen)?;
        String::from_utf8(plain).map_err(|_| VaultError::CannotOpen)
    }
}

fn digit(c: u8) -> Result<u8, VaultError> {
    (c as char).to_digit(16).map(|d| d as u8).ok_or(VaultError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_under_the_same_key_and_masked_value() {
        let s = Sealer::from_hex(KEY).unwrap();
        let sealed = s.seal("m1", "199.172.111.135");
        assert!(!sealed.windows(15).any(|w| w == b"199.172.111.135"));
        assert_eq!(s.open("m1", &sealed).unwrap(), "199.172.111.135");
        assert_ne!(sealed, s.seal("m1", "199.172.111.135"), "a fresh nonce each time");
    }

    #[test]
    fn refuses_another_key_another_masked_value_or_tampering() {
        let s = Sealer::from_hex(KEY).unwrap();
        let sealed = s.seal("m1", "593-47-5928");
        let other = Sealer::from_hex(&KEY.replace("1f", "20")).unwrap();
        assert_eq!(other.open("m1", &sealed), Err(VaultError::CannotOpen));
        assert_eq!(s.open("m2", &sealed), Err(VaultError::CannotOpen));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("m1", &flipped), Err(VaultError::CannotOpen));
        assert_eq!(s.open("m1", &sealed[..5]), Err(VaultError::CannotOpen));
    }

    #[test]
    fn keys_must_be_64_hex_digits() {
        assert!(Sealer::from_hex(&KEY.to_uppercase()).is_ok());
        for bad in ["", "00", &KEY[1..], &format!("{KEY}0"), &KEY.replace('a', "g")] {
            assert!(matches!(Sealer::from_hex(bad), Err(VaultError::BadKey)), "{bad}");
        }
    }
}
