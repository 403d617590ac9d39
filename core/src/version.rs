//! Encodes an app version "MAJOR[.MINOR[.PATCH]]" as the integer MAJOR*10000 + MINOR*100 + PATCH.
use std::fmt;

/// The largest value one component may take so that the encoding stays collision-free.
pub const MAX_COMPONENT: u32 = 99;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    Empty,
    TooManyParts(usize),
    NotNumeric,
    ComponentTooLarge,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::Empty => write!(f, "app_version is empty or has an empty component"),
            VersionError::TooManyParts(n) => {
                write!(f, "app_version has {n} components; an integer column takes at most 3")
            }
            VersionError::NotNumeric => {
                write!(f, "app_version has a component that is not a decimal number")
            }
            VersionError::ComponentTooLarge => {
                write!(f, "app_version has a component over {MAX_COMPONENT}, which an integer column cannot encode")
            }
        }
    }
}

/// "2.3.0" -> 20300, "0.96" -> 9600, "3" -> 30000. Components compare numerically, so the
/// encoding preserves version order and "2.0" and "2.00" are the same version.
pub fn encode(version: &str) -> Result<i32, VersionError> {
    let mut value: u32 = 0;
    let mut parts = 0usize;
    for part in version.split('.') {
        parts += 1;
        if parts > 3 {
            return Err(VersionError::TooManyParts(version.split('.').count()));
        }
        if part.is_empty() {
            return Err(VersionError::Empty);
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VersionError::NotNumeric);
        }
        let digits = part.trim_start_matches('0');
        if digits.len() > 2 {
            return Err(VersionError::ComponentTooLarge);
        }
        let component: u32 = digits.parse().unwrap_or(0);
        if component > MAX_COMPONENT {
            return Err(VersionError::ComponentTooLarge);
        }
        value += component * [10_000, 100, 1][parts - 1];
    }
    Ok(value as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_take_home_versions() {
        assert_eq!(encode("2.3.0"), Ok(20300));
        assert_eq!(encode("0.96"), Ok(9600));
        assert_eq!(encode("0.2.6"), Ok(206));
        assert_eq!(encode("0.26"), Ok(2600));
        assert_eq!(encode("2.6"), Ok(20600));
        assert_eq!(encode("2.0"), encode("2.00"));
        assert_eq!(encode("3"), Ok(30000));
        assert_eq!(encode("99.99.99"), Ok(999999));
    }

    #[test]
    fn rejects_what_cannot_be_encoded() {
        assert_eq!(encode(""), Err(VersionError::Empty));
        assert_eq!(encode("1..2"), Err(VersionError::Empty));
        assert_eq!(encode("1.2."), Err(VersionError::Empty));
        assert_eq!(encode("1.2.3.4"), Err(VersionError::TooManyParts(4)));
        assert_eq!(encode("1.x"), Err(VersionError::NotNumeric));
        assert_eq!(encode("-1.2"), Err(VersionError::NotNumeric));
        assert_eq!(encode("1.+2"), Err(VersionError::NotNumeric));
        assert_eq!(encode("1.100"), Err(VersionError::ComponentTooLarge));
        assert_eq!(encode("100"), Err(VersionError::ComponentTooLarge));
        assert_eq!(encode("1.99999999999999999999"), Err(VersionError::ComponentTooLarge));
        assert_eq!(encode("٣.1"), Err(VersionError::NotNumeric));
    }

    #[test]
    fn order_preserving_and_collision_free_over_all_versions() {
        let mut last = -1;
        for major in 0..=99u32 {
            for minor in 0..=99u32 {
                for patch in (0..=99u32).step_by(7) {
                    let v = encode(&format!("{major}.{minor}.{patch}")).unwrap();
                    assert!(v > last, "{major}.{minor}.{patch}");
                    last = v;
                }
            }
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A version string with 1..=3 components, each 0..=99 written with optional leading zeros.
        fn version() -> impl Strategy<Value = (Vec<u32>, String)> {
            prop::collection::vec((0..=99u32, 0..3usize), 1..=3).prop_map(|parts| {
                let text = parts.iter().map(|(n, zeros)| format!("{}{n}", "0".repeat(*zeros))).collect::<Vec<_>>();
                (parts.iter().map(|(n, _)| *n).collect(), text.join("."))
            })
        }

        fn padded(parts: &[u32]) -> (u32, u32, u32) {
            (parts[0], *parts.get(1).unwrap_or(&0), *parts.get(2).unwrap_or(&0))
        }

        proptest! {
            #[test]
            fn equals_the_component_formula((parts, text) in version()) {
                let (a, b, c) = padded(&parts);
                prop_assert_eq!(encode(&text), Ok((a * 10_000 + b * 100 + c) as i32));
            }

            #[test]
            fn preserves_order_and_never_collides((x, xs) in version(), (y, ys) in version()) {
                let (ex, ey) = (encode(&xs).unwrap(), encode(&ys).unwrap());
                prop_assert_eq!(padded(&x).cmp(&padded(&y)), ex.cmp(&ey));
            }

            #[test]
            fn any_text_is_encoded_in_range_or_refused(text in "\\PC{0,12}|[0-9.]{0,12}") {
                if let Ok(v) = encode(&text) {
                    prop_assert!((0..=999_999).contains(&v));
                    let parts: Vec<u32> = text.split('.').map(|p| p.parse().unwrap()).collect();
                    let (a, b, c) = padded(&parts);
                    prop_assert_eq!(v, (a * 10_000 + b * 100 + c) as i32);
                }
            }

            #[test]
            fn components_over_99_are_refused(big in 100..u32::MAX, pos in 0..3usize) {
                let mut parts = vec!["1".to_owned(); 3];
                parts[pos] = big.to_string();
                prop_assert_eq!(encode(&parts.join(".")), Err(VersionError::ComponentTooLarge));
            }
        }
    }
}
