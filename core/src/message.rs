//! Parses and validates an SQS login message body against the columns of `user_logins`.
use crate::masking::Masker;
use crate::version::{self, VersionError};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// Character limits of the target table's columns (`None`: unbounded text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub user_id: Option<usize>,
    pub device_type: Option<usize>,
    pub locale: Option<usize>,
    pub app_version: AppVersionColumn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppVersionColumn {
    Text(Option<usize>),
    /// The take-home's `app_version integer`: versions are encoded by [`version::encode`].
    Integer,
}

impl Columns {
    /// The table the extension creates.
    pub const CREATED: Columns = Columns {
        user_id: Some(128),
        device_type: Some(32),
        locale: Some(32),
        app_version: AppVersionColumn::Text(Some(32)),
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppVersion<'a> {
    Text(Cow<'a, str>),
    Integer(i32),
}

impl AppVersion<'_> {
    /// The same version, borrowing nothing: a payload opened from an envelope is short-lived.
    pub fn into_owned(self) -> AppVersion<'static> {
        match self {
            AppVersion::Text(t) => AppVersion::Text(Cow::Owned(t.into_owned())),
            AppVersion::Integer(v) => AppVersion::Integer(v),
        }
    }
}

/// A message that can become one row of `user_logins` (before masking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login<'a> {
    pub user_id: Cow<'a, str>,
    pub device_type: Cow<'a, str>,
    pub ip: Cow<'a, str>,
    pub device_id: Cow<'a, str>,
    pub locale: Option<Cow<'a, str>>,
    pub app_version: AppVersion<'a>,
}

/// Why a message cannot become a row. The text never quotes a value from the body, so it can
/// be logged and stored without leaking PII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotJson(String),
    NotObject(&'static str),
    /// The source expects an envelope (sqs_ingest.sources.envelope) the body is not.
    NotEnvelope(&'static str),
    Missing(&'static str),
    Null(&'static str),
    WrongType {
        field: &'static str,
        found: &'static str,
    },
    Nul(&'static str),
    TooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
    Version(VersionError),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotJson(e) => write!(f, "body is not valid JSON: {e}"),
            Rejection::NotObject(kind) => write!(f, "body is valid JSON but {kind}, not an object"),
            Rejection::NotEnvelope(what) => write!(f, "body is not {what}"),
            Rejection::Missing(field) => write!(f, "field \"{field}\" is missing"),
            Rejection::Null(field) => write!(f, "field \"{field}\" is null"),
            Rejection::WrongType { field, found } => {
                write!(f, "field \"{field}\" is {found}, not a string")
            }
            Rejection::Nul(field) => write!(f, "field \"{field}\" contains a NUL character"),
            Rejection::TooLong { field, chars, max } => {
                write!(f, "field \"{field}\" has {chars} characters, more than its column holds ({max})")
            }
            Rejection::Version(e) => e.fmt(f),
        }
    }
}

/// One JSON value where a string is expected; anything else is kept only as its kind.
#[derive(Default)]
enum Field<'a> {
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<Field<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'a>, E> {
                Ok(Field::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field<'a>, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field<'a>, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an object"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Unknown keys are ignored; a repeated known key is an error (which value would be meant?).
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    user_id: Field<'a>,
    #[serde(borrow, default)]
    app_version: Field<'a>,
    #[serde(borrow, default)]
    device_type: Field<'a>,
    #[serde(borrow, default)]
    ip: Field<'a>,
    #[serde(borrow, default)]
    locale: Field<'a>,
    #[serde(borrow, default)]
    device_id: Field<'a>,
}

/// The kind of a JSON text that is not an object, or `None` when it may be one.
fn non_object_kind(body: &str) -> Option<&'static str> {
    match body.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        _ => Some("a number"),
    }
}

/// Checks that `body` is a JSON object, as a mapped source's expressions take it.
pub fn object(body: &str) -> Result<(), Rejection> {
    if let Some(kind) = non_object_kind(body) {
        return Err(match serde_json::from_str::<IgnoredAny>(body) {
            Ok(_) => Rejection::NotObject(kind),
            Err(e) => Rejection::NotJson(e.to_string()),
        });
    }
    serde_json::from_str::<IgnoredAny>(body).map(|_| ()).map_err(|e| Rejection::NotJson(e.to_string()))
}

/// Parses `body` and checks every field against `columns`.
pub fn parse<'a>(body: &'a str, columns: &Columns) -> Result<Login<'a>, Rejection> {
    if non_object_kind(body).is_some() {
        // Tells "valid JSON of the wrong kind" from "not JSON at all".
        object(body)?;
    }
    let raw: Body<'a> = serde_json::from_str(body).map_err(|e| Rejection::NotJson(e.to_string()))?;
    // Checked in the take-home's key order, so the reason names the first bad field.
    let user_id = fits("user_id", required("user_id", raw.user_id)?, columns.user_id)?;
    let app_version = required("app_version", raw.app_version)?;
    let app_version = match columns.app_version {
        AppVersionColumn::Text(max) => AppVersion::Text(fits("app_version", app_version, max)?),
        AppVersionColumn::Integer => AppVersion::Integer(version::encode(&app_version).map_err(Rejection::Version)?),
    };
    Ok(Login {
        user_id,
        app_version,
        device_type: fits("device_type", required("device_type", raw.device_type)?, columns.device_type)?,
        ip: fits("ip", required("ip", raw.ip)?, None)?,
        locale: match raw.locale {
            Field::Missing | Field::Null => None,
            other => Some(fits("locale", required("locale", other)?, columns.locale)?),
        },
        device_id: fits("device_id", required("device_id", raw.device_id)?, None)?,
    })
}

fn required<'a>(field: &'static str, value: Field<'a>) -> Result<Cow<'a, str>, Rejection> {
    match value {
        Field::Str(s) => Ok(s),
        Field::Missing => Err(Rejection::Missing(field)),
        Field::Null => Err(Rejection::Null(field)),
        Field::Other(found) => Err(Rejection::WrongType { field, found }),
    }
}

fn fits<'a>(field: &'static str, value: Cow<'a, str>, max: Option<usize>) -> Result<Cow<'a, str>, Rejection> {
    if value.contains('\0') {
        return Err(Rejection::Nul(field));
    }
    if let Some(max) = max {
        // Byte length bounds the character count from above: most values skip the count.
        if value.len() > max {
            let chars = value.chars().count();
            if chars > max {
                return Err(Rejection::TooLong { field, chars, max });
            }
        }
    }
    Ok(value)
}

/// The body as a dead letter keeps it: `ip` and `device_id` masked when the body is a JSON
/// object, or an SNS notification or EventBridge event around one; otherwise the body as it came
/// (nothing in it can be found to mask). NUL characters, which Postgres text cannot hold,
/// become U+FFFD.
pub fn dead_letter_body(body: &str, masker: &Masker) -> String {
    use serde_json::Value;
    let mask = |object: &mut serde_json::Map<String, Value>| {
        for key in ["ip", "device_id"] {
            if let Some(Value::String(s)) = object.get_mut(key) {
                *s = masker.mask(s);
            }
        }
    };
    let masked = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut object)) => {
            if let Some(key) = crate::envelope::payload_key(&object) {
                match object.get_mut(key) {
                    Some(Value::String(message)) => {
                        if let Ok(Value::Object(mut inner)) = serde_json::from_str::<Value>(message) {
                            mask(&mut inner);
                            *message = Value::Object(inner).to_string();
                        }
                    }
                    Some(Value::Object(detail)) => mask(detail),
                    _ => {}
                }
            }
            // The envelope's own keys too: nothing says a producer kept them out of it.
            mask(&mut object);
            serde_json::to_string(&object).ok()
        }
        _ => None,
    };
    masked.unwrap_or_else(|| body.to_owned()).replace('\0', "\u{FFFD}")
}

/// Postgres' timestamp (microseconds from 2000-01-01 UTC) of a Unix time in milliseconds, such
/// as SQS's SentTimestamp; None when it does not fit.
pub fn pg_timestamp_from_unix_millis(millis: i64) -> Option<i64> {
    const MILLIS_1970_TO_2000: i64 = 946_684_800_000;
    millis.checked_sub(MILLIS_1970_TO_2000)?.checked_mul(1000)
}

/// Postgres' date (days from 2000-01-01) of a Postgres timestamp in UTC: the `create_date` of a
/// login, computed here rather than by an expression per row of the INSERT.
pub fn pg_utc_date(pg_timestamp: i64) -> i32 {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    // A timestamp's range (to 294276 AD) is a few million days: always an i32.
    pg_timestamp.div_euclid(MICROS_PER_DAY) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#;

    fn reject(body: &str) -> Rejection {
        parse(body, &Columns::CREATED).unwrap_err()
    }

    #[test]
    fn parses_take_home_record() {
        let login = parse(GOOD, &Columns::CREATED).unwrap();
        assert_eq!(login.user_id, "424cdd21-063a-43a7-b91b-7ca1a833afae");
        assert_eq!(login.ip, "199.172.111.135");
        assert_eq!(login.device_id, "593-47-5928");
        assert_eq!(login.locale.as_deref(), Some("RU"));
        assert_eq!(login.app_version, AppVersion::Text("2.3.0".into()));
        assert!(matches!(login.user_id, Cow::Borrowed(_)), "plain strings are not copied");
    }

    #[test]
    fn null_or_missing_locale_is_none() {
        let null_locale = GOOD.replace(r#""RU""#, "null");
        assert_eq!(parse(&null_locale, &Columns::CREATED).unwrap().locale, None);
        let no_locale = GOOD.replace(r#""locale": "RU", "#, "");
        assert_eq!(parse(&no_locale, &Columns::CREATED).unwrap().locale, None);
    }

    #[test]
    fn integer_column_encodes_version() {
        let cols = Columns { app_version: AppVersionColumn::Integer, ..Columns::CREATED };
        assert_eq!(parse(GOOD, &cols).unwrap().app_version, AppVersion::Integer(20300));
        let bad = GOOD.replace("2.3.0", "2.300");
        assert_eq!(parse(&bad, &cols).unwrap_err(), Rejection::Version(VersionError::ComponentTooLarge));
    }

    #[test]
    fn extra_fields_and_escapes_are_accepted() {
        let body =
            GOOD.replace("{", r#"{"extra": {"nested": [1, 2, {"x": null}]}, "#).replace("android", r"andr\u006fid");
        let login = parse(&body, &Columns::CREATED).unwrap();
        assert_eq!(login.device_type, "android");
    }

    #[test]
    fn rejects_each_kind_of_bad_body() {
        assert!(matches!(reject(""), Rejection::NotJson(_)));
        assert!(matches!(reject("not json"), Rejection::NotJson(_)));
        assert!(matches!(reject("{\"ip\": "), Rejection::NotJson(_)));
        assert!(matches!(reject(&format!("\u{FEFF}{GOOD}")), Rejection::NotJson(_)));
        assert_eq!(reject("[1, 2]"), Rejection::NotObject("an array"));
        assert_eq!(reject("\"text\""), Rejection::NotObject("a string"));
        assert_eq!(reject("42"), Rejection::NotObject("a number"));
        assert_eq!(reject("null"), Rejection::NotObject("null"));
        assert_eq!(reject(r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#), Rejection::Missing("user_id"));
        assert_eq!(reject(&GOOD.replace(r#""199.172.111.135""#, "null")), Rejection::Null("ip"));
        assert_eq!(
            reject(&GOOD.replace(r#""199.172.111.135""#, "3321098119")),
            Rejection::WrongType { field: "ip", found: "a number" }
        );
        assert_eq!(
            reject(&GOOD.replace(r#""RU""#, r#"{"c": "RU"}"#)),
            Rejection::WrongType { field: "locale", found: "an object" }
        );
        assert_eq!(reject(&GOOD.replace("RU", r"R\u0000U")), Rejection::Nul("locale"));
        assert_eq!(
            reject(&GOOD.replace("android", &"é".repeat(33))),
            Rejection::TooLong { field: "device_type", chars: 33, max: 32 }
        );
        assert!(matches!(reject(&GOOD.replace("RU", r"\ud800")), Rejection::NotJson(_)));
        let duplicate = GOOD.replace(r#""locale": "RU""#, r#""ip": "1.1.1.1""#);
        assert!(matches!(reject(&duplicate), Rejection::NotJson(e) if e.contains("duplicate field")));
        // 100k levels of nesting neither overflow the stack nor hide the real problem.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(reject(&format!("{{\"x\": {deep}}}")), Rejection::Missing("user_id"));
        assert_eq!(
            reject(&GOOD.replace(r#""RU""#, &deep)),
            Rejection::WrongType { field: "locale", found: "an array" }
        );
    }

    #[test]
    fn multibyte_values_are_counted_in_characters() {
        let body = GOOD.replace("android", &"é".repeat(32));
        assert_eq!(parse(&body, &Columns::CREATED).unwrap().device_type.chars().count(), 32);
    }

    #[test]
    fn reasons_never_quote_values() {
        let secret = "199.172.111.135";
        for body in [GOOD.replace("RU", r"R\u0000U"), GOOD.replace("2.3.0", "x.y"), format!("{secret} oops")] {
            let cols = Columns { app_version: AppVersionColumn::Integer, ..Columns::CREATED };
            let reason = parse(&body, &cols).unwrap_err().to_string();
            assert!(!reason.contains(secret) && !reason.contains("R\0U") && !reason.contains("x.y"), "{reason}");
        }
    }

    #[test]
    fn dead_letter_body_masks_pii_when_it_can() {
        let m = Masker::new(b"");
        let body = r#"{"ip": "1.2.3.4", "device_id": "123-45-6789", "user_id": 5}"#;
        let kept = dead_letter_body(body, &m);
        assert!(!kept.contains("1.2.3.4") && !kept.contains("123-45-6789"));
        assert!(kept.contains(&m.mask("1.2.3.4")));
        assert_eq!(dead_letter_body("not json\0", &m), "not json\u{FFFD}");
    }

    #[test]
    fn dead_letter_body_masks_pii_inside_envelopes() {
        let m = Masker::new(b"");
        let login = r#"{"ip": "1.2.3.4", "device_id": "123-45-6789"}"#;
        let sns = serde_json::json!({"Type": "Notification", "TopicArn": "arn:t", "Message": login}).to_string();
        let event = format!(r#"{{"detail-type": "login", "source": "app", "detail": {login}}}"#);
        for body in [sns, event] {
            let kept = dead_letter_body(&body, &m);
            assert!(!kept.contains("1.2.3.4") && !kept.contains("123-45-6789"), "{kept}");
            assert!(kept.contains(&m.mask("1.2.3.4")), "{kept}");
            assert_eq!(crate::envelope::open(&kept, crate::envelope::Envelope::Auto).map(|o| o.is_some()), Ok(true));
        }
    }

    #[test]
    fn sent_timestamp_to_pg_timestamp() {
        assert_eq!(pg_timestamp_from_unix_millis(946_684_800_000), Some(0)); // 2000-01-01T00:00:00Z
        assert_eq!(pg_timestamp_from_unix_millis(946_684_799_999), Some(-1000));
        assert_eq!(pg_timestamp_from_unix_millis(1_700_000_000_123), Some(753_315_200_123_000)); // 2023-11-14T22:13:20.123Z
        assert_eq!(pg_timestamp_from_unix_millis(i64::MAX), None);
        assert_eq!(pg_timestamp_from_unix_millis(i64::MIN), None);
    }

    #[test]
    fn utc_dates_of_timestamps() {
        assert_eq!(pg_utc_date(0), 0); // 2000-01-01T00:00:00Z
        assert_eq!(pg_utc_date(86_400_000_000 - 1), 0); // its last microsecond
        assert_eq!(pg_utc_date(-1), -1); // 1999-12-31T23:59:59.999999Z
        assert_eq!(pg_utc_date(753_315_200_123_000), 8718); // 2023-11-14: 8718 days after 2000-01-01
        assert_eq!(pg_utc_date(i64::MAX), 106_751_991);
        assert_eq!(pg_utc_date(i64::MIN), -106_751_992);
    }
}
