//! Runs code as another role, the way Postgres runs a SECURITY DEFINER function or a
//! maintenance command: a source's expressions as its owner; the writes to the extension's own
//! tables that its roles may not make themselves as the extension's owner.
use crate::plans;
use crate::subxact::with_setting;
use pgrx::prelude::*;

/// Runs `body` with `role`'s privileges. `restricted` adds SECURITY_RESTRICTED_OPERATION, as
/// VACUUM and REFRESH MATERIALIZED VIEW do for code the role wrote: no SET ROLE, no temporary
/// tables, no change of session state that could outlive it. The previous user is restored
/// when `body` returns; an ERROR restores it by aborting the (sub)transaction.
pub fn run_as<R>(role: pg_sys::Oid, restricted: bool, body: impl FnOnce() -> R) -> R {
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0);
    let flags =
        pg_sys::SECURITY_LOCAL_USERID_CHANGE | if restricted { pg_sys::SECURITY_RESTRICTED_OPERATION } else { 0 };
    // SAFETY: saves and sets this backend's user id and security context, as
    // fmgr_security_definer does; the saved pair is restored below, and the (sub)transaction
    // abort that an ERROR leads to restores the pair its start saved.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(role, context | flags as i32);
    }
    let out = body();
    // SAFETY: restores the pair saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

/// Runs `body` with the extension owner's privileges, restricted, with search_path
/// `pg_catalog, pg_temp`, as a SECURITY DEFINER function with a fixed search_path would: the
/// writes the extension makes to its own tables beyond what its roles are granted (the catalog,
/// pruning the ledger, the vault, dead letters retried). None when the extension is not
/// created in this database.
pub fn as_extension<R>(body: impl FnOnce() -> R) -> Option<R> {
    let owner: pg_sys::Oid =
        plans::read("SELECT extowner FROM pg_extension WHERE extname = 'sqs_ingest'", &[], |t| t.first().get_one())
            .ok()
            .flatten()?;
    Some(run_as(owner, true, || with_setting(c"search_path", c"pg_catalog, pg_temp", body)))
}

/// The role running the current statement (current_user).
pub fn current() -> pg_sys::Oid {
    // SAFETY: reads this backend's user id.
    unsafe { pg_sys::GetUserId() }
}

/// Whether the current user has the privileges of `role` (is it, or a member inheriting it),
/// or is a superuser.
pub fn acts_for(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups inside a transaction.
    unsafe { pg_sys::has_privs_of_role(current(), role) }
}

pub fn is_superuser() -> bool {
    // SAFETY: a catalog lookup inside a transaction.
    unsafe { pg_sys::superuser() }
}
