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
    static PLANS: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs `sql` with `args` through its kept plan, planned on first use for the arguments'
/// types, and reads what it returned with `read`. An ERROR of the statement propagates as it
/// is.
pub fn run<R>(
    sql: &str,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> Result<R, SpiError>,
) -> Result<R, SpiError> {
    Spi::connect_mut(|client| {
        PLANS.with_borrow_mut(|plans| {
            if !plans.contains_key(sql) {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                plans.insert(sql.to_owned(), client.prepare_mut(sql, &types)?.keep());
            }
            read(client.update(&plans[sql], None, args)?)
        })
    })
}
