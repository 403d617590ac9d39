//! What a worker waits on: its latch, the SIGTERM and SIGHUP flags, the catalog's generation.
use crate::source::catalog;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

pub fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGTERM handler.
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

pub fn reload_pending() -> bool {
    // SAFETY: a sig_atomic_t flag set by the SIGHUP handler.
    unsafe { pg_sys::ConfigReloadPending != 0 }
}

pub fn reload_if_asked() {
    // SAFETY: a sig_atomic_t flag set by the SIGHUP handler; ProcessConfigFile runs outside
    // any transaction, as Postgres' own processes do it.
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Waits up to `timeout`, in steps of a second, until the catalog changes from `generation`,
/// a reload or a shutdown is asked for.
pub fn wait_for_change(timeout: Duration, generation: u64) {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || shutdown_requested() || reload_pending() || catalog::generation() != generation {
            return;
        }
        wait(left.min(Duration::from_secs(1)));
    }
}

/// Sleeps up to `timeout` on the latch, which SIGTERM and SIGHUP set; exits at once if the
/// postmaster has died. Then processes interrupts: cluster-wide operations (DROP DATABASE,
/// ALTER DATABASE SET TABLESPACE, DROP TABLESPACE) wait until every process has absorbed their
/// ProcSignalBarrier, which only CHECK_FOR_INTERRUPTS does.
pub fn wait(timeout: Duration) {
    let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH;
    // SAFETY: MyLatch is this process's latch.
    unsafe {
        let rc =
            pg_sys::WaitLatch(pg_sys::MyLatch, events as i32, timeout.as_millis() as i64, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
        if rc & pg_sys::WL_POSTMASTER_DEATH as i32 != 0 {
            pg_sys::proc_exit(1);
        }
    }
    check_for_interrupts!();
}
