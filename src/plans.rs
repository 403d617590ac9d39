//! Statements planned once per backend and kept (SPI_keepplan), keyed by their text: what runs
//! for every batch (the ledger, rows, dead letters) and every call (the catalog reads).
//! Postgres replans a kept plan by itself when an object it uses changes, and when the
//! search_path differs from the one it was planned with.
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiError, SpiTupleTable};
use pgrx::{PgOid, Spi};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// The reading statements' plans, then the writing ones', by their text.
    static PLANS: RefCell<[HashMap<String, OwnedPreparedStatement>; 2]> = RefCell::new(Default::default());
}

/// Runs the reading statement `sql` with `args` through its kept plan, planned on first use for
/// the arguments' types, and reads what it returned with `read`. It takes no transaction id,
/// so that an idle worker's catalog reads write no WAL and run on a standby. An ERROR of the
/// statement propagates as it is.
pub fn read<R>(
    sql: &str,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> Result<R, SpiError>,
) -> Result<R, SpiError> {
    kept(false, sql, args, read)
}

/// As [`read`], for a statement that writes (INSERT, DELETE): it takes a transaction id.
pub fn run<R>(
    sql: &str,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> Result<R, SpiError>,
) -> Result<R, SpiError> {
    kept(true, sql, args, read)
}

fn kept<R>(
    writes: bool,
    sql: &str,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> Result<R, SpiError>,
) -> Result<R, SpiError> {
    Spi::connect_mut(|client| {
        PLANS.with_borrow_mut(|plans| {
            let plans = &mut plans[writes as usize];
            if !plans.contains_key(sql) {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                let plan = if writes { client.prepare_mut(sql, &types)? } else { client.prepare(sql, &types)? };
                plans.insert(sql.to_owned(), plan.keep());
            }
            let plan = &plans[sql];
            // select runs read-only (no transaction id) unless the transaction already wrote.
            read(if writes { client.update(plan, None, args)? } else { client.select(plan, None, args)? })
        })
    })
}
