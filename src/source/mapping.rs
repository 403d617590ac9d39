//! A source's mapping: the one INSERT ... SELECT that turns a batch of its messages into rows
//! of its table, and the check that Postgres accepts it, run when the source is created or altered.
use super::{Source, SourceError};
use crate::plans;
use crate::role;
use crate::subxact::{subtransaction, with_setting};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::ffi::CString;

/// What an expression sees: one message of the batch, the arguments of the INSERT. unnest in
/// the select list, not in FROM: FROM would copy the arrays' elements into a tuplestore first,
/// and a subquery with a set-returning select list is never pulled up into the INSERT, so each
/// body is parsed as jsonb once however many expressions use it.
const MESSAGES: &str = "(SELECT unnest($1::text[]) AS message_id, unnest($2::text[])::jsonb AS body,
                         unnest($3::timestamptz[]) AS sent_at, unnest($4::int4[]) AS receive_count,
                         unnest($5::text[])::jsonb AS attributes, unnest($6::text[])::jsonb AS envelope,
                         unnest($7::text[]) AS group_id,
                         unnest($8::text[])::numeric AS sequence_number) AS m";

/// A source's table and the statement that fills it.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// schema.table, quoted.
    pub table: String,
    /// The table's name, as error messages name it.
    pub relation: String,
    pub owner: pg_sys::Oid,
    /// The INSERT ... SELECT over the batch's messages ($1 ids, $2 bodies, $3 sent_at,
    /// $4 receive counts, $5 attributes, $6 envelopes, $7 group ids, $8 sequence numbers).
    pub insert: String,
    /// Evaluated with this search_path: the extension's schema (mask_pii), public, pg_temp last.
    search_path: CString,
}

/// A column of the target table.
struct Column {
    name: String,
    computed: bool,
    default: Option<String>,
}

impl Mapping {
    /// The mapping of `source` (not the login source), on its table as it is now.
    pub fn resolve(source: &Source) -> Result<Mapping, SourceError> {
        let oid = source.target.expect("a mapped source has a target");
        let found = plans::read(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relname::text, c.relkind::text,
                    (SELECT quote_ident(x.nspname) FROM pg_extension e
                     JOIN pg_namespace x ON x.oid = e.extnamespace WHERE e.extname = 'sqs_ingest'),
                    EXISTS (SELECT FROM pg_roles WHERE oid = $2)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[oid.into(), source.owner.into()],
            |rows| {
                let row = rows.first();
                Ok(match row.get::<String>(1) {
                    Ok(Some(table)) => Some((
                        table,
                        row.get::<String>(2)?,
                        row.get::<String>(3)?,
                        row.get::<String>(4)?,
                        row.get::<bool>(5)?,
                    )),
                    _ => None,
                })
            },
        )
        .map_err(SourceError::spi("finding the source's table"))?;
        let (table, relation, kind, schema, owner_exists) = found
            .ok_or_else(|| SourceError::NotATable(format!("the table of source \"{}\" (dropped?)", source.name)))?;
        // A dropped owner's id would otherwise reach the permission checks, which refuse it
        // without saying why.
        if owner_exists != Some(true) {
            return Err(SourceError::OwnerGone { source: source.name.clone(), owner: source.owner.into() });
        }
        let relation = relation.unwrap_or_default();
        if !matches!(kind.as_deref(), Some("r" | "p")) {
            return Err(SourceError::NotATable(table));
        }
        let columns = table_columns(oid)?;
        let (names, values): (Vec<String>, Vec<String>) = match &source.columns {
            Some(mapped) => {
                let mut pairs = Vec::with_capacity(mapped.len());
                for (name, expression) in mapped {
                    let column = columns
                        .iter()
                        .find(|c| &c.name == name)
                        .ok_or_else(|| SourceError::NoColumn { table: table.clone(), column: name.clone() })?;
                    if column.computed {
                        return Err(SourceError::Computed { table: table.clone(), column: name.clone() });
                    }
                    // Parenthesised on lines of their own: an expression cannot end the
                    // statement's structure early, nor comment out the rest of it.
                    pairs.push((quote(name), format!("(\n{expression}\n)")));
                }
                pairs.into_iter().unzip()
            }
            // The body's keys of the columns' names, converted as jsonb_populate_record does;
            // a key the body lacks leaves the column its default.
            None => columns
                .iter()
                .filter(|c| !c.computed)
                .map(|c| {
                    let value = match &c.default {
                        Some(d) => {
                            format!("CASE WHEN m.body ? {} THEN r.{} ELSE {d} END", literal(&c.name), quote(&c.name))
                        }
                        None => format!("r.{}", quote(&c.name)),
                    };
                    (quote(&c.name), value)
                })
                .unzip(),
        };
        if names.is_empty() {
            return Err(SourceError::BadColumns("name no column".to_owned()));
        }
        let from = match source.columns {
            Some(_) => MESSAGES.to_owned(),
            None => format!("{MESSAGES}, jsonb_populate_record(NULL::{table}, m.body) AS r"),
        };
        let insert =
            format!("INSERT INTO {table} ({})\nSELECT {}\nFROM {from}", names.join(", "), values.join(",\n       "));
        let schema = schema.ok_or(SourceError::NoExtension)?;
        let search_path = CString::new(format!("{schema}, public, pg_temp")).expect("no NUL in a quoted name");
        Ok(Mapping { table, relation, owner: source.owner, insert, search_path })
    }

    /// Runs `body` as the source's owner, restricted, with the mapping's search_path.
    pub fn as_owner<R>(&self, body: impl FnOnce() -> R) -> R {
        role::run_as(self.owner, true, || with_setting(c"search_path", &self.search_path, body))
    }

    /// Plans the INSERT as the owner and starts its executor without running it (EXPLAIN): a
    /// syntax error, a type mismatch, a missing privilege on the table or on a function an
    /// expression calls is an error now rather than at ingest time.
    pub fn check(&self) -> Result<(), SourceError> {
        let explain = format!("EXPLAIN (COSTS OFF) {}", self.insert);
        let empty: Vec<Option<String>> = Vec::new();
        let args: [DatumWithOid; 8] = [
            empty.clone().into(),
            empty.clone().into(),
            Vec::<Option<pgrx::datum::TimestampWithTimeZone>>::new().into(),
            Vec::<Option<i32>>::new().into(),
            empty.clone().into(),
            empty.clone().into(),
            empty.clone().into(),
            empty.into(),
        ];
        let checked = subtransaction(|| {
            self.as_owner(|| Spi::connect_mut(|client| client.update(&explain, None, &args).map(|_| ())))
        });
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SourceError::Spi { doing: "checking the mapping", error: e.to_string() }),
            Err(CaughtError::PostgresError(e) | CaughtError::ErrorReport(e)) => Err(SourceError::Mapping {
                message: e.message().to_owned(),
                detail: e.detail().map(str::to_owned),
                hint: e.hint().map(str::to_owned),
                code: e.sql_error_code(),
            }),
            Err(CaughtError::RustPanic { ereport, .. }) => Err(SourceError::Mapping {
                message: ereport.message().to_owned(),
                detail: None,
                hint: None,
                code: PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            }),
        }
    }
}

fn table_columns(oid: pg_sys::Oid) -> Result<Vec<Column>, SourceError> {
    plans::read(
        "SELECT a.attname::text, a.attgenerated <> '' OR a.attidentity <> '',
                pg_get_expr(d.adbin, d.adrelid)
         FROM pg_attribute a
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[oid.into()],
        |rows| {
            rows.map(|r| {
                Ok(Column {
                    name: r.get(1)?.unwrap_or_default(),
                    computed: r.get(2)?.unwrap_or(false),
                    default: r.get(3)?,
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        },
    )
    .map_err(SourceError::spi("reading the columns of the source's table"))
}

/// An identifier, quoted as quote_ident always would.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
