//! Subtransactions and settings scoped to a block, as PL/pgSQL runs them.
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::panic::AssertUnwindSafe;

/// Runs `body` in a subtransaction of its own, as PL/pgSQL runs a block with an EXCEPTION
/// clause: released when it returns; rolled back when it raises, and the error returned.
pub fn subtransaction<R>(body: impl FnOnce() -> R) -> Result<R, CaughtError> {
    // SAFETY: every caller is inside a transaction; the memory context and resource owner are
    // restored after the subtransaction ends either way, as PL/pgSQL restores them.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    let restore = || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
    }
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let out = body();
        // SAFETY: ends the subtransaction begun above, which is the current one.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Ok(out)
    }))
    .catch_others(|error| {
        restore();
        // SAFETY: rolls back the subtransaction begun above, which the error left current.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(error)
    })
    .execute()
}

/// Runs `body` with the setting `name` at `value`, as SET LOCAL inside a function with a SET
/// clause would: the previous value is back when it returns, or when an ERROR aborts the
/// (sub)transaction. Extension code may set any setting whatever the caller's privileges.
pub fn with_setting<R>(name: &CStr, value: &CStr, body: impl FnOnce() -> R) -> R {
    // SAFETY: inside a transaction; the nesting level is closed below, or by the abort of the
    // transaction if an error escapes `body` first.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let out = body();
    // SAFETY: closes the nesting level opened above, keeping nothing of it.
    unsafe { pg_sys::AtEOXact_GUC(false, level) };
    out
}
