//! Values as the shared-memory status views keep them: text in fixed-size buffers, and
//! timestamps back as SQL values.
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::FromDatum;

/// At most N bytes of text, cut at a character boundary; plain Copy data, as shared memory
/// needs.
#[derive(Clone, Copy)]
pub struct FixedText<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> FixedText<N> {
    pub const EMPTY: Self = FixedText { len: 0, bytes: [0; N] };

    /// Keeps the first N bytes of `text`; None empties it.
    pub fn set(&mut self, text: Option<&str>) {
        let text = text.unwrap_or_default();
        let mut len = text.len().min(N);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        self.bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        self.len = len;
    }

    pub fn is(&self, text: &str) -> bool {
        &self.bytes[..self.len] == text.as_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text; None when empty.
    pub fn get(&self) -> Option<String> {
        (self.len > 0).then(|| String::from_utf8_lossy(&self.bytes[..self.len]).into_owned())
    }
}

/// A kept TimestampTz as a timestamptz value.
pub fn timestamp(ts: Option<pg_sys::TimestampTz>) -> Option<TimestampWithTimeZone> {
    // SAFETY: a TimestampTz is a timestamptz Datum by value.
    ts.and_then(|t| unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(t), false) })
}
