//! One sqs_ingest library per process: a copy loaded beside the one the server started with (a
//! package upgraded under a running server) refuses before it registers anything.
//!
//! PostgreSQL loads a library once per path: every backend of a server that preloads sqs_ingest
//! runs the copy the postmaster mapped at start, whatever has been installed since. The install
//! and update scripts LOAD the installed file by a path of their own (sql/bootstrap.sql and
//! each upgrade script): if it is not the file the server runs (a new inode), the new code runs
//! here and refuses, so that no new SQL is laid over the old library's functions.
use crate::errors::report;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::{c_char, c_void, CStr};

/// This library's version, where another copy in the same process can read it.
const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the crate version holds no NUL"),
};

#[derive(Debug)]
pub enum LibraryError {
    /// Another version runs in this process; None: a release before 0.7.0, which names none.
    Running(Option<String>),
}

impl From<LibraryError> for ErrorReport {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::Running(running) => report(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "this server runs sqs_ingest {}, loaded when it started; the library installed since is {}",
                    running.as_deref().unwrap_or("of an earlier release"),
                    env!("CARGO_PKG_VERSION"),
                ),
                "Restart the server (systemctl restart postgresql, or pg_ctl restart), then run ALTER EXTENSION \
                 sqs_ingest UPDATE in each database that has it. Until the restart the running version serves as \
                 before. If sqs_ingest is not in shared_preload_libraries, a new session is enough.",
            )
            .set_detail("Two versions of sqs_ingest cannot run in one server process: their settings, hooks, shared memory and SQL differ."),
        }
    }
}

/// How this copy of the library stands in its process.
pub enum Claim {
    /// The first: it registers its settings, hooks and shared memory.
    First,
    /// The same version is already loaded from another file (a reinstall): that copy serves.
    Again,
}

/// Claims the process for this copy, or says which other version holds it.
pub fn claim() -> Result<Claim, LibraryError> {
    // SAFETY: the rendezvous variable lives as long as the process and is read and written
    // only on the backend's one thread; its value, when set, points at the VERSION of a copy
    // loaded earlier, and PostgreSQL never unloads a library.
    unsafe {
        let slot = pg_sys::find_rendezvous_variable(c"sqs_ingest".as_ptr());
        if !(*slot).is_null() {
            let running = CStr::from_ptr(*slot as *const c_char);
            return if running == VERSION {
                Ok(Claim::Again)
            } else {
                Err(LibraryError::Running(Some(running.to_string_lossy().into_owned())))
            };
        }
        // Releases before 0.7.0 set no rendezvous variable; their settings show them.
        if defined_by_a_library(c"sqs_ingest.queue_url") {
            return Err(LibraryError::Running(None));
        }
        *slot = VERSION.as_ptr() as *mut c_void;
    }
    Ok(Claim::First)
}

/// Whether a loaded library defined setting `name` (not a placeholder for a value in the
/// configuration files).
///
/// # Safety
/// Called in a backend or the postmaster, where the settings are set up.
unsafe fn defined_by_a_library(name: &CStr) -> bool {
    // SAFETY: both look a setting up by name; missing_ok makes a missing one NULL or 0.
    unsafe {
        !pg_sys::GetConfigOption(name.as_ptr(), true, false).is_null()
            && pg_sys::GetConfigOptionFlags(name.as_ptr(), true) & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0
    }
}
