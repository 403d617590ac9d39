//! The table rows go to: `user_logins` in the extension's schema, and what its columns can hold.
use super::IngestError;
use crate::plans;
use sqs_ingest_core::masking::MASKED_LEN;
use sqs_ingest_core::message::{AppVersionColumn, Columns};

/// The table rows go to, in the extension's schema.
pub const TABLE: &str = "user_logins";

/// `user_logins` as found, with the limits its columns impose.
pub struct Target {
    pub table: String,
    pub columns: Columns,
    /// Whether sqs_ingest.dead_letters records a refusing table's error (sqlstate, ...): from
    /// 0.2.0 on. A database still at 0.1.0 ingests as before until ALTER EXTENSION ... UPDATE.
    pub dead_letter_errors: bool,
}

/// What a column can hold, as far as ingestion cares.
enum Shape {
    /// text, varchar or char, with its length limit.
    Text(Option<usize>),
    /// integer or bigint.
    Integer,
    Date,
    Other,
}

impl Target {
    pub fn resolve() -> Result<Target, IngestError> {
        // Scalar subqueries: one row, NULLs when the extension is not created here.
        let (table, version): (Option<String>, Option<String>) = plans::read(
            "SELECT (SELECT quote_ident(n.nspname) || '.' || quote_ident($1) FROM pg_extension e \
                     JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'sqs_ingest'), \
                    (SELECT extversion FROM pg_extension WHERE extname = 'sqs_ingest')",
            &[TABLE.into()],
            |t| t.first().get_two(),
        )
        .map_err(IngestError::spi("finding the extension's schema"))?;
        let table = table.ok_or(IngestError::NoExtension)?;
        let found: Vec<(String, String, Option<i32>)> = plans::read(
            "SELECT a.attname::text, t.typname::text, \
                            CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod >= 4 \
                                 THEN a.atttypmod - 4 END \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[table.as_str().into()],
            |rows| {
                rows.map(|r| {
                    Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default(), r.get(3)?))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            },
        )
        .map_err(IngestError::spi("reading the columns of user_logins"))?;
        if found.is_empty() {
            return Err(IngestError::NoTable(table));
        }
        let shape = |name: &'static str| {
            let (_, typname, limit) = found
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| IngestError::NoColumn { table: table.clone(), column: name })?;
            let shape = match typname.as_str() {
                "text" | "varchar" | "bpchar" => Shape::Text(limit.map(|l| l as usize)),
                "int4" | "int8" => Shape::Integer,
                "date" => Shape::Date,
                _ => Shape::Other,
            };
            let mismatch = move |expected| IngestError::ColumnType { column: name, found: typname.clone(), expected };
            Ok((shape, mismatch))
        };
        let text = |name| match shape(name)? {
            (Shape::Text(limit), _) => Ok(limit),
            (_, mismatch) => Err(mismatch("text or varchar")),
        };
        for masked in ["masked_ip", "masked_device_id"] {
            if matches!(text(masked)?, Some(limit) if limit < MASKED_LEN) {
                return Err(IngestError::ColumnType {
                    column: masked,
                    found: format!("limited to fewer than {MASKED_LEN} characters"),
                    expected: "able to hold a 64-character hex digest",
                });
            }
        }
        match shape("create_date")? {
            (Shape::Date, _) => {}
            (_, mismatch) => return Err(mismatch("date")),
        }
        let columns = Columns {
            user_id: text("user_id")?,
            device_type: text("device_type")?,
            locale: text("locale")?,
            app_version: match shape("app_version")? {
                (Shape::Text(limit), _) => AppVersionColumn::Text(limit),
                (Shape::Integer, _) => AppVersionColumn::Integer,
                (_, mismatch) => return Err(mismatch("text, varchar, integer or bigint")),
            },
        };
        Ok(Target { table, columns, dead_letter_errors: version.as_deref() != Some("0.1.0") })
    }
}
